"""Benchmark the vm and node reads of the real daemon at 1,000, 10,000 (and 50,000) VMs, and how it scales.

Run as ``.venv/bin/python bench/bench_vm.py [--vms 1000,10000[,50000]] [--duration 3] [--rounds 3]``.

For each VM count it starts a throwaway ZooKeeper, writes the v0.6 base tree,
16 nodes (what a node daemon writes) and the VMs (exactly the keys
``pvc_vm.schema.new_vm_keys`` lays out; each VM's domain XML is a realistic
~1.5 KB document with two rbd disks, a bridge NIC, a serial console, memory,
vcpu, os and features, pretty-printed as the daemon stores it, and different
per VM: name, uuid, MAC, volume names), then starts the real ``pvcapid`` (node
and vm plugins, authentication on as in bench_root.py) and measures

* warm-up, from process start: a loop of full ``GET /vm`` lists sent one after
  another from the first moment the daemon accepts connections, each checked
  (count, UUIDs, and the fields of a sample of VMs); the time of the first
  correct full list; beside it ``GET /vm/<name>`` and a one-VM
  ``GET /vm?limit=`` polled every 0.25 s, the daemon's log line
  ``view of /domains ready``, and the ZooKeeper packets received until the
  first correct list (a second full read of the tree shows there);
* RSS after warm-up, and while 100 consecutive full lists are sent over 8
  connections (sampled every 10 lists: min/max, and whether it stayed within
  +-5 % of its midpoint);
* wrk (-t1, 127.0.0.1, connections 1 and 8, median of the rounds) on the
  whole list, a ~10-VM ``?limit=`` regex, ``?state=``, ``?node=``, one VM, the
  node list, ``GET /status``, and bare CherryPy's JSON hello from
  bench_root.py as the baseline;
* the whole list's wall time and body size with single Python requests;
* ZooKeeper packets received per request (``srvr`` counters around 50
  sequential requests per endpoint);
* once the daemon is stopped, on the same ZooKeeper: the v0.6 way of listing
  (at 1,000 VMs: sequential gets, one per key of every VM, no pipelining, then
  each XML parsed and the list JSON-encoded), and kazoo's stock ``TreeCache``
  on ``/domains`` in a subprocess of its own (seconds until its INITIALIZED
  event, and that process's RSS growth).

It ends with a scaling table (one row per VM count). It prints figures and
never asserts on speed; it exits 0 when it measured and 1 (with the log tails)
when the setup failed. Everything it starts is stopped in ``finally`` blocks
(process groups), and nothing binds anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import http.client
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid as uuidlib

from kazoo.client import KazooClient
from lxml import etree
from pvc_vm import domainxml
from pvc_vm import schema as vm_schema

from pvc_core import schema as core_schema
from pvc_core.zkserver import ZooKeeperServer, free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_root import (  # noqa: E402 - a sibling script, not a package
    BARE_APP,
    BARE_BODY,
    CONFIG_TEMPLATE,
    HOST,
    ROOT_PATH,
    THREADS,
    WRK,
    get,
    keep_or_remove,
    median,
    parse_wrk,
    start_process,
    stop_process,
    tail,
    wait_ready,
)

NODE_COUNT = 16
NODES = [f"pvchv{index}" for index in range(1, NODE_COUNT + 1)]
PLUGINS = """    plugins:
        enabled: [node, vm]
"""
# the one log format (pvc_core/logformat.py): time level logger: context message
VIEW_READY = re.compile(r"^(\S+) \S+ pvc\.view: \S+ view of /domains ready(?:: (\d+) children)?", re.MULTILINE)
VMS_PER_TRANSACTION = 100
IN_FLIGHT = 16
ZK_REQUESTS = 50
ZK_BUDGET = 30.0        # seconds at most per endpoint for the ZooKeeper packet count
WARMUP_TIMEOUT = 180.0  # seconds at least for the daemon to answer correctly (more above 18,000 VMs)
WARMUP_POLL = 0.25      # seconds between the one-VM lookups polled beside the full lists
VIEW_GRACE = 15.0       # seconds to wait for the view's log line once the answers are correct
FULL_LIST_SINGLES = 5
WRK_TIMEOUT = 60        # seconds: the whole list at 10,000 VMs takes far longer than wrk's default 2 s
IDLE_TIMEOUT = 60.0     # seconds at most to wait for the daemon to finish requests wrk abandoned
STORM_LISTS = 100       # consecutive full lists for the RSS-over-time figure
STORM_CONNECTIONS = 8
STORM_SAMPLE = 10       # RSS sampled every this many lists
FLAT = 0.05             # "flat": every sample within +-5 % of the samples' midpoint
SAMPLE_VMS = 25         # VMs whose fields each warm-up list is checked for
STATE_FILTER = "stop"
NODE_FILTER = NODES[2]
V06_ROUNDS = 3
# What v0.6's vm list read per VM, one get each (vm.py get_list, common.getInformationFromXML),
# after the VM's own znode (its name).
V06_KEYS = ("state", "node", "lastnode", "failedreason", "node_limit", "node_selector", "node_autostart", "xml")

# A realistic libvirt domain of about 1.5 KB once pretty-printed; name, uuid, MAC and volumes vary per VM.
DOMAIN = ("<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid><description>Bench VM {name}</description>"
          "<memory unit='MiB'>4096</memory><vcpu>4</vcpu>"
          "<cpu mode='host-model'><topology sockets='1' cores='4' threads='1'/></cpu>"
          "<os><type arch='x86_64' machine='pc-i440fx-2.7'>hvm</type></os>"
          "<features><acpi/><apic/><pae/></features>"
          "<devices><emulator>/usr/bin/kvm</emulator>"
          "<controller type='usb' index='0'/><controller type='scsi' index='0' model='virtio-scsi'/>"
          "<disk type='network' device='disk'><driver name='qemu' discard='unmap'/>"
          "<source protocol='rbd' name='vms/{name}_disk0'><host name='pvchv1' port='6789'/>"
          "<host name='pvchv2' port='6789'/><host name='pvchv3' port='6789'/></source>"
          "<target dev='sda' bus='scsi'/></disk>"
          "<disk type='network' device='disk'><driver name='qemu' discard='unmap'/>"
          "<source protocol='rbd' name='vms/{name}_disk1'><host name='pvchv1' port='6789'/>"
          "<host name='pvchv2' port='6789'/><host name='pvchv3' port='6789'/></source>"
          "<target dev='sdb' bus='scsi'/></disk>"
          "<interface type='bridge'><mac address='{mac}'/><source bridge='vmbr100'/><model type='virtio'/>"
          "</interface>"
          "<serial type='pty'><target port='0'/><log file='/var/log/libvirt/{name}.log'/></serial>"
          "<console type='pty'><target type='serial' port='0'/></console></devices></domain>")
DOMAIN_MEMORY = 4096
DOMAIN_VCPUS = 4

# kazoo's stock TreeCache on one subtree, in a process of its own so that its RSS is its own.
TREECACHE_SCRIPT = r'''"""kazoo's TreeCache on one subtree: seconds until INITIALIZED, RSS growth (bench_vm.py)."""
import json
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.recipe.cache import TreeCache, TreeEvent


def rss_mib():
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


address, root, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
client = KazooClient(hosts=address, timeout=30.0)
client.start(timeout=30)
client.get_children(root)  # the connection is warm before the baseline
before = rss_mib()
initialized = threading.Event()


def listener(event):
    if event.event_type == TreeEvent.INITIALIZED:
        initialized.set()


cache = TreeCache(client, root)
cache.listen(listener)
started = time.monotonic()
cache.start()
ok = initialized.wait(timeout)
seconds = time.monotonic() - started
after = rss_mib()
nodes, data_bytes, stack = 0, 0, [root]
while stack:
    path = stack.pop()
    children = cache.get_children(path)
    if children is None:
        continue
    nodes += 1
    data = cache.get_data(path)
    data_bytes += len(data.data or b"") if data is not None else 0
    stack.extend(f"{path}/{child}" for child in children)
print(json.dumps({"initialized": ok, "seconds": seconds, "rss_before": before, "rss_after": after,
                  "nodes": nodes, "data_bytes": data_bytes}), flush=True)
cache.close()
client.stop()
client.close()
'''


# -- the cluster -------------------------------------------------------------------------------


class Cluster:
    """Names and UUIDs of the seeded VMs, and the ones the measurements look up."""

    def __init__(self, count: int):
        self.count = count
        self.width = max(5, len(str(count - 1)))
        self.uuids = [str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{self.name(index)}.bench.pvc"))
                      for index in range(count)]
        self.uuid_set = frozenset(self.uuids)
        self.target = count // 2
        self.target_name = self.name(self.target)
        self.target_uuid = self.uuid(self.target)
        self.one_pattern = f"^{self.target_name}$"
        self.ten_pattern = "^" + self.target_name[:-1]  # the target's decade: 10 VMs (fewer at the very end)
        self.ten_count = sum(1 for index in range(count) if self.name(index).startswith(self.ten_pattern[1:]))
        self.state_count = sum(1 for index in range(count) if self.state(index) == STATE_FILTER)
        self.node_count = sum(1 for index in range(count) if self.node(index) == NODE_FILTER)
        step = max(1, count // SAMPLE_VMS)
        self.sample = sorted({*range(0, count, step), count - 1, self.target})

    def name(self, index: int) -> str:
        return f"vm{index:0{self.width}d}"

    def uuid(self, index: int) -> str:
        return self.uuids[index]

    @staticmethod
    def mac(index: int) -> str:
        return f"52:54:00:{(index >> 16) & 0xff:02x}:{(index >> 8) & 0xff:02x}:{index & 0xff:02x}"

    @staticmethod
    def node(index: int) -> str:
        return NODES[index % NODE_COUNT]

    @staticmethod
    def state(index: int) -> str:
        return "stop" if index % 10 == 9 else "start"  # mostly running

    def volumes(self, index: int) -> list[str]:
        return [f"vms/{self.name(index)}_disk{disk}" for disk in (0, 1)]

    def domain_xml(self, index: int) -> str:
        """The VM's XML as the daemon stores it (pvc_vm.domainxml's pretty print)."""
        name = self.name(index)
        return domainxml.parse(DOMAIN.format(name=name, uuid=self.uuid(index), mac=self.mac(index))).pretty()

    def vm_keys(self, index: int) -> dict[str, str]:
        name, uuid = self.name(index), self.uuid(index)
        domain = domainxml.parse(DOMAIN.format(name=name, uuid=uuid, mac=self.mac(index)))
        return vm_schema.new_vm_keys(uuid, name, self.node(index), "", "mem", False,
                                     ",".join(domain.rbd_volumes()), domain.pretty(), state=self.state(index))

    def expected(self, index: int) -> dict:
        """What a VM object of the list must say about VM ``index`` (see ``observed``)."""
        return {"name": self.name(index), "uuid": self.uuid(index), "state": self.state(index),
                "node": self.node(index), "memory": DOMAIN_MEMORY, "vcpu": DOMAIN_VCPUS,
                "macs": [self.mac(index)], "volumes": self.volumes(index), "console": "pty"}

    def node_values(self, node: str) -> dict[str, str]:
        """What a v0.6 node daemon writes when it registers (as tests/test_node.py seed_node)."""
        running = [self.uuid(index) for index in range(self.count)
                   if self.node(index) == node and self.state(index) == "start"]
        return {"": "coordinator", "daemonmode": "coordinator", "daemonstate": "run", "routerstate": "secondary",
                "domainstate": "ready", "staticdata": "16 4.19.0-6-amd64 GNU/Linux x86_64", "memtotal": "64415",
                "memused": "9213", "memfree": "51012", "memalloc": str(DOMAIN_MEMORY * len(running)),
                "vcpualloc": str(DOMAIN_VCPUS * len(running)), "cpuload": "0.52", "networkscount": "0",
                "domainscount": str(len(running)), "runningdomains": " ".join(running),
                "keepalive": "1581206400", "ipmihostname": "", "ipmiusername": "", "ipmipassword": ""}


def observed(vm: dict) -> dict:
    """The fields of one listed VM object that ``Cluster.expected`` describes."""
    networks = vm.get("networks") if isinstance(vm.get("networks"), list) else []
    disks = vm.get("disks") if isinstance(vm.get("disks"), list) else []
    return {"name": vm.get("name"), "uuid": vm.get("uuid"), "state": vm.get("state"), "node": vm.get("node"),
            "memory": vm.get("memory"), "vcpu": vm.get("vcpu"),
            "macs": [net.get("mac") for net in networks if isinstance(net, dict)],
            "volumes": [disk.get("name") for disk in disks if isinstance(disk, dict)],
            "console": vm.get("console")}


def check_full_list(body: bytes, cluster: Cluster) -> str | None:
    """None when ``body`` is the correct full list; otherwise what is wrong with it."""
    try:
        data = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(data, list):
        return f"a {type(data).__name__}, not a list"
    if len(data) != cluster.count:
        return f"{len(data)} VMs instead of {cluster.count}"
    by_uuid = {vm.get("uuid"): vm for vm in data if isinstance(vm, dict)}
    if by_uuid.keys() != cluster.uuid_set:
        return f"{len(cluster.uuid_set - by_uuid.keys())} seeded UUIDs missing"
    for index in cluster.sample:
        seen, wanted = observed(by_uuid[cluster.uuid(index)]), cluster.expected(index)
        for key, value in wanted.items():
            if seen[key] != value:
                return f"{cluster.name(index)}: {key} is {seen[key]!r}, expected {value!r}"
    return None


def check_results(results: list, what: str) -> None:
    failed = [result for result in results if isinstance(result, Exception)]
    if failed:
        raise RuntimeError(f"seeding {what} failed: {failed[0]!r}")


def commit_batches(client: KazooClient, batches, what: str) -> int:
    """Create ``{path: value}`` batches, one transaction each, ``IN_FLIGHT`` pipelined; returns the batch count."""
    pending: collections.deque = collections.deque()
    done = 0
    for batch in batches:
        transaction = client.transaction()
        for path, value in sorted(batch.items()):
            transaction.create(path, value.encode())
        pending.append(transaction.commit_async())
        done += 1
        while len(pending) >= IN_FLIGHT:
            check_results(pending.popleft().get(timeout=60), what)
    while pending:
        check_results(pending.popleft().get(timeout=60), what)
    return done


def seed_base(client: KazooClient, cluster: Cluster) -> None:
    """The v0.6 base tree and the 16 nodes."""
    transaction = client.transaction()
    for path, value in sorted(core_schema.BASE_TREE.items()):
        transaction.create(path, value.encode())
    check_results(transaction.commit(), "the base tree")
    for node in NODES:
        values = cluster.node_values(node)
        batch = {f"/nodes/{node}": values.pop("")}
        batch.update({f"/nodes/{node}/{key}": value for key, value in values.items()})
        commit_batches(client, [batch], f"node {node}")


def seed_vms(client: KazooClient, cluster: Cluster) -> float:
    """The VMs, ``VMS_PER_TRANSACTION`` per transaction; returns the seconds they took."""
    started = time.perf_counter()

    def batches():
        for first in range(0, cluster.count, VMS_PER_TRANSACTION):
            batch: dict[str, str] = {}
            for index in range(first, min(first + VMS_PER_TRANSACTION, cluster.count)):
                batch.update(cluster.vm_keys(index))
            yield batch

    commit_batches(client, batches(), "VMs")
    seconds = time.perf_counter() - started
    found = len(client.get_children(vm_schema.ROOT))
    if found != cluster.count:
        raise RuntimeError(f"seeded {found} VMs instead of {cluster.count}")
    return seconds


def seed(address: str, cluster: Cluster) -> float:
    """Base tree, nodes and VMs straight into ZooKeeper; returns the seconds the VMs took."""
    client = KazooClient(hosts=address, timeout=30.0)
    client.start(timeout=30)
    try:
        seed_base(client, cluster)
        return seed_vms(client, cluster)
    finally:
        client.stop()
        client.close()


# -- ZooKeeper counters, RSS, HTTP -------------------------------------------------------------


def srvr(port: int, timeout: float = 2.0) -> dict[str, int]:
    """The ``srvr`` counters, read until EOF or timeout (ZooKeeper 3.8 may keep the socket open)."""
    chunks = []
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"srvr")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"Node count:" in b"".join(chunks):
                break  # the last line of the answer
    text = b"".join(chunks).decode(errors="replace")
    counters = {}
    for name in ("Received", "Sent", "Node count"):
        match = re.search(rf"^{name}:\s*(\d+)", text, re.MULTILINE)
        if match:
            counters[name] = int(match.group(1))
    if "Received" not in counters:
        raise RuntimeError(f"unparsed srvr answer: {text!r}")
    return counters


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wait_idle(pid: int, timeout: float = IDLE_TIMEOUT, interval: float = 0.25) -> float:
    """Wait until the daemon has finished the requests wrk abandoned at its end (CPU use under 5 %).

    wrk stops after its duration, but the daemon still computes the requests in
    flight (8 whole lists at 10,000 VMs are seconds of CPU), which would otherwise
    be charged to whatever is measured next.
    """
    started = time.monotonic()
    last = cpu_seconds(pid)
    while last is not None and time.monotonic() - started < timeout:
        time.sleep(interval)
        current = cpu_seconds(pid)
        if current is None or current - last < 0.05 * interval:
            break
        last = current
    return time.monotonic() - started


def revision() -> str:
    """The checkout's commit (and whether it has local changes), so figures name what they measured."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" with local changes" if dirty else "")


def get_json(url: str, headers: dict, timeout: float) -> tuple[int, object, int]:
    status, body = get(url, headers, timeout=timeout)
    try:
        return status, json.loads(body), len(body)
    except ValueError:
        return status, None, len(body)


def run_wrk(url: str, connections: int, duration: int, headers: dict) -> dict:
    """bench_root's wrk run with a longer per-request timeout (whole lists at 10,000 VMs)."""
    argv = [WRK, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", f"{WRK_TIMEOUT}s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + WRK_TIMEOUT + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    completed = re.search(r"^\s*(\d+) requests in", done.stdout, re.MULTILINE)
    result["requests"] = int(completed.group(1)) if completed else 0
    if not result["requests"]:  # wrk prints 0 latencies when nothing completed: slower than the whole run
        result["p50"] = result["p99"] = float("inf")
    return result


def wrk_rounds(targets: dict[str, tuple[str, dict]], connections: list[int], duration: int, rounds: int,
               pid: int) -> dict[tuple[str, int], list[dict]]:
    """Every target at every connection count, ``rounds`` times, alternating the order; each run once idle."""
    for url, headers in targets.values():  # warm-up, not recorded
        run_wrk(url, max(connections), 1, headers)
        wait_idle(pid)
    results: dict[tuple[str, int], list[dict]] = {}
    names = list(targets)
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for conns in connections:
            for label in order:
                url, headers = targets[label]
                result = run_wrk(url, conns, duration, headers)
                results.setdefault((label, conns), []).append(result)
                settled = wait_idle(pid)
                problems = f"  (daemon busy {settled:.1f} s after wrk)" if settled > 1 else ""
                if result["non2xx"] or result["errors"]:
                    problems += f"  non-2xx {result['non2xx']} socket errors {result['errors'] or '-'}"
                if not result["requests"]:
                    problems += f"  (no request completed within {duration} s)"
                print(f"  round {round_index + 1} c={conns:<2} {label:<28} {result['rps']:>9.1f} req/s  "
                      f"p50 {result['p50']:9.3f} ms  p99 {result['p99']:9.3f} ms{problems}", flush=True)
    return results


def wrk_medians(results: dict[tuple[str, int], list[dict]]) -> dict[tuple[str, int], dict]:
    return {key: {"rps": median(value, "rps"), "p50": median(value, "p50"), "p99": median(value, "p99")}
            for key, value in results.items()}


def zk_packets(zk_port: int, url: str, headers: dict) -> tuple[int, int, float]:
    """Requests made, packets ZooKeeper received meanwhile, and seconds taken."""
    before = srvr(zk_port)["Received"]
    started = time.monotonic()
    count = 0
    while count < ZK_REQUESTS and (count == 0 or time.monotonic() - started < ZK_BUDGET):
        status, _ = get(url, headers, timeout=120.0)
        if status != 200:
            raise RuntimeError(f"{url} answered {status} while counting ZooKeeper packets")
        count += 1
    seconds = time.monotonic() - started
    return count, srvr(zk_port)["Received"] - before, seconds


def count_packets(zk_port: int, urls: dict[str, str], headers: dict) -> tuple[dict[str, float], dict[str, float]]:
    """ZooKeeper packets per request of each endpoint, and the sequential milliseconds per request."""
    idle_before = srvr(zk_port)["Received"]
    time.sleep(1.0)
    idle = srvr(zk_port)["Received"] - idle_before
    packets = {}
    walls = {}
    print(f"ZooKeeper packets received per request ({ZK_REQUESTS} sequential urllib requests each, at most "
          f"{ZK_BUDGET:.0f} s; idle baseline {idle} packets in 1 s, kazoo session pings):")
    for label, url in urls.items():
        made, received, seconds = zk_packets(zk_port, url, headers)
        packets[label] = received / made
        walls[label] = seconds / made * 1000
        print(f"  {label:<28} {made:>3} requests in {seconds:6.2f} s ({walls[label]:.2f} ms each): "
              f"{received:>4} packets, {received / made:.2f} per request", flush=True)
    return packets, walls


def start_bare(tmp: str, env: dict) -> tuple[subprocess.Popen, str, str]:
    """bench_root.py's bare CherryPy app (the baseline); the process, its URL and its log."""
    bare_log = os.path.join(tmp, "bare.log")
    bare_port = free_port()
    app_path = os.path.join(tmp, "bare_app.py")
    with open(app_path, "w", encoding="utf-8") as handle:
        handle.write(BARE_APP.format(body=BARE_BODY, threads=THREADS))
    bare = start_process([sys.executable, app_path, str(bare_port)], bare_log, env)
    bare_url = f"http://{HOST}:{bare_port}{ROOT_PATH}"
    try:
        wait_ready(bare_url, bare, "bare app", bare_log)
    except RuntimeError as exc:
        stop_process(bare, "bare app")
        raise SetupFailed(str(exc), bare_log) from None
    return bare, bare_url, bare_log


def write_config(workdir: str, zk_port: int, plugins: str) -> tuple[str, int, str]:
    """A daemon configuration (authentication on); its path, port and token."""
    token = secrets.token_hex(16)
    port = free_port()
    config_path = os.path.join(workdir, "pvcapid.yaml")
    with open(config_path, "w", encoding="utf-8") as handle:
        handle.write(CONFIG_TEMPLATE.format(data_dir=os.path.join(workdir, "data"), zk_port=zk_port,
                                            port=port, threads=THREADS, token=token, plugins=plugins))
    return config_path, port, token


# -- warm-up -----------------------------------------------------------------------------------


def view_ready_at(log_path: str) -> tuple[float, int | None] | None:
    """Wall-clock time (from the log line's timestamp) and child count of ``view of /domains ready``."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            match = VIEW_READY.search(handle.read())
    except OSError:
        return None
    if not match:
        return None
    stamp = datetime.datetime.fromisoformat(match.group(1)).timestamp()
    return stamp, int(match.group(2)) if match.group(2) else None


def refused(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionRefusedError) or isinstance(getattr(exc, "reason", None), ConnectionRefusedError)


class FullLists(threading.Thread):
    """Full ``GET /vm`` lists, one after another from process start, until one is correct."""

    def __init__(self, url: str, headers: dict, cluster: Cluster, started: float, deadline: float, zk_port: int):
        super().__init__(name="warm-up full lists", daemon=True)
        self.url, self.headers, self.cluster = url, headers, cluster
        self.started, self.deadline, self.zk_port = started, deadline, zk_port
        self.refused = 0
        self.refused_until: float | None = None
        self.attempts: list[dict] = []
        self.correct: float | None = None
        self.received: int | None = None  # ZooKeeper's Received counter when the first correct list arrived
        self.stop = threading.Event()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            sent = self.elapsed()
            try:
                status, body = get(self.url, self.headers, timeout=max(1.0, self.deadline - time.monotonic()))
            except OSError as exc:
                if refused(exc) and not self.attempts:
                    self.refused += 1
                    self.refused_until = self.elapsed()
                else:
                    self.attempts.append({"sent": sent, "done": self.elapsed(), "status": type(exc).__name__,
                                          "bytes": 0, "problem": str(exc)})
                time.sleep(0.05)
                continue
            done = self.elapsed()
            problem = check_full_list(body, self.cluster) if status == 200 else f"status {status}"
            self.attempts.append({"sent": sent, "done": done, "status": status, "bytes": len(body),
                                  "problem": problem})
            if problem is None:
                self.correct = done
                try:
                    self.received = srvr(self.zk_port)["Received"]
                except (OSError, RuntimeError):
                    pass
                return
            time.sleep(0.05)


def measure_warmup(process, started_wall: float, started: float, base: str, headers: dict, cluster: Cluster,
                   log_path: str, zk_port: int, received_before: int) -> dict:
    """Full lists from process start (``FullLists``) and, beside them, the one-VM lookups and the view's log line."""
    name_url = f"{base}/vm/{cluster.target_name}"
    limit_url = f"{base}/vm?" + urllib.parse.urlencode({"limit": cluster.one_pattern})
    timeout = max(WARMUP_TIMEOUT, cluster.count * 0.01)
    deadline = started + timeout
    lists = FullLists(f"{base}/vm", headers, cluster, started, deadline, zk_port)
    lists.start()
    found: dict = {}
    next_poll = 0.0
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"pvcapid exited with {process.returncode} during warm-up")
            if time.monotonic() >= next_poll:
                for key, url in (("name", name_url), ("limit", limit_url)):
                    if key in found:
                        continue
                    try:
                        status, body, _ = get_json(url, headers, timeout=30.0)
                    except OSError:
                        continue
                    found.setdefault("http", time.monotonic() - started)
                    if isinstance(body, list) and len(body) == 1:
                        body = body[0]
                    if (status == 200 and isinstance(body, dict) and body.get("name") == cluster.target_name
                            and body.get("uuid") == cluster.target_uuid):
                        found[key] = time.monotonic() - started
                next_poll = time.monotonic() + WARMUP_POLL
            if "view" not in found:
                ready = view_ready_at(log_path)
                if ready is not None:
                    found["view"] = ready[0] - started_wall
                    found["view_children"] = ready[1]
            if lists.correct is not None and {"name", "limit"} <= found.keys():
                if "view" in found:
                    break
                if time.monotonic() - started - lists.correct > VIEW_GRACE:
                    found["view"] = found["view_children"] = None  # not logged (the log line may have changed)
                    break
            time.sleep(0.05)
        else:
            missing = sorted({"list", "name", "limit", "view"} - found.keys() - ({"list"} if lists.correct else set()))
            raise RuntimeError(f"warm-up not finished after {timeout:.0f} s (missing: {', '.join(missing)}); "
                               f"full lists so far: {describe_attempts(lists)}")
    finally:
        lists.stop.set()
        lists.join(timeout=1.0)
    found["list"] = lists.correct
    found["list_sent"] = lists.attempts[-1]["sent"]
    found["attempts"] = lists.attempts
    found["refused"], found["refused_until"] = lists.refused, lists.refused_until
    found["zk_warm"] = None if lists.received is None else lists.received - received_before
    answered = [attempt["done"] for attempt in lists.attempts]
    found["http"] = min([found.get("http", float("inf")), *answered])
    return found


def describe_attempts(lists: FullLists | dict, limit: int = 8) -> str:
    attempts = lists.attempts if isinstance(lists, FullLists) else lists["attempts"]
    refused_count = lists.refused if isinstance(lists, FullLists) else lists["refused"]
    refused_until = lists.refused_until if isinstance(lists, FullLists) else lists["refused_until"]
    parts = []
    if refused_count:
        parts.append(f"connection refused {refused_count} times until {refused_until:.2f} s")
    shown = attempts if len(attempts) <= limit else attempts[:limit - 2] + attempts[-2:]
    for attempt in shown:
        number = attempts.index(attempt) + 1
        verdict_text = "correct" if attempt["problem"] is None else f"wrong: {attempt['problem']}"
        parts.append(f"#{number} sent {attempt['sent']:.2f} s -> {attempt['status']} at {attempt['done']:.2f} s, "
                     f"{attempt['bytes'] / 1024 / 1024:.2f} MiB, {verdict_text}")
    if len(attempts) > limit:
        parts.insert(len(parts) - 2, f"({len(attempts) - limit} more)")
    return "; ".join(parts) if parts else "none answered"


def view_read_packets(count: int) -> int:
    """ZooKeeper requests of one full read of the VM view with one get per znode: the children, each VM, its keys."""
    return 1 + count * (1 + len(getattr(vm_schema, "VIEW_KEYS", V06_KEYS)))


# -- memory over repeated full lists -----------------------------------------------------------


def list_storm(url: str, headers: dict, pid: int, expected_size: int) -> dict:
    """``STORM_LISTS`` full lists over ``STORM_CONNECTIONS`` keep-alive connections; RSS every ``STORM_SAMPLE``."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lock = threading.Lock()
    counters = {"issued": 0, "done": 0}
    samples: list[float] = []
    problems: list[str] = []

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)

    def worker() -> None:
        connection = connect()
        try:
            while True:
                with lock:
                    if counters["issued"] >= STORM_LISTS:
                        return
                    counters["issued"] += 1
                try:
                    connection.request("GET", path, headers=headers)
                    response = connection.getresponse()
                    size = 0
                    while chunk := response.read(1 << 20):
                        size += len(chunk)
                    status = response.status
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    connection = connect()
                    status, size = repr(exc), 0
                with lock:
                    counters["done"] += 1
                    if status != 200 or size != expected_size:
                        problems.append(f"{status}, {size} bytes")
                    if counters["done"] % STORM_SAMPLE == 0:
                        samples.append(rss_mib(pid) or 0.0)
        finally:
            connection.close()

    before = rss_mib(pid)
    began = time.monotonic()
    workers = [threading.Thread(target=worker, name=f"storm {index}", daemon=True)
               for index in range(STORM_CONNECTIONS)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    seconds = time.monotonic() - began
    settled = wait_idle(pid)
    low, high = min(samples), max(samples)
    middle = (low + high) / 2
    return {"before": before, "samples": samples, "after": rss_mib(pid), "seconds": seconds, "settled": settled,
            "problems": problems, "min": low, "max": high, "spread": (high - low) / 2 / middle,
            "flat": (high - low) / 2 <= FLAT * middle}


# -- beside the daemon: the v0.6 way and kazoo's TreeCache -------------------------------------


def v06_list(client: KazooClient) -> tuple[float, int, int, float]:
    """One full list the v0.6 way: one get per key, one after another; then per VM the XML parsed.

    Returns the seconds, the number of gets, the body size and the seconds of the gets alone.
    """
    began = time.perf_counter()
    gets_seconds = 0.0
    out = []
    gets = 1
    children = client.get_children(vm_schema.ROOT)
    for uuid in children:
        fetched = time.perf_counter()
        name = client.get(vm_schema.vm(uuid))[0].decode()
        values = {key: client.get(vm_schema.key(uuid, key))[0].decode() for key in V06_KEYS}
        gets_seconds += time.perf_counter() - fetched
        gets += 1 + len(V06_KEYS)
        root = etree.fromstring(values["xml"].encode())  # v0.6 parsed every VM's XML on every list
        out.append({
            "name": name, "uuid": uuid, **{key: values[key] for key in V06_KEYS if key != "xml"},
            "memory": int(root.findtext("memory") or 0), "vcpu": int(root.findtext("vcpu") or 0),
            "networks": [{"mac": interface.find("mac").get("address"), "source": interface.find("source").get("bridge")}
                         for interface in root.iterfind("devices/interface")],
            "disks": [disk.find("source").get("name") for disk in root.iterfind("devices/disk")],
            "xml": etree.tostring(root).decode(),
        })
    body = json.dumps(out).encode()
    return time.perf_counter() - began, gets, len(body), gets_seconds


def measure_v06(address: str, rounds: int) -> dict:
    client = KazooClient(hosts=address, timeout=30.0)
    client.start(timeout=30)
    try:
        runs = [v06_list(client) for _ in range(rounds)]
    finally:
        client.stop()
        client.close()
    return {"seconds": statistics.median(run[0] for run in runs), "gets": runs[0][1], "bytes": runs[0][2],
            "gets_seconds": statistics.median(run[3] for run in runs), "runs": [run[0] for run in runs]}


def measure_treecache(address: str, tmp: str, env: dict, timeout: float) -> dict:
    """kazoo's TreeCache on /domains in a subprocess: seconds to INITIALIZED and that process's RSS growth."""
    script = os.path.join(tmp, "treecache.py")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(TREECACHE_SCRIPT)
    try:
        done = subprocess.run([sys.executable, script, address, vm_schema.ROOT, str(timeout)], capture_output=True,
                              text=True, timeout=timeout + 120, env=env, check=False, start_new_session=True)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout + 120:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exited with {done.returncode}: {done.stderr.strip()[-500:]}"}
    result = json.loads(lines[-1])
    result["growth"] = result["rss_after"] - result["rss_before"]
    return result


# -- one VM count ------------------------------------------------------------------------------

LIST, LIMIT, STATE, NODE_LIST, ONE, NODES_LABEL, STATUS, BARE = (
    "GET /vm", "GET /vm?limit=<~10>", f"GET /vm?state={STATE_FILTER}", f"GET /vm?node={NODE_FILTER}",
    "GET /vm/<name>", "GET /node", "GET /status", "bare hello")


def endpoints(base: str, cluster: Cluster) -> dict[str, str]:
    return {
        LIST: f"{base}/vm",
        LIMIT: f"{base}/vm?" + urllib.parse.urlencode({"limit": cluster.ten_pattern}),
        STATE: f"{base}/vm?" + urllib.parse.urlencode({"state": STATE_FILTER}),
        NODE_LIST: f"{base}/vm?" + urllib.parse.urlencode({"node": NODE_FILTER}),
        ONE: f"{base}/vm/{cluster.target_name}",
        NODES_LABEL: f"{base}/node",
        STATUS: f"{base}/status",
    }


def preflight(urls: dict[str, str], headers: dict, cluster: Cluster) -> dict[str, tuple[int, int, int]]:
    """Status, object count and body size of each endpoint; raises when an answer is wrong."""
    expected = {LIST: cluster.count, LIMIT: cluster.ten_count, STATE: cluster.state_count,
                NODE_LIST: cluster.node_count, ONE: 1, NODES_LABEL: NODE_COUNT, STATUS: 1}
    out = {}
    for label, url in urls.items():
        status, body, size = get_json(url, headers, timeout=120.0)
        count = len(body) if isinstance(body, list) else (1 if isinstance(body, dict) else 0)
        if status != 200 or count != expected[label]:
            raise RuntimeError(f"{label} answered {status} with {count} objects, expected {expected[label]}")
        out[label] = (status, count, size)
    return out


def bench_count(count: int, args: argparse.Namespace, rounds: int, tmp: str, bare_url: str, pvcapid: str,
                env: dict) -> dict:
    cluster = Cluster(count)
    workdir = os.path.join(tmp, f"vms-{count}")
    os.makedirs(os.path.join(workdir, "data"))
    zookeeper = ZooKeeperServer(os.path.join(workdir, "zookeeper"), port=free_port(),
                                heap="2g" if count > 20000 else "1g")
    daemon = None
    log_path = os.path.join(workdir, "pvcapid.log")
    summary: dict = {"count": count, "rounds": rounds}
    print(f"\n=== {count} VMs on {NODE_COUNT} nodes ===", flush=True)
    try:
        try:
            zookeeper.start()
            seconds = seed(zookeeper.address, cluster)
        except Exception as exc:  # kazoo's own errors too
            raise SetupFailed(f"ZooKeeper or seeding failed: {exc!r}",
                              os.path.join(zookeeper.directory, "zk.log")) from exc
        znodes = srvr(zookeeper.port).get("Node count", 0)
        keys = len(cluster.vm_keys(0))
        xml_size = len(cluster.domain_xml(cluster.target).encode())
        print(f"seeded {count} VMs ({count * keys} znodes, domain XML {xml_size} bytes each, "
              f"{VMS_PER_TRANSACTION} VMs per transaction, {IN_FLIGHT} in flight) in {seconds:.2f} s "
              f"({count / seconds:.0f} VMs/s); ZooKeeper holds {znodes} znodes", flush=True)
        summary["seed"], summary["xml_size"] = seconds, xml_size

        config_path, port, token = write_config(workdir, zookeeper.port, PLUGINS)
        headers = {"X-Api-Key": token}
        base = f"http://{HOST}:{port}/api/v1"
        received_before = srvr(zookeeper.port)["Received"]
        started_wall, started = time.time(), time.monotonic()
        daemon = start_process([pvcapid, "--config", config_path], log_path, env)
        try:
            warm = measure_warmup(daemon, started_wall, started, base, headers, cluster, log_path,
                                  zookeeper.port, received_before)
        except (RuntimeError, OSError) as exc:
            raise SetupFailed(str(exc), log_path) from None
        summary["warm"] = warm
        warm["cpu"] = cpu_seconds(daemon.pid)
        view = (f"'view of /domains ready' logged at {warm['view']:.2f} s ({warm['view_children']} children)"
                if warm["view"] is not None else
                f"'view of /domains ready' NOT logged within {VIEW_GRACE:.0f} s of the first correct list")
        one_read = view_read_packets(count)
        print(f"warm-up from process start (full GET /vm lists one after another from the first accepted "
              f"connection, each checked: count, UUIDs, fields of {len(cluster.sample)} VMs; GET "
              f"/vm/{cluster.target_name} and GET /vm?limit={cluster.one_pattern} polled every {WARMUP_POLL} s):")
        print(f"  full lists: {describe_attempts(warm)}")
        print(f"  first HTTP answer {warm['http']:.2f} s; FIRST CORRECT FULL LIST {warm['list']:.2f} s "
              f"(sent at {warm['list_sent']:.2f} s); GET /vm/<name> correct {warm['name']:.2f} s; "
              f"one-VM ?limit= correct {warm['limit']:.2f} s; {view}; daemon CPU so far {warm['cpu'] or 0:.2f} s")
        if warm["zk_warm"] is not None:
            print(f"  ZooKeeper packets received from process start to the first correct list: {warm['zk_warm']} "
                  f"(one get per followed key of /domains would be ~{one_read}; a bulk warm-up with multiRead sends "
                  "far fewer; a second full read of the tree would show as about twice the warm-up's own)")
        settled = wait_idle(daemon.pid)
        summary["rss_warm"] = rss_mib(daemon.pid)
        print(f"daemon RSS after warm-up: {summary['rss_warm']:.0f} MiB (idle again {settled:.1f} s after the "
              "first correct list)", flush=True)

        urls = endpoints(base, cluster)
        try:
            checked = preflight(urls, headers, cluster)
        except (RuntimeError, OSError) as exc:
            raise SetupFailed(str(exc), log_path) from None
        print("pre-flight: " + "; ".join(f"{label} -> {status}, {objects} objects, {size / 1024:.0f} KiB"
                                         for label, (status, objects, size) in checked.items()))
        print(f"  (?limit={cluster.ten_pattern}: {cluster.ten_count} VMs; ?state={STATE_FILTER}: "
              f"{cluster.state_count}; ?node={NODE_FILTER}: {cluster.node_count})")
        summary["sizes"] = {label: size for label, (_, _, size) in checked.items()}

        storm = list_storm(urls[LIST], headers, daemon.pid, summary["sizes"][LIST])
        summary["storm"] = storm
        print(f"{STORM_LISTS} consecutive full lists over {STORM_CONNECTIONS} connections in {storm['seconds']:.1f} s "
              f"({STORM_LISTS / storm['seconds']:.2f} lists/s): RSS before {storm['before']:.0f} MiB, every "
              f"{STORM_SAMPLE} lists " + " ".join(f"{sample:.0f}" for sample in storm["samples"])
              + f" MiB; min {storm['min']:.0f}, max {storm['max']:.0f} (+-{storm['spread'] * 100:.1f} % of the "
              f"midpoint: {'flat' if storm['flat'] else 'NOT flat'} within +-{FLAT * 100:.0f} %); "
              f"{storm['after']:.0f} MiB once idle ({storm['settled']:.1f} s)"
              + (f"; {len(storm['problems'])} wrong answers, first {storm['problems'][0]}"
                 if storm["problems"] else ""), flush=True)

        walls = []
        for _ in range(FULL_LIST_SINGLES):
            begin = time.perf_counter()
            status, body = get(urls[LIST], headers, timeout=120.0)
            walls.append(time.perf_counter() - begin)
        summary["full_list"] = (statistics.median(walls) * 1000, len(body))
        print(f"GET /vm single requests (Python, {FULL_LIST_SINGLES}): median {summary['full_list'][0]:.1f} ms, "
              f"min {min(walls) * 1000:.1f} ms, max {max(walls) * 1000:.1f} ms, body {len(body)} bytes "
              f"({len(body) / 1024 / 1024:.2f} MiB)", flush=True)

        summary["packets"], summary["sequential"] = count_packets(zookeeper.port, urls, headers)

        targets = {label: (url, headers) for label, url in urls.items()}
        targets[BARE] = (bare_url, {})
        print(f"wrk -t1, {args.duration} s per run, {rounds} round(s), connections {args.connections}, "
              f"timeout {WRK_TIMEOUT} s, each run once the daemon is idle again, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}; "
              f"daemon: node+vm plugins, authentication on (X-Api-Key sent), {THREADS} threads", flush=True)
        summary["wrk"] = wrk_medians(wrk_rounds(targets, args.connections, args.duration, rounds, daemon.pid))
        for conns in args.connections:
            ratio = summary["wrk"][(ONE, conns)]["rps"] / summary["wrk"][(BARE, conns)]["rps"]
            print(f"  c={conns}: GET /vm/<name> / bare hello req/s = {ratio:.2f} (issue 14 target >= 0.80)")
        summary["labels"] = list(targets)
        summary["rss_end"] = rss_mib(daemon.pid)
        print(f"daemon RSS after the measurements: {summary['rss_end']:.0f} MiB", flush=True)
        stop_process(daemon, "pvcapid")
        daemon = None

        if count == args.v06_at:
            print(f"the v0.6 way at {count} VMs (daemon stopped; sequential kazoo gets: the VM's znode and "
                  f"{', '.join(V06_KEYS)}, one get per key, no pipelining; then each XML parsed and the list "
                  f"JSON-encoded), {V06_ROUNDS} rounds ...", flush=True)
            v06 = measure_v06(zookeeper.address, V06_ROUNDS)
            summary["v06"] = v06
            print(f"  one full list: median {v06['seconds']:.2f} s (rounds " +
                  ", ".join(f"{run:.2f}" for run in v06["runs"]) +
                  f" s; the {v06['gets']} gets alone {v06['gets_seconds']:.2f} s, "
                  f"{v06['gets_seconds'] / v06['gets'] * 1e6:.0f} us each); body {v06['bytes'] / 1024 / 1024:.2f} MiB",
                  flush=True)
        print(f"kazoo TreeCache on {vm_schema.ROOT} (kazoo.recipe.cache.TreeCache, in a subprocess of its own, "
              "daemon stopped) ...", flush=True)
        tree = measure_treecache(zookeeper.address, workdir, env, args.treecache_timeout)
        summary["treecache"] = tree
        if "error" in tree:
            print(f"  TreeCache failed: {tree['error']}")
        else:
            print(f"  {'initialized' if tree['initialized'] else 'NOT initialized'} after {tree['seconds']:.2f} s; "
                  f"holds {tree['nodes']} znodes ({tree['data_bytes'] / 1024 / 1024:.1f} MiB of data: every key, "
                  f"consolelog and rbdlist too); process RSS {tree['rss_before']:.0f} -> {tree['rss_after']:.0f} MiB "
                  f"(+{tree['growth']:.0f} MiB)", flush=True)
        return summary
    except SetupFailed:
        raise
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        raise SetupFailed(f"measuring {count} VMs failed: {exc}", log_path) from exc
    finally:
        stop_process(daemon, "pvcapid")
        zookeeper.stop()


class SetupFailed(RuntimeError):
    def __init__(self, message: str, log_path: str):
        super().__init__(message)
        self.log_path = log_path


# -- summary -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 100 else (f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms")


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def p50(summary: dict, label: str) -> float:
    """wrk's c=1 median; when no request completed within a wrk run, the sequential mean (count_packets')."""
    value = summary["wrk"][(label, 1)]["p50"]
    if value == float("inf"):
        return summary["sequential"].get(label, value)
    return value


def p50_text(summary: dict, label: str) -> str:
    fallback = summary["wrk"][(label, 1)]["p50"] == float("inf") and label in summary["sequential"]
    return ms(p50(summary, label)) + (" (sequential mean: wrk completed none)" if fallback else "")


def table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table, so the README can quote it as printed."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_summary(summaries: list[dict], connections: list[int], checkout: str) -> None:
    print("\n" + "=" * 100 + "\nSummary (medians of the wrk rounds)")
    for summary in summaries:
        count = summary["count"]
        warm = summary["warm"]
        print(f"\n{count} VMs ({summary['rounds']} round(s)): seeding {summary['seed']:.2f} s; first correct full "
              f"list {warm['list']:.2f} s, view ready {seconds_text(warm['view'])}; RSS {summary['rss_warm']:.0f} "
              f"MiB after warm-up, {summary['rss_end']:.0f} MiB after; GET /vm single median "
              f"{summary['full_list'][0]:.1f} ms, {summary['full_list'][1] / 1024 / 1024:.2f} MiB")
        header = f"  {'endpoint':<28} {'conns':>5} {'req/s':>10} {'p50 ms':>10} {'p99 ms':>10} {'zk pkts/req':>12}"
        print(header)
        print("  " + "-" * (len(header) - 2))
        for label in summary["labels"]:
            for conns in connections:
                row = summary["wrk"][(label, conns)]
                packets = summary["packets"].get(label)
                print(f"  {label:<28} {conns:>5} {row['rps']:>10.1f} {row['p50']:>10.3f} {row['p99']:>10.3f} "
                      f"{'-' if packets is None else f'{packets:.2f}':>12}")
        for conns in connections:
            ratio = summary["wrk"][(ONE, conns)]["rps"] / summary["wrk"][(BARE, conns)]["rps"]
            print(f"  GET /vm/<name> / bare hello, c={conns}: {ratio:.2f}")

    rounds = sorted({summary["rounds"] for summary in summaries})
    print(f"\nScaling (checkout {checkout}; wrk -t1 c=1 p50, median of {'/'.join(map(str, rounds))} rounds; "
          f"{os.cpu_count()} CPUs; domain XML ~{summaries[0]['xml_size']} bytes per VM)\n")
    rows = []
    for summary in summaries:
        warm, storm, wrk = summary["warm"], summary["storm"], summary["wrk"]
        list_p50 = p50(summary, LIST)
        size = summary["sizes"][LIST]
        rows.append([f"{summary['count']:,}", seconds_text(warm["list"]), seconds_text(warm["view"]),
                     f"{summary['rss_warm']:.0f} MiB",
                     f"{storm['min']:.0f}–{storm['max']:.0f} MiB (±{storm['spread'] * 100:.1f} %, "
                     f"{'flat' if storm['flat'] else 'not flat'})",
                     p50_text(summary, LIST), f"{size / 1024 / 1024:.1f} MiB",
                     f"{list_p50 * 1000 / summary['count']:.1f}"])
    table(["VMs", "first correct full GET /vm", "view ready", "RSS warm",
           f"RSS over {STORM_LISTS} lists at c={STORM_CONNECTIONS}", "GET /vm p50", "body", "µs/VM"], rows)

    print()
    rows = []
    for summary in summaries:
        wrk = summary["wrk"]
        ratios = "/".join(f"{wrk[(ONE, conns)]['rps'] / wrk[(BARE, conns)]['rps']:.2f}" for conns in connections)
        rows.append([f"{summary['count']:,}"] + [p50_text(summary, label) for label in
                                                 (LIMIT, STATE, NODE_LIST, STATUS, ONE, BARE)] + [ratios])
    table(["VMs", "?limit= (~10 VMs)", f"?state={STATE_FILTER} (10 %)", f"?node={NODE_FILTER} (1/16)",
           "GET /status", "GET /vm/<name>", "bare CherryPy",
           f"/vm/<name> ÷ bare req/s (c={'/'.join(map(str, connections))})"], rows)

    print()
    rows = []
    for summary in summaries:
        tree, v06 = summary.get("treecache", {}), summary.get("v06")
        if "error" in tree or not tree:
            tree_cells = ["failed", "-"]
        else:
            tree_cells = [(f"{tree['seconds']:.2f} s" if tree["initialized"] else f"> {tree['seconds']:.0f} s")
                          + f" ({tree['nodes']:,} znodes)", f"+{tree['growth']:.0f} MiB"]
        v06_cell = "-" if v06 is None else (f"{v06['seconds']:.2f} s "
                                            f"({v06['seconds'] * 1000 / p50(summary, LIST):.0f}× "
                                            "this daemon's p50)")
        rows.append([f"{summary['count']:,}", v06_cell, *tree_cells,
                     f"{seconds_text(summary['warm']['list'])}, {summary['rss_warm']:.0f} MiB"])
    table(["VMs", "v0.6 way: one full list (sequential gets)", "kazoo TreeCache initialized",
           "TreeCache process RSS growth", "this daemon: first correct list, RSS warm"], rows)

    by_count = {summary["count"]: summary for summary in summaries}
    print("\nIssue 14 targets (printed, never asserted):")
    for count, limit in ((1000, 5.0), (10000, 60.0)):
        if count in by_count:
            value = p50(by_count[count], LIST)
            print(f"  GET /vm p50 at {count:,} VMs <= {limit:.0f} ms: {ms(value)} -> {verdict(value <= limit)}")
    if 10000 in by_count:
        big = by_count[10000]
        for label in (LIMIT, STATE, NODE_LIST):
            value = p50(big, label)
            print(f"  {label} p50 at 10,000 VMs <= 20 ms: {ms(value)} -> {verdict(value <= 20)}")
        value = p50(big, STATUS)
        print(f"  GET /status p50 at 10,000 VMs <= 5 ms: {ms(value)} -> {verdict(value <= 5)}")
        print(f"  RSS at 10,000 VMs <= 200 MiB: warm {big['rss_warm']:.0f} MiB, max over the lists "
              f"{big['storm']['max']:.0f} MiB -> {verdict(max(big['rss_warm'], big['storm']['max']) <= 200)}; "
              f"flat within +-5 %: +-{big['storm']['spread'] * 100:.1f} % -> {verdict(big['storm']['flat'])}")
        first = big["warm"]["list"]
        print(f"  first correct full GET /vm at 10,000 VMs <= 5 s after start: {first:.2f} s -> {verdict(first <= 5)}"
              + ("" if big["warm"]["zk_warm"] is None else
                 f" (ZooKeeper packets received until then: {big['warm']['zk_warm']})"))
    else:
        print("  the 10,000-VM targets: not measured (10000 not in --vms)")
    for summary in summaries:
        ratios = [summary["wrk"][(ONE, conns)]["rps"] / summary["wrk"][(BARE, conns)]["rps"]
                  for conns in connections]
        text = ", ".join(f"c={conns} {ratio:.2f}" for conns, ratio in zip(connections, ratios, strict=True))
        print(f"  GET /vm/<name> >= 0.8 of bare at {summary['count']:,} VMs: {text} -> {verdict(min(ratios) >= 0.8)}")


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", default="1000,10000", help="comma-separated VM counts (50000 too, when asked)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per endpoint and connection count")
    parser.add_argument("--large-rounds", type=int, default=None,
                        help="rounds for VM counts above 5,000 (default: --rounds; fewer bound the run time)")
    parser.add_argument("--connections", default="1,8", help="comma-separated connection counts (1 is required)")
    parser.add_argument("--v06-at", type=int, default=1000, help="the VM count at which the v0.6 way is measured")
    parser.add_argument("--treecache-timeout", type=float, default=600.0,
                        help="seconds at most for kazoo's TreeCache to initialize")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    counts = [int(item) for item in args.vms.split(",") if item.strip()]
    args.connections = [int(item) for item in args.connections.split(",") if item.strip()]
    if args.large_rounds is None:
        args.large_rounds = args.rounds
    if args.rounds < 1 or args.duration < 1 or args.large_rounds < 1 or not counts or min(counts) < 10:
        parser.error("--rounds, --large-rounds and --duration must be at least 1, VM counts at least 10")
    if 1 not in args.connections:
        parser.error("--connections must include 1 (the scaling table is at c=1)")
    if not os.path.exists(WRK):
        print(f"ERROR: {WRK} is missing: apt-get install wrk", file=sys.stderr)
        return 1
    pvcapid = os.path.join(os.path.dirname(sys.executable), "pvcapid")
    env = {key: value for key, value in os.environ.items() if key != "PVC_CONFIG_FILE"}

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="pvc-bench-vm-")
    bare = None
    began = time.monotonic()
    summaries = []
    checkout = revision()
    print(f"bench_vm: checkout {checkout}, VM counts {counts}, {NODE_COUNT} nodes, wrk {args.duration} s x "
          f"{args.rounds} round(s), connections {args.connections}", flush=True)
    try:
        bare, bare_url, _ = start_bare(tmp, env)
        for count in counts:
            rounds = min(args.rounds, args.large_rounds) if count > 5000 else args.rounds
            if rounds < args.rounds:
                print(f"\n(note: {rounds} wrk round(s) instead of {args.rounds} at {count} VMs, to bound the run "
                      "time; --large-rounds changes it)")
            began_count = time.monotonic()
            summaries.append(bench_count(count, args, rounds, tmp, bare_url, pvcapid, env))
            summaries[-1]["run_time"] = time.monotonic() - began_count
            print(f"({count} VMs measured in {summaries[-1]['run_time']:.0f} s)", flush=True)
        print_summary(summaries, args.connections, checkout)
        print(f"\ntotal run time {time.monotonic() - began:.0f} s")
        return 0
    except SetupFailed as exc:
        print(f"ERROR: benchmark setup failed: {exc}\n--- tail of {exc.log_path} ---\n{tail(exc.log_path, 40)}",
              file=sys.stderr)
        if summaries:
            print_summary(summaries, args.connections, checkout)
        return 1
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"ERROR: benchmark could not run: {exc}", file=sys.stderr)
        if summaries:
            print_summary(summaries, args.connections, checkout)
        return 1
    finally:
        stop_process(bare, "bare app")
        keep_or_remove(tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the network reads of the real daemon: 100 managed networks, one of them with 1,000 DHCP leases.

Run as ``.venv/bin/python bench/bench_network.py [--networks 100] [--leases 1000] [--duration 3] [--rounds 3]``.

It starts a throwaway ZooKeeper and writes the v0.6 base tree, 16 nodes and
100 VMs (bench_vm.py's seeding), then the networks with exactly the keys the
network plugin writes (``pvc_network.schema.new_network_keys`` over the
values ``NetworkService.compose`` validates): 100 managed networks (IPv4 with
DHCPv4, every other one IPv6 too), each with a reservation and an ACL in each
direction; one of them also holds 1,000 dynamic leases
(``dhcp4_leases/<mac>/{expiry,ipaddr,hostname,clientid}``, as v0.6's dnsmasq
helper writes them), 20 reservations and 10 ACLs per direction. Then it
starts the real ``pvcapid`` (node, vm and network plugins, authentication on)
and measures

* warm-up: from process start until ``GET /network`` and the lease list answer
  correctly, and the ``view of ... ready`` lines the daemon logs;
* ZooKeeper packets received per request (``srvr`` counters around 50
  sequential requests per endpoint);
* wrk (-t1, 127.0.0.1, connections 1 and 8, median of the rounds) on
  ``GET /network``, ``GET /network/<vni>``, ``GET /network/<vni>/lease`` and
  ``GET /network/<vni>/acl``, and bare CherryPy's JSON hello from
  bench_root.py as the baseline;
* the daemon's RSS after warm-up and after the measurements.

It prints figures and never asserts on speed; it exits 0 when it measured and
1 (with the log tails) when the setup failed. Everything it starts is stopped
in ``finally`` blocks (process groups), and nothing binds anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from kazoo.client import KazooClient
from pvc_network import schema as net_schema
from pvc_network.service import NetworkService

from pvc_core.zkserver import ZooKeeperServer, free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_root import HOST, THREADS, WRK, keep_or_remove, start_process, stop_process, tail  # noqa: E402
from bench_vm import (  # noqa: E402 - a sibling script, not a package
    Cluster,
    SetupFailed,
    commit_batches,
    count_packets,
    get_json,
    revision,
    rss_mib,
    seed,
    srvr,
    start_bare,
    verdict,
    wait_idle,
    write_config,
    wrk_medians,
    wrk_rounds,
)

PLUGINS = """    plugins:
        enabled: [node, vm, network]
"""
FIRST_VNI = 1000
RESERVATIONS = 20       # on the network with the leases (one on every other network)
ACLS = 10               # per direction on the network with the leases (one per direction elsewhere)
LEASE_EPOCH = 1700000000
WARMUP_TIMEOUT = 120.0
# the one log format (pvc_core/logformat.py): time level logger: context message
VIEW_READY = re.compile(r"^(\S+) \S+ \S+: \S+ (view of \S+ ready[^\n]*)$", re.MULTILINE)
NETWORKS, ONE, LEASES, ACL, BARE = ("GET /network", "GET /network/<vni>", "GET /network/<vni>/lease",
                                    "GET /network/<vni>/acl", "bare hello")


# -- the networks ------------------------------------------------------------------------------


def lease_mac(index: int) -> str:
    return f"52:54:01:00:{(index >> 8) & 0xff:02x}:{index & 0xff:02x}"


def reservation_mac(index: int) -> str:
    return f"52:54:02:00:00:{index & 0xff:02x}"


def network_keys(number: int) -> dict[str, str]:
    """Network ``number`` (0-based) as the network plugin writes it, with its reservation and ACLs."""
    vni = FIRST_VNI + number
    description = f"net{vni}"
    values = NetworkService.compose("managed", description, {
        "domain": f"{description}.bench.local", "name_servers": [f"10.{number}.0.1"],
        "ip4_network": f"10.{number}.0.0/16", "ip4_gateway": f"10.{number}.0.1", "dhcp4": True,
        "dhcp4_start": f"10.{number}.16.0", "dhcp4_end": f"10.{number}.31.255",
        "ip6_network": f"fd00:0:0:{number:x}::/64" if number % 2 == 0 else None, "ip6_gateway": None})
    keys = net_schema.new_network_keys(vni, description, values)
    keys.update(net_schema.reservation_keys(vni, reservation_mac(0), f"10.{number}.2.10", f"static{vni}"))
    for direction in net_schema.DIRECTIONS:
        keys.update(acl_keys(vni, direction, f"{direction}-ssh", 0, "tcp dport 22 ct state new accept"))
    return keys


def acl_keys(vni: int, direction: str, description: str, order: int, rule: str) -> dict[str, str]:
    base = net_schema.rule(vni, direction, description)
    return {base: "", f"{base}/order": str(order), f"{base}/rule": rule}


def busy_keys(number: int, leases: int) -> list[dict[str, str]]:
    """The leases, reservations and ACLs of the busy network, in batches of about 1,000 znodes."""
    vni = FIRST_VNI + number
    batches = []
    batch: dict[str, str] = {}
    for index in range(leases):
        mac = lease_mac(index)
        base = net_schema.lease(vni, mac)
        batch.update({base: "", f"{base}/expiry": str(LEASE_EPOCH + 600 * index),
                      f"{base}/ipaddr": f"10.{number}.{16 + index // 256}.{index % 256}",
                      f"{base}/hostname": f"client{index:04d}" if index % 7 else "",
                      f"{base}/clientid": f"01:{mac}" if index % 3 else "*"})
        if len(batch) >= 1000:
            batches.append(batch)
            batch = {}
    for index in range(1, RESERVATIONS):  # reservation 0 comes with the network
        batch.update(net_schema.reservation_keys(vni, reservation_mac(index), f"10.{number}.2.{10 + index}",
                                                 f"static{index:02d}"))
    for direction in net_schema.DIRECTIONS:
        for index in range(1, ACLS):  # rule 0 comes with the network
            batch.update(acl_keys(vni, direction, f"{direction}-rule{index:02d}", index,
                                  f"tcp dport {8000 + index} ct state new accept"))
    batches.append(batch)
    return batches


def seed_networks(address: str, count: int, busy: int, leases: int) -> tuple[float, int]:
    """The networks, ten per transaction, then the busy network's extras; seconds and znodes written."""
    client = KazooClient(hosts=address, timeout=30.0)
    client.start(timeout=30)
    try:
        started = time.perf_counter()
        batches = []
        for first in range(0, count, 10):
            batch: dict[str, str] = {}
            for number in range(first, min(first + 10, count)):
                batch.update(network_keys(number))
            batches.append(batch)
        batches += busy_keys(busy, leases)
        commit_batches(client, batches, "networks")
        found = len(client.get_children(net_schema.ROOT))
        if found != count:
            raise RuntimeError(f"seeded {found} networks instead of {count}")
        return time.perf_counter() - started, sum(len(batch) for batch in batches)
    finally:
        client.stop()
        client.close()


# -- warm-up -----------------------------------------------------------------------------------


def view_lines(log_path: str, started_wall: float) -> list[tuple[float, str]]:
    """Each ``view of ... ready`` line the daemon logged, with its seconds from process start."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return []
    return [(datetime.datetime.fromisoformat(stamp).timestamp() - started_wall, line)
            for stamp, line in VIEW_READY.findall(text)]


def wait_correct(process, started: float, urls: dict[str, str], headers: dict, expected: dict[str, int]) -> dict:
    """Seconds from process start until each URL answers 200 with its expected object count."""
    found: dict[str, float] = {}
    deadline = started + WARMUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pvcapid exited with {process.returncode} during warm-up")
        for label, url in urls.items():
            if label in found:
                continue
            try:
                status, body, _ = get_json(url, headers, timeout=30.0)
            except OSError:
                continue
            objects = len(body) if isinstance(body, list) else (1 if isinstance(body, dict) else 0)
            if status == 200 and objects == expected[label]:
                found[label] = time.monotonic() - started
        if found.keys() == urls.keys():
            return found
        time.sleep(0.05)
    raise RuntimeError(f"no correct answer within {WARMUP_TIMEOUT:.0f} s from "
                       f"{', '.join(sorted(urls.keys() - found.keys()))}")


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=100, help="managed networks")
    parser.add_argument("--leases", type=int, default=1000, help="dynamic leases on one network")
    parser.add_argument("--vms", type=int, default=100, help="VMs seeded beside them (bench_vm.py's)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per endpoint and connection count")
    parser.add_argument("--connections", default="1,8", help="comma-separated connection counts (1 is required)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    connections = [int(item) for item in args.connections.split(",") if item.strip()]
    if args.rounds < 1 or args.duration < 1 or not 1 <= args.networks <= 250 or args.leases < 1 or args.vms < 10:
        parser.error("--rounds and --duration at least 1, 1 to 250 networks, 1 lease and 10 VMs at least")
    if args.leases > 16 * 256:
        parser.error("--leases: at most 4096 (the DHCP range of a network)")
    if 1 not in connections:
        parser.error("--connections must include 1")
    if not os.path.exists(WRK):
        print(f"ERROR: {WRK} is missing: apt-get install wrk", file=sys.stderr)
        return 1
    pvcapid = os.path.join(os.path.dirname(sys.executable), "pvcapid")
    env = {key: value for key, value in os.environ.items() if key != "PVC_CONFIG_FILE"}
    busy = args.networks // 2
    vni = FIRST_VNI + busy

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="pvc-bench-network-")
    os.makedirs(os.path.join(tmp, "data"))
    zookeeper = ZooKeeperServer(os.path.join(tmp, "zookeeper"), port=free_port(), heap="512m")
    bare = daemon = None
    log_path = os.path.join(tmp, "pvcapid.log")
    began = time.monotonic()
    checkout = revision()
    print(f"bench_network: checkout {checkout}, {args.networks} managed networks, {args.leases} leases on network "
          f"{vni}, {args.vms} VMs on 16 nodes, wrk {args.duration} s x {args.rounds} round(s), "
          f"connections {connections}", flush=True)
    try:
        bare, bare_url, _ = start_bare(tmp, env)
        try:
            zookeeper.start()
            vm_seconds = seed(zookeeper.address, Cluster(args.vms))
            net_seconds, written = seed_networks(zookeeper.address, args.networks, busy, args.leases)
        except Exception as exc:  # kazoo's own errors too
            raise SetupFailed(f"ZooKeeper or seeding failed: {exc!r}",
                              os.path.join(zookeeper.directory, "zk.log")) from exc
        print(f"seeded {args.vms} VMs in {vm_seconds:.2f} s; {args.networks} networks, {args.leases} leases, "
              f"{RESERVATIONS} reservations and {2 * ACLS} ACLs on network {vni} ({written} znodes) in "
              f"{net_seconds:.2f} s; ZooKeeper holds {srvr(zookeeper.port).get('Node count', 0)} znodes", flush=True)

        config_path, port, token = write_config(tmp, zookeeper.port, PLUGINS)
        headers = {"X-Api-Key": token}
        base = f"http://{HOST}:{port}/api/v1"
        urls = {NETWORKS: f"{base}/network", ONE: f"{base}/network/{vni}", LEASES: f"{base}/network/{vni}/lease",
                ACL: f"{base}/network/{vni}/acl"}
        expected = {NETWORKS: args.networks, ONE: 1, LEASES: args.leases, ACL: 2 * ACLS}
        started_wall, started = time.time(), time.monotonic()
        daemon = start_process([pvcapid, "--config", config_path], log_path, env)
        try:
            warm = wait_correct(daemon, started, urls, headers, expected)
        except (RuntimeError, OSError) as exc:
            raise SetupFailed(str(exc), log_path) from None
        wait_idle(daemon.pid)
        views = view_lines(log_path, started_wall)
        rss_warm = rss_mib(daemon.pid)
        print("warm-up from process start: " + "; ".join(f"{label} correct {seconds:.2f} s"
                                                         for label, seconds in warm.items()))
        print("  the daemon logged: " + ("; ".join(f"'{line}' at {seconds:.2f} s" for seconds, line in views)
                                         if views else "no 'view of ... ready' line"))
        print(f"daemon RSS after warm-up: {rss_warm:.0f} MiB", flush=True)

        sizes = {}
        for label, url in urls.items():
            status, body, size = get_json(url, headers, timeout=60.0)
            objects = len(body) if isinstance(body, list) else (1 if isinstance(body, dict) else 0)
            if status != 200 or objects != expected[label]:
                raise SetupFailed(f"{label} answered {status} with {objects} objects, expected {expected[label]}",
                                  log_path)
            sizes[label] = (objects, size)
        print("pre-flight: " + "; ".join(f"{label} -> 200, {objects} objects, {size / 1024:.1f} KiB"
                                         for label, (objects, size) in sizes.items()), flush=True)

        packets, sequential = count_packets(zookeeper.port, urls, headers)

        targets = {label: (url, headers) for label, url in urls.items()}
        targets[BARE] = (bare_url, {})
        print(f"wrk -t1, {args.duration} s per run, {args.rounds} round(s), connections {connections}, each run "
              f"once the daemon is idle again, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
              f"daemon: node+vm+network plugins, authentication on (X-Api-Key sent), {THREADS} threads", flush=True)
        wrk = wrk_medians(wrk_rounds(targets, connections, args.duration, args.rounds, daemon.pid))
        rss_end = rss_mib(daemon.pid)

        print("\n" + "=" * 100)
        print(f"Networks (checkout {checkout}; {args.networks} networks, {args.leases} leases on network {vni}; "
              f"wrk -t1, medians of {args.rounds} rounds; {os.cpu_count()} CPUs)\n")
        header = ["endpoint", "objects", "body"]
        for conns in connections:
            header += [f"p50 c={conns}", f"req/s c={conns}", f"÷ bare c={conns}"]
        header += ["sequential ms/request", "ZooKeeper packets/request"]
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for label in targets:
            objects, size = sizes.get(label, (None, None))
            row = [label, "-" if objects is None else str(objects), "-" if size is None else f"{size / 1024:.1f} KiB"]
            for conns in connections:
                result = wrk[(label, conns)]
                row += [f"{result['p50']:.2f} ms", f"{result['rps']:.0f}",
                        f"{result['rps'] / wrk[(BARE, conns)]['rps']:.2f}"]
            row += ["-" if label not in sequential else f"{sequential[label]:.2f}",
                    "-" if label not in packets else f"{packets[label]:.2f}"]
            print("| " + " | ".join(row) + " |")
        print(f"\ndaemon RSS {rss_warm:.0f} MiB after warm-up, {rss_end:.0f} MiB after the measurements")
        print("\nIssue 14 targets (printed, never asserted):")
        for label in (NETWORKS, LEASES):
            p50 = wrk[(label, 1)]["p50"]
            print(f"  {label} p50 (c=1) <= 5 ms: {p50:.2f} ms -> {verdict(p50 <= 5)}")
        reads = [label for label in urls if packets[label] >= 1]
        print(f"  served from the view (no ZooKeeper reads per request): "
              f"{'yes' if not reads else 'NO: ' + ', '.join(reads) + ' read ZooKeeper'}")
        print(f"\ntotal run time {time.monotonic() - began:.0f} s")
        return 0
    except SetupFailed as exc:
        print(f"ERROR: benchmark setup failed: {exc}\n--- tail of {exc.log_path} ---\n{tail(exc.log_path, 40)}",
              file=sys.stderr)
        return 1
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"ERROR: benchmark could not run: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_process(daemon, "pvcapid")
        stop_process(bare, "bare app")
        zookeeper.stop()
        keep_or_remove(tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())

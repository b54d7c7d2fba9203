"""Soak two real daemons on one cluster with mixed reads and writes, and print whether they drift.

Run as ``nice -n 5 .venv/bin/python bench/soak.py [--minutes 30] [--window 60] [--clients 8] [--keep]``.
It runs for ``--minutes`` (30 by default), so CI does not run it; a short run
(``--minutes 3 --window 20``) shows that it works.

Why: the other benchmarks measure seconds of one kind of request. A daemon that
leaks a little memory per write, lets a watched view or a cache grow with every
change, or slows down as ZooKeeper's tree churns shows none of that there. This
script holds a realistic mix for half an hour and prints the three figures the
requirement names: zero errors, p99 drift under 20 % and RSS growth under 10 %.

What it does:

* starts a throwaway ZooKeeper and TWO ``pvcapid`` daemons on it (plugins node,
  vm and network; authentication on, each daemon with its own random token and
  data directory, as bench_root.py does; ``vm.delete_grace`` 0.05 s as in the
  test suite, so that an undefine is not v0.6's deliberate 2 s pause, which would
  be the p99 of the mix whatever the daemon did);
* ``POST /api/v1/initialize`` once, three nodes written with kazoo the way a v0.6
  node daemon registers (bench_vm.py's keys), a managed network
  (``POST /api/v1/network``) with dynamic leases written the way v0.6's dnsmasq
  helper writes them, one reservation and one ACL per direction that stay, and
  50 VMs defined through the API (bench_vm.py's ~1.5 KB domain XML), alternately
  through each daemon;
* ``--clients`` threads (8: half on each daemon), each with its own keep-alive
  ``http.client`` connection (reopened when the server closes it), loop a
  weighted mix (``MIX``): the VM list, one VM, the node and network lists, the
  network's leases, reservations and ACLs, a VM's metadata changed (selector and
  limit), a reservation added or (once the client holds ``OWN_RESERVATIONS``)
  its oldest removed, the same for ACLs (random direction and position) and for
  VMs (define, undefine once it holds ``OWN_VMS``; the seeded 50 are never
  removed, so reads and metadata changes always find theirs). Every answer is
  recorded with its latency; anything but a 2xx or an expected 409 (a conflict
  that outlived the daemon's retries) is an error, the first few printed in full;
* every ``--window`` seconds it prints a row: requests, errors, 409s, p50/p99 of
  each daemon, their RSS (VmRSS) and CPU use, and ZooKeeper's node and watch
  counts (``srvr``, ``wchs``: this script's ZooKeeper allows ``wchs`` too, since
  watches left on deleted znodes are a leak of their own);
* at the end: the windows again, a table per operation and per daemon, and the
  verdict figures: total errors; p99 drift = median p99 of the last 3 windows /
  median p99 of the first 3 windows after the warm-up window (window 0) - 1;
  RSS growth from the end of the warm-up window to the end. Then a consistency
  check: the VM list (names, limits, selectors), the network's reservations,
  leases and ACLs read through both daemons equal each other and what
  ZooKeeper holds (read directly with kazoo), waited for at most ``SETTLE`` s.

It prints figures and never asserts on speed; it exits 0 when it measured and
1 (with the log tails) when the setup failed or a daemon died. Everything it
starts is stopped in ``finally`` blocks (process groups), SIGTERM included, and
nothing binds or connects to anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
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
from collections.abc import Callable
from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from pvc_network import schema as net_schema
from pvc_vm import schema as vm_schema

from pvc_core.zkserver import ZooKeeperServer, free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_hostile import check_alive, describe_counts, failure, percentile, preflight  # noqa: E402
from bench_root import HOST, ROOT_PATH, keep_or_remove, start_process, stop_process, tail, wait_ready  # noqa: E402
from bench_vm import (  # noqa: E402 - a sibling script, not a package
    DOMAIN,
    Cluster,
    commit_batches,
    cpu_seconds,
    revision,
    rss_mib,
    srvr,
    table,
    verdict,
    write_config,
)

API = "/api/v1"
DELETE_GRACE = 0.05
PLUGINS = f"""    plugins:
        enabled: [node, vm, network]
    vm:
        delete_grace: {DELETE_GRACE}
"""
LABELS = ("A", "B")
NODES = ("hv1", "hv2", "hv3")
VNI = 4200
NETWORK = "soaknet"
NET_PREFIX = "10.42"
STABLE_VMS = 50
DYNAMIC_LEASES = 20
OWN_VMS = 2            # VMs a client holds before its next VM operation undefines its oldest
OWN_RESERVATIONS = 3
OWN_ACLS = 3
REQUEST_TIMEOUT = 30.0
SETUP_TIMEOUT = 30.0   # seconds for both daemons to show what was seeded
SETTLE = 15.0          # seconds at most for both daemons to agree with ZooKeeper at the end
SHOWN_ERRORS = 5
EDGE = 3               # windows at each end for the p99 drift
DRIFT_TARGET = 20.0
RSS_TARGET = 10.0
# The weighted mix: (operation family, weight). Reads 68 %, writes 32 %.
MIX = (("list VMs", 14), ("get VM", 16), ("list nodes", 10), ("list networks", 8), ("list leases", 8),
       ("list reservations", 6), ("list ACLs", 6), ("VM meta", 10), ("reservation", 10), ("ACL", 8),
       ("VM churn", 4))

Plan = tuple[str, str, str, dict | None, dict | None, Callable[[], None] | None]


@dataclass
class Daemon:
    label: str
    port: int
    token: str
    log: str
    process: subprocess.Popen | None = None


# -- HTTP --------------------------------------------------------------------------------------


class Connection:
    """One keep-alive connection to a daemon (http.client), reopened after the server closed it."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.http: http.client.HTTPConnection | None = None
        self.opened = 0
        self.server_closes = 0

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None

    def send(self, method: str, path: str, params: dict | list | None = None,
             form: dict | None = None) -> tuple[int | str, bytes, float]:
        """Status (or why there was none), body and seconds of one request to ``API + path``."""
        target = API + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        headers = {"X-Api-Key": self.daemon.token}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        began = time.perf_counter()
        try:
            if self.http is None:
                self.http = http.client.HTTPConnection(HOST, self.daemon.port, timeout=REQUEST_TIMEOUT)
                self.opened += 1
            self.http.request(method, target, body=body, headers=headers)
            response = self.http.getresponse()
            data = response.read()
            status: int | str = response.status
            if response.will_close:
                self.server_closes += 1
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            status, data = failure(exc), repr(exc).encode()
            self.close()
        return status, data, time.perf_counter() - began

    def expect(self, method: str, path: str, params: dict | list | None = None, form: dict | None = None,
               allowed: tuple[int, ...] = (200,)) -> object:
        """The JSON of an answer whose status is one of ``allowed``; RuntimeError otherwise."""
        status, data, _ = self.send(method, path, params, form)
        if status not in allowed:
            raise RuntimeError(f"daemon {self.daemon.label}: {method} {path} {params or ''} answered {status}: "
                               f"{data[:300].decode(errors='replace')}")
        try:
            return json.loads(data)
        except ValueError:
            return None


def as_list(body: object) -> list:
    """A v0.6 list answer (one element may come as the object itself; a 404 as a message)."""
    if isinstance(body, list):
        return body
    return [body] if isinstance(body, dict) and "message" not in body else []


# -- the cluster -------------------------------------------------------------------------------


def vm_name(index: int) -> str:
    return f"soak{index:02d}"


def vm_xml(name: str, mac_index: int) -> str:
    uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{name}.soak.pvc"))
    return DOMAIN.format(name=name, uuid=uuid, mac=Cluster.mac(mac_index))


def seed_zookeeper(address: str, what: str) -> None:
    """What other daemons write: the nodes (a v0.6 node daemon) or the dynamic leases (its dnsmasq helper)."""
    client = KazooClient(hosts=address, timeout=30.0)
    client.start(timeout=30)
    try:
        batches = []
        if what == "nodes":
            # bench_vm's node keys, with no VM running yet: its VMs are on pvchv*, not on these nodes.
            for node in NODES:
                values = Cluster(1).node_values(node)
                batch = {f"/nodes/{node}": values.pop("")}
                batches.append(batch | {f"/nodes/{node}/{key}": value for key, value in values.items()})
        else:
            for index in range(DYNAMIC_LEASES):
                mac = Cluster.mac(0xdd0000 + index)
                fields = {"expiry": str(1700000000 + 600 * index), "ipaddr": f"{NET_PREFIX}.1.{10 + index}",
                          "hostname": f"dyn{index:02d}", "clientid": "*"}
                batches.append({net_schema.lease(VNI, mac): "",
                                **{net_schema.lease_field(VNI, mac, key): value for key, value in fields.items()}})
        commit_batches(client, batches, what)
    finally:
        client.stop()
        client.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float = SETUP_TIMEOUT) -> float:
    """Seconds until ``check()`` held; RuntimeError after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def seed(daemons: list[Daemon], zk_address: str) -> None:
    """Initialize, nodes, the network with its leases and lasting reservation and ACLs, the stable VMs."""
    setup = [Connection(daemon) for daemon in daemons]
    first = setup[0]
    try:
        first.expect("POST", "/initialize")
        seed_zookeeper(zk_address, "nodes")
        seconds = wait_for("both daemons list the 3 nodes",
                           lambda: all(len(as_list(c.expect("GET", "/node", allowed=(200, 404)))) == len(NODES)
                                       for c in setup))
        print(f"seeded: cluster initialized through A; nodes {', '.join(NODES)} written with kazoo (both daemons "
              f"list them after {seconds:.2f} s)")
        first.expect("POST", "/network", [("vni", str(VNI)), ("description", NETWORK), ("nettype", "managed"),
                                          ("domain", f"{NETWORK}.local"), ("name_servers", f"{NET_PREFIX}.0.1"),
                                          ("ip4_network", f"{NET_PREFIX}.0.0/16"), ("ip4_gateway", f"{NET_PREFIX}.0.1"),
                                          ("dhcp4", "True"), ("dhcp4_start", f"{NET_PREFIX}.1.2"),
                                          ("dhcp4_end", f"{NET_PREFIX}.1.254")])
        seed_zookeeper(zk_address, "leases")
        setup[-1].expect("POST", f"/network/{VNI}/lease", {"macaddress": Cluster.mac(0xee0000),
                                                          "ipaddress": f"{NET_PREFIX}.2.2", "hostname": "lasting"})
        for connection, direction in zip(setup * 2, net_schema.DIRECTIONS, strict=False):
            connection.expect("POST", f"/network/{VNI}/acl", {"description": f"lasting-{direction}",
                                                              "rule": "tcp dport 22 accept", "direction": direction})
        seconds = wait_for("both daemons list the network's leases",
                           lambda: all(len(as_list(c.expect("GET", f"/network/{VNI}/lease", allowed=(200, 404))))
                                       == DYNAMIC_LEASES for c in setup))
        print(f"seeded: managed network {VNI} ({NETWORK}, {NET_PREFIX}.0.0/16) through A; {DYNAMIC_LEASES} dynamic "
              f"leases written with kazoo (both daemons list them after {seconds:.2f} s); one reservation and one "
              "ACL per direction that stay")
        started = time.monotonic()
        for index in range(STABLE_VMS):
            setup[index % len(setup)].expect("POST", "/vm", form={"xml": vm_xml(vm_name(index), index)})
        defined = time.monotonic() - started
        seconds = wait_for(f"both daemons list the {STABLE_VMS} VMs",
                           lambda: all(len(as_list(c.expect("GET", "/vm", allowed=(200, 404)))) == STABLE_VMS
                                       for c in setup))
        print(f"seeded: {STABLE_VMS} VMs defined through the API, alternately through A and B, in {defined:.1f} s "
              f"({defined / STABLE_VMS * 1000:.0f} ms each; both list them {seconds:.2f} s later)", flush=True)
    finally:
        for connection in setup:
            connection.close()


# -- the load ----------------------------------------------------------------------------------


class Recorder:
    """Every answer: per daemon for the current window, per operation for the whole run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window = self._empty()
        self.ops: dict[str, dict] = {}
        self.errors = 0
        self.shown: list[str] = []
        self.started = time.monotonic()

    @staticmethod
    def _empty() -> dict[str, dict]:
        return {label: {"latencies": [], "errors": 0, "conflicts": 0} for label in LABELS}

    def record(self, daemon: str, op: str, request: str, status: int | str, body: bytes, seconds: float) -> None:
        ok = isinstance(status, int) and 200 <= status < 300
        conflict = status == 409
        line = None
        with self.lock:
            bucket = self.window[daemon]
            bucket["latencies"].append(seconds)
            stats = self.ops.setdefault(op, {"latencies": [], "ok": 0, "conflicts": 0, "errors": 0,
                                             "statuses": collections.Counter()})
            stats["latencies"].append(seconds)
            stats["statuses"][status] += 1
            if ok:
                stats["ok"] += 1
            elif conflict:
                stats["conflicts"] += 1
                bucket["conflicts"] += 1
            else:
                stats["errors"] += 1
                bucket["errors"] += 1
                self.errors += 1
                if len(self.shown) < SHOWN_ERRORS:
                    line = (f"at {time.monotonic() - self.started:.1f} s, daemon {daemon}: {request} -> {status} "
                            f"after {seconds * 1000:.1f} ms: {body[:300].decode(errors='replace').strip()}")
                    self.shown.append(line)
        if line:
            print(f"  ERROR {line}", flush=True)

    def take(self) -> dict[str, dict]:
        with self.lock:
            window, self.window = self.window, self._empty()
        return window


class Client(threading.Thread):
    """One connection's loop over the weighted mix until ``stop`` is set."""

    def __init__(self, index: int, daemon: Daemon, recorder: Recorder, stop: threading.Event):
        super().__init__(name=f"client {index}", daemon=True)
        self.index, self.daemon, self.recorder, self.stop = index, daemon, recorder, stop
        self.connection = Connection(daemon)
        self.rng = random.Random(index)
        self.serial = 0
        self.vms: collections.deque[str] = collections.deque()
        self.reservations: collections.deque[str] = collections.deque()
        self.acls: collections.deque[str] = collections.deque()
        self.error: BaseException | None = None
        self.plans: dict[str, Callable[[], Plan]] = {
            "list VMs": lambda: ("GET /vm", "GET", "/vm", None, None, None),
            "get VM": lambda: ("GET /vm/<name>", "GET", f"/vm/{self.stable()}", None, None, None),
            "list nodes": lambda: ("GET /node", "GET", "/node", None, None, None),
            "list networks": lambda: ("GET /network", "GET", "/network", None, None, None),
            "list leases": lambda: ("GET /network/<vni>/lease", "GET", f"/network/{VNI}/lease", None, None, None),
            "list reservations": lambda: ("GET /network/<vni>/lease?static=true", "GET", f"/network/{VNI}/lease",
                                          {"static": "true"}, None, None),
            "list ACLs": lambda: ("GET /network/<vni>/acl", "GET", f"/network/{VNI}/acl", None, None, None),
            "VM meta": self.plan_meta, "reservation": self.plan_reservation, "ACL": self.plan_acl,
            "VM churn": self.plan_vm,
        }
        self.families = [family for family, _ in MIX]
        self.weights = [weight for _, weight in MIX]

    def stable(self) -> str:
        return vm_name(self.rng.randrange(STABLE_VMS))

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def plan_meta(self) -> Plan:
        limit = ",".join(self.rng.sample(NODES, self.rng.randint(0, len(NODES))))
        params = {"selector": self.rng.choice(vm_schema.SELECTORS), "limit": limit}
        return "POST /vm/<name>/meta", "POST", f"/vm/{self.stable()}/meta", params, None, None

    def plan_reservation(self) -> Plan:
        if len(self.reservations) >= OWN_RESERVATIONS:
            mac = self.reservations[0]
            return ("DELETE /network/<vni>/lease/<mac>", "DELETE", f"/network/{VNI}/lease/{mac}", None, None,
                    self.reservations.popleft)
        serial = self.next_serial()
        mac = Cluster.mac(((self.index + 1) << 16) | (serial & 0xffff))
        params = {"macaddress": mac, "ipaddress": f"{NET_PREFIX}.{16 + self.index}.{2 + serial % 250}",
                  "hostname": f"c{self.index}r{serial}"}
        return ("POST /network/<vni>/lease", "POST", f"/network/{VNI}/lease", params, None,
                lambda: self.reservations.append(mac))

    def plan_acl(self) -> Plan:
        if len(self.acls) >= OWN_ACLS:
            description = self.acls[0]
            return ("DELETE /network/<vni>/acl/<description>", "DELETE", f"/network/{VNI}/acl/{description}",
                    None, None, self.acls.popleft)
        serial = self.next_serial()
        description = f"c{self.index}-acl{serial}"
        params = {"description": description, "rule": f"tcp dport {1024 + serial % 60000} accept",
                  "direction": self.rng.choice(net_schema.DIRECTIONS), "order": str(self.rng.randint(0, 4))}
        return ("POST /network/<vni>/acl", "POST", f"/network/{VNI}/acl", params, None,
                lambda: self.acls.append(description))

    def plan_vm(self) -> Plan:
        if len(self.vms) >= OWN_VMS:
            return "DELETE /vm/<name>", "DELETE", f"/vm/{self.vms[0]}", None, None, self.vms.popleft
        serial = self.next_serial()
        name = f"c{self.index}-vm{serial}"
        xml = vm_xml(name, ((self.index + 1) << 16) | (serial & 0xffff))
        return "POST /vm", "POST", "/vm", None, {"xml": xml}, lambda: self.vms.append(name)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                family = self.rng.choices(self.families, self.weights)[0]
                op, method, path, params, form, done = self.plans[family]()
                status, body, seconds = self.connection.send(method, path, params, form)
                request = f"{method} {path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
                self.recorder.record(self.daemon.label, op, request, status, body, seconds)
                if isinstance(status, int) and 200 <= status < 300 and done is not None:
                    done()
        except BaseException as exc:  # reported by the window loop: a broken client must not look like quiet
            self.error = exc
        finally:
            self.connection.close()


class ZooKeeper(ZooKeeperServer):
    """The suite's ZooKeeper, with ``wchs`` allowed too: watches that outlive their znodes are a leak the
    daemons' RSS shows only in part (a later whitelist line wins over the stock one)."""

    def _write_config(self) -> str:
        path = super()._write_config()
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("4lw.commands.whitelist=ruok,srvr,stat,wchs\n")
        return path


def zk_watches(port: int) -> int | None:
    """ZooKeeper's total watch count (``wchs``), or None when it does not say."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock, sock.makefile("rb") as answer:
            sock.sendall(b"wchs")
            for line in answer:
                if line.startswith(b"Total watches:"):
                    return int(line.split(b":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def sample(daemons: list[Daemon], zk_port: int) -> dict:
    """RSS and CPU seconds of each daemon, ZooKeeper's node and watch counts, now."""
    out: dict = {"time": time.monotonic(), "watches": zk_watches(zk_port)}
    for daemon in daemons:
        out[daemon.label] = (rss_mib(daemon.process.pid), cpu_seconds(daemon.process.pid))
    try:
        out["znodes"] = srvr(zk_port).get("Node count")
    except (OSError, RuntimeError):
        out["znodes"] = None
    return out


def window_row(index: int, window: dict[str, dict], before: dict, after: dict, elapsed: float) -> dict:
    seconds = after["time"] - before["time"]
    row: dict = {"index": index, "end": elapsed, "seconds": seconds, "znodes": after["znodes"],
                 "watches": after["watches"]}
    row["requests"] = sum(len(bucket["latencies"]) for bucket in window.values())
    row["errors"] = sum(bucket["errors"] for bucket in window.values())
    row["conflicts"] = sum(bucket["conflicts"] for bucket in window.values())
    for label, bucket in window.items():
        latencies = bucket["latencies"]
        row[label] = {"requests": len(latencies), "p50": percentile(latencies, 0.50) * 1000 if latencies else None,
                      "p99": percentile(latencies, 0.99) * 1000 if latencies else None, "rss": after[label][0]}
        cpu_before, cpu_after = before[label][1], after[label][1]
        row[label]["cpu"] = (None if cpu_before is None or cpu_after is None
                             else (cpu_after - cpu_before) / seconds * 100)
    everything = [value for bucket in window.values() for value in bucket["latencies"]]
    row["all_p99"] = percentile(everything, 0.99) * 1000 if everything else None
    return row


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


WINDOW_HEADER = ["window", "end s", "requests", "req/s", "errors", "409", *(f"{label} p50 ms" for label in LABELS),
                 *(f"{label} p99 ms" for label in LABELS), *(f"{label} RSS MiB" for label in LABELS),
                 *(f"{label} CPU %" for label in LABELS), "ZK znodes", "ZK watches"]


def window_cells(row: dict) -> list[str]:
    return ([f"{row['index']}" + (" (warm-up)" if row["index"] == 0 else ""), f"{row['end']:.0f}",
             str(row["requests"]), f"{row['requests'] / row['seconds']:.0f}", str(row["errors"]),
             str(row["conflicts"])]
            + [number(row[label]["p50"], 2) for label in LABELS] + [number(row[label]["p99"]) for label in LABELS]
            + [number(row[label]["rss"]) for label in LABELS] + [number(row[label]["cpu"], 0) for label in LABELS]
            + [str(row["znodes"] or "?"), str(row["watches"] if row["watches"] is not None else "?")])


def run_load(args: argparse.Namespace, daemons: list[Daemon], zk_port: int, clients: list[Client],
             stop: threading.Event) -> tuple[Recorder, list[dict]]:
    """The clients for ``--minutes``, a row every ``--window`` seconds."""
    recorder = Recorder()
    clients.extend(Client(index, daemons[index % len(daemons)], recorder, stop) for index in range(args.clients))
    windows = max(1, round(args.minutes * 60 / args.window))
    rows: list[dict] = []
    shares = ", ".join(f"{sum(1 for client in clients if client.daemon is daemon)} on {daemon.label}"
                       for daemon in daemons)
    print(f"\nload: {args.clients} clients ({shares}), {windows} windows of {args.window:g} s; latencies per "
          "daemon over all its operations")
    table(WINDOW_HEADER, [])
    before = sample(daemons, zk_port)
    started = before["time"]
    for client in clients:
        client.start()
    for index in range(windows):
        end = started + (index + 1) * args.window
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            for daemon in daemons:
                check_alive(daemon.process, daemon.log, f"window {index}")
            broken = [client for client in clients if client.error is not None or not client.is_alive()]
            if broken:
                raise RuntimeError(f"{broken[0].name} stopped: {broken[0].error!r}")
        after = sample(daemons, zk_port)
        rows.append(window_row(index, recorder.take(), before, after, after["time"] - started))
        print("| " + " | ".join(window_cells(rows[-1])) + " |", flush=True)
        before = after
    stop.set()
    for client in clients:
        client.join(timeout=REQUEST_TIMEOUT + 5)
    return recorder, rows


# -- the end -----------------------------------------------------------------------------------


def zookeeper_state(address: str) -> dict:
    """VMs, reservations (both containers), dynamic leases and ACLs as ZooKeeper holds them."""
    client = KazooClient(hosts=address, timeout=30.0)
    client.start(timeout=30)
    try:
        def value(path: str) -> str:
            return client.get(path)[0].decode()

        vms = {}
        for uuid in client.get_children(vm_schema.ROOT):
            limit = value(vm_schema.key(uuid, "node_limit"))
            vms[uuid] = (value(vm_schema.vm(uuid)), limit.split(",") if limit else None,
                         value(vm_schema.key(uuid, "node_selector")))
        reservations = {}
        for container in net_schema.RESERVATION_KEYS:
            reservations[container] = {
                mac: (value(f"{net_schema.reservation(VNI, mac, container)}/ipaddr"),
                      value(f"{net_schema.reservation(VNI, mac, container)}/hostname"))
                for mac in client.get_children(net_schema.key(VNI, container))}
        acls = {}
        for direction in net_schema.DIRECTIONS:
            for description in client.get_children(net_schema.rules(VNI, direction)):
                base = net_schema.rule(VNI, direction, description)
                acls[(direction, description)] = (int(value(f"{base}/order")), value(f"{base}/rule"))
        return {"vms": vms, "reservations": reservations[net_schema.RESERVATIONS],
                "reservations (v0.6 node key)": reservations[net_schema.RESERVATIONS_V06_NODE],
                "leases": set(client.get_children(net_schema.key(VNI, net_schema.LEASES))), "acls": acls}
    finally:
        client.stop()
        client.close()


def daemon_state(connection: Connection) -> dict:
    """The same through one daemon's API."""
    vms = {vm["uuid"]: (vm["name"], vm["node_limit"], vm["node_selector"])
           for vm in as_list(connection.expect("GET", "/vm", allowed=(200, 404)))}
    static = as_list(connection.expect("GET", f"/network/{VNI}/lease", {"static": "true"}, allowed=(200, 404)))
    reservations = {entry["mac_address"]: (entry["ip4_address"], entry["hostname"]) for entry in static}
    leases = {entry["mac_address"] for entry in
              as_list(connection.expect("GET", f"/network/{VNI}/lease", allowed=(200, 404)))}
    acls = {(entry["direction"], entry["description"]): (entry["order"], entry["rule"])
            for entry in as_list(connection.expect("GET", f"/network/{VNI}/acl", allowed=(200, 404)))}
    return {"vms": vms, "reservations": reservations, "reservations (v0.6 node key)": reservations,
            "leases": leases, "acls": acls}


def differences(states: dict[str, dict]) -> list[str]:
    """What differs between the states (ZooKeeper's first), and ACL orders that are not 0..n-1 per direction."""
    (reference_name, reference), *others = states.items()
    problems = []
    for part, expected in reference.items():
        for name, state in others:
            got = state[part]
            if got != expected:
                keys_expected = set(expected) if not isinstance(expected, set) else expected
                keys_got = set(got) if not isinstance(got, set) else got
                changed = sorted(str(key) for key in keys_expected & keys_got
                                 if not isinstance(expected, set) and expected[key] != got[key])
                problems.append(f"{part}: {name} has {len(got)}, {reference_name} {len(expected)}; only in "
                                f"{name}: {sorted(map(str, keys_got - keys_expected))[:5]}, only in "
                                f"{reference_name}: {sorted(map(str, keys_expected - keys_got))[:5]}, "
                                f"different: {changed[:5]}")
    for direction in net_schema.DIRECTIONS:
        orders = sorted(order for (chain, _), (order, _) in reference["acls"].items() if chain == direction)
        if orders != list(range(len(orders))):
            problems.append(f"ACL orders of direction '{direction}' in {reference_name} are not 0..n-1: {orders}")
    return problems


def consistency(daemons: list[Daemon], zk_address: str) -> tuple[list[str], float, dict]:
    """Problems left once both daemons had ``SETTLE`` s to agree with ZooKeeper; the seconds it took; the sizes."""
    connections = [Connection(daemon) for daemon in daemons]
    started = time.monotonic()
    try:
        while True:
            states = {"ZooKeeper": zookeeper_state(zk_address)}
            states.update((f"daemon {c.daemon.label}", daemon_state(c)) for c in connections)
            problems = differences(states)
            if not problems or time.monotonic() - started > SETTLE:
                sizes = {part: len(content) for part, content in states["ZooKeeper"].items()}
                return problems, time.monotonic() - started, sizes
            time.sleep(0.25)
    finally:
        for connection in connections:
            connection.close()


def drift(rows: list[dict], key: Callable[[dict], float | None]) -> tuple[float, float, float] | None:
    """(median of the first EDGE windows after the warm-up, median of the last EDGE, last/first - 1 in %)."""
    first = [value for row in rows[1:1 + EDGE] if (value := key(row)) is not None]
    last = [value for row in rows[-EDGE:] if (value := key(row)) is not None]
    if not first or not last:
        return None
    early, late = statistics.median(first), statistics.median(last)
    return early, late, (late / early - 1) * 100


def print_report(rows: list[dict], recorder: Recorder, clients: list[Client], daemons: list[Daemon]) -> None:
    print("\nWindows (as printed above)")
    table(WINDOW_HEADER, [window_cells(row) for row in rows])

    print("\nPer operation, whole run (latencies in ms)")
    op_rows = []
    for op, stats in sorted(recorder.ops.items(), key=lambda item: -len(item[1]["latencies"])):
        latencies = stats["latencies"]
        op_rows.append([op, str(len(latencies)), str(stats["ok"]), str(stats["conflicts"]), str(stats["errors"]),
                        f"{percentile(latencies, 0.5) * 1000:.2f}", f"{percentile(latencies, 0.99) * 1000:.1f}",
                        f"{max(latencies) * 1000:.1f}",
                        describe_counts({str(key): value for key, value in stats["statuses"].items()})])
    table(["operation", "requests", "2xx", "409", "errors", "p50", "p99", "max", "statuses"], op_rows)

    print("\nPer daemon")
    daemon_rows = []
    for daemon in daemons:
        mine = [client for client in clients if client.daemon is daemon]
        daemon_rows.append([daemon.label, str(sum(row[daemon.label]["requests"] for row in rows)),
                            str(len(mine)), str(sum(client.connection.opened for client in mine)),
                            str(sum(client.connection.server_closes for client in mine)),
                            f"{number(rows[0][daemon.label]['rss'])} → {number(rows[-1][daemon.label]['rss'])} MiB"])
    table(["daemon", "requests", "clients", "connections opened", "closed by the server",
           "RSS end of warm-up → end"], daemon_rows)


def print_verdicts(rows: list[dict], recorder: Recorder, daemons: list[Daemon], consistent: tuple) -> None:
    total = sum(row["requests"] for row in rows)
    print("\nVerdicts (printed, never asserted)")
    if len(rows) < 1 + 2 * EDGE:
        print(f"  (only {len(rows)} windows: the first {EDGE} after the warm-up and the last {EDGE} overlap; "
              f"{1 + 2 * EDGE} or more keep them apart)")
    print(f"  errors: {recorder.errors} of {total} requests (plus {sum(row['conflicts'] for row in rows)} "
          f"expected 409s); target 0 -> {verdict(recorder.errors == 0)}")
    first = f"windows {min(1, len(rows) - 1)}-{min(EDGE, len(rows) - 1)}"
    last = f"windows {max(0, len(rows) - EDGE)}-{len(rows) - 1}"
    for label in (*LABELS, "all"):
        found = drift(rows, (lambda row, lb=label: row["all_p99"] if lb == "all" else row[lb]["p99"]))
        name = "both daemons" if label == "all" else f"daemon {label}"
        if found is None:
            print(f"  p99 drift, {name}: not enough windows")
            continue
        early, late, change = found
        print(f"  p99 drift, {name}: median p99 {early:.1f} ms in {first}, {late:.1f} ms in {last}: "
              f"{change:+.1f} %; target under {DRIFT_TARGET:.0f} % -> {verdict(change < DRIFT_TARGET)}")
    for daemon in daemons:
        start, end = rows[0][daemon.label]["rss"], rows[-1][daemon.label]["rss"]
        if start is None or end is None:
            print(f"  RSS growth, daemon {daemon.label}: not measured")
            continue
        growth = (end / start - 1) * 100
        print(f"  RSS growth, daemon {daemon.label}: {start:.1f} MiB at the end of the warm-up window, {end:.1f} MiB "
              f"at the end: {growth:+.1f} %; target under {RSS_TARGET:.0f} % -> {verdict(growth < RSS_TARGET)}")
    if rows[0]["watches"] is not None and rows[-1]["watches"] is not None:
        print(f"  (no target) ZooKeeper: {rows[0]['znodes']} znodes and {rows[0]['watches']} watches at the end of the "
              f"warm-up window, {rows[-1]['znodes']} and {rows[-1]['watches']} at the end")
    problems, seconds, sizes = consistent
    held = ", ".join(f"{part} {size}" for part, size in sizes.items())
    if problems:
        print(f"  consistency: daemons A, B and ZooKeeper still differ {seconds:.1f} s after the load "
              f"({held}) -> MISSED")
        for problem in problems:
            print(f"    {problem}")
    else:
        print(f"  consistency: VM list (names, limits, selectors), reservations, dynamic leases and ACLs equal "
              f"through A, B and ZooKeeper {seconds:.2f} s after the load ({held}); ACL orders dense -> met")


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per printed window")
    parser.add_argument("--clients", type=int, default=8, help="client threads, half on each daemon")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.window <= 0 or args.clients < len(LABELS):
        parser.error(f"--minutes and --window must be positive, --clients at least {len(LABELS)}")
    pvcapid = os.path.join(os.path.dirname(sys.executable), "pvcapid")
    env = {key: value for key, value in os.environ.items() if key != "PVC_CONFIG_FILE"}

    # SIGTERM (a CI timeout, a ^C from a supervisor) still runs the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    print(f"soak: checkout {revision()}; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}, nice {os.nice(0)}; {args.minutes:g} min, "
          f"windows of {args.window:g} s, {args.clients} clients; mix " +
          ", ".join(f"{family} {weight}" for family, weight in MIX), flush=True)
    tmp = tempfile.mkdtemp(prefix="pvc-soak-")
    zookeeper = ZooKeeper(os.path.join(tmp, "zookeeper"), port=free_port())
    daemons: list[Daemon] = []
    clients: list[Client] = []
    stop = threading.Event()
    try:
        zookeeper.start()
        for label in LABELS:
            workdir = os.path.join(tmp, f"daemon-{label}")
            os.makedirs(os.path.join(workdir, "data"))
            config_path, port, token = write_config(workdir, zookeeper.port, PLUGINS)
            while port in (daemon.port for daemon in daemons):
                config_path, port, token = write_config(workdir, zookeeper.port, PLUGINS)
            daemon = Daemon(label, port, token, os.path.join(workdir, "pvcapid.log"))
            daemon.process = start_process([pvcapid, "--config", config_path], daemon.log, env)
            daemons.append(daemon)
        for daemon in daemons:
            wait_ready(f"http://{HOST}:{daemon.port}{ROOT_PATH}", daemon.process, f"pvcapid {daemon.label}",
                       daemon.log)
            preflight(daemon.port, daemon.token)
            print(f"daemon {daemon.label}: pid {daemon.process.pid}, 127.0.0.1:{daemon.port}, "
                  f"RSS {number(rss_mib(daemon.process.pid))} MiB", flush=True)
        seed(daemons, zookeeper.address)

        recorder, rows = run_load(args, daemons, zookeeper.port, clients, stop)
        consistent = consistency(daemons, zookeeper.address)
        print_report(rows, recorder, clients, daemons)
        print_verdicts(rows, recorder, daemons, consistent)
        print(f"\ntotal run time {time.monotonic() - began:.0f} s")
        return 0
    except (RuntimeError, OSError, KazooException, subprocess.TimeoutExpired) as exc:
        print(f"ERROR: soak could not run: {exc}", file=sys.stderr)
        for daemon in daemons:
            if daemon.log not in str(exc):
                print(f"--- tail of {daemon.log} ---\n{tail(daemon.log)}", file=sys.stderr)
        print(f"--- tail of {zookeeper.directory}/zk.log ---\n{tail(os.path.join(zookeeper.directory, 'zk.log'))}",
              file=sys.stderr)
        return 1
    finally:
        stop.set()
        for client in clients:
            if client.is_alive():
                client.join(timeout=REQUEST_TIMEOUT + 5)
        for daemon in daemons:
            stop_process(daemon.process, f"pvcapid {daemon.label}")
        zookeeper.stop()
        keep_or_remove(tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())

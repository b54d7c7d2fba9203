"""A single-host Ceph cluster (1 mon, 1 mgr, 1 OSD) on 127.0.0.1, all state under one directory.

The embedded run (bluestore on a sparse file, so volumes survive a restart)
and the test suite (memstore, for speed) start Ceph the same way, from
Debian's ceph-mon/ceph-mgr/ceph-osd packages and without systemd. The
settings that matter on one host: pool size 1, ``osd crush chooseleaf type =
0``, pool deletion allowed, fast paxos proposals and stats periods. The
mon's two ports are picked once, outside the kernel's ephemeral range (they
are fixed in ceph.conf and the monmap, and must be free at every restart).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

from pvc_core.zkserver import port_free, port_holders, quiet_port

MGR_MODULES = ("mgr_module.py", "mgr_util.py", "balancer", "crash", "devicehealth", "orchestrator",
               "pg_autoscaler", "progress", "rbd_support", "status", "telemetry", "volumes", "iostat")

CONF_TEMPLATE = """[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{port},v1:127.0.0.1:{port1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = {dir}/run
pid file = {dir}/run/$name.pid
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
log to stderr = false
err to stderr = false
mon cluster log file = {dir}/log/cluster.log
crash dir = {dir}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mgr initial modules = iostat
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.05
paxos min wait = 0.01
mgr stats period = 1
mon mgr digest period = 1
debug ms = 0
debug mon = 1
debug osd = 1
debug mgr = 1

[client]
keyring = {dir}/keyring

[mon]
mon data = {dir}/mon.$id
mon cluster log to file = true
mon warn on insecure global id reclaim allowed = false
mon warn on insecure global id reclaim = false

[mgr]
mgr data = {dir}/mgr.$id
keyring = {dir}/mgr.$id/keyring
mon pg warn min per osd = 0

[osd]
osd data = {dir}/osd$id
keyring = {dir}/osd$id/keyring
osd objectstore = {store}
memstore device bytes = {size}
bluestore block create = true
bluestore block size = {size}
bluestore fsck on mount = false
bluestore block db create = false
bluestore block wal create = false
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
osd op num shards = 1
osd op num threads per shard = 2
"""


def _clean_env() -> dict:
    """Daemons read CEPH_ARGS too and fail oddly with an inherited one."""
    return {key: value for key, value in os.environ.items()
            if key not in ("CEPH_ARGS", "CEPH_CONF", "CEPH_KEYRING")}


class LocalCeph:
    """Start (creating it on first start), stop and restart one single-host cluster."""

    def __init__(self, directory: str, objectstore: str = "memstore", size_gb: int = 10,
                 notify: Callable[[str], None] | None = None):
        """``notify`` is told what the start waits for that an operator should know about (the mon's port
        busy); the embedded run prints it."""
        self.directory = os.path.abspath(directory)
        self.objectstore = objectstore
        self.size = size_gb * 1024 ** 3
        self.conf = os.path.join(self.directory, "ceph.conf")
        self.keyring = os.path.join(self.directory, "keyring")
        self.notify = notify or (lambda message: None)
        self.waiting_for: list[int] = []  # the mon's ports a start is waiting for, while it waits

    # -- helpers ---------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=_clean_env(),
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])}... failed: {result.stderr.strip()[-500:]}")
        return result.stdout

    def ceph(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        return self._run("ceph", "-c", self.conf, "--connect-timeout", "10", *args, check=check, timeout=timeout)

    def _daemon(self, *args: str, host: str | None = None) -> None:
        """``host``: the name Ceph records for the daemon's host (NODE_NAME), a simulated node's."""
        env = _clean_env() | ({"NODE_NAME": host} if host else {})
        for _attempt in range(3):  # a daemon exits before forking when the mon is not ready for it yet
            if subprocess.run(list(args), env=env, stdin=subprocess.DEVNULL,
                              capture_output=True).returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError(f"{args[0]} did not start; see {self.directory}/log")

    @property
    def created(self) -> bool:
        return os.path.exists(os.path.join(self.directory, "mon.a", "store.db"))

    # -- lifecycle -------------------------------------------------------------------------

    def create(self) -> None:
        for binary in ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "ceph-authtool", "monmaptool"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is missing: apt-get install ceph-mon ceph-mgr ceph-osd ceph-common")
        shutil.rmtree(self.directory, ignore_errors=True)
        for sub in ("run", "log", "mon.a", "mgr.x", "crash"):
            os.makedirs(os.path.join(self.directory, sub))
        port = quiet_port(count=2)  # v2 and v1
        with open(self.conf, "w", encoding="utf-8") as handle:
            handle.write(CONF_TEMPLATE.format(fsid=uuid.uuid4(), port=port, port1=port + 1, dir=self.directory,
                                              store=self.objectstore, size=self.size))
        self._run("ceph-authtool", "--create-keyring", self.keyring, "--gen-key", "-n", "mon.", "--cap", "mon",
                  "allow *")
        self._run("ceph-authtool", self.keyring, "--gen-key", "-n", "client.admin", "--cap", "mon", "allow *",
                  "--cap", "osd", "allow *", "--cap", "mds", "allow *", "--cap", "mgr", "allow *")
        os.chmod(self.keyring, 0o600)
        monmap = os.path.join(self.directory, "monmap")
        fsid = _conf_value(self.conf, "fsid")
        self._run("monmaptool", "--create", "--clobber", "--fsid", fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{port},v1:127.0.0.1:{port + 1}]", monmap)
        self._run("ceph-mon", "-c", self.conf, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", self.keyring)
        self._start_mon()
        self.ceph("auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *", "mds", "allow *",
                  "-o", os.path.join(self.directory, "mgr.x", "keyring"))
        self.ceph("config", "set", "mgr", "mgr/devicehealth/enable_monitoring", "false", "--force")
        self._start_mgr()
        self.add_osd()
        # clones without protected snapshots, as the provisioner needs
        self.ceph("osd", "set-require-min-compat-client", "mimic")

    def add_osd(self, weight: float | None = None, host: str | None = None) -> str:
        """A new OSD (its data under ``osd<id>``, on this cluster's objectstore), started; its id.

        ``host`` makes Ceph place and report it under that host name (``ceph osd tree``, ``osd status``)
        rather than this machine's, as on the node that would hold its disk; it is kept in
        ``osd<id>/host`` so that a restart keeps it there.
        """
        osd_uuid = str(uuid.uuid4())
        key = self._run("ceph-authtool", "--gen-print-key").strip()
        secret = os.path.join(self.directory, f"osd-new-{osd_uuid}.json")
        with open(secret, "w", encoding="utf-8") as handle:
            json.dump({"cephx_secret": key}, handle)
        try:
            osd_id = self.ceph("osd", "new", osd_uuid, "-i", secret).strip()
        finally:
            os.remove(secret)
        osd_dir = self.osd_dir(osd_id)
        os.makedirs(osd_dir, exist_ok=True)
        self._run("ceph-authtool", "--create-keyring", os.path.join(osd_dir, "keyring"), "--name", f"osd.{osd_id}",
                  "--add-key", key)
        self._run("ceph-osd", "-c", self.conf, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid, "--key", key,
                  timeout=120)
        if host:
            with open(os.path.join(osd_dir, "host"), "w", encoding="utf-8") as handle:
                handle.write(host)
            self.ceph("config", "set", f"osd.{osd_id}", "crush_location", f"root=default host={host}")
        self._daemon("ceph-osd", "-c", self.conf, "-i", osd_id, host=host)
        if weight is not None:
            self.ceph("osd", "crush", "reweight", f"osd.{osd_id}", str(weight))
        return osd_id

    def _host_of(self, osd_id: str) -> str | None:
        try:
            with open(os.path.join(self.osd_dir(osd_id), "host"), encoding="utf-8") as handle:
                return handle.read().strip() or None
        except OSError:
            return None

    def osd_dir(self, osd_id: str) -> str:
        return os.path.join(self.directory, f"osd{osd_id}")

    def osds(self) -> list[str]:
        """The ids of this cluster's OSDs, as Ceph knows them."""
        return [str(osd_id) for osd_id in json.loads(self.ceph("osd", "ls", "-f", "json"))]

    def remove_osd(self, osd_id: str, timeout: float = 300) -> None:
        """Drain (CRUSH weight 0 and out, then wait until Ceph says it is safe to destroy), stop, purge,
        delete its data. Out alone left placement groups on an OSD that kept its CRUSH weight (CRUSH gave
        up its retries on this one-host map), so it never became safe to destroy."""
        self.ceph("osd", "crush", "reweight", f"osd.{osd_id}", "0")
        self.ceph("osd", "out", osd_id)
        deadline = time.monotonic() + timeout
        while not self._safe_to_destroy(osd_id):
            if time.monotonic() > deadline:
                raise RuntimeError(f"OSD {osd_id} still holds data after {timeout:.0f}s")
            time.sleep(0.5)
        pid = self.pids().get(f"osd.{osd_id}")
        if pid is not None:
            _terminate(pid)
        self.ceph("osd", "purge", osd_id, "--yes-i-really-mean-it")
        self.ceph("config", "rm", f"osd.{osd_id}", "crush_location", check=False)
        shutil.rmtree(self.osd_dir(osd_id), ignore_errors=True)

    def _safe_to_destroy(self, osd_id: str) -> bool:
        result = subprocess.run(["ceph", "-c", self.conf, "--connect-timeout", "10", "osd", "safe-to-destroy",
                                 f"osd.{osd_id}"], capture_output=True, text=True, timeout=30, env=_clean_env(),
                                stdin=subprocess.DEVNULL)
        return result.returncode == 0

    def mon_ports(self) -> list[int]:
        """The mon's ports (v2, v1), from ``mon host`` in ceph.conf."""
        return [int(port) for port in re.findall(r":(\d+)(?=[,\]\s]|$)", _conf_value(self.conf, "mon host"))]

    def _wait_mon_ports(self, timeout: float) -> None:
        """Wait until the mon's ports are free, at most ``timeout`` seconds; raise naming them otherwise.

        They are fixed in the monmap, so a restart must get them back. A cluster made before the ports were
        picked outside the ephemeral range may find one held by an outgoing connection (ceph-mon then failed
        with only "Address already in use" in its log); a connection closed first by its own side keeps the
        port in TIME_WAIT for 60 s, so the start's own timeout (120 s by default) is the bound.
        """
        busy = [port for port in self.mon_ports() if not port_free(port, reuse=True)]
        if not busy:
            return
        self.waiting_for = busy
        try:
            self.notify(f"The Ceph mon's {_ports(busy)} in use ({_holders(busy)}); "
                        f"waiting up to {timeout:.0f} s before starting the mon")
            deadline = time.monotonic() + timeout
            while busy and time.monotonic() < deadline:
                time.sleep(0.2)
                busy = [port for port in busy if not port_free(port, reuse=True)]
        finally:
            self.waiting_for = []
        if busy:
            raise RuntimeError(f"the Ceph mon's {_ports(busy)} still in use after {timeout:.0f} s "
                               f"({_holders(busy)}); it is fixed in the monmap, so the mon cannot move: "
                               f"free the port and start again")

    def _start_mon(self) -> None:
        self._daemon("ceph-mon", "-c", self.conf, "-i", "a")
        deadline = time.monotonic() + 60
        while self.ceph("mon", "stat", check=False, timeout=15) == "":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ceph mon did not answer; see {self.directory}/log")
            time.sleep(0.2)

    def _start_mgr(self) -> None:
        modules = os.path.join(self.directory, "mgr-modules")
        if not os.path.isdir(modules):
            os.makedirs(modules)
            for name in MGR_MODULES:
                source = os.path.join("/usr/share/ceph/mgr", name)
                if os.path.exists(source):
                    os.symlink(source, os.path.join(modules, name))
        self._daemon("ceph-mgr", "-c", self.conf, "-i", "x", "--mgr-module-path", modules)

    def start(self, timeout: float = 120) -> LocalCeph:
        """Create on first start; on later starts (bluestore) start the existing daemons."""
        if self.objectstore == "memstore" or not self.created:
            self.create()
        else:
            self._wait_mon_ports(timeout)
            self._start_mon()
            self._start_mgr()
            for entry in sorted(os.listdir(self.directory)):
                if entry.startswith("osd") and entry[3:].isdigit():
                    self._daemon("ceph-osd", "-c", self.conf, "-i", entry[3:], host=self._host_of(entry[3:]))
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.ceph("status", "-f", "json", check=False, timeout=15)
            try:
                status = json.loads(out)
            except ValueError:
                status = {}
            pgmap = status.get("pgmap", {})
            clean = sum(state["count"] for state in pgmap.get("pgs_by_state", [])
                        if active_and_clean(state["state_name"]))
            if (status.get("mgrmap", {}).get("available") and clean == pgmap.get("num_pgs", 0)
                    and pgmap.get("bytes_total", 0) > 0 and status.get("osdmap", {}).get("num_up_osds", 0) >= 1):
                return
            time.sleep(0.3)
        raise RuntimeError(f"Ceph did not become healthy within {timeout:.0f}s; see {self.directory}/log")

    def pids(self) -> dict[str, int]:
        out = {}
        run = os.path.join(self.directory, "run")
        for name in os.listdir(run) if os.path.isdir(run) else []:
            if name.endswith(".pid"):
                try:
                    out[name[:-4]] = int(open(os.path.join(run, name)).read().strip())
                except (OSError, ValueError):
                    pass
        return out

    def stop(self) -> None:
        """OSDs first (an OSD waits ~5 s for a mon that is gone), then mgr, then mon."""
        pids = self.pids()
        order = sorted(pids, key=lambda name: (not name.startswith("osd"), name.startswith("mon")))
        for name in order:
            _terminate(pids[name])

    def kill(self) -> None:
        """Every daemon at once with SIGKILL, as a crash or a power cut stops them (bluestore keeps its
        data; memstore loses it); returns once they are gone."""
        pids = self.pids()
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids.values():
            _gone(pid, timeout=15)


def active_and_clean(state: str) -> bool:
    """A placement group state (``ceph status``'s ``state_name``, flags joined by "+") that serves I/O with all
    its copies: active and clean, whatever flags of background work come with them ("+snaptrim_wait" after
    snapshots are removed, "+scrubbing+deep"). Counting only "active+clean" made a restart after snapshot
    removals wait its whole timeout and report a healthy Ceph as not started."""
    return {"active", "clean"} <= set(state.split("+"))


def _ports(ports: list[int]) -> str:
    """The ports with their verb, for a message: "port 127.0.0.1:X is", "ports 127.0.0.1:X and 127.0.0.1:Y are"."""
    listed = " and ".join(f"127.0.0.1:{port}" for port in ports)
    return f"port {listed} is" if len(ports) == 1 else f"ports {listed} are"


def _holders(ports: list[int]) -> str:
    """What holds the ports, for a message: "held by LISTEN, pid 42 (nc)", or "holder unknown"."""
    held = [holder for port in ports for holder in port_holders(port)]
    return f"held by {'; '.join(held)}" if held else "holder unknown"


def _conf_value(path: str, key: str) -> str:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            name, _, value = line.partition("=")
            if name.strip() == key:
                return value.strip()
    raise KeyError(key)


def _gone(pid: int, timeout: float) -> bool:
    """Whether the process ``pid`` has ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def _terminate(pid: int, timeout: float = 15) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _gone(pid, timeout):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

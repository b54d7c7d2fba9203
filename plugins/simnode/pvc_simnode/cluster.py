"""The simulated nodes of one cluster, and the rules that keep a simulator off a real cluster.

Only one simulator may run a cluster's nodes (a kazoo lock), and it runs
only nodes it created: a node whose ``staticdata`` does not carry the
simulator's kernel name belongs to a real node daemon, so the simulator
refuses to start rather than write beside it. On a cluster whose tree does
not exist yet the check waits for the tree (``POST /initialize``); a refusal
then stops the daemon (``on_refused``: ``runtime.fail``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, LockTimeout, NoNodeError

from . import schema
from .node import Options, SimNode

log = logging.getLogger("pvc.simnode")


class Refused(Exception):
    """The simulator must not run on this cluster; the message is the one line that says why."""


class SimCluster:
    def __init__(self, hosts: str, names: list[str], coordinators: int, options: Options, directory: str,
                 storage: Callable[[], Any] | None = None, on_refused: Callable[[str], None] | None = None):
        self.hosts = hosts
        self.on_refused = on_refused  # a refusal found after start (runtime.fail: the daemon stops)
        self.options = options
        self.storage = storage
        self.nodes: dict[str, SimNode] = {}
        for index, name in enumerate(names):
            self.nodes[name] = SimNode(name, index < coordinators, hosts, options, directory, self.nodes, storage)
        self._admin: KazooClient | None = None
        self._lock: Any = None
        self._timeout = 30.0
        self._started = False
        self._guard = threading.Lock()

    def start(self, timeout: float = 30.0) -> None:
        """Check and take the simulator lock, then start the nodes; on a cluster not initialized yet
        (the lock would create /locks before POST /initialize) all of that waits for its tree."""
        if not self.nodes:
            return
        self._timeout = timeout
        admin = self._admin = KazooClient(hosts=self.hosts, timeout=self.options.session_timeout)
        admin.start(timeout=timeout)
        if admin.exists(schema.NODES):
            try:
                self._claim()
            except Refused:
                self._close_admin()
                raise
        admin.DataWatch(schema.NODES, self._tree_changed)

    def _claim(self) -> None:
        """Refuse a cluster with real nodes, or one whose nodes another simulator runs."""
        if self._lock is not None:
            return
        admin = self._admin
        foreign = [name for name in sorted(admin.get_children(schema.NODES))
                   if not schema.is_simulated(self._staticdata(admin, name))]
        if foreign:
            raise Refused(f"simnode: refusing to start: this cluster has node(s) {', '.join(foreign)} that the "
                          "simulator did not create (real node daemons); remove simnode from pvc.plugins.include")
        lock = admin.Lock(schema.LOCK, "simnode")
        try:
            # kazoo raises (rather than answers False) when the wait runs out; the wait itself is for a
            # crashed predecessor, whose lock goes only when its session expires
            acquired = lock.acquire(timeout=self._timeout)
        except LockTimeout:
            lock.cancel()
            acquired = False
        if not acquired:
            raise Refused("simnode: refusing to start: another simulator already runs this cluster's nodes "
                          f"(it holds {schema.LOCK})")
        self._lock = lock

    @staticmethod
    def _staticdata(admin: KazooClient, name: str) -> str | None:
        try:
            return admin.get(schema.node(name, "staticdata"))[0].decode("utf-8", errors="replace")
        except NoNodeError:
            return None

    def _tree_changed(self, data: bytes | None, stat: Any, *_: Any) -> bool | None:
        """Nodes register once the cluster is initialized (a v0.6 node daemon needs the tree too)."""
        if stat is None or self._admin is None:
            return None
        with self._guard:
            if self._started:
                return False
            self._started = True
        threading.Thread(target=self._start_nodes, name="simnode-start", daemon=True).start()
        return False

    def _start_nodes(self) -> None:
        try:
            self._claim()
        except Refused as exc:
            # the daemon has been serving meanwhile: it stops now (exit status 1)
            log.error("%s; the daemon stops", exc)
            if self.on_refused is not None:
                self.on_refused(str(exc))
            return
        # before any node runs: a node that answers an osd_add meanwhile would see its new OSD adopted
        # as the first node's, with the OSD's data directory as its device
        self.adopt_osds()
        for node in self.nodes.values():
            try:
                node.start()
            except KazooException as exc:
                log.error("simulated node %s did not start: %s", node.name, type(exc).__name__)

    def adopt_osds(self) -> None:
        """Record the local Ceph's OSDs that no node has recorded (the embedded Ceph's first OSD) as the
        first node's, as the node daemon that created them would have."""
        storage = self.storage() if self.storage is not None else None
        if storage is None or self._admin is None:
            return
        try:
            osds = storage.local_osds()
        except Exception as exc:  # noqa: BLE001 - an unreachable Ceph only means nothing to adopt now
            log.warning("simnode: could not list the local Ceph's OSDs: %s", exc)
            return
        first = next(iter(self.nodes))
        recorded = set(self._admin.get_children(schema.OSDS)) if self._admin.exists(schema.OSDS) else set()
        for osd_id, device in osds:
            if osd_id not in recorded:
                transaction = self._admin.transaction()
                transaction.create(schema.osd(osd_id), b"")
                transaction.create(schema.osd(osd_id, "node"), first.encode())
                transaction.create(schema.osd(osd_id, "device"), device.encode())
                transaction.create(schema.osd(osd_id, "stats"), b"{}")
                transaction.commit()
                log.info("simnode: recorded the local Ceph's OSD %s as node %s's", osd_id, first)

    def ready(self) -> bool:
        """Every node that is meant to run has written daemonstate run."""
        return self._started and all(node.running_daemon for node in self.nodes.values() if node.alive)

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop(clean=True)
        for node in self.nodes.values():
            node.hypervisor.power_off()
        self._close_admin()

    def _close_admin(self) -> None:
        if self._admin is None:
            return
        try:
            if self._lock is not None:
                self._lock.release()
            self._admin.stop()
            self._admin.close()
        except KazooException:
            pass
        self._admin = None

    def describe(self) -> list[dict]:
        return [{"name": node.name, "mode": node.mode, "daemon": "run" if node.alive else "stopped",
                 "host": "on" if node.hypervisor.on else "off", "domains": node.hypervisor.running(),
                 "frozen": node.hypervisor.frozen()}
                for node in self.nodes.values()]

    def node(self, name: str) -> SimNode | None:
        return self.nodes.get(name)

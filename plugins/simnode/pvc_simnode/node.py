"""One simulated v0.6 node daemon (``pvcd``): registration, keepalive and every reaction the API relies on.

It has a ZooKeeper session of its own, as a real node daemon does, so what
it writes reaches the API's watched views from outside, and stopping it
really stops its keepalives. Watch callbacks only queue events; one worker
thread acts on them in order, and what must wait (a flush, an incoming
migration, a command of a mailbox) runs in a thread of its own so that the
worker keeps answering (a flushing node still migrates its VMs away).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError

from . import guestagent, schema
from .hypervisor import Hypervisor

log = logging.getLogger("pvc.simnode")

BOOT_LINES = (
    "[    0.000000] Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian 6.1.119-1",
    "[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 ro console=ttyS0,115200",
    "[    0.412117] Run /sbin/init as init process",
    "[  OK  ] Reached target Multi-User System.",
    "",
    "Debian GNU/Linux 12 {name} ttyS0",
    "",
    "{name} login: ",
)
WAITING_STATES = ("migrate", "unmigrate", "shutdown")


@dataclass
class Options:
    """The node configuration a v0.6 pvcd would read from its own file."""

    cpus: int = 8
    memory: int = 16384  # MiB
    keepalive_interval: float = 5.0
    fence_intervals: int = 6
    migrate_timeout: float = 90.0
    console_log_lines: int = 1000
    target_selector: str = "mem"
    session_timeout: float = 10.0
    base_memory: int = 512  # MiB the host itself uses
    ready_on_register: bool = True  # a new node registers flushed; ask for it to be readied, as an operator would
    fsfreeze_limit: float = 30.0  # seconds a guest stays frozen at most (then the node thaws it itself)


class SimNode:
    def __init__(self, name: str, coordinator: bool, hosts: str, options: Options, directory: str,
                 peers: dict[str, SimNode], storage: Callable[[], Any] | None = None):
        self.name = name
        self.mode = "coordinator" if coordinator else "hypervisor"
        self.hosts = hosts
        self.options = options
        self.peers = peers
        self.storage = storage
        self.hypervisor = Hypervisor(directory, name, options.cpus, options.memory)
        self.agent = guestagent.GuestAgent(name, self.hypervisor, options.fsfreeze_limit, lambda: self.zk)
        self.staticdata = f"{options.cpus} {schema.KERNEL} GNU/Linux x86_64"
        self.zk: KazooClient | None = None
        self.alive = False
        self.running_daemon = False  # daemonstate written as run
        self._events: queue.Queue = queue.Queue()
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watched: set[str] = set()
        self._waiting: set[str] = set()
        self._inbound: set[str] = set()  # VMs a peer is migrating here right now (it has not published yet)
        self._mutex = threading.Lock()
        self._generation = 0  # of flush/unflush: a new request aborts the running one
        # The hold on outgoing migrations (``hold``/``step``/``release``): a slow migration on demand, so that
        # tests and demos can follow, cancel or interrupt work under way. It outlives a restart of the daemon.
        self._gate = threading.Condition()
        self._held = False
        self._passes = 0  # held migrations that ``step`` let go and that have not started yet
        self._outgoing: set[str] = set()  # VMs whose held migration waits in a thread of its own

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.alive:
            return
        if not self.hypervisor.on:
            self.hypervisor.power_on()
        self.zk = KazooClient(hosts=self.hosts, timeout=self.options.session_timeout)
        self.zk.start(timeout=max(15.0, self.options.session_timeout))
        registered = self.zk.exists(schema.node(self.name)) is None
        if registered:
            self._create(schema.registration(self.name, self.mode, self.staticdata, int(time.time())))
            if self.options.ready_on_register:
                self._write({schema.node(self.name, "domainstate"): "unflush"})
        else:
            self._write(schema.restart(self.name, self.mode, self.staticdata))
        # A fresh queue, halt flag and watch set per session: the previous worker may have left its stop
        # marker in the old queue, a thread that outlived its join must not serve this session, and the
        # previous session's watches went with its client.
        self._events = queue.Queue()
        self._halt = threading.Event()
        self._watched = set()
        self.alive = True
        self.running_daemon = False
        self._threads = [threading.Thread(target=self._work, args=(self._events,), name=f"simnode-{self.name}",
                                          daemon=True),
                         threading.Thread(target=self._keepalive, args=(self._halt,),
                                          name=f"simnode-{self.name}-keepalive", daemon=True)]
        for thread in self._threads:
            thread.start()
        zk = self.zk
        zk.DataWatch(schema.PRIMARY_NODE, self._watch(("primary",)))
        zk.DataWatch(schema.node(self.name, "domainstate"), self._watch(("domainstate",)))
        zk.DataWatch(schema.CMD_CEPH, self._watch(("command", schema.CMD_CEPH)))
        zk.DataWatch(schema.CMD_DOMAINS, self._watch(("command", schema.CMD_DOMAINS)))
        zk.ChildrenWatch(schema.DOMAINS, self._domains_changed)
        log.info("simulated node %s started (%s)", self.name, self.mode)

    def stop(self, clean: bool = True) -> None:
        """``clean``: the daemon exits (its VMs keep running); otherwise the host crashes with its VMs."""
        if not self.alive:
            return
        self.alive = False
        self._halt.set()
        if clean and self.zk is not None:
            try:
                self._write({schema.node(self.name, "daemonstate"): "shutdown"})
                if self._get(schema.PRIMARY_NODE) == self.name:
                    self._write({schema.PRIMARY_NODE: "none"})
                self._write({schema.node(self.name, "routerstate"):
                             "secondary" if self.mode == "coordinator" else "client",
                             schema.node(self.name, "daemonstate"): "stop"})
            except KazooException:
                log.warning("simulated node %s could not record its clean stop", self.name)
        if not clean:
            self.hypervisor.power_off()
        self._events.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        if self.zk is not None:
            self.zk.stop()
            self.zk.close()
            self.zk = None
        self.running_daemon = False
        log.info("simulated node %s %s", self.name, "stopped" if clean else "killed (keepalives stop)")

    # -- holding outgoing migrations -------------------------------------------------------

    def hold(self) -> None:
        """From now on a live migration away from this node waits before it starts: the VM stays ``migrate``
        with ``node`` its target and runs here, as during a long real migration, until ``step`` or
        ``release``. A waiting migration whose VM is put back (or sent elsewhere) meanwhile is dropped."""
        with self._gate:
            self._held, self._passes = True, 0

    def step(self) -> None:
        """Let one held migration go (the one waiting longest, or the next one to come)."""
        with self._gate:
            self._passes += 1
            self._gate.notify_all()

    def release(self) -> None:
        """Stop holding: every waiting migration goes now, later ones at once."""
        with self._gate:
            self._held, self._passes = False, 0
            self._gate.notify_all()

    def _leave(self, uuid: str, target: str) -> None:
        """A migration away, at once, or in a thread of its own once the hold lets it go."""
        with self._gate:
            held = self._held
        if not held:
            self._migrate_out(uuid, target)
            return
        if uuid in self._outgoing:
            return
        self._outgoing.add(uuid)

        def wait() -> None:
            try:
                while True:
                    if not self.alive or not self.hypervisor.is_running(uuid) or \
                            (self._get(schema.vm(uuid, "state")), self._get(schema.vm(uuid, "node"))) != \
                            ("migrate", target):
                        return  # put back, sent elsewhere or stopped: this migration is not wanted any more
                    with self._gate:
                        if not self._held or self._passes > 0:
                            self._passes -= 1 if self._held else 0
                            break
                        # woken by step/release; the keys are looked at again every 0.05 s, as _await_incoming does
                        self._gate.wait(0.05)
                self._migrate_out(uuid, target)
            finally:
                self._outgoing.discard(uuid)
        self._spawn("outgoing", wait)

    # -- ZooKeeper helpers -----------------------------------------------------------------

    def _get(self, path: str) -> str | None:
        try:
            data, _ = self.zk.get(path)
        except NoNodeError:
            return None
        return data.decode("utf-8", errors="replace")

    def _get_versioned(self, path: str) -> tuple[str | None, int]:
        try:
            data, stat = self.zk.get(path)
        except NoNodeError:
            return None, -1
        return data.decode("utf-8", errors="replace"), stat.version

    def _write(self, values: dict[str, str], check: tuple[str, int] | None = None) -> bool:
        """v0.6's writer: one transaction, create or set per key in sorted order; False if ``check`` failed."""
        transaction = self.zk.transaction()
        if check is not None:
            transaction.check(*check)
        existing = {path: self.zk.exists(path) is not None for path in values}
        for path in sorted(values):
            data = str(values[path]).encode()
            if existing[path]:
                transaction.set_data(path, data)
            else:
                transaction.create(path, data)
        results = transaction.commit()
        failed = [result for result in results if isinstance(result, Exception)]
        if failed and check is not None and isinstance(results[0], (BadVersionError, NoNodeError)):
            return False
        if failed:
            raise failed[0]
        return True

    def _create(self, values: dict[str, str]) -> None:
        transaction = self.zk.transaction()
        for path in sorted(values):
            transaction.create(path, str(values[path]).encode())
        failed = [result for result in transaction.commit() if isinstance(result, Exception)]
        if failed and not isinstance(failed[0], NodeExistsError):
            raise failed[0]

    def _transition(self, uuid: str, expected: str | tuple[str, ...], values: dict[str, str]) -> bool:
        """Write the VM keys ``values`` only while its state is still ``expected``."""
        path = schema.vm(uuid, "state")
        current, version = self._get_versioned(path)
        if current is None or current not in ((expected,) if isinstance(expected, str) else expected):
            return False
        return self._write({schema.vm(uuid, key): value for key, value in values.items()}, check=(path, version))

    # -- events ----------------------------------------------------------------------------

    def _watch(self, event: tuple) -> Callable:
        def callback(data: bytes | None, stat: Any, *_: Any) -> bool | None:
            if not self.alive:
                return False
            self._events.put(event)
            return None
        return callback

    def _domains_changed(self, children: list[str]) -> bool | None:
        if not self.alive:
            return False
        current = set(children)
        for uuid in sorted(current - self._watched):
            self._watched.add(uuid)
            for key in ("state", "node"):
                self.zk.DataWatch(schema.vm(uuid, key), self._vm_watch(uuid))
        for uuid in sorted(self._watched - current):
            self._watched.discard(uuid)
            self._events.put(("vm", uuid))
        return None

    def _vm_watch(self, uuid: str) -> Callable:
        def callback(data: bytes | None, stat: Any, *_: Any) -> bool | None:
            if not self.alive or uuid not in self._watched:
                return False
            self._events.put(("vm", uuid))
            return None
        return callback

    def _work(self, events: queue.Queue) -> None:
        handlers = {"primary": self._primary_changed, "domainstate": self._domainstate_changed,
                    "command": lambda path: self._spawn("command", self._command, path), "vm": self._reconcile}
        while True:
            event = events.get()
            if event is None or not self.alive:
                return
            try:
                handlers[event[0]](*event[1:])
            except KazooException as exc:
                log.warning("simulated node %s: %s while handling %s", self.name, type(exc).__name__, event)
            except Exception:
                log.exception("simulated node %s: error while handling %s", self.name, event)

    def _spawn(self, what: str, target: Callable, *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except KazooException as exc:
                log.warning("simulated node %s: %s during %s", self.name, type(exc).__name__, what)
            except Exception:
                log.exception("simulated node %s: error during %s", self.name, what)
        threading.Thread(target=run, name=f"simnode-{self.name}-{what}", daemon=True).start()

    # -- keepalive, fencing, coordinator role ----------------------------------------------

    def _keepalive(self, halt: threading.Event) -> None:
        own = schema.node(self.name, "daemonstate")
        while not halt.is_set():
            try:
                self.publish(keepalive=True)
                if not self.running_daemon or self._get(own) == "dead":
                    # "dead" while alive: a coordinator saw a keepalive late (a starved machine); v0.6's
                    # fencing gives such a node saving throws, which it passes by running on
                    if self.running_daemon:
                        log.warning("simulated node %s was declared dead while running; back to run", self.name)
                    self._write({own: "run"})
                    self.running_daemon = True
                    self._events.put(("primary",))  # a coordinator contends once it runs
                if self.mode == "coordinator":
                    self._find_dead_nodes()
            except KazooException as exc:
                log.warning("simulated node %s: keepalive failed (%s)", self.name, type(exc).__name__)
            halt.wait(self.options.keepalive_interval)

    def publish(self, keepalive: bool = False) -> None:
        """The node's counters as its keepalive writes them; also right after a VM starts, stops or moves."""
        if self.zk is None:
            return
        with self._mutex:
            running = self.hypervisor.running()
            memalloc, vcpualloc = self.hypervisor.allocation()
            used = min(self.options.memory, self.options.base_memory + memalloc)
            values = {"memtotal": self.options.memory, "memused": used, "memfree": self.options.memory - used,
                      "memalloc": memalloc, "vcpualloc": vcpualloc, "domainscount": len(running),
                      "runningdomains": " ".join(running),
                      "cpuload": f"{0.05 + vcpualloc / max(1, self.options.cpus) / 4:.2f}"}
            if keepalive:
                values["keepalive"] = int(time.time())
            self._write({schema.node(self.name, key): value for key, value in values.items()})

    def _find_dead_nodes(self) -> None:
        """A coordinator marks a node dead whose keepalive is older than interval x fence_intervals.

        There is no IPMI to fence it with, so (as v0.6 after a failed fence) its
        VMs stay where they are; a dead coordinator is forced secondary and a dead
        primary gives up the primary role (v0.6 does both whatever the fence's outcome).
        """
        if (self._get(schema.MAINTENANCE) or "").lower() == "true":
            return
        limit = self.options.keepalive_interval * self.options.fence_intervals
        for name in self.zk.get_children(schema.NODES):
            if name == self.name:
                continue
            state, version = self._get_versioned(schema.node(name, "daemonstate"))
            try:
                seen = int(self._get(schema.node(name, "keepalive")) or 0)
            except ValueError:
                seen = 0
            if state == "run" and time.time() - seen > limit:
                if self._write({schema.node(name, "daemonstate"): "dead"},
                               check=(schema.node(name, "daemonstate"), version)):
                    log.warning("simulated node %s: node %s is dead (no keepalive for %.0f s)", self.name, name,
                                time.time() - seen)
                    if self._get(schema.node(name, "daemonmode")) == "coordinator":
                        self._write({schema.node(name, "routerstate"): "secondary"})
                    primary, primary_version = self._get_versioned(schema.PRIMARY_NODE)
                    if primary == name:
                        self._write({schema.PRIMARY_NODE: "none"}, check=(schema.PRIMARY_NODE, primary_version))

    def _primary_changed(self) -> None:
        own = schema.node(self.name, "routerstate")
        if self.mode != "coordinator":
            if self._get(own) != "client":
                self._write({own: "client"})
            return
        primary, version = self._get_versioned(schema.PRIMARY_NODE)
        router = self._get(own)
        if primary in (None, "", "none") and self.running_daemon and router != "primary":
            self._write({schema.PRIMARY_NODE: self.name}, check=(schema.PRIMARY_NODE, version))
            return  # the watch fires again with the winner's name
        wanted = "primary" if primary == self.name else "secondary"
        if router != wanted:
            self._write({own: wanted})
            log.info("simulated node %s is now %s coordinator", self.name, wanted)

    # -- VMs -------------------------------------------------------------------------------

    def _vm_keys(self, uuid: str) -> dict[str, str | None]:
        return {key: self._get(schema.vm(uuid, key)) for key in ("state", "node", "lastnode", "xml")} | {
            "name": self._get(schema.vm(uuid))}

    def _reconcile(self, uuid: str) -> None:
        """Bring this host in line with the VM's ``state`` and ``node`` (nodes-vms.md §6.1)."""
        vm = self._vm_keys(uuid)
        here = self.hypervisor.is_running(uuid)
        state, home = vm["state"], vm["node"]
        mine = home == self.name
        if vm["name"] is None or state is None:
            if here:  # undefined while running here
                self._power(uuid, on=False)
            return
        if state == "start":
            if mine and not here:
                self._boot(uuid, vm)
            elif here and not mine:
                self._power(uuid, on=False)  # a stray copy
        elif state == "migrate":
            if mine:
                if here and uuid not in self._inbound:  # arrived (live migration) before this event was handled
                    self.publish()
                    self._transition(uuid, "migrate", {"state": "start"})
                else:
                    self._await_incoming(uuid)
            elif here:
                self._leave(uuid, home or "")
        elif state == "restart":
            if mine:
                if here:
                    self._power(uuid, on=False)
                    self._boot(uuid, vm, expected="restart")
                self._transition(uuid, "restart", {"state": "start"})
        elif state == "shutdown":
            if here:
                self._power(uuid, on=False)  # ACPI shutdown of a test-driver guest is immediate
            if here or mine:
                self._transition(uuid, "shutdown", {"state": "stop"})
        elif state == "stop":
            if here:
                self._power(uuid, on=False)
        elif state == "delete" and here and not mine:
            self._power(uuid, on=False)

    def _power(self, uuid: str, on: bool) -> None:
        if not on:
            self.hypervisor.stop(uuid)
        self.publish()

    def _boot(self, uuid: str, vm: dict[str, str | None], expected: str = "start") -> None:
        failure = self.hypervisor.start(vm["xml"] or "")
        if failure is not None:
            log.info("simulated node %s: VM %s failed to start: %s", self.name, vm["name"], failure)
            self._transition(uuid, expected, {"state": "fail", "failedreason": failure})
            return
        # console and failedreason before the node lists the VM as running: a client that waited for
        # that (wait=true) then reads them as they are after this start
        lines = (self._get(schema.vm(uuid, "consolelog")) or "").splitlines()
        lines += [line.format(name=vm["name"]) for line in BOOT_LINES]
        console = "".join(line + "\n" for line in lines[-self.options.console_log_lines:])
        values = {schema.vm(uuid, "consolelog"): console}
        if self._get(schema.vm(uuid, "failedreason")):
            values[schema.vm(uuid, "failedreason")] = ""
        self._write(values)
        self.publish()

    def _migrate_out(self, uuid: str, target: str) -> None:
        peer = self.peers.get(target)
        failure = "the target is not a running simulated node"
        if peer is not None and peer.alive:
            # the target writes start only once this node no longer lists the VM: a client that waited for
            # start then sees both nodes' counters as they are after the move
            peer._inbound.add(uuid)
            try:
                failure = self.hypervisor.migrate_to(uuid, peer.hypervisor)
                if failure is None:
                    self.publish()
            finally:
                peer._inbound.discard(uuid)
        if failure is None:
            peer._events.put(("vm", uuid))
            return
        # live migration failed: cold migration (shut down here, the target starts it)
        log.info("simulated node %s: live migration of %s to %s failed (%s); shutting it down", self.name,
                 uuid, target, failure)
        self._power(uuid, on=False)
        self._transition(uuid, "migrate", {"state": "start"})

    def _await_incoming(self, uuid: str) -> None:
        if uuid in self._waiting:
            return
        self._waiting.add(uuid)

        def wait() -> None:
            try:
                deadline = time.monotonic() + self.options.migrate_timeout
                while self.alive and time.monotonic() < deadline:
                    if self.hypervisor.is_running(uuid) and uuid not in self._inbound:
                        self.publish()
                        self._transition(uuid, "migrate", {"state": "start"})
                        return
                    if self._get(schema.vm(uuid, "state")) != "migrate" \
                            or self._get(schema.vm(uuid, "node")) != self.name:
                        return
                    time.sleep(0.05)
                if self.alive:
                    self._transition(uuid, "migrate", {"state": "fail",
                                                       "failedreason": "Timeout waiting for migrate or shutdown"})
            finally:
                self._waiting.discard(uuid)
        self._spawn("incoming", wait)

    # -- flush and unflush (zookeeper-schema.md §4.1) --------------------------------------

    def _domainstate_changed(self) -> None:
        state = self._get(schema.node(self.name, "domainstate"))
        if state in ("flush", "unflush"):
            self._generation += 1
            work = self._flush if state == "flush" else self._unflush
            self._spawn(state, work, self._generation)

    def _wait_settled(self, uuid: str, generation: int) -> None:
        deadline = time.monotonic() + self.options.migrate_timeout
        while self.alive and generation == self._generation and time.monotonic() < deadline:
            if self._get(schema.vm(uuid, "state")) not in WAITING_STATES:
                return
            time.sleep(0.05)

    def _flush(self, generation: int) -> None:
        for uuid in self.hypervisor.running():
            if not self.alive or generation != self._generation:
                return
            limit, selector, lastnode = (self._get(schema.vm(uuid, key))
                                         for key in ("node_limit", "node_selector", "lastnode"))
            defaults = {}
            if limit is None:
                defaults[schema.vm(uuid, "node_limit")] = limit = ""
            if selector in (None, "None"):
                defaults[schema.vm(uuid, "node_selector")] = selector = self.options.target_selector
            if defaults:
                self._write(defaults)
            target = self._select([item for item in limit.split(",") if item], selector)
            if target is not None:
                moved = self._transition(uuid, ("start", "migrate"), {
                    "state": "migrate", "node": target, "lastnode": lastnode or self.name})
            else:
                moved = self._transition(uuid, "start", {"state": "shutdown", "node_autostart": "True"})
            if moved:
                self._wait_settled(uuid, generation)
        if self.alive and generation == self._generation:
            self.publish()
            path = schema.node(self.name, "domainstate")
            state, version = self._get_versioned(path)
            if state == "flush":
                self._write({schema.node(self.name, "runningdomains"): "", path: "flushed"}, check=(path, version))

    def _unflush(self, generation: int) -> None:
        for uuid in sorted(self.zk.get_children(schema.DOMAINS)):
            if not self.alive or generation != self._generation:
                return
            keys = {key: self._get(schema.vm(uuid, key)) for key in ("state", "node", "lastnode", "node_autostart")}
            if keys["state"] is None:
                continue
            if keys["node_autostart"] == "True" and keys["node"] == self.name:
                self._transition(uuid, keys["state"], {"state": "start", "node": self.name, "lastnode": "",
                                                       "node_autostart": "False"})
            elif keys["lastnode"] == self.name:
                running = keys["state"] == "start"
                if self._transition(uuid, keys["state"], {"state": "migrate" if running else keys["state"],
                                                          "node": self.name, "lastnode": ""}) and running:
                    self._wait_settled(uuid, generation)
        if self.alive and generation == self._generation:
            path = schema.node(self.name, "domainstate")
            state, version = self._get_versioned(path)
            if state == "unflush":
                self._write({path: "ready"}, check=(path, version))

    def _select(self, limit: list[str], selector: str) -> str | None:
        """The node daemon's own copy of target selection (nodes-vms.md §4), ties to the first name."""
        measures = {"mem": lambda k: -(k["memused"] + k["memfree"] - k["memalloc"]), "load": lambda k: k["cpuload"],
                    "vcpus": lambda k: k["vcpualloc"], "vms": lambda k: k["domainscount"]}
        if selector not in measures:
            return None
        best, bound = None, 0.0 if selector == "mem" else 9999.0
        for name in sorted(self.zk.get_children(schema.NODES)):
            if name == self.name or (limit and name not in limit):
                continue
            if (self._get(schema.node(name, "daemonstate")), self._get(schema.node(name, "domainstate"))) \
                    != ("run", "ready"):
                continue
            keys = {}
            for key in ("memused", "memfree", "memalloc", "cpuload", "vcpualloc", "domainscount"):
                try:
                    keys[key] = float(self._get(schema.node(name, key)) or 0)
                except ValueError:
                    keys[key] = 0.0
            value = measures[selector](keys)
            if value < bound:
                best, bound = name, value
        return best

    # -- the command mailboxes (zookeeper-schema.md §8.2) ---------------------------------

    def _work_for(self, path: str, command: str, args: list[str]) -> Callable[[], bool] | None:
        """What this node does for a command, or None when it is another node's (or one the API runs itself)."""
        if path == schema.CMD_DOMAINS:
            if command in guestagent.COMMANDS and len(args) == 1 and \
                    self._get(schema.vm(args[0], "node")) == self.name:
                return lambda: self.agent.run(command, args[0])
        elif command == "osd_add" and len(args) == 3 and args[0] == self.name:
            return lambda: self._osd_add(args[1], args[2])
        elif command == "osd_remove" and len(args) == 1 and self._get(schema.osd(args[0], "node")) == self.name:
            return lambda: self._osd_remove(args[0])
        return None

    def _command(self, path: str) -> None:
        value = self._get(path) or ""
        parts = value.split()
        if len(parts) != 2 or value.startswith(("success-", "failure-")):
            return
        command, args = parts[0], parts[1].split(",")
        work = self._work_for(path, command, args)
        if work is None:
            return
        lock = self.zk.WriteLock(path, str(uuidlib.uuid1()))
        with lock:
            if self._get(path) != value:
                return  # the API gave up on it (or another command came) before this node took its lock
            try:
                ok = work()
            except Exception:
                log.exception("simulated node %s: %s failed", self.name, command)
                ok = False
            self._write({path: f"{'success' if ok else 'failure'}-{value}"})
            time.sleep(1)

    def _local_ceph(self) -> Any:
        storage = self.storage() if self.storage is not None else None
        if storage is None:
            raise RuntimeError("no local Ceph to add OSDs to (the ceph plugin is not enabled)")
        return storage

    def _osd_add(self, device: str, weight: str) -> bool:
        osd_id = self._local_ceph().add_local_osd(float(weight), self.name)
        self._create({schema.osd(osd_id): "", schema.osd(osd_id, "node"): self.name,
                      schema.osd(osd_id, "device"): device, schema.osd(osd_id, "stats"): "{}"})
        log.info("simulated node %s: created OSD %s (%s, weight %s)", self.name, osd_id, device, weight)
        return True

    def _osd_remove(self, osd_id: str) -> bool:
        self._local_ceph().remove_local_osd(osd_id)
        self.zk.delete(schema.osd(osd_id), recursive=True)
        log.info("simulated node %s: removed OSD %s", self.name, osd_id)
        return True

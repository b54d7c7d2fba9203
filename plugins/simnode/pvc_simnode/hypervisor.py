"""One simulated host: a private libvirt test-driver connection whose domains are the node's VMs.

Each ``test:///<file>`` connection holds its own state, so every simulated
node gets its own host definition (CPUs, memory) and its own set of running
domains; "running" means a real libvirt domain was created from the VM's
XML, so an XML libvirt rejects fails to start exactly as on a node. Live
migration is libvirt's job between hosts, so it is modelled here too: the
domain is created on the target host, then destroyed on the source.
A guest's filesystems are frozen and thawed through libvirt's own
virDomainFSFreeze/Thaw, which the test driver implements as a guest agent
would; since libvirt cannot say whether a guest is frozen, the host keeps
that itself (a destroyed or migrated domain leaves it).
"""

from __future__ import annotations

import os
import threading
from typing import Any

HOST_XML = """<node>
  <cpu><mhz>2400</mhz><model>x86_64</model><active>{cpus}</active><nodes>1</nodes><sockets>1</sockets>
    <cores>{cpus}</cores><threads>1</threads></cpu>
  <memory>{kib}</memory>
</node>
"""


class Hypervisor:
    def __init__(self, directory: str, name: str, cpus: int, memory_mib: int):
        self.path = os.path.join(directory, f"{name}.xml")
        self.cpus = cpus
        self.memory_mib = memory_mib
        self._lock = threading.RLock()
        self._connection: Any = None
        self._frozen: set[str] = set()

    def power_on(self) -> None:
        """A fresh host with no domains (a rebooted or newly installed node)."""
        import libvirt
        libvirt.registerErrorHandler(lambda *args: None, None)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.write(HOST_XML.format(cpus=self.cpus, kib=self.memory_mib * 1024))
        with self._lock:
            self.power_off()
            self._connection = libvirt.open(f"test://{self.path}")

    def power_off(self) -> None:
        """Every domain goes with the host."""
        with self._lock:
            self._frozen.clear()
            if self._connection is not None:
                try:
                    self._connection.close()
                except Exception:  # noqa: BLE001 - a closed test connection has nothing left to release
                    pass
                self._connection = None

    @property
    def on(self) -> bool:
        return self._connection is not None

    def _domain(self, uuid: str) -> Any:
        import libvirt
        try:
            return self._connection.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return None

    def running(self) -> list[str]:
        """UUIDs of the running domains, sorted."""
        with self._lock:
            if self._connection is None:
                return []
            return sorted(domain.UUIDString() for domain in self._connection.listAllDomains()
                          if domain.isActive())

    def is_running(self, uuid: str) -> bool:
        with self._lock:
            if self._connection is None:
                return False
            domain = self._domain(uuid)
            return domain is not None and bool(domain.isActive())

    def start(self, xml: str) -> str | None:
        """Create the domain; None on success, else libvirt's error text (what v0.6 puts in failedreason)."""
        import libvirt
        with self._lock:
            if self._connection is None:
                return "the host is powered off"
            try:
                self._connection.createXML(xml, 0)
            except libvirt.libvirtError as exc:
                return str(exc)
            return None

    def stop(self, uuid: str) -> None:
        """Destroy (forced stop); a graceful shutdown of a test-driver guest is just as immediate."""
        import libvirt
        with self._lock:
            if self._connection is None:
                return
            self._frozen.discard(uuid)
            domain = self._domain(uuid)
            if domain is not None:
                try:
                    domain.destroy()
                except libvirt.libvirtError:
                    pass  # already gone

    def migrate_to(self, uuid: str, target: Hypervisor) -> str | None:
        """Live migration: the domain appears running on ``target`` before it leaves this host."""
        with self._lock:
            domain = self._domain(uuid) if self._connection is not None else None
            if domain is None:
                return "the domain is not running on the source host"
            xml = domain.XMLDesc(0)
        failure = target.start(xml)
        if failure is None:
            self.stop(uuid)
        return failure

    def allocation(self) -> tuple[int, int]:
        """(memory MiB, vCPUs) of the running domains: the node's memalloc and vcpualloc."""
        with self._lock:
            if self._connection is None:
                return 0, 0
            memory = vcpus = 0
            for domain in self._connection.listAllDomains():
                if domain.isActive():
                    _state, _max, current, count, _cpu = domain.info()
                    memory += current // 1024
                    vcpus += count
            return memory, vcpus

    def freeze(self, uuid: str) -> str | None:
        """Freeze the running guest's filesystems; None on success, else why not."""
        return self._agent(uuid, freeze=True)

    def thaw(self, uuid: str) -> str | None:
        """Thaw them (a guest that is not frozen is thawed already: success, as with libvirt)."""
        return self._agent(uuid, freeze=False)

    def _agent(self, uuid: str, freeze: bool) -> str | None:
        import libvirt
        with self._lock:
            domain = self._domain(uuid) if self._connection is not None else None
            if domain is None or not domain.isActive():
                return "the domain is not running on this host"
            try:
                if freeze:
                    domain.fsFreeze()
                    self._frozen.add(uuid)
                else:
                    domain.fsThaw()
                    self._frozen.discard(uuid)
            except libvirt.libvirtError as exc:
                return str(exc)
            return None

    def frozen(self) -> list[str]:
        """UUIDs of the running domains whose filesystems are frozen, sorted."""
        with self._lock:
            return sorted(self._frozen)

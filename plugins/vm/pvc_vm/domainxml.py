"""libvirt domain XML: parsing, libvirt's own schema check, and the fields of the VM object.

Parsing an XML document per VM per list request is what made v0.6 lists slow,
so the derived fields are cached per XML text (a VM's XML changes rarely).
Validation uses libvirt's RNG schema through the in-process ``test:///default``
driver, which answers in milliseconds and needs no daemon.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

from lxml import etree

from pvc_core.errors import BadRequest

_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True, huge_tree=False)
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>\s*")


class Domain:
    """A parsed, normalised domain document."""

    def __init__(self, root: Any):
        self.root = root

    @property
    def name(self) -> str | None:
        return _text(self.root.find("name"))

    @property
    def uuid(self) -> str | None:
        return _text(self.root.find("uuid"))

    def pretty(self) -> str:
        """What is stored in ZooKeeper: lxml's pretty print, as v0.6 stored it."""
        return etree.tostring(self.root, pretty_print=True).decode()

    def rbd_volumes(self) -> list[str]:
        return [disk["name"] for disk in _disks(self.root) if disk.get("type") == "rbd" and disk.get("name")]


def parse(text: str) -> Domain:
    """Parse submitted XML; 400 with the parser's message when it is not well-formed."""
    cleaned = _DECLARATION.sub("", text or "", count=1)  # v0.6 refused declarations; strip them
    try:
        root = etree.fromstring(cleaned.encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise BadRequest(f"Error: XML is malformed or incorrect: {exc}") from None
    if root.tag != "domain":
        raise BadRequest(f"Error: XML is malformed or incorrect: the root element is <{root.tag}>, "
                         "expected <domain>")
    return Domain(root)


class SchemaValidator:
    """libvirt's RNG validation through the test driver, one document at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None

    def _connect(self) -> Any:
        import libvirt
        libvirt.registerErrorHandler(lambda *args: None, None)  # no stderr noise per error
        connection = libvirt.open("test:///default")
        for domain in connection.listAllDomains():  # the driver's sample domain would clash by name
            if domain.isActive():
                domain.destroy()
            domain.undefine()
        return connection

    def validate(self, xml: str) -> None:
        import libvirt
        with self._lock:
            if self._connection is None:
                self._connection = self._connect()
            try:
                domain = self._connection.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            except libvirt.libvirtError as exc:
                message = " ".join(str(exc).split())
                raise BadRequest(f"Error: XML is malformed or incorrect: {message}") from None
            domain.undefine()


def _text(element: Any) -> str | None:
    return None if element is None else (element.text or "")


def _attr(element: Any, name: str) -> str | None:
    return None if element is None else element.get(name)


def _disks(root: Any) -> list[dict]:
    out = []
    for disk in root.iterfind("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        kind = disk.get("type")
        if kind == "network":
            out.append({"type": _attr(source, "protocol"), "name": _attr(source, "name"),
                        "dev": _attr(target, "dev"), "bus": _attr(target, "bus")})
        elif kind == "file":
            out.append({"type": "file", "name": _attr(source, "file"), "dev": _attr(target, "dev"),
                        "bus": _attr(target, "bus")})
        else:
            out.append({})
    return out


# libvirt's memory units in bytes (formatdomain: "b"/"bytes", "KB" = 1000, "k"/"KiB" = 1024, and so on up to E).
_UNITS = {"b": 1, "bytes": 1, **{name: 1000 ** power for power, name in enumerate(("KB", "MB", "GB", "TB", "PB", "EB"),
                                                                                   start=1)},
          **{name: 1024 ** power for power, names in enumerate((("k", "K", "KiB"), ("M", "MiB"), ("G", "GiB"),
                                                                  ("T", "TiB"), ("P", "PiB"), ("E", "EiB")), start=1)
             for name in names}}


def _memory(element: Any) -> int | None:
    """The memory in MiB (rounded down), whatever libvirt unit the XML uses. v0.6 converted only KiB and GiB
    and passed any other unit's number through (536870912 'bytes' showed as 536870912 MiB, while the node
    counted 512); an unknown unit keeps that (libvirt's schema refuses one at define)."""
    if element is None or not ((element.text or "").strip().isascii() and (element.text or "").strip().isdigit()):
        return None
    value, unit = int(element.text.strip()), element.get("unit", "KiB")
    factor = _UNITS.get(unit)
    return value if factor is None else value * factor // 1024 ** 2


def rbd_disks(xml: str) -> list[str]:
    """``pool/volume`` of each rbd disk of a stored document (through ``info``'s cache): the volumes the ceph
    plugin asks about (the VMs using one; the uploads holding any of them before the VM runs)."""
    return [disk["name"] for disk in info(xml)["disks"] if disk.get("type") == "rbd" and disk.get("name")]


@functools.lru_cache(maxsize=65536)
def interfaces(xml: str) -> tuple[tuple[str, str], ...]:
    """``(mac in lower case, source bridge)`` of each interface: what lookups across every VM need.

    Kept for every VM (a few hundred bytes each), where the whole ``info`` (~4 KB) is not:
    the VM answers themselves are kept serialized by the view.
    """
    return tuple(((network.get("mac") or "").lower(), network.get("source") or "")
                 for network in info(xml)["networks"])


# Small: the view keeps each VM's serialized answer, so a document is parsed again only when its VM
# changes; at 2,048 (about 6 KB each with the text it keeps alive) a soak run's VM churn filled it
# to 13 MiB of RSS that looked like growth.
@functools.lru_cache(maxsize=256)
def info(xml: str) -> dict:
    """The XML-derived fields of the v0.6 VM object (nodes-vms.md §3.1), cached per document.

    Elements v0.6 required (and answered 500 without) come back as null here.
    Callers must not mutate the result.
    """
    try:
        root = etree.fromstring(_DECLARATION.sub("", xml, count=1).encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError:
        return {"name": None, "uuid": None, "description": "N/A", "memory": None, "vcpu": None,
                "vcpu_topology": "N/A", "networks": [], "type": None, "arch": None, "machine": None,
                "console": None, "emulator": None, "features": [], "disks": [], "controllers": [], "xml": xml}
    topology = root.find("cpu/topology")
    os_type = root.find("os/type")
    vcpu_text = (_text(root.find("vcpu")) or "").strip()
    networks = []
    for interface in root.iterfind("devices/interface"):
        kind = interface.get("type")
        networks.append({"type": kind, "mac": _attr(interface.find("mac"), "address"),
                         "source": _attr(interface.find("source"), kind) if kind else None,
                         "model": _attr(interface.find("model"), "type")})
    features = root.find("features")
    description = root.find("description")
    return {
        "name": _text(root.find("name")),
        "uuid": _text(root.find("uuid")),
        "description": description.text if description is not None and description.text else "N/A",
        "memory": _memory(root.find("memory")),
        "vcpu": int(vcpu_text) if vcpu_text.isascii() and vcpu_text.isdigit() else None,
        "vcpu_topology": "/".join(topology.get(k, "") for k in ("sockets", "cores", "threads"))
        if topology is not None else "N/A",
        "networks": networks,
        "type": _text(os_type),
        "arch": _attr(os_type, "arch"),
        "machine": _attr(os_type, "machine"),
        "console": _attr(root.find("devices/console"), "type"),
        "emulator": _text(root.find("devices/emulator")),
        "features": [child.tag for child in features if isinstance(child.tag, str)] if features is not None else [],
        "disks": _disks(root),
        "controllers": [{"type": controller.get("type"), "model": controller.get("model", "none")}
                        for controller in root.iterfind("devices/controller")],
        "xml": etree.tostring(root).decode().replace('"', "'"),
    }

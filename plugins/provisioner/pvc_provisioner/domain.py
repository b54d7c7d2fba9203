"""The domain XML a provisioned VM gets (provisioner.md §3.5) and its MAC addresses (§3.5.3).

Built with ElementTree so every value is escaped (§3.5.2 "Required"), and
schema-valid as DECISIONS asks: ``driver`` in the vhostmd disk, a console
always present (v0.7), no ``auth`` element when no secret UUID is configured
(an empty ``uuid`` fails libvirt's RNG), monitor names without ``:port``.
"""

from __future__ import annotations

import datetime
import random
import re
import string
from xml.etree import ElementTree as ET

MAC_PREFIX = "52:54:01"
_SUFFIX = re.compile(r"([0-9]+)$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def vm_id(name: str) -> int:
    """DECISIONS: the VM name's numeric suffix (``web12`` → 12), 0 without one."""
    match = _SUFFIX.search(name)
    return int(match.group(1)) if match else 0


def render_mac(template: str, vmid: int, netid: int) -> str:
    """A MAC from the network template, ``str.format`` with only prefix, vmid and netid (§3.5.3)."""
    fields = {"prefix": MAC_PREFIX, "vmid": format(vmid % 16, "x"), "netid": format(netid % 16, "x")}
    for _literal, name, _spec, _conversion in string.Formatter().parse(template):
        if name is not None and name not in fields:
            raise ValueError(f"MAC template {template!r} uses the unknown field {{{name}}}; "
                             "only {prefix}, {vmid} and {netid} exist")
    try:
        return template.format(**fields)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"MAC template {template!r} is malformed: {exc}") from None


def check_mac_template(template: str) -> None:
    """ValueError unless the template renders a unicast MAC address for every VM id and interface
    (one hex digit each), so that a bad template is refused when stored, not when a VM is created."""
    for vmid in range(16):
        for netid in range(16):
            mac = render_mac(template, vmid, netid)
            if not _MAC.match(mac):
                raise ValueError(f"it renders {mac!r}, not six ':'-separated hex pairs")
            if int(mac[:2], 16) & 1:
                raise ValueError(f"it renders {mac!r}, a multicast address (the first octet must be even)")


def random_mac(rng: random.Random | None = None) -> str:
    rng = rng or random.SystemRandom()
    return "52:54:00:" + ":".join(format(rng.randint(0x10, 0xEE), "02x") for _ in range(3))


def macs(mac_template: str, vmid: int, count: int) -> list[str]:
    if mac_template:
        return [render_mac(mac_template, vmid, netid) for netid in range(count)]
    return [random_mac() for _ in range(count)]


def monitors(settings: dict, coordinators: list[str]) -> list[str]:
    """``h.{storage_domain}`` per storage host; the coordinators (without ``:port``) when none is set."""
    hosts = [str(host) for host in settings.get("storage_hosts") or []]
    if not hosts:
        hosts = [str(host).rsplit(":", 1)[0] if str(host).count(":") == 1 else str(host) for host in coordinators]
    domain = settings.get("storage_domain") or ""
    return [f"{host}.{domain}" if domain else host for host in hosts]


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {key.rstrip("_"): value for key, value in attrs.items()})
    if text is not None:
        element.text = text
    return element


def render(name: str, uuid: str, profile: str, system: dict, nets: list[dict], mac_list: list[str],
           disks: list[dict], arch: str, monitor_hosts: list[str], monitor_port: str, secret_uuid: str,
           now: datetime.datetime | None = None) -> str:
    """The §3.5.2 document, in its element order."""
    now = now or datetime.datetime.now()
    domain = ET.Element("domain", {"type": "kvm"})
    _sub(domain, "name", name)
    _sub(domain, "uuid", uuid)
    _sub(domain, "description", f"PVC provisioner @ {now.strftime('%Y-%m-%d %H:%M:%S.%f')}, profile '{profile}'")
    _sub(domain, "memory", str(system["vram_mb"]), unit="MiB")
    _sub(domain, "vcpu", str(system["vcpu_count"]))
    cpu = _sub(domain, "cpu")
    _sub(cpu, "topology", sockets="1", cores=str(system["vcpu_count"]), threads="1")
    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm", arch=arch, machine="pc-i440fx-2.7")
    _sub(os_element, "bootmenu", enable="yes")
    _sub(os_element, "boot", dev="cdrom")
    _sub(os_element, "boot", dev="hd")
    features = _sub(domain, "features")
    for feature in ("acpi", "apic", "pae"):
        _sub(features, feature)
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "restart")
    devices = _sub(domain, "devices")
    _sub(devices, "console", type="pty")
    for net, mac in zip(nets, mac_list, strict=True):
        interface = _sub(devices, "interface", type="bridge")
        _sub(interface, "mac", address=mac)
        _sub(interface, "source", bridge=f"vmbr{net['vni']}")
        _sub(interface, "model", type="virtio")
    for disk in disks:
        element = _sub(devices, "disk", type="network", device="disk")
        _sub(element, "driver", name="qemu", discard="unmap")
        _sub(element, "target", dev=disk["disk_id"], bus="scsi")
        if secret_uuid:
            auth = _sub(element, "auth", username="libvirt")
            _sub(auth, "secret", type="ceph", uuid=secret_uuid)
        source = _sub(element, "source", protocol="rbd", name=f"{disk['pool']}/{name}_{disk['disk_id']}")
        for host in monitor_hosts:
            _sub(source, "host", name=host, port=str(monitor_port))
    vhostmd = _sub(devices, "disk", type="file", device="disk")
    _sub(vhostmd, "driver", name="qemu", type="raw")
    _sub(vhostmd, "source", file="/dev/shm/vhostmd0")
    _sub(vhostmd, "target", dev="sdz", bus="usb")
    _sub(vhostmd, "readonly")
    _sub(devices, "emulator", "/usr/bin/kvm")
    _sub(devices, "controller", type="usb", index="0")
    _sub(devices, "controller", type="pci", index="0", model="pci-root")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "rate", period="1000", bytes="2048")
    _sub(rng, "backend", "/dev/random", model="random")
    if system["serial"]:
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "log", file=f"/var/log/libvirt/{name}.log", append="on")
    if system["vnc"]:
        _sub(devices, "graphics", type="vnc", port="5900", autoport="yes",
             listen=system["vnc_bind"] or "127.0.0.1")
    _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


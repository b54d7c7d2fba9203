"""Who is asking (provisioner.md §5.2): source address → dynamic DHCPv4 lease → MAC → VM.

Only dynamic leases of managed networks count (static reservations are not
consulted, as in v0.6); when several leases hold the address, the last one
found wins (networks by VNI, leases by MAC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pvc_network import schema as net_schema
from pvc_vm import domainxml


@dataclass
class Caller:
    uuid: str
    name: str
    profile: str | None  # None: the VM has no profile


def lease_mac(zk: Any, address: str) -> str | None:
    vnis = sorted((child for child in zk.children(net_schema.ROOT) or [] if child.isdigit()), key=int)
    types = zk.get_many(net_schema.key(vni, "nettype") for vni in vnis)
    managed = [vni for vni in vnis if types[net_schema.key(vni, "nettype")] == "managed"]
    leases = zk.children_many(net_schema.key(vni, net_schema.LEASES) for vni in managed)
    paths = [f"{net_schema.lease(vni, mac)}/ipaddr" for vni in managed
             for mac in sorted(leases[net_schema.key(vni, net_schema.LEASES)] or [])]
    found = None
    for path, value in zk.get_many(paths).items():
        if value == address:
            found = path.rsplit("/", 2)[-2]
    return found


def vm_with_mac(entries: dict[str, dict], mac: str) -> Caller | None:
    wanted = mac.lower()
    for uuid, entry in entries.items():
        networks = domainxml.info(entry.get("xml") or "")["networks"]
        if any((network.get("mac") or "").lower() == wanted for network in networks):
            profile = entry.get("profile")
            return Caller(uuid, entry.get("") or "", profile if profile not in (None, "", "None") else None)
    return None


def identify(runtime: Any, address: str) -> Caller | None:
    mac = lease_mac(runtime.zk, address)
    if mac is None:
        return None
    return vm_with_mac(runtime.service("vm").entries(), mac)

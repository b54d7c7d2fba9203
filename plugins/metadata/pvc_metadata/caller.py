"""Who is asking (provisioner.md §5.2): source address → dynamic DHCPv4 lease → MAC → VM.

Only dynamic leases of managed networks count (static reservations are not
consulted, as in v0.6); when several leases hold the address, the last one
found wins (networks by VNI, leases by MAC). Both steps are questions to the
services the network and vm plugins publish: this plugin knows neither their
modules nor their ZooKeeper keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Caller:
    uuid: str
    name: str
    profile: str | None  # None: the VM has no profile


def identify(runtime: Any, address: str) -> Caller | None:
    mac = runtime.service("network").lease_mac(address)
    if mac is None:
        return None
    vm = runtime.service("vm").with_mac(mac)
    return Caller(vm["uuid"], vm["name"], vm["profile"]) if vm is not None else None

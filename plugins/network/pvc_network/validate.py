"""Input rules for networks, reservations and ACLs; each failure names the parameter.

v0.6 validated almost nothing and the node daemons then crashed on what it
stored, so everything a node daemon parses is checked here first.
"""

from __future__ import annotations

import ipaddress
import re

from pvc_core.errors import BadRequest

MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+$")
MAX_VNI = {"managed": 16777215, "bridged": 4094}


def bad(name: str, expected: str, got: object) -> BadRequest:
    return BadRequest(f"Parameter '{name}': expected {expected}, got {got!r}")


def vni(value: str, nettype: str | None = None) -> int:
    limit = MAX_VNI.get(nettype or "managed", MAX_VNI["managed"])
    kind = "a VLAN ID" if nettype == "bridged" else "a VXLAN ID"
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= limit:
        raise bad("vni", f"{kind}: an integer from 1 to {limit}", value)
    return int(value)


def name(parameter: str, value: str) -> str:
    """Descriptions are names: used in paths and ZooKeeper keys."""
    if not value or any(char.isspace() for char in value) or "/" in value or value in (".", ".."):
        raise bad(parameter, "a name without whitespace or '/', not '.' or '..'", value)
    return value


def network_description(value: str) -> str:
    name("description", value)
    if value.isascii() and value.isdigit():
        raise bad("description", "a name that is not all digits (digits address a network by VNI)", value)
    return value


def domain(value: str) -> str:
    if not HOSTNAME.match(value):
        raise bad("domain", "a DNS domain name", value)
    return value


def name_servers(values: list[str]) -> list[str]:
    """Repeated arguments and comma lists both work (v0.6 CLI repeats --dns-server)."""
    out = []
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            if not (_is_ip(item) or HOSTNAME.match(item)):
                raise bad("name_servers", "IP addresses or host names", item)
            out.append(item)
    return out


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def ip4_network(value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        raise bad("ip4_network", "an IPv4 network in CIDR form with no host bits, e.g. 10.10.1.0/24",
                  value) from None


def ip6_network(value: str) -> ipaddress.IPv6Network:
    try:
        return ipaddress.IPv6Network(value, strict=True)
    except ValueError:
        raise bad("ip6_network", "an IPv6 network in CIDR form with no host bits, e.g. 2001:db8:1001::/64",
                  value) from None


def ip4_address(parameter: str, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise bad(parameter, "an IPv4 address", value) from None


def ip6_address(parameter: str, value: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(value)
    except ValueError:
        raise bad(parameter, "an IPv6 address", value) from None


def inside(parameter: str, address: ipaddress._BaseAddress, network: ipaddress._BaseNetwork,
           what: str = "an address") -> None:
    if address not in network or address in (network.network_address, _broadcast(network)):
        raise bad(parameter, f"{what} inside {network} (not its network or broadcast address)", str(address))


def _broadcast(network: ipaddress._BaseNetwork) -> ipaddress._BaseAddress | None:
    return network.broadcast_address if network.version == 4 and network.prefixlen < 31 else None


def mac(parameter: str, value: str) -> str:
    lowered = value.lower()
    if not MAC.match(lowered):
        raise bad(parameter, "a MAC address of six ':'-separated hex pairs, e.g. 52:54:00:12:34:56", value)
    return lowered


def order(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise bad("order", "a position of 0 or more", value)
    return value

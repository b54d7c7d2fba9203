"""The ZooKeeper keys of a network (network.md §2, zookeeper-schema.md §6.1) and their values.

Absent optional values are the literal ``None`` and flags ``True``/``False``:
v0.6 node daemons compare against exactly those strings.
"""

from __future__ import annotations

ROOT = "/networks"
DIRECTIONS = ("in", "out")
NONE = "None"

# Scalar keys of a network, in the order of the v0.6 network object.
SCALARS = ("nettype", "domain", "name_servers", "ip6_network", "ip6_gateway", "dhcp6_flag",
           "ip4_network", "ip4_gateway", "dhcp4_flag", "dhcp4_start", "dhcp4_end")
LEASES = "dhcp4_leases"
RESERVATIONS = "dhcp4_reservations"
# v0.6 node daemons watch this other name; DECISIONS: write reservations under both.
RESERVATIONS_V06_NODE = "dhcp_reservations"
RESERVATION_KEYS = (RESERVATIONS, RESERVATIONS_V06_NODE)
FIREWALL = "firewall_rules"
CONTAINERS = (LEASES, RESERVATIONS, RESERVATIONS_V06_NODE, FIREWALL, f"{FIREWALL}/in", f"{FIREWALL}/out")
LEASE_FIELDS = ("expiry", "ipaddr", "hostname", "clientid")
# The keys of a lease, a reservation and a rule that answers carry, so the ones the
# watched views follow (a lease's ``clientid`` is in no answer: not followed).
LEASE_VIEW_KEYS = ("hostname", "ipaddr", "expiry")
RESERVATION_VIEW_KEYS = ("hostname", "ipaddr")
RULE_VIEW_KEYS = ("order", "rule")


def network(vni: str | int) -> str:
    return f"{ROOT}/{vni}"


def key(vni: str | int, name: str) -> str:
    return f"{ROOT}/{vni}/{name}"


def lease(vni: str | int, mac: str) -> str:
    return f"{ROOT}/{vni}/{LEASES}/{mac}"


def lease_field(vni: str | int, mac: str, name: str) -> str:
    """One of ``LEASE_FIELDS`` of a lease."""
    return f"{lease(vni, mac)}/{name}"


def reservation(vni: str | int, mac: str, container: str = RESERVATIONS) -> str:
    return f"{ROOT}/{vni}/{container}/{mac}"


def rules(vni: str | int, direction: str) -> str:
    return f"{ROOT}/{vni}/{FIREWALL}/{direction}"


def rule(vni: str | int, direction: str, description: str) -> str:
    return f"{rules(vni, direction)}/{description}"


def network_answer(vni: str | int) -> list[str]:
    """The znodes a network's answer is built from, in the view's order: its ETag is made of their mzxids."""
    return [network(vni), *(key(vni, name) for name in SCALARS)]


def rule_answer(vni: str | int, direction: str, description: str) -> list[str]:
    """The znodes an ACL's answer is built from, in the view's order (its ETag, as ``network_answer``)."""
    base = rule(vni, direction, description)
    return [base, *(f"{base}/{name}" for name in RULE_VIEW_KEYS)]


def new_network_keys(vni: int, description: str, values: dict[str, str]) -> dict[str, str]:
    """Every key of a new network, for its one creating transaction."""
    keys = {network(vni): description}
    for name in SCALARS:
        keys[key(vni, name)] = values[name]
    for container in CONTAINERS:
        keys[key(vni, container)] = ""
    return keys


def reservation_keys(vni: str | int, mac: str, ipaddr: str, hostname: str) -> dict[str, str]:
    keys = {}
    for container in RESERVATION_KEYS:
        base = reservation(vni, mac, container)
        keys.update({base: "static", f"{base}/hostname": hostname, f"{base}/ipaddr": ipaddr})
    return keys


def flag(value: bool) -> str:
    return "True" if value else "False"

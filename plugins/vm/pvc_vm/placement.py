"""Automatic node selection (nodes-vms.md §4), with ties broken by sorted node name (DECISIONS)."""

from __future__ import annotations


def candidates(nodes: dict[str, dict], limit: list[str], current: str | None) -> list[dict]:
    """Nodes a VM may be placed on: in its limit, not its current node, ``run`` and ``ready``."""
    return [nodes[name] for name in sorted(nodes)
            if (not limit or name in limit) and name != current
            and nodes[name]["daemon_state"] == "run" and nodes[name]["domain_state"] == "ready"]


def select(nodes: dict[str, dict], limit: list[str], selector: str, current: str | None = None) -> str | None:
    """The chosen node's name, or None when no node qualifies."""
    pool = candidates(nodes, limit, current)
    if selector == "mem":
        best, score = None, 0
        for node in pool:
            memory = node["memory"]
            free = memory["used"] + memory["free"] - memory["allocated"]
            if free > score:
                best, score = node["name"], free
        return best
    measure = {"load": lambda node: node["load"], "vcpus": lambda node: node["vcpu"]["allocated"],
               "vms": lambda node: node["domains_count"]}.get(selector)
    if measure is None:
        return None
    best, bound = None, 9999.0
    for node in pool:
        value = measure(node)
        if value < bound:
            best, bound = node["name"], value
    return best

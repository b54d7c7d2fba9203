"""The ZooKeeper keys of a node (zookeeper-schema.md §4). Node daemons write all but ``domainstate``."""

from __future__ import annotations

ROOT = "/nodes"
KEYS = ("daemonmode", "daemonstate", "routerstate", "domainstate", "staticdata", "memtotal", "memused",
        "memfree", "memalloc", "vcpualloc", "cpuload", "domainscount", "runningdomains")

# The status document counts these <daemon_state>,<domain_state> pairs (api-general.md §8.1).
STATUS_PAIRS = tuple(f"{daemon},{domain}" for daemon in ("run", "init", "stop")
                     for domain in ("ready", "flush", "flushed", "unflush"))


def node(name: str) -> str:
    return f"{ROOT}/{name}"


def key(name: str, field: str) -> str:
    return f"{ROOT}/{name}/{field}"

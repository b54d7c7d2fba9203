"""The keys a v0.6 node daemon reads and writes (zookeeper-schema.md §3-8), from the node's side.

The simulator is the other party of the ZooKeeper contract, not an API
area: it writes the node keys the node plugin only reads, acts on the VM
keys the vm plugin writes, and answers the ``/cmd/ceph`` and ``/cmd/domains``
mailboxes. So it names those paths itself, in this one module
(tests/test_plugin_isolation.py knows why this plugin may).
"""

from __future__ import annotations

PRIMARY_NODE = "/primary_node"
MAINTENANCE = "/maintenance"
NODES = "/nodes"
DOMAINS = "/domains"
CMD_CEPH = "/cmd/ceph"
CMD_DOMAINS = "/cmd/domains"
OSDS = "/ceph/osds"
# Held (a kazoo Lock) by the one simulator that runs this cluster's nodes.
LOCK = "/locks/simnode"

# staticdata is "<cpus> <kernel> <os> <arch>"; this kernel marks a node the simulator created.
KERNEL = "pvc-simnode"


def node(name: str, key: str = "") -> str:
    return f"{NODES}/{name}/{key}" if key else f"{NODES}/{name}"


def freeze_log(name: str) -> str:
    """The simulator's own record of a node's guest filesystem freezes and thaws (guestagent.py); no v0.6 key."""
    return node(name, "simnode/fsfreeze")


def vm(uuid: str, key: str = "") -> str:
    return f"{DOMAINS}/{uuid}/{key}" if key else f"{DOMAINS}/{uuid}"


def osd(osd_id: str, key: str = "") -> str:
    return f"{OSDS}/{osd_id}/{key}" if key else f"{OSDS}/{osd_id}"


def registration(name: str, mode: str, staticdata: str, now: int) -> dict[str, str]:
    """The keys a node writes when it registers for the first time (§4), in one transaction."""
    keys = {node(name): mode, node(name, "daemonmode"): mode, node(name, "daemonstate"): "init",
            node(name, "routerstate"): "client", node(name, "domainstate"): "flushed",
            node(name, "staticdata"): staticdata, node(name, "cpuload"): "0.0", node(name, "networkscount"): "0",
            node(name, "domainscount"): "0", node(name, "runningdomains"): "", node(name, "keepalive"): str(now)}
    for key in ("memtotal", "memfree", "memused", "memalloc", "vcpualloc"):
        keys[node(name, key)] = "0"
    for key in ("ipmihostname", "ipmiusername", "ipmipassword"):
        keys[node(name, key)] = ""
    return keys


def restart(name: str, mode: str, staticdata: str) -> dict[str, str]:
    """What a node rewrites on every later start (§4); the other keys keep their values."""
    keys = {node(name, "daemonmode"): mode, node(name, "daemonstate"): "init",
            node(name, "routerstate"): "secondary" if mode == "coordinator" else "client",
            node(name, "staticdata"): staticdata}
    for key in ("ipmihostname", "ipmiusername", "ipmipassword"):
        keys[node(name, key)] = ""
    return keys


def is_simulated(staticdata: str | None) -> bool:
    fields = (staticdata or "").split()
    return len(fields) >= 2 and fields[1] == KERNEL

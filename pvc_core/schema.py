"""The cluster-wide ZooKeeper keys the core owns (zookeeper-schema.md §2-3, api-general.md §7)."""

PRIMARY_NODE = "/primary_node"
UPSTREAM_IP = "/upstream_ip"
MAINTENANCE = "/maintenance"
# Not in v0.6: this daemon's own state, shared by every pvcapid of the cluster. Children of
# REVOKED_SESSIONS are logged-out session ids, each with its expiry (Unix seconds) as value.
DAEMON_ROOT = "/pvcapid"
REVOKED_SESSIONS = "/pvcapid/revoked_sessions"
# One lock per v0.6 command mailbox (its last path segment): every pvcapid of the cluster sends one
# command at a time through it (kazoo's Lock recipe; ephemeral children, gone with a dead daemon).
COMMAND_LOCKS = "/pvcapid/command_locks"
# The target selectors a VM's ``node_selector`` may name (nodes-vms.md §4): every node daemon knows these and
# no other; one it does not know finds no migration target. Shared by the plugins that write the key (a VM's
# meta, a provisioner system template).
SELECTORS = ("mem", "vcpus", "load", "vms")


def command_lock(mailbox: str) -> str:
    return f"{COMMAND_LOCKS}/{mailbox.rstrip('/').rsplit('/', 1)[-1]}"

# POST /initialize creates these in one transaction. The whole v0.6 base tree is
# here (not split among plugins) because v0.6 node daemons need all of it even
# when this daemon runs without, say, the network plugin.
BASE_TREE = {
    PRIMARY_NODE: "none",
    UPSTREAM_IP: "none",
    MAINTENANCE: "False",
    "/nodes": "",
    "/domains": "",
    "/networks": "",
    "/ceph": "",
    "/ceph/osds": "",
    "/ceph/pools": "",
    "/ceph/volumes": "",
    "/ceph/snapshots": "",
    "/cmd": "",
    "/cmd/domains": "",
    "/cmd/ceph": "",
    "/locks": "",
    "/locks/flush_lock": "",
    "/locks/primary_node": "",
}

# The parts of GET /status that plugins fill in; a disabled plugin's part keeps these zeros.
STATUS_DEFAULTS = {
    "nodes": {"total": 0},
    "vms": {"total": 0},
    "networks": 0,
    "osds": {"total": 0},
    "pools": 0,
    "volumes": 0,
    "snapshots": 0,
}


def maintenance_value(enabled: bool) -> str:
    """The API writes lower-case true/false (only /initialize writes ``False``)."""
    return "true" if enabled else "false"

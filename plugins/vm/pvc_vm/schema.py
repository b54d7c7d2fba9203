"""The ZooKeeper keys of a VM (zookeeper-schema.md §5) and the state vocabulary."""

from __future__ import annotations

import json

from pvc_core.schema import DAEMON_ROOT

ROOT = "/domains"
# Followed by the watched view (what the VM object needs); consolelog and rbdlist are read on demand.
VIEW_KEYS = ("state", "node", "lastnode", "failedreason", "node_limit", "node_selector", "node_autostart",
             "profile", "xml", "tags", "snapshots")

# Indexed by the view: the state and node filters of GET /vm and the counts of GET /status.
INDEXED_KEYS = ("state", "node")

STATES = ("start", "restart", "shutdown", "stop", "disable", "fail", "migrate", "unmigrate", "provision")
HEALTHY = ("start", "disable", "migrate", "unmigrate", "provision")
CMD_DOMAINS = "/cmd/domains"


def vm(uuid: str) -> str:
    return f"{ROOT}/{uuid}"


def key(uuid: str, name: str) -> str:
    return f"{ROOT}/{uuid}/{name}"


# PVC 1.x's tags (its zkhandler schema: ``domain.meta.tags`` and ``tag``): ``<vm>/tags/<tag>`` holds the
# tag's name, with children ``type`` ("user" for tags set through the API) and ``protected``
# ("True"/"False"). The value of ``<vm>/tags`` itself is the JSON list of them (see tags.py).
TAGS = "tags"
TAG_USER = "user"


def tags(uuid: str) -> str:
    return key(uuid, TAGS)


def tag(uuid: str, name: str) -> str:
    return f"{ROOT}/{uuid}/{TAGS}/{name}"


def tag_key(uuid: str, name: str, field: str) -> str:
    return f"{ROOT}/{uuid}/{TAGS}/{name}/{field}"


# PVC 1.x's VM snapshots (its zkhandler schema: ``domain.snapshots`` and ``snapshot``): ``<vm>/snapshots/<name>``
# holds the name, with children ``timestamp`` (Unix seconds), ``xml`` (the domain XML when taken) and
# ``rbdsnaplist`` (comma-separated ``pool/volume@name``). The value of ``<vm>/snapshots`` itself is the JSON
# list of ``{name, timestamp, rbd_snapshots, xml}`` (see snapshots.py), as with tags.
SNAPSHOTS = "snapshots"
SNAPSHOT_FIELDS = ("timestamp", "xml", "rbdsnaplist")


def snapshots(uuid: str) -> str:
    return key(uuid, SNAPSHOTS)


def snapshot(uuid: str, name: str, field: str | None = None) -> str:
    base = f"{ROOT}/{uuid}/{SNAPSHOTS}/{name}"
    return f"{base}/{field}" if field else base


# Not in v0.6: a VM rollback under way, named for its temporary RBD snapshots, with what a restarted daemon needs to
# undo it (JSON ``{uuid, vm, snapshot, disks}``). The rollback's ZooKeeper commit deletes it in the same
# transaction, so its presence alone says the disks may be part rolled back and the XML is not yet restored.
ROLLBACKS = f"{DAEMON_ROOT}/vm-rollbacks"


def rollback_marker(safety: str) -> str:
    return f"{ROLLBACKS}/{safety}"


def stored_items(value: str | None) -> list[dict]:
    """The named items of a JSON list kept as a key's value (tags, snapshots): the value is written by
    this daemon, but other tooling may have left anything there, so what is not such a list is none."""
    if not value:
        return []
    try:
        items = json.loads(value)
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)]


def answer_keys(uuid: str) -> list[str]:
    """The znodes a VM's answer is built from, in the view's order: its ETag is made of their mzxids."""
    return [vm(uuid), *(key(uuid, name) for name in VIEW_KEYS)]


def new_vm_keys(uuid: str, name: str, node: str, node_limit: str, selector: str, autostart: bool,
                rbdlist: str, xml: str, state: str = "stop", profile: str = "None") -> dict[str, str]:
    """Every key of a newly defined VM (§5.2), for its one creating transaction."""
    return {
        vm(uuid): name,
        key(uuid, "state"): state,
        key(uuid, "node"): node,
        key(uuid, "lastnode"): "",
        key(uuid, "node_limit"): node_limit,
        key(uuid, "node_selector"): selector,
        key(uuid, "node_autostart"): "True" if autostart else "False",
        key(uuid, "failedreason"): "",
        key(uuid, "consolelog"): "",
        key(uuid, "rbdlist"): rbdlist,
        key(uuid, "profile"): profile,
        key(uuid, "xml"): xml,
    }

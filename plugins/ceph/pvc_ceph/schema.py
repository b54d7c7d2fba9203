"""The ZooKeeper keys under /ceph (ceph.md §1)."""

from __future__ import annotations

from pvc_core.errors import BadRequest
from pvc_core.params import NAME_HELP, is_name
from pvc_core.schema import DAEMON_ROOT

STATUS = "/ceph"               # text of `ceph status`
UTILIZATION = "/ceph/radosdf"  # text of `rados df`
OSDS = "/ceph/osds"
POOLS = "/ceph/pools"
VOLUMES = "/ceph/volumes"
SNAPSHOTS = "/ceph/snapshots"
COLLECTOR_LOCK = "/locks/ceph_collector"
CMD_CEPH = "/cmd/ceph"  # the v0.6 command mailbox (OSD add/remove)
# Not in v0.6: the volumes an upload is writing now, one ephemeral key per volume under
# UPLOADS/<pool>/<volume> (the pool's key is an ordinary one, made with the first), whose value is JSON
# ``{task_id, worker}`` (the upload's task record, once it has one; the daemon's ``TaskMonitor.owner``).
# Made by the upload's daemon before its first check, deleted when the upload ends, gone with that daemon's
# ZooKeeper session if it dies: every daemon of the cluster refuses what would conflict meanwhile.
UPLOADS = f"{DAEMON_ROOT}/ceph-uploads"


def segment(kind: str, name: str) -> str:
    """A client's name as one key segment: '.', '..', '/' or control characters are a 400 here,
    whatever the route (ZooKeeper refuses such paths, which would otherwise be a 500)."""
    if not is_name(name):
        raise BadRequest(f"{kind} name {name!r}: expected {NAME_HELP}")
    return name


def volume(pool: str, name: str) -> str:
    return f"{VOLUMES}/{segment('Pool', pool)}/{segment('Volume', name)}"


def upload_hold(pool: str, name: str) -> str:
    return f"{UPLOADS}/{segment('Pool', pool)}/{segment('Volume', name)}"


def pool(name: str, key: str = "") -> str:
    return f"{POOLS}/{segment('Pool', name)}" + (f"/{key}" if key else "")


def snapshot(pool: str, volume: str, name: str = "") -> str:
    base = f"{SNAPSHOTS}/{segment('Pool', pool)}/{segment('Volume', volume)}"
    return base + (f"/{segment('Snapshot', name)}" if name else "")


def osd(osd_id: str, key: str = "") -> str:
    return f"{OSDS}/{osd_id}" + (f"/{key}" if key else "")

"""The ZooKeeper keys under /ceph (ceph.md §1)."""

from __future__ import annotations

STATUS = "/ceph"               # text of `ceph status`
UTILIZATION = "/ceph/radosdf"  # text of `rados df`
OSDS = "/ceph/osds"
POOLS = "/ceph/pools"
VOLUMES = "/ceph/volumes"
SNAPSHOTS = "/ceph/snapshots"
COLLECTOR_LOCK = "/locks/ceph_collector"
CMD_CEPH = "/cmd/ceph"  # the v0.6 command mailbox (OSD add/remove)


def volume(pool: str, name: str) -> str:
    return f"{VOLUMES}/{pool}/{name}"


def pool(name: str, key: str = "") -> str:
    return f"{POOLS}/{name}" + (f"/{key}" if key else "")


def osd(osd_id: str, key: str = "") -> str:
    return f"{OSDS}/{osd_id}" + (f"/{key}" if key else "")

"""OSD add/remove and volume copy/clone as tasks.

OSDs are made and removed by their node's daemon over the ``/cmd/ceph``
mailbox; the route still waits for the answer as v0.6 did and ends the
record with it. Should this daemon stop meanwhile, its restart follows the
record again from ``/ceph/osds`` (the OSD appears, or goes). The command is
one step of the node daemon: it is not cancelled.

A copy (``POST /storage/ceph/volume`` with ``source_volume``, or
``…/<volume>/clone``) runs here, through librbd, piece by piece: the record
shows the pieces copied, and a cancel stops it at the next piece and
removes the partial volume (which ZooKeeper never recorded). A daemon that
stopped under a copy removes that partial volume when it starts again.

An upload (``…/<volume>/upload``) runs here too: the record counts the
bytes written, a cancel stops it at the next 4 MiB piece and rolls the
volume back to the snapshot taken before the first write, and a daemon
that stopped under an upload rolls the volume back when it starts again. A
snapshot rollback is one librbd call: recorded, not cancelled; one
interrupted by the daemon's end leaves the volume part rolled back, which
its record says (roll back again).
"""

from __future__ import annotations

from typing import Any

from pvc_core.taskmonitor import Kind, Observation
from pvc_core.taskrecords import RUNNING, SUCCESS

from . import schema

OSD_ADD, OSD_REMOVE = "ceph.osd.add", "ceph.osd.remove"
VOLUME_COPY, VOLUME_CLONE = "ceph.volume.copy", "ceph.volume.clone"
VOLUME_UPLOAD, SNAPSHOT_ROLLBACK = "ceph.volume.upload", "ceph.snapshot.rollback"
ONE_STEP = "the node daemon runs the command in one step"
ONE_CALL = "librbd rolls the volume back in one call, which cannot be stopped midway"
A_MONTH = 30 * 86400.0  # work run here has no deadline of its own beyond Ceph answering each call


def check_osd(runtime: Any, args: dict) -> Observation:
    osds = runtime.service("ceph").osds
    ids = osds.ids()
    if "osd" in args:
        if args["osd"] in ids:
            return Observation(RUNNING, f"Waiting for the node daemon to remove OSD {args['osd']}")
        return Observation(SUCCESS, f"Removed OSD \"{args['osd']}\" from the cluster.")
    owners = runtime.zk.get_many(path for osd_id in ids for path in (schema.osd(osd_id, "node"),
                                                                     schema.osd(osd_id, "device")))
    for osd_id in ids:
        if (owners[schema.osd(osd_id, "node")], owners[schema.osd(osd_id, "device")]) == (args["node"],
                                                                                          args["device"]):
            return Observation(SUCCESS, f"Created new OSD {osd_id} with block device \"{args['device']}\" on node "
                                        f"\"{args['node']}\".")
    return Observation(RUNNING, f"Waiting for node {args['node']} to create an OSD on {args['device']}")


def recover_copy(runtime: Any, args: dict) -> str:
    removed = runtime.service("ceph").volumes.remove_partial(args["pool"], args["volume"])
    return f"the partial volume {args['pool']}/{args['volume']} was removed" if removed else \
        f"no partial volume {args['pool']}/{args['volume']} was left"


def recover_upload(runtime: Any, args: dict) -> str:
    return runtime.service("ceph").uploads.put_back(args["pool"], args["volume"])


def kinds(runtime: Any) -> list[Kind]:
    config = runtime.config
    return [
        Kind(OSD_ADD, "ceph", lambda: config["ceph.osd_add_timeout"], "pvc.ceph.osd_add_timeout",
             check=lambda args: check_osd(runtime, args), refusal=ONE_STEP),
        Kind(OSD_REMOVE, "ceph", lambda: config["ceph.osd_remove_timeout"], "pvc.ceph.osd_remove_timeout",
             check=lambda args: check_osd(runtime, args), refusal=ONE_STEP),
        *(Kind(name, "ceph", lambda: A_MONTH, "a month", recover=lambda args: recover_copy(runtime, args))
          for name in (VOLUME_COPY, VOLUME_CLONE)),
        Kind(VOLUME_UPLOAD, "ceph", lambda: A_MONTH, "a month", recover=lambda args: recover_upload(runtime, args)),
        Kind(SNAPSHOT_ROLLBACK, "ceph", lambda: A_MONTH, "a month", refusal=ONE_CALL,
             recover=lambda args: f"RBD volume {args['pool']}/{args['volume']} may be part rolled back; roll it "
                                  f"back to snapshot {args['snapshot']} again"),
    ]

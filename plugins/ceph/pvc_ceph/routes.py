"""The /storage status routes (ceph.md §5) and their thin handlers."""

from __future__ import annotations

from typing import Any

from pvc_core.errors import BadRequest
from pvc_core.params import INTEGER, NUMBER, STRING, Param, confirmation
from pvc_core.routes import ADMIN, CONFLICT, NO_MATCH, Route, collapse
from pvc_core.shapes import INT, MESSAGE, NUM, STR, array, named, nullable, obj, one_or_many
from pvc_core.taskroutes import announce, task_headers

from . import tasks
from .uploads import FORMATS


def _stats(properties: dict) -> dict:
    """A stats object as its writer (the collector, or a v0.6 node daemon) left it: ``{}`` until written."""
    return obj(properties, optional=tuple(properties))


# ceph.md §2.2-2.4 and §6-9
CEPH_TEXT = named("CephText", obj({"type": STR, "primary_node": STR, "ceph_data": STR}))
OSD = named("OSD", obj({"id": STR, "stats": _stats({
    "uuid": nullable(STR), "up": nullable(INT), "in": nullable(INT), "primary_affinity": nullable(NUM),
    "utilization": nullable(NUM), "var": nullable(NUM), "pgs": nullable(INT), "kb": nullable(INT),
    "weight": nullable(NUM), "reweight": nullable(NUM), "node": STR, "used": STR, "avail": STR, "wr_ops": STR,
    "wr_data": STR, "rd_ops": STR, "rd_data": STR, "state": STR})}))
POOL = named("Pool", obj({"name": STR, "stats": _stats({
    "id": nullable(INT), "free_bytes": INT, "used_bytes": INT, "used_percent": NUM, "num_objects": INT,
    "num_object_clones": INT, "num_object_copies": INT, "num_objects_missing_on_primary": INT,
    "num_objects_unfound": INT, "num_objects_degraded": INT, "read_ops": INT, "read_bytes": INT, "write_ops": INT,
    "write_bytes": INT})}))
VOLUME = named("Volume", obj({"name": STR, "pool": STR, "stats": _stats({
    "name": STR, "id": STR, "size": STR, "objects": INT, "order": INT, "object_size": INT, "snapshot_count": INT,
    "block_name_prefix": STR, "format": INT, "features": array(STR), "op_features": array(STR),
    "flags": array(STR), "create_timestamp": STR, "access_timestamp": STR, "modify_timestamp": STR})}))
SNAPSHOT = named("Snapshot", obj({"pool": STR, "volume": STR, "snapshot": STR}))
# after its record began, a task's request may still fail: the node daemon's or Ceph's refusal (400), a
# cancelled copy or a busy object (409), Ceph or the node daemon not answering in time (503)
TASK_ERRORS_TOO = task_headers(400, 409, 503)
BUSY = {409: "Ceph refused: the object exists or is busy (e.g. a volume with snapshots)"}
VOLUME_BUSY = {409: "Ceph refused: the object exists or is busy (e.g. a volume with snapshots); or an upload is "
                    "writing the volume now"}
NAMED_BUSY = {404: "The pool or volume named by a parameter does not exist", **BUSY}
# Ceph refuses a change of an image whose lock another client holds (librbd: read-only image): 400, as v0.6
# answers a snapshot its node could not make
LOCKED = {400: "Bad input, or the volume is locked by another client (the message names the lock and how to "
               "release it)"}


def storage(ctx: Any, params: dict) -> dict:
    return {"message": "Manage the storage of the PVC cluster."}


def status(ctx: Any, params: dict) -> dict:
    return ctx.service("ceph").text("status")


def utilization(ctx: Any, params: dict) -> dict:
    return ctx.service("ceph").text("utilization")


def list_pools(ctx: Any, params: dict) -> Any:
    return collapse(ctx.service("ceph").pools.list(params["limit"]))


def get_pool(ctx: Any, params: dict, pool: str) -> dict:
    return ctx.service("ceph").pools.get(pool)


def add_pool(ctx: Any, params: dict, pool: str | None = None) -> dict:
    return {"message": ctx.service("ceph").pools.add(pool if pool is not None else params["pool"], params["pgs"],
                                                     params["replcfg"])}


def remove_pool(ctx: Any, params: dict, pool: str) -> dict:
    return {"message": ctx.service("ceph").pools.remove(pool)}


def list_volumes(ctx: Any, params: dict) -> Any:
    return collapse(ctx.service("ceph").volumes.list(params["limit"], params["pool"]))


def get_volume(ctx: Any, params: dict, pool: str, volume: str) -> dict:
    return ctx.service("ceph").volumes.get(pool, volume)


def add_volume(ctx: Any, params: dict, pool: str | None = None, volume: str | None = None) -> dict:
    volumes = ctx.service("ceph").volumes
    pool = pool if pool is not None else params["pool"]
    volume = volume if volume is not None else params["volume"]
    if params["source_volume"] is None and params["size"] is None:
        raise BadRequest("Parameter 'size': required, expected a size in bytes or with a B/K/M/G/T/P suffix "
                         "(unless source_volume is given)")
    return {"message": volumes.add(pool, volume, params["size"], source=params["source_volume"],
                                   task=tasks.VOLUME_COPY, on_task=announce(ctx))}


def modify_volume(ctx: Any, params: dict, pool: str, volume: str) -> dict:
    volumes = ctx.service("ceph").volumes
    size, new_name = params["size"] or None, params["new_name"] or None
    if size and new_name:
        raise BadRequest("Can only perform one modification at once")
    if size:
        return {"message": volumes.resize(pool, volume, size)}
    if new_name:
        return {"message": volumes.rename(pool, volume, new_name)}
    raise BadRequest("At least one modification must be specified")


def remove_volume(ctx: Any, params: dict, pool: str, volume: str) -> dict:
    return {"message": ctx.service("ceph").volumes.remove(pool, volume)}


def clone_volume(ctx: Any, params: dict, pool: str, volume: str) -> dict:
    return {"message": ctx.service("ceph").volumes.add(pool, params["new_volume"], "", source=volume,
                                                       task=tasks.VOLUME_CLONE, on_task=announce(ctx))}


def upload_volume(ctx: Any, params: dict, pool: str, volume: str) -> dict:
    return {"message": ctx.service("ceph").uploads.upload(pool, volume, params["image_format"], ctx.body,
                                                          announce(ctx))}


def list_snapshots(ctx: Any, params: dict) -> Any:
    return collapse(ctx.service("ceph").snapshots.list(params["pool"], params["volume"], params["limit"]))


def get_snapshot(ctx: Any, params: dict, pool: str, volume: str, snapshot: str) -> dict:
    return ctx.service("ceph").snapshots.get(pool, volume, snapshot)


def add_snapshot(ctx: Any, params: dict, pool: str | None = None, volume: str | None = None,
                 snapshot: str | None = None) -> dict:
    names = (pool or params["pool"], volume or params["volume"], snapshot or params["snapshot"])
    return {"message": ctx.service("ceph").snapshots.add(*names)}


def rename_snapshot(ctx: Any, params: dict, pool: str, volume: str, snapshot: str) -> dict:
    return {"message": ctx.service("ceph").snapshots.rename(pool, volume, snapshot, params["new_name"])}


def remove_snapshot(ctx: Any, params: dict, pool: str, volume: str, snapshot: str) -> dict:
    return {"message": ctx.service("ceph").snapshots.remove(pool, volume, snapshot)}


def rollback_snapshot(ctx: Any, params: dict, pool: str, volume: str, snapshot: str) -> dict:
    return {"message": ctx.service("ceph").snapshots.rollback(pool, volume, snapshot, announce(ctx))}


def list_osds(ctx: Any, params: dict) -> list:
    return ctx.service("ceph").osds.list(params["limit"])


def get_osd(ctx: Any, params: dict, osdid: str) -> list:
    return ctx.service("ceph").osds.get(osdid)


def get_osd_state(ctx: Any, params: dict, osdid: str) -> dict:
    return ctx.service("ceph").osds.state(osdid)


def set_osd_state(ctx: Any, params: dict, osdid: str) -> dict:
    return {"message": ctx.service("ceph").osds.set_state(osdid, params["state"])}


def add_osd(ctx: Any, params: dict) -> dict:
    return {"message": ctx.service("ceph").osds.add(params["node"], params["device"], params["weight"],
                                                    announce(ctx))}


def remove_osd(ctx: Any, params: dict, osdid: str) -> dict:
    return {"message": ctx.service("ceph").osds.remove(osdid, announce(ctx))}


def set_option(ctx: Any, params: dict) -> dict:
    return {"message": ctx.service("ceph").osds.set_option(params["option"], params["action"])}


SNAPSHOT_ELEMENT = "/storage/ceph/snapshot/<pool>/<volume>/<snapshot>"
SNAPSHOT_ELEMENT_SEED = ("/storage/ceph/volume/snapshot/<pool>/<volume>/<snapshot>",)
SIZE = Param("size", STRING, help="bytes, or with a B/K/M/G/T/P suffix, e.g. 20G")
SOURCE = Param("source_volume", STRING, help="copy this volume of the same pool instead of creating an empty one")
PGS = Param("pgs", INTEGER, required=True, help="placement groups, e.g. 256")
REPLCFG = Param("replcfg", STRING, default="copies=3,mincopies=2",
                help="copies=<N>,mincopies=<M>; default copies=3,mincopies=2 (the v0.6 CLI's)")
CONFIRM = confirmation("confirms a destructive operation")


def routes() -> list[Route]:
    """Volumes and snapshots are what VMs use (write); the cluster's flags, OSDs and pools are the
    storage itself, whose change affects every volume (admin)."""
    tags = ("storage",)
    return [
        Route("GET", "/storage", storage, summary="Storage root", tags=tags, returns=MESSAGE),
        Route("GET", "/storage/ceph/status", status, summary="Ceph cluster status (text of `ceph status`)",
              aliases=("/storage/ceph",), tags=tags, returns=CEPH_TEXT),
        Route("GET", "/storage/ceph/utilization", utilization, summary="Ceph utilisation (text of `rados df`)",
              aliases=("/storage/ceph/df",), tags=tags, returns=CEPH_TEXT),
        Route("POST", "/storage/ceph/option", set_option, (
            Param("option", STRING, required=True, help="an OSD flag, e.g. noout"),
            Param("action", STRING, required=True, choices=("set", "unset"), help="set or unset it")),
            summary="Set or unset a cluster OSD flag", aliases=("/storage/ceph/cluster-option",), tags=tags,
            returns=MESSAGE, scope=ADMIN),
        Route("GET", "/storage/ceph/osd", list_osds, (Param("limit", STRING, help="regular expression on the ID"),),
              summary="List OSDs", tags=tags, returns=array(OSD), responses=NO_MATCH),
        Route("POST", "/storage/ceph/osd", add_osd, (
            Param("node", STRING, required=True, help="the node whose disk becomes the OSD"),
            Param("device", STRING, required=True, help="block device, e.g. /dev/sdb (its data is destroyed)"),
            Param("weight", NUMBER, required=True, help="CRUSH weight, e.g. 1.0")),
            summary="Create an OSD on a node's disk (by that node's daemon; a task)", tags=tags, returns=MESSAGE,
            responses=CONFLICT, scope=ADMIN, headers=TASK_ERRORS_TOO),
        Route("DELETE", "/storage/ceph/osd/<osdid>", remove_osd, (CONFIRM,),
              summary="Remove an OSD (by its node's daemon; a task)", tags=tags, returns=MESSAGE, responses=CONFLICT,
              scope=ADMIN, headers=TASK_ERRORS_TOO),
        Route("GET", "/storage/ceph/osd/<osdid>", get_osd, summary="One OSD (as a one-element list)", tags=tags,
              returns=array(OSD)),
        Route("GET", "/storage/ceph/osd/<osdid>/state", get_osd_state, summary="An OSD's in/up state", tags=tags,
              returns=obj({"id": STR, "in": INT, "up": INT})),
        Route("POST", "/storage/ceph/osd/<osdid>/state", set_osd_state, (
            Param("state", STRING, required=True, choices=("in", "out"), help="in or out"),),
            summary="Set an OSD in or out", tags=tags, returns=MESSAGE, scope=ADMIN),
        Route("GET", "/storage/ceph/pool", list_pools, (Param("limit", STRING, help="regular expression"),),
              summary="List RBD pools", tags=tags, returns=one_or_many(POOL),
              responses=NO_MATCH),
        Route("POST", "/storage/ceph/pool", add_pool, (Param("pool", STRING, required=True, help="pool name"),
                                                       PGS, REPLCFG), summary="Create an RBD pool", tags=tags,
              returns=MESSAGE, responses=BUSY, scope=ADMIN),
        Route("GET", "/storage/ceph/pool/<pool>", get_pool, summary="One RBD pool", tags=tags, returns=POOL),
        Route("POST", "/storage/ceph/pool/<pool>", add_pool, (PGS, REPLCFG),
              summary="Create an RBD pool (name in the path)", tags=tags, returns=MESSAGE, responses=BUSY,
              scope=ADMIN),
        Route("DELETE", "/storage/ceph/pool/<pool>", remove_pool, (CONFIRM,),
              summary="Remove an RBD pool and all its volumes", tags=tags, returns=MESSAGE, responses=BUSY,
              scope=ADMIN),
        Route("GET", "/storage/ceph/volume", list_volumes, (
            Param("limit", STRING, help="regular expression on the volume name"),
            Param("pool", STRING, help="only this pool")), summary="List RBD volumes", tags=tags,
            returns=one_or_many(VOLUME), responses=NO_MATCH),
        Route("POST", "/storage/ceph/volume", add_volume, (
            Param("volume", STRING, required=True, help="volume name"),
            Param("pool", STRING, required=True, help="pool name"), SIZE, SOURCE),
            summary="Create an RBD volume (or copy one with source_volume: a task)", tags=tags,
            returns=MESSAGE, responses=NAMED_BUSY, headers=TASK_ERRORS_TOO),
        Route("GET", "/storage/ceph/volume/<pool>/<volume>", get_volume, summary="One RBD volume", tags=tags,
              returns=VOLUME),
        Route("POST", "/storage/ceph/volume/<pool>/<volume>", add_volume, (SIZE, SOURCE),
              summary="Create an RBD volume (names in the path; a copy with source_volume: a task)", tags=tags,
              returns=MESSAGE, responses=BUSY, headers=TASK_ERRORS_TOO),
        Route("PUT", "/storage/ceph/volume/<pool>/<volume>", modify_volume, (
            Param("size", STRING, aliases=("new_size",), help="grow the volume to this size"),
            Param("new_name", STRING, aliases=("name",), help="rename the volume"),
        ), summary="Resize or rename an RBD volume (one change per call)", tags=tags, returns=MESSAGE,
            responses=VOLUME_BUSY),
        Route("DELETE", "/storage/ceph/volume/<pool>/<volume>", remove_volume,
              summary="Remove an RBD volume (refused while it has snapshots)", tags=tags,
              returns=MESSAGE, responses=VOLUME_BUSY),
        Route("POST", "/storage/ceph/volume/<pool>/<volume>/clone", clone_volume, (
            Param("new_volume", STRING, required=True, help="name of the copy, in the same pool"),),
            summary="Copy an RBD volume (a task)", tags=tags, returns=MESSAGE, responses=BUSY, headers=TASK_ERRORS_TOO),
        Route("POST", "/storage/ceph/volume/<pool>/<volume>/upload", upload_volume, (
            Param("image_format", STRING, required=True, choices=FORMATS,
                  help="format of the uploaded image (qemu-img's name; vpc is VHD); raw is written as it is, "
                       "others converted to raw"),),
            summary="Upload a disk image into an RBD volume (PVC 1.x): the body is the image, "
                    "application/octet-stream or a multipart/form-data part named 'file'; at most the volume's "
                    "size and the pool's room (a task)", tags=tags, returns=MESSAGE, stream_body=True,
            headers=task_headers(400, 409, 503, 507),
            responses={**LOCKED,
                       409: "The volume is a running VM's disk, another upload is writing it now (the volume is "
                            "held for the whole upload), or the upload was cancelled (DELETE /tasks/<id>; the "
                            "volume was rolled back)",
                       507: "No space left in the API host's data directory to spool or convert a non-raw image"}),
        Route("GET", "/storage/ceph/snapshot", list_snapshots, (
            Param("pool", STRING, help="only this pool"), Param("volume", STRING, help="only volumes of this name"),
            Param("limit", STRING, help="regular expression on the snapshot name")),
            summary="List RBD snapshots", aliases=("/storage/ceph/volume/snapshot",), tags=tags,
            returns=one_or_many(SNAPSHOT), responses=NO_MATCH),
        Route("POST", "/storage/ceph/snapshot", add_snapshot, (
            Param("snapshot", STRING, required=True, help="snapshot name"),
            Param("volume", STRING, required=True, help="volume name"),
            Param("pool", STRING, required=True, help="pool name")),
            summary="Snapshot an RBD volume", aliases=("/storage/ceph/volume/snapshot",), tags=tags,
            returns=MESSAGE, responses={**NAMED_BUSY, **LOCKED}),
        Route("GET", SNAPSHOT_ELEMENT, get_snapshot, summary="One RBD snapshot", aliases=SNAPSHOT_ELEMENT_SEED,
              tags=tags, returns=SNAPSHOT),
        Route("POST", SNAPSHOT_ELEMENT, add_snapshot, summary="Snapshot an RBD volume (names in the path)",
              aliases=SNAPSHOT_ELEMENT_SEED, tags=tags, returns=MESSAGE, responses={**BUSY, **LOCKED}),
        Route("PUT", SNAPSHOT_ELEMENT, rename_snapshot,
              (Param("new_name", STRING, required=True, help="new snapshot name"),),
              summary="Rename an RBD snapshot", aliases=SNAPSHOT_ELEMENT_SEED, tags=tags,
              returns=MESSAGE, responses=BUSY),
        Route("DELETE", SNAPSHOT_ELEMENT, remove_snapshot, summary="Remove an RBD snapshot",
              aliases=SNAPSHOT_ELEMENT_SEED, tags=tags, returns=MESSAGE, responses=BUSY),
        Route("POST", SNAPSHOT_ELEMENT + "/rollback", rollback_snapshot,
              summary="Roll an RBD volume back to a snapshot (PVC 1.x; a task)", tags=tags, returns=MESSAGE,
              headers=task_headers(404, 409, 503),
              responses={**LOCKED, 409: "The volume is a running VM's disk, or an upload is writing it now"}),
    ]

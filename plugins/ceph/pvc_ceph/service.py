"""Ceph state as the API shows it (read from ZooKeeper) and the storage service other plugins use."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from pvc_core import schema as core_schema
from pvc_core.errors import ApiError, Conflict, ServiceUnavailable

from . import schema, tools
from .area import CephArea, bounded
from .client import CephClient
from .osds import Osds
from .pools import Pools
from .snapshots import Snapshots
from .uploads import Uploads
from .volumes import Volumes

log = logging.getLogger("pvc.ceph")
EXPORT_RATE = 16 * 1024 * 1024  # bytes per second below which an rbd export is taken as stuck
V2_BANNER = b"rbd image v2\n"  # how a file of `rbd export --export-format 2` (PVC 1.x's full exports) starts


def export_format(path: str) -> str:
    """``"2"`` for a file ``rbd export --export-format 2`` wrote, else ``"1"`` (a raw image): ``rbd import``
    without the option takes a v2 file for raw data and makes a volume of its bytes, banner and all."""
    try:
        with open(path, "rb") as file:
            return "2" if file.read(len(V2_BANNER)) == V2_BANNER else "1"
    except OSError:
        return "1"  # rbd's own refusal to read it is the answer


class CephService(CephArea):
    """Published as ``ceph``: what the vm and provisioner plugins ask of storage."""

    def __init__(self, runtime: Any, client: CephClient):
        super().__init__(runtime, client)
        self.collector: Any = None
        self.pools = Pools(runtime, client)
        self.volumes = Volumes(runtime, client)
        self.snapshots = Snapshots(runtime, self.volumes)
        self.uploads = Uploads(runtime, self.volumes)
        self.osds = Osds(runtime, client)

    # -- a local single-host Ceph (the embedded run's, the tests'): OSDs for simulated nodes ---

    def _local(self) -> Any:
        from .localceph import LocalCeph
        directory = os.path.dirname(os.path.abspath(self.runtime.config["ceph.conf"]))
        local = LocalCeph(directory)
        if not local.created:
            raise RuntimeError(f"{self.runtime.config['ceph.conf']} is not a local Ceph started by pvcapid "
                               "(no mon.a under its directory); OSDs are made by real node daemons there")
        return local

    def local_osds(self) -> list[tuple[str, str]]:
        """``(id, data directory)`` of every OSD of the local Ceph."""
        local = self._local()
        return [(osd_id, local.osd_dir(osd_id)) for osd_id in local.osds()]

    def add_local_osd(self, weight: float, host: str | None = None) -> str:
        """A new, started OSD of CRUSH weight ``weight`` on the local Ceph, placed under ``host``; its id."""
        return self._local().add_osd(weight, host)

    def remove_local_osd(self, osd_id: str) -> None:
        """Drain, stop and purge one OSD of the local Ceph."""
        self._local().remove_osd(osd_id, timeout=self.runtime.config["ceph.osd_remove_timeout"])

    @bounded("connect to Ceph")
    def require_reachable(self) -> None:
        """503 now, before a multi-step operation starts, rather than half-way through it."""
        with self.client.handle():
            pass

    # -- what GET requests show (ZooKeeper only) -------------------------------------------

    def text(self, kind: str) -> dict:
        key = schema.STATUS if kind == "status" else schema.UTILIZATION
        values = self.runtime.zk.get_many([core_schema.PRIMARY_NODE, key])
        if values[key] is None:
            raise ServiceUnavailable(f"Ceph {kind} has not been collected yet (is the collector on, "
                                     "and Ceph reachable?)")
        return {"type": kind, "primary_node": values[core_schema.PRIMARY_NODE] or "none",
                "ceph_data": values[key].rstrip()}

    def status(self) -> dict:
        zk = self.runtime.zk
        kids = zk.children_many([schema.OSDS, schema.POOLS, schema.VOLUMES, schema.SNAPSHOTS])
        osds = kids[schema.OSDS] or []
        stats = self.read_stats(schema.osd(osd_id, "stats") for osd_id in osds)
        counts: dict[str, int] = {}
        degraded = False
        for osd_id in osds:
            data = stats[schema.osd(osd_id, "stats")]
            up = "up" if data.get("up") == 1 else "down"
            present = "in" if data.get("in") == 1 else "out"
            counts[f"{up},{present}"] = counts.get(f"{up},{present}", 0) + 1
            degraded = degraded or (up, present) != ("up", "in")
        osd_part = {"total": len(osds)}
        osd_part.update((key, counts[key]) for key in ("up,in", "up,out", "down,in", "down,out") if key in counts)
        volumes = zk.children_many(f"{schema.VOLUMES}/{pool}" for pool in kids[schema.VOLUMES] or [])
        snapshot_pools = zk.children_many(f"{schema.SNAPSHOTS}/{pool}" for pool in kids[schema.SNAPSHOTS] or [])
        snapshot_volumes = zk.children_many(f"{path}/{volume}" for path, names in snapshot_pools.items()
                                            for volume in names or [])
        return {"fields": {"osds": osd_part, "pools": len(kids[schema.POOLS] or []),
                           "volumes": sum(len(names or []) for names in volumes.values()),
                           "snapshots": sum(len(names or []) for names in snapshot_volumes.values())},
                "degraded": degraded}

    # -- the storage service ---------------------------------------------------------------

    @bounded("break the RBD locks of the VM's volumes")
    def remove_locks(self, volumes: list[str]) -> int:
        """Break every RBD lock on ``pool/volume`` images (a stopped VM's leftovers); how many."""
        import rbd
        broken = 0
        for name in volumes:
            pool, _, image_name = name.partition("/")
            with self.client.ioctx(pool) as ioctx:
                if ioctx is None:
                    continue
                try:
                    with rbd.Image(ioctx, image_name) as image:
                        lockers = image.list_lockers() or {}
                        for client, cookie, _address in lockers.get("lockers", []):
                            image.break_lock(client, cookie)
                            broken += 1
                except rbd.ImageNotFound:
                    continue
                except rbd.Error as exc:
                    raise self.client.unavailable(f"locks of {name}: {exc}") from None
        return broken

    def pool_free_bytes(self, pools: list[str]) -> dict[str, int]:
        """Ceph's own ``max_avail`` of those of ``pools`` recorded in the cluster, asked now.

        A pool made moments ago is missing from the manager's ``df`` until its
        first report; it is asked again for up to ``ceph.timeout`` before the
        pool counts as absent.
        """
        import json
        recorded = set(self.pools.names()) & set(pools)
        deadline = time.monotonic() + self.runtime.config["ceph.timeout"]
        while True:
            df = json.loads(self.client.mon_command("df", format="json"))
            free = {pool["name"]: int(pool.get("stats", {}).get("max_avail", 0)) for pool in df.get("pools", [])
                    if pool["name"] in recorded}
            if set(free) == recorded or time.monotonic() > deadline:
                return free
            time.sleep(0.5)

    def volume_size(self, pool: str, volume: str) -> int | None:
        """Bytes of an RBD image, or None when the pool or the image does not exist."""
        import rbd
        with self.client.ioctx(pool) as ioctx:
            if ioctx is None:
                return None
            try:
                with rbd.Image(ioctx, volume, read_only=True) as image:
                    return image.size()
            except rbd.ImageNotFound:
                return None
            except rbd.Error as exc:
                raise self.client.unavailable(f"size of {pool}/{volume}: {exc}") from None

    def volume_exists(self, pool: str, volume: str) -> bool:
        return self.runtime.zk.exists(schema.volume(pool, volume))

    def volumes_of_vm(self, vm_name: str) -> list[str]:
        return self.volumes.of_vm(vm_name)

    def rename_volume(self, pool: str, volume: str, new_name: str) -> str:
        """Rename in Ceph, then move its keys in one transaction (a VM's rename renames its disks)."""
        return self.volumes.rename(pool, volume, new_name)

    # A VM's snapshot (the vm plugin) is one RBD snapshot per disk: made, rolled back and removed here, so their
    # /ceph/snapshots keys stay what the snapshot routes keep.

    def snapshot_exists(self, pool: str, volume: str, name: str) -> bool:
        return self.runtime.zk.exists(schema.snapshot(pool, volume, name))

    def refuse_uploading(self, pool: str, volume: str, doing: str) -> None:
        """409 while an upload writes the volume (its hold, ``schema.UPLOADS``; the vm plugin's rename of a VM
        with its disks asks before it renames any)."""
        self.volumes.refuse_uploading(pool, volume, doing)

    def uploads_absent(self, volumes: list[str], doing: str) -> Any:
        """409 while an upload writes any of ``volumes`` (``pool/volume``); else the guard that keeps one from
        beginning before the caller's transaction commits (``Volumes.uploads_absent``): what the vm plugin adds
        to a change that makes a VM run on them."""
        return self.volumes.uploads_absent(volumes, doing)

    @bounded('look at the locks of RBD volume "{1}"', pool=0)
    def refuse_in_use(self, pool: str, volume: str, doing: str) -> None:
        """409 while an upload writes the volume (its hold), 400 while a client holds a lock on the volume's
        image (a VM's left by its node, a mapping; a running VM is 409 before, by ``refuse_running_vms``):
        checked for every disk before a multi-disk change starts, rather than met half-way (a locked image is
        read-only to us)."""
        self.volumes.refuse_uploading(pool, volume, doing)
        with self.snapshots._image(pool, volume) as image:
            self.volumes.refuse_locked(pool, volume, image, doing)

    def add_snapshot(self, pool: str, volume: str, name: str) -> str:
        return self.snapshots.add(pool, volume, name)

    def rollback_snapshot(self, pool: str, volume: str, name: str) -> str:
        """A step of a VM's rollback (its own record counts the disks): no record of its own."""
        return self.snapshots.rollback(pool, volume, name, record=False)

    def remove_snapshot(self, pool: str, volume: str, name: str) -> str:
        return self.snapshots.remove(pool, volume, name)

    @bounded('export RBD snapshot "{2}" of volume "{1}"', pool=0)
    def export_snapshot(self, pool: str, volume: str, name: str, target: str, from_snapshot: str | None = None) -> None:
        """Write the snapshot to the file ``target``: ``rbd export`` (the raw image as of the snapshot), or with
        ``from_snapshot`` ``rbd export-diff --from-snap`` (what changed since). Not PVC 1.x's ``--export-format
        2``: measured here, that format carries every snapshot of the image and its current data whatever
        snapshot is named, so a full export of an older snapshot imported as a newer one. The rbd CLI, as
        librbd's Python binding has no export: a volume's export takes as long as its data, bounded by
        ``ceph.timeout`` + 1 s per 16 MiB of its size."""
        size = self.volume_size(pool, volume) or 0
        spec = f"{pool}/{volume}@{name}"
        args = (["export-diff", "--from-snap", from_snapshot, spec, target] if from_snapshot
                else ["export", spec, target])
        self._rbd(args, self.client.timeout + size / EXPORT_RATE, f"export {spec}")

    @bounded('import RBD volume "{1}"', pool=0)
    def import_volume(self, pool: str, volume: str, image: str, snapshot: str, diffs: list[str]) -> None:
        """A new volume from an export's files: ``rbd import`` of the image (with ``--export-format 2`` for a
        file that format wrote, PVC 1.x's), the volume put at its snapshot ``snapshot`` (``_start_at``: what
        the first diff starts from), then ``rbd import-diff`` of each diff in turn (each makes its end
        snapshot). Its keys are recorded as Ceph then holds it. When a step fails, the image this import made
        is removed again (an image of that name it did not make stays), also when the recording of its keys
        fails (a snapshot name no key takes: it left the volume in Ceph and its key behind); the caller removes
        the volumes it imported before (``discard_volume``)."""
        self.volumes._require_pool(pool)
        schema.snapshot(pool, volume, snapshot)  # a name no key takes: 400 before anything is made
        if self.volume_exists(pool, volume):
            raise Conflict(f"ERROR: Volume '{volume}' already exists in pool '{pool}'")
        spec = f"{pool}/{volume}"
        version = export_format(image)
        options = ["--export-format", version] if version != "1" else []
        ours = False  # whether an image of that name is this import's: only then does a failure remove it
        try:
            for step, (args, path) in enumerate([(["import", *options, image, spec], image),
                                                  *((["import-diff", diff, spec], diff) for diff in diffs)]):
                try:
                    self._rbd(args, self.client.timeout + os.path.getsize(path) / EXPORT_RATE, f"import {path}")
                except Conflict as exc:
                    if step == 0 and "File exists" in exc.message:
                        # an image of that name Ceph had without its keys, or made meanwhile: not this import's
                        exc.message = (f"ERROR: Volume '{volume}' already exists in pool '{pool}' in Ceph (not "
                                       f"recorded in the cluster, or made meanwhile): {exc.message}")
                    else:
                        ours = True  # rbd import may leave the image it began
                    raise
                ours = True
                if step == 0:
                    self._start_at(pool, volume, snapshot)
            try:
                self.volumes.reconcile(pool, volume)
            except ApiError as exc:  # e.g. a diff whose end snapshot has a name no key takes
                exc.message = (f"ERROR: Failed to record imported RBD volume '{volume}' in pool '{pool}' as Ceph "
                               f"holds it ({exc.message}); expected files of an export of this cluster (the volume "
                               "is removed again)")
                raise
        except BaseException:
            if ours:
                self._discard_quietly(pool, volume)  # its keys go with it (discard_volume reconciles)
            else:
                self.volumes.reconcile(pool, volume)  # an image of that name not made here: recorded as it is
            raise

    def _start_at(self, pool: str, volume: str, snapshot: str) -> None:
        """Make the freshly imported volume hold ``snapshot`` and nothing else, with the snapshot's data.

        A raw image is the snapshot's data: the snapshot is made. A v2 file (PVC 1.x's ``rbd export
        --export-format 2 <volume>@<snapshot>``) carries every snapshot the source had when exported, older
        and newer, and the source's data of that moment, whatever snapshot it was made of; ``rbd import``
        makes them all (measured on this Ceph). The volume is rolled back to ``snapshot`` when its data
        differ (the export is of that point: the VM is defined with that snapshot's XML, and a diff from
        it applies to its data only), and the other snapshots are removed: no VM snapshot holds them, a
        later diff of the chain would find its end snapshot made already, and they would keep the volume
        from being removed with its VM."""
        import rbd
        with self.snapshots._image(pool, volume) as opened, self.client.long():
            try:
                carried = {snap["name"]: snap["size"] for snap in opened.list_snaps()}
                if snapshot not in carried:
                    opened.create_snap(snapshot)
                elif carried[snapshot] != opened.size() or _changed_since(opened, snapshot):
                    opened.rollback_to_snap(snapshot)
                for name in sorted(set(carried) - {snapshot}):
                    if opened.is_protected_snap(name):
                        opened.unprotect_snap(name)
                    opened.remove_snap(name)
            except rbd.Error as exc:
                raise self.volumes._failure(f'put imported RBD volume "{volume}" at snapshot "{snapshot}"', exc,
                                            pool) from None

    def reconcile_volume(self, pool: str, volume: str) -> None:
        """Record the volume's snapshots as Ceph holds them (work cut by its daemon's end may have made one in
        Ceph without its key)."""
        self.volumes.reconcile(pool, volume)

    def _discard_quietly(self, pool: str, volume: str) -> None:
        """An import's own image, removed after its failure: the failure is the answer, this one is logged."""
        try:
            self.discard_volume(pool, volume)
        except Exception:  # noqa: BLE001
            log.exception("import: could not remove volume %s/%s again", pool, volume)

    @bounded('remove RBD volume "{1}"', pool=0)
    def discard_volume(self, pool: str, volume: str) -> None:
        """Remove a volume with all its snapshots, and its keys (an import that failed half-way)."""
        try:
            self._rbd(["snap", "purge", f"{pool}/{volume}"], self.client.timeout, f"purge {pool}/{volume}")
            self._rbd(["rm", f"{pool}/{volume}"], self.client.timeout, f"remove {pool}/{volume}")
        finally:
            self.volumes.reconcile(pool, volume)

    def _rbd(self, args: list[str], timeout: float, what: str) -> str:
        command = ["rbd", "--conf", self.client.conffile, "--name", self.client.name]
        if self.client.keyring:
            command += ["--keyring", self.client.keyring]
        if self.client.mon_host:
            command += ["--mon-host", self.client.mon_host]
        with self.client.long():
            return tools.run(command + args, timeout, what,
                             "the rbd CLI is not installed on this API host (Debian package ceph-common)",
                             lambda stderr: Conflict(f"ERROR: Failed to {what}: {stderr}"))

    def remove_volume_if_exists(self, pool: str, volume: str) -> bool:
        """Remove a volume known to the cluster (its /ceph/volumes key), snapshots and keys included."""
        if not self.runtime.zk.exists(schema.volume(pool, volume)):
            return False
        self.volumes.remove(pool, volume)
        return True


def _changed_since(image: Any, snapshot: str) -> bool:
    """Whether the open image's data differ from its ``snapshot``'s (whole objects, from the object map
    where the image has one: a false "changed" costs a rollback, never a wrong volume)."""
    changed: list[int] = []
    image.diff_iterate(0, image.size(), snapshot, lambda offset, length, exists: changed.append(offset),
                       whole_object=True)
    return bool(changed)

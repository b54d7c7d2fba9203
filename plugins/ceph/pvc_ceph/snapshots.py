"""RBD snapshots: made through librbd, recorded under /ceph/snapshots/<pool>/<volume>/<name>."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pvc_core import matching
from pvc_core.errors import BadRequest, NotFound
from pvc_core.routes import quoted

from . import schema, tasks
from .area import bounded
from .volumes import NAME, Volumes


class Snapshots:
    def __init__(self, runtime: Any, volumes: Volumes):
        self.runtime = runtime
        self.volumes = volumes
        self.client = volumes.client

    @property
    def zk(self) -> Any:
        return self.runtime.zk

    def _missing(self, pool: str, volume: str, name: str) -> NotFound:
        return NotFound(quoted(f'ERROR: No snapshot with name "{name}" is present for volume "{volume}" '
                               f'in pool "{pool}".'))

    def list(self, pool: str | None, volume: str | None, limit: str | None) -> list[dict]:
        if pool:
            self.volumes._require_pool(pool, mutation=False)
            pools = [pool]
        else:
            pools = sorted(self.zk.children(schema.SNAPSHOTS) or [])
        by_pool = self.zk.children_many(f"{schema.SNAPSHOTS}/{name}" for name in pools)
        pairs = [(name, vol) for name in pools for vol in by_pool[f"{schema.SNAPSHOTS}/{name}"] or []]
        if volume:
            pairs = [(name, vol) for name, vol in pairs if vol == volume]
            if not pairs:
                raise BadRequest(f'ERROR: No volume with name "{volume}" is present in the cluster.')
        snaps = self.zk.children_many(schema.snapshot(name, vol) for name, vol in pairs)
        out = [{"pool": name, "volume": vol, "snapshot": snap} for name, vol in pairs
               for snap in sorted(snaps[schema.snapshot(name, vol)] or [])]
        if limit:
            pattern = matching.fuzzy(limit)
            out = [entry for entry in out if pattern.match(entry["snapshot"])]
        if not out:
            raise NotFound("Volume snapshot not found.")
        return out

    def get(self, pool: str, volume: str, name: str) -> dict:
        if not self.zk.exists(schema.snapshot(pool, volume, name)):
            raise NotFound("Volume snapshot not found.")
        return {"pool": pool, "volume": volume, "snapshot": name}

    @contextmanager
    def _image(self, pool: str, volume: str) -> Iterator[Any]:
        """The volume's RBD image, open (with its pool's I/O context) for the calls made inside."""
        with self.volumes.opened(pool, volume) as (_, image):
            yield image

    @bounded('create RBD snapshot "{2}" of volume "{1}"', pool=0)
    def add(self, pool: str, volume: str, name: str) -> str:
        import rbd
        self.volumes._require(pool, volume)
        if not NAME.match(name or ""):
            raise BadRequest(f"Parameter 'snapshot': expected a name of letters, digits, '_', '.', '+', '-' "
                             f"(not '.' or '..'), got {name!r}")
        if self.zk.exists(schema.snapshot(pool, volume, name)):
            raise BadRequest(quoted(f'ERROR: Snapshot "{name}" already exists for volume "{volume}" in pool '
                                    f'"{pool}".'))
        with self.volumes.settling(pool, volume), self._image(pool, volume) as image:
            try:
                image.create_snap(name)
            except rbd.ReadOnlyImage:
                raise self.volumes.lock_refusal(pool, volume, image, "makes no snapshot of") from None
            except rbd.Error as exc:
                raise self.volumes._failure(f'create RBD snapshot "{name}"', exc, pool) from None
        base = schema.snapshot(pool, volume)
        values = {schema.snapshot(pool, volume, name): "", f"{schema.snapshot(pool, volume, name)}/stats": "{}"}
        if not self.zk.exists(base):  # volumes made by other tools may lack the container
            values[base] = ""
        self.zk.create(values)
        return quoted(f'Created new RBD snapshot "{name}" of volume "{volume}" on pool "{pool}".')

    @bounded('rename RBD snapshot "{2}" of volume "{1}"', pool=0)
    def rename(self, pool: str, volume: str, name: str, new_name: str) -> str:
        import rbd
        if not self.zk.exists(schema.snapshot(pool, volume, name)):
            raise self._missing(pool, volume, name)
        if not NAME.match(new_name or ""):
            raise BadRequest(f"Parameter 'new_name': expected a name of letters, digits, '_', '.', '+', '-' "
                             f"(not '.' or '..'), got {new_name!r}")
        if self.zk.exists(schema.snapshot(pool, volume, new_name)):
            raise BadRequest(quoted(f'ERROR: Snapshot "{new_name}" already exists for volume "{volume}" in pool '
                                    f'"{pool}".'))
        with self.volumes.settling(pool, volume), self._image(pool, volume) as image:
            try:
                image.rename_snap(name, new_name)
            except rbd.Error as exc:
                raise self.volumes._failure(f'rename RBD snapshot "{name}" to "{new_name}"', exc, pool) from None
        transaction = self.zk.transaction()
        old, new = schema.snapshot(pool, volume, name), schema.snapshot(pool, volume, new_name)
        transaction.create(new, b"")
        transaction.create(f"{new}/stats", b"{}")
        for child in self.zk.children(old) or []:
            transaction.delete(f"{old}/{child}")
        transaction.delete(old)
        self.zk.commit(transaction, f"rename of snapshot {pool}/{volume}@{name}")
        return quoted(f'Renamed RBD volume snapshot "{name}" to "{new_name}" for volume {volume} on pool "{pool}".')

    @bounded('roll back RBD volume "{1}" to snapshot "{2}"', pool=0)
    def rollback(self, pool: str, volume: str, name: str,
                 on_task: Callable[[str | None], None] | None = None, record: bool = True) -> str:
        """Put the volume's data back as it was at the snapshot (librbd ``rollback_to_snap``), as a task
        (``pvc_ceph.tasks``; ``on_task`` gets its id), unless it is a step of a task of its caller's
        (``record`` false: a VM's rollback, whose own record counts the disks).

        Refused (409) while a running VM has the volume as a disk (the vm service says which), or
        while any client holds a lock on the image (a VM or a mapping the cluster does not know of):
        rolling back under a writer corrupts what it holds in memory. Refused (409) too while an upload
        writes the volume (its hold, ``schema.UPLOADS``): the rollback would wipe what it wrote so far and
        leave the rest of the upload over the snapshot's data. A VM's rollback (``record`` false) checks
        every disk for all of this before it starts (``CephService.refuse_in_use``), and its undo of the disks
        done must not be refused.
        """
        import rbd
        self.volumes._require(pool, volume)
        if not self.zk.exists(schema.snapshot(pool, volume, name)):
            raise self._missing(pool, volume, name)
        if record:
            self.volumes.refuse_uploading(pool, volume, "rolling it back")
        self.volumes.refuse_running_vms(pool, volume, "rolling it back")

        def roll_back(handle: Any) -> str:
            with self.volumes.settling(pool, volume), self._image(pool, volume) as image:
                try:
                    self.volumes.refuse_locked(pool, volume, image, "rolling it back")
                    image.rollback_to_snap(name)
                except rbd.ImageNotFound:
                    raise self._missing(pool, volume, name) from None
                except rbd.Error as exc:
                    raise self.volumes._failure(f'roll back RBD volume "{volume}" to snapshot "{name}"', exc,
                                                pool) from None
            return quoted(f'Rolled back RBD volume "{volume}" in pool "{pool}" to snapshot "{name}".')
        if not record:
            return roll_back(None)
        return self.runtime.task_monitor.run(
            tasks.SNAPSHOT_ROLLBACK, {"pool": pool, "volume": volume, "snapshot": name},
            f"Rolling RBD volume {pool}/{volume} back to snapshot {name}", roll_back, on_task)

    @bounded('remove RBD snapshot "{2}" of volume "{1}"', pool=0)
    def remove(self, pool: str, volume: str, name: str) -> str:
        import rbd
        if not self.zk.exists(schema.snapshot(pool, volume, name)):
            raise self._missing(pool, volume, name)
        with self.volumes.settling(pool, volume), self._image(pool, volume) as image:
            try:
                if image.is_protected_snap(name):
                    image.unprotect_snap(name)
                image.remove_snap(name)
            except rbd.ImageNotFound:
                pass  # gone in Ceph already: the keys still go
            except rbd.Error as exc:
                raise self.volumes._failure(f'remove RBD snapshot "{name}"', exc, pool) from None
        self.zk.delete([schema.snapshot(pool, volume, name)])
        return quoted(f'Removed RBD snapshot "{name}" of volume "{volume}" in pool "{pool}".')

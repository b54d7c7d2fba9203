"""RBD volumes: run through librbd, then recorded under /ceph/volumes and /ceph/snapshots as v0.6 did."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pvc_core import etags, matching
from pvc_core.errors import ApiError, BadRequest, Conflict, NotFound, ServiceUnavailable
from pvc_core.routes import quoted
from pvc_core.schema import DAEMON_ROOT
from pvc_core.taskmonitor import Cancelled

from . import schema
from .area import CephArea, bounded

log = logging.getLogger("pvc.ceph.volumes")

UNITS = {"B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4, "P": 1024 ** 5}
SIZE = re.compile(r"^([0-9]+)([BKMGTP]?)$", re.IGNORECASE)
NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.+-]+$")  # not "." or "..": those are no ZooKeeper key
# The largest RBD image Ceph makes with its default features: the object map holds at most
# 256,000,000 objects (librbd's MAX_OBJECT_MAP_OBJECT_COUNT), of 4 MiB each; `rbd create` of
# anything larger fails with EINVAL, and an image that large without an object map takes days to remove.
MAX_SIZE = 256_000_000 * 4 * UNITS["M"]
# A copy is made, reported and cancellable in pieces of this size (an RBD object's default size).
COPY_PIECE = 4 * UNITS["M"]


def _copy_features() -> int:
    import rbd
    return (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
            | rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_DEEP_FLATTEN)


def parse_size(text: str, parameter: str = "size") -> int:
    """Bare bytes or a B/K/M/G/T/P suffix (binary multiples), as DECISIONS settles it."""
    match = SIZE.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise BadRequest(f"Parameter '{parameter}': expected a size in bytes or with a B/K/M/G/T/P suffix "
                         f"(e.g. 20G), got {text!r}")
    size = int(match.group(1)) * UNITS[(match.group(2) or "B").upper()]
    if size > MAX_SIZE:
        raise BadRequest(f"Parameter '{parameter}': expected at most {MAX_SIZE} bytes ({MAX_SIZE // UNITS['T']}T, "
                         f"Ceph's largest RBD image: 256000000 objects of 4 MiB), got {text!r}")
    return size


def format_size(size: int) -> str:
    """ceph.md §3.2: the smallest unit whose rounded-up value is at most 9999."""
    result = f"{size}B"
    for unit in ("P", "T", "G", "M", "K", "B"):
        value = math.ceil(size / UNITS[unit])
        if value <= 9999:
            result = f"{value}{unit}"
    return result


def _check_name(parameter: str, name: str) -> str:
    if not NAME.match(name or ""):
        raise BadRequest(f"Parameter '{parameter}': expected a volume name of letters, digits, '_', '.', '+', '-' "
                         f"(not '.' or '..'), got {name!r}")
    return name


def _timestamp(value: Any) -> str:
    return value.strftime("%a %b %d %H:%M:%S %Y") if value is not None else ""


class Volumes(CephArea):
    # -- Ceph side -------------------------------------------------------------------------

    def _ioctx(self, pool: str) -> Any:
        """``CephClient.ioctx`` with v0.6's message for a pool Ceph does not have."""
        return self.client.ioctx(pool, missing=NotFound(quoted(f'ERROR: No pool with name "{pool}" is present '
                                                              'in the cluster.')))

    @contextmanager
    def opened(self, pool: str, name: str) -> Iterator[tuple[Any, Any]]:
        """The pool's I/O context and the volume's RBD image, open for the calls made inside."""
        import rbd
        with self._ioctx(pool) as ioctx:
            try:
                image = rbd.Image(ioctx, name)
            except rbd.Error as exc:
                raise self._failure(f'open RBD volume "{name}"', exc, pool) from None
            try:
                yield ioctx, image
            finally:
                image.close()

    def _failure(self, what: str, exc: Exception, pool: str | None = None) -> ApiError:
        import rbd
        reason = str(exc) or type(exc).__name__
        # ReadOnlyImage (EROFS): another client holds the image's lock, a 400 like v0.6's (``lock_refusal``)
        if isinstance(exc, (rbd.ImageExists, rbd.ImageBusy, rbd.ImageHasSnapshots)):
            return Conflict(f"ERROR: Failed to {what}: {reason}")
        if isinstance(exc, (rbd.ConnectionShutdown, rbd.Timeout)):
            # The monitors answered (the pool was opened): an operation that times out on a
            # pool whose placement groups are not active waits for them, not for Ceph.
            stalled = self.client.stalled(what, pool) if pool is not None and isinstance(exc, rbd.Timeout) else None
            if stalled is None:
                self.client.reset()
            error = stalled or self.client.unavailable(f"{what}: {reason}")
            error.outcome_unknown = True  # what was sent may still be applied: ``settling`` looks again
            return error
        return BadRequest(f"ERROR: Failed to {what}: {reason}")

    def _info(self, ioctx: Any, name: str) -> str:
        """What `rbd info --format json` shows, as the stats value (ceph.md §2.4)."""
        import rbd
        with rbd.Image(ioctx, name, read_only=True) as image:
            stat = image.stat()
            features = image.features()
            names = [label for bit, label in ((rbd.RBD_FEATURE_LAYERING, "layering"),
                                              (rbd.RBD_FEATURE_EXCLUSIVE_LOCK, "exclusive-lock"),
                                              (rbd.RBD_FEATURE_OBJECT_MAP, "object-map"),
                                              (rbd.RBD_FEATURE_FAST_DIFF, "fast-diff"),
                                              (rbd.RBD_FEATURE_DEEP_FLATTEN, "deep-flatten")) if features & bit]
            return json.dumps({
                "name": name, "id": image.id(), "size": stat["size"], "objects": stat["num_objs"],
                "order": stat["order"], "object_size": stat["obj_size"],
                "snapshot_count": len(list(image.list_snaps())), "block_name_prefix": stat["block_name_prefix"],
                "format": 2, "features": names, "op_features": [], "flags": [],
                "create_timestamp": _timestamp(image.create_timestamp()),
                "access_timestamp": _timestamp(image.access_timestamp()),
                "modify_timestamp": _timestamp(image.modify_timestamp()),
            }, separators=(",", ":")) + "\n"

    # -- a volume in use ----------------------------------------------------------------------

    def refuse_running_vms(self, pool: str, name: str, doing: str) -> None:
        """409 while a running VM has the volume as a disk (the vm service says which): changing its data
        under the VM corrupts what the VM holds in memory."""
        vms = self.runtime.service("vm", required=False)
        users = vms.running_vms_using_volume(f"{pool}/{name}") if vms is not None else []
        if users:
            raise Conflict(f"ERROR: Volume '{name}' in pool '{pool}' is a disk of running VM(s) "
                           f"{', '.join(users)}; stop them before {doing}")

    def upload_of(self, pool: str, name: str) -> dict | None:
        """What the upload writing the volume now recorded in its hold (``schema.UPLOADS``: ``task_id``,
        ``worker``), or None when no upload holds it."""
        return held_by(self.zk.get(schema.upload_hold(pool, name)))

    def upload_refusal(self, pool: str, name: str, held: dict, doing: str) -> Conflict:
        """409 for ``doing`` while an upload holds the volume: its writes would mix with the change (a second
        upload, a rollback), or a VM would run on a disk being rewritten. Names the upload's task, when its
        record has an id yet, and how to follow or cancel it."""
        task = held.get("task_id")
        which = f" (task {task}: GET /tasks/{task})" if task else ""
        cancel = f", or cancel it (DELETE /tasks/{task})," if task else ""
        return Conflict(f"ERROR: Volume '{name}' in pool '{pool}' is being written by an upload running now{which}; "
                        f"wait for it to end{cancel} before {doing}")

    def refuse_uploading(self, pool: str, name: str, doing: str) -> None:
        """409 while an upload holds the volume (``upload_refusal``)."""
        held = self.upload_of(pool, name)
        if held is not None:
            raise self.upload_refusal(pool, name, held, doing)

    def uploads_absent(self, volumes: Iterable[str], doing: str) -> etags.Guard:
        """409 now while an upload holds any of ``volumes`` (``pool/volume``); else a guard whose operations
        (``add_to``) make a transaction fail should an upload take one of them before it commits, so that a
        change made in that transaction (a VM set to run on them) and an upload never both go ahead: the
        caller's ``zk.optimistic`` tries again, and the retry is refused here. ZooKeeper has no check of
        absence; the guard creates and deletes, in the transaction, the first key on the way to each hold that
        is absent (the hold itself, or a parent not made yet), which fails if it has been made meanwhile."""
        chains = []
        for volume in volumes:
            pool, _, name = volume.partition("/")
            try:
                key = schema.upload_hold(pool, name)
            except BadRequest:
                continue  # no volume name (a disk written by other tooling): no upload can hold it
            chains.append((pool, name, [DAEMON_ROOT, schema.UPLOADS, key.rsplit("/", 1)[0], key]))
        found = self.zk.get_many(sorted({path for *_, chain in chains for path in chain}))
        for pool, name, chain in chains:
            if found[chain[-1]] is not None:
                raise self.upload_refusal(pool, name, held_by(found[chain[-1]]) or {}, doing)
        return etags.Guard(None, absent=sorted({next(path for path in chain if found[path] is None)
                                                for *_, chain in chains}))

    def refuse_locked(self, pool: str, name: str, image: Any, doing: str) -> None:
        """400 while any client holds a lock on the open ``image`` (a stopped VM's left by its node, a mapping
        the cluster does not know of), as for a snapshot (``lock_refusal``): naming each lock and how to release
        it, since the client holding it is none the cluster knows of. A running VM is refused (409) before, by
        ``refuse_running_vms``."""
        lockers = (image.list_lockers() or {}).get("lockers", [])
        if lockers:
            held, ways = self._lock_description(pool, name, lockers)
            raise BadRequest(f"ERROR: Volume '{name}' in pool '{pool}' is in use, locked by another client: "
                             f"{held}; release the lock ({ways}) before {doing}")

    def lock_refusal(self, pool: str, name: str, image: Any, refused: str) -> BadRequest:
        """400 for a change Ceph refused because another client holds the image's lock (librbd answers
        "read-only image", EROFS: with the exclusive-lock feature it writes only as the lock's owner, and it
        cannot ask a lock taken with ``rbd lock add`` or ``lock_exclusive`` to hand over, as it asks a
        running VM's). 400, not 409: v0.6 answers every snapshot its node could not make with 400, and the
        lock is none of the cluster's objects but a client outside it. Says whose lock it is and how to
        release it; ``refused`` completes "Ceph …"."""
        import rbd
        try:
            lockers = (image.list_lockers() or {}).get("lockers", [])
        except rbd.Error:
            lockers = []  # the lock went meanwhile, or Ceph fails now: the refusal stands as it is
        held, ways = self._lock_description(pool, name, lockers)
        holder = f": {held}" if held else ""
        how = f" ({ways})" if ways else ""
        return BadRequest(f"ERROR: Volume '{name}' in pool '{pool}' is locked by another client{holder}, and Ceph "
                          f"{refused} a volume locked by another client; release the lock{how} and try again")

    def _lock_description(self, pool: str, name: str, lockers: list) -> tuple[str, str]:
        """(each lock: its client, cookie and address; the ways to release them: ``POST /vm/<vm>/locks`` for
        each VM with the volume as a disk, ``rbd lock rm`` for each lock), one wording for every refusal of a
        locked volume, so that whoever meets one can release the lock whatever the call was."""
        held = "; ".join(f"{client} (lock '{cookie}', from {address})" for client, cookie, address in lockers)
        vms = self.runtime.service("vm", required=False)
        users = sorted(vms.vms_using_volume(f"{pool}/{name}")) if vms is not None else []
        ways = [f"POST /vm/{vm}/locks (VM '{vm}' stopped)" for vm in users]
        ways += [f"rbd lock rm {pool}/{name} '{cookie}' {client}" for client, cookie, _ in lockers]
        return held, " or ".join(ways)

    # -- reading (ZooKeeper) ---------------------------------------------------------------

    def _require_pool(self, pool: str, mutation: bool = True) -> None:
        if not self.zk.exists(schema.pool(pool)):
            text = f'ERROR: No pool with name "{pool}" is present in the cluster.'
            raise NotFound(quoted(text) if mutation else text)

    def _require(self, pool: str, name: str) -> None:
        self._require_pool(pool)
        if not self.zk.exists(schema.volume(pool, name)):
            raise NotFound(quoted(f'ERROR: No volume with name "{name}" is present in pool "{pool}".'))

    def _objects(self, pairs: list[tuple[str, str]]) -> list[dict]:
        stats = self.read_stats(f"{schema.volume(pool, name)}/stats" for pool, name in pairs)
        out = []
        for pool, name in pairs:
            data = stats[f"{schema.volume(pool, name)}/stats"]
            if isinstance(data.get("size"), int):
                data["size"] = format_size(data["size"])
            out.append({"name": name, "pool": pool, "stats": data})
        return out

    def list(self, limit: str | None, pool: str | None) -> list[dict]:
        if pool:
            self._require_pool(pool, mutation=False)
            pools = [pool]
        else:
            pools = sorted(self.zk.children(schema.POOLS) or [])
        children = self.zk.children_many(f"{schema.VOLUMES}/{name}" for name in pools)
        pairs = [(name, volume) for name in pools for volume in children[f"{schema.VOLUMES}/{name}"] or []]
        if limit:
            pattern = matching.fuzzy(limit)
            pairs = [(name, volume) for name, volume in pairs if pattern.match(volume)]
        if not pairs:
            raise NotFound("Volume not found.")
        return self._objects(pairs)

    def get(self, pool: str, name: str) -> dict:
        self._require_pool(pool, mutation=False)
        if not self.zk.exists(schema.volume(pool, name)):
            raise NotFound("Volume not found.")
        return self._objects([(pool, name)])[0]

    def of_vm(self, vm_name: str) -> list[str]:
        """``pool/volume`` of every volume named for a VM (``<vm>_<disk>``, the provisioner's naming)."""
        pools = sorted(self.zk.children(schema.POOLS) or [])
        children = self.zk.children_many(f"{schema.VOLUMES}/{pool}" for pool in pools)
        return [f"{pool}/{volume}" for pool in pools for volume in children[f"{schema.VOLUMES}/{pool}"] or []
                if volume.startswith(f"{vm_name}_")]

    def statistics(self, stopping: Any = None) -> dict[str, str]:
        """Fresh ``rbd info`` values for every recorded volume (v0.6 wrote them only on changes); cut short
        once ``stopping`` (an Event) is set: with hundreds of volumes a daemon's stop waited for them."""
        import rbd
        pools = sorted(self.zk.children(schema.POOLS) or [])
        children = self.zk.children_many(f"{schema.VOLUMES}/{pool}" for pool in pools)
        out = {}
        for pool in pools:
            names = children[f"{schema.VOLUMES}/{pool}"] or []
            if not names:
                continue
            with self._ioctx(pool) as ioctx:
                for name in names:
                    if stopping is not None and stopping.is_set():
                        return out
                    try:
                        out[f"{schema.volume(pool, name)}/stats"] = self._info(ioctx, name)
                    except rbd.Error:
                        continue  # removed meanwhile, or not an RBD image
        return out

    # -- an outcome Ceph left unknown -------------------------------------------------------

    @contextmanager
    def settling(self, pool: str, *names: str) -> Iterator[None]:
        """Changes to volumes ``names`` inside: if Ceph does not answer in time, an operation it was sent
        may still be applied once it does (librados gives up waiting, the OSD does not forget it), and
        ZooKeeper would no longer say what Ceph holds. Each volume is then looked at again, in the
        background, until Ceph answers, and its keys are made to agree (``reconcile``)."""
        try:
            yield
        except Exception as exc:
            # any failure after its request was answered 503 is as unknown to the client as the 503 itself
            if self.client.answered_early() or isinstance(exc, ServiceUnavailable) or \
                    (isinstance(exc, ApiError) and exc.outcome_unknown):
                for name in names:
                    self.client.later(f"settle volume {pool}/{name}", self.reconcile, pool, name)
            raise

    def reconcile(self, pool: str, name: str) -> None:
        """Record the volume and its snapshots as Ceph holds them now, or drop its keys if Ceph has no such
        image (ZooKeeper follows Ceph: that is where the data is)."""
        import rbd
        with self.client.ioctx(pool) as ioctx:
            if ioctx is None:
                return  # the pool is gone: its keys go with the pool
            try:
                with rbd.Image(ioctx, name, read_only=True) as image:
                    snapshots = {snapshot["name"] for snapshot in image.list_snaps()}
                stats = self._info(ioctx, name)
            except rbd.ImageNotFound:
                stats = None
            except rbd.Error as exc:
                raise self.client.unavailable(f"look at volume {pool}/{name}: {exc}") from None
            try:
                if stats is None and name in rbd.RBD().list(ioctx):
                    # listed but not openable: a removal or creation cut short; finish removing it
                    rbd.RBD().remove(ioctx, name)
            except rbd.ImageNotFound:
                pass
            except rbd.Error as exc:
                raise self.client.unavailable(f"remove what is left of volume {pool}/{name}: {exc}") from None
        volume_key, snapshots_key = schema.volume(pool, name), schema.snapshot(pool, name)
        recorded = self.zk.exists(volume_key)
        if stats is None:
            if recorded or self.zk.exists(snapshots_key):
                self.zk.delete([volume_key, snapshots_key])
            return
        self._record(pool, name, stats, create=not recorded)
        kept = set(self.zk.children(snapshots_key) or [])
        values = {schema.snapshot(pool, name, snapshot): "" for snapshot in snapshots - kept}
        values.update({f"{schema.snapshot(pool, name, snapshot)}/stats": "{}" for snapshot in snapshots - kept})
        if values:
            self.zk.create(values)
        gone = [schema.snapshot(pool, name, snapshot) for snapshot in kept - snapshots]
        if gone:
            self.zk.delete(gone)

    # -- changes ---------------------------------------------------------------------------

    def _record(self, pool: str, name: str, stats: str, create: bool) -> None:
        values = {schema.volume(pool, name): "", f"{schema.volume(pool, name)}/stats": stats}
        if create:
            values[schema.snapshot(pool, name)] = ""
            self.zk.create(values)
        else:
            self.zk.write(values)

    @bounded('create RBD volume "{1}"', pool=0)
    def add(self, pool: str, name: str, size_text: str, source: str | None = None, task: str | None = None,
            on_task: Callable[[str | None], None] | None = None) -> str:
        """``task`` (with ``source``): keep a task record of the copy (``pvc_ceph.tasks``); ``on_task`` gets its id."""
        self._require_pool(pool)
        _check_name("volume", name)
        size = parse_size(size_text) if source is None else None
        if self.zk.exists(schema.volume(pool, name)):
            raise BadRequest(quoted(f'ERROR: Volume "{name}" already exists in pool "{pool}".'))
        if source is None:
            self._make(pool, name, size, None, None)
            return quoted(f'Created new RBD volume "{name}" of size "{size_text}" on pool "{pool}".')
        self._require(pool, source)
        message = quoted(f'Cloned RBD volume "{source}" to "{name}" on pool "{pool}".')

        def copy(handle: Any) -> str:
            self._make(pool, name, None, source, handle)
            return message
        if task is None:
            return copy(None)
        return self.runtime.task_monitor.run(task, {"pool": pool, "source": source, "volume": name},
                                             f"Copying RBD volume {pool}/{source} to {name}", copy, on_task)

    def _make(self, pool: str, name: str, size: int | None, source: str | None, handle: Any) -> None:
        import rbd
        with self.settling(pool, name), self._ioctx(pool) as ioctx:
            try:
                if source is None:
                    rbd.RBD().create(ioctx, name, size, old_format=False,
                                     features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK)
                else:
                    with self.client.long():
                        self._copy(ioctx, pool, source, name, handle)
                stats = self._info(ioctx, name)
            except rbd.Error as exc:
                what = f'clone RBD volume "{source}" to "{name}"' if source else f'create RBD volume "{name}"'
                raise self._failure(what, exc, pool) from None
            try:
                self._record(pool, name, stats, create=True)
            except ApiError:
                try:
                    rbd.RBD().remove(ioctx, name)  # keep Ceph and ZooKeeper in step
                except rbd.Error as exc:  # looked at again (settling) until they are
                    raise self.client.unavailable(f'remove RBD volume "{name}" whose keys could not be '
                                                  f"written: {exc}") from None
                raise

    def _copy(self, ioctx: Any, pool: str, source: str, name: str, handle: Any) -> None:
        """A full copy, as v0.6's `rbd copy` (same size, features and object size), made piece by piece so that
        it reports progress and stops at a cancel; only the source's allocated extents are read. Whatever
        stops it removes the partial volume: ZooKeeper has not recorded it."""
        import rbd
        with rbd.Image(ioctx, source, read_only=True) as image:
            size, order, features = image.size(), image.stat()["order"], image.features()
            extents: list[tuple[int, int]] = []
            image.diff_iterate(0, size, None, lambda offset, length, exists: extents.append((offset, length))
                               if exists else None)
            pieces = [(offset + start, min(COPY_PIECE, length - start))
                      for offset, length in extents for start in range(0, length, COPY_PIECE)]
            rbd.RBD().create(ioctx, name, size, order=order, old_format=False, features=features & _copy_features())
            try:
                with rbd.Image(ioctx, name) as target:
                    for index, (offset, length) in enumerate(pieces, start=1):
                        _stop_copy_if_cancelled(handle, pool, source, name, index - 1, len(pieces))
                        target.write(image.read(offset, length), offset)
                        if handle is not None:
                            handle.progress(index, len(pieces), f"Copied {index} of {len(pieces)} pieces "
                                                                f"({COPY_PIECE // UNITS['M']} MiB each)")
                # after the last piece too: recording the volume in ZooKeeper (the caller) keeps the copy
                _stop_copy_if_cancelled(handle, pool, source, name, len(pieces), len(pieces))
            except BaseException:
                try:
                    rbd.RBD().remove(ioctx, name)
                except rbd.Error:
                    log.exception("could not remove the partial copy %s/%s", pool, name)
                raise

    @staticmethod
    def break_dead_owner(image: Any) -> None:
        """Work cut by its daemon's end (a copy, an upload) left the image's exclusive lock and watch to the dead
        client: Ceph keeps the image read-only to others until that watch times out (30 s). Breaking the lock
        blocklists its owner and drops the watch. Only for images the caller knows no live client uses."""
        for owner in image.lock_get_owners():
            image.lock_break(owner["mode"], owner["owner"])

    def remove_partial(self, pool: str, name: str) -> bool:
        """An image left by a copy that its daemon did not finish (ZooKeeper never recorded it) is removed."""
        import rbd
        if self.zk.exists(schema.volume(pool, name)):
            return False
        with self._ioctx(pool) as ioctx:
            try:
                with rbd.Image(ioctx, name) as image:
                    self.break_dead_owner(image)
                rbd.RBD().remove(ioctx, name)
            except rbd.ImageNotFound:
                return False
        return True

    @bounded('resize RBD volume "{1}"', pool=0)
    def resize(self, pool: str, name: str, size_text: str) -> str:
        import rbd
        self._require(pool, name)
        size = parse_size(size_text)
        self.refuse_uploading(pool, name, "resizing it")
        with self.settling(pool, name), self._ioctx(pool) as ioctx:
            try:
                with rbd.Image(ioctx, name) as image:
                    current = image.size()
                    if size < current:
                        raise BadRequest(f"Parameter 'size': expected more than the current {format_size(current)} "
                                         f"(shrinking a volume destroys data), got {size_text!r}")
                    image.resize(size)
                stats = self._info(ioctx, name)
            except rbd.Error as exc:
                raise self._failure(f'resize RBD volume "{name}"', exc, pool) from None
        self._record(pool, name, stats, create=False)
        return quoted(f'Resized RBD volume "{name}" to size "{size_text}" on pool "{pool}".')

    @bounded('rename RBD volume "{1}"', pool=0)
    def rename(self, pool: str, name: str, new_name: str) -> str:
        import rbd
        self._require(pool, name)
        _check_name("new_name", new_name)
        if self.zk.exists(schema.volume(pool, new_name)):
            raise BadRequest(quoted(f'ERROR: Volume "{new_name}" already exists in pool "{pool}".'))
        self.refuse_uploading(pool, name, "renaming it")  # the upload records its volume by name at its end
        with self.settling(pool, name, new_name), self._ioctx(pool) as ioctx:
            try:
                rbd.RBD().rename(ioctx, name, new_name)
                stats = self._info(ioctx, new_name)
            except rbd.Error as exc:
                raise self._failure(f'rename RBD volume "{name}" to "{new_name}"', exc, pool) from None
        self._move(pool, name, new_name, stats)
        return quoted(f'Renamed RBD volume "{name}" to "{new_name}" on pool "{pool}".')

    def _move(self, pool: str, name: str, new_name: str, stats: str) -> None:
        """Both subtrees renamed in one transaction (v0.6 nodes did it non-atomically: S13)."""
        old_roots = [schema.volume(pool, name), schema.snapshot(pool, name)]
        paths = [path for root in old_roots for path in self.zk.subtree(root)]
        values = self.zk.get_many(paths)
        transaction = self.zk.transaction()
        new_roots = [schema.volume(pool, new_name), schema.snapshot(pool, new_name)]
        for path in paths:  # parents first
            index = 0 if path.startswith(old_roots[0]) else 1
            target = new_roots[index] + path[len(old_roots[index]):]
            data = stats if target == f"{schema.volume(pool, new_name)}/stats" else values[path] or ""
            transaction.create(target, data.encode())
        for path in sorted(paths, key=lambda p: -p.count("/")):
            transaction.delete(path)
        self.zk.commit(transaction, f"rename of volume {pool}/{name}")

    @bounded('remove RBD volume "{1}"', pool=0)
    def remove(self, pool: str, name: str) -> str:
        import rbd
        self._require(pool, name)
        self.refuse_uploading(pool, name, "removing it")
        with self.settling(pool, name), self._ioctx(pool) as ioctx:
            try:
                # A volume with snapshots is refused with Ceph's reason (409): removing them
                # silently would destroy what the operator kept on purpose.
                rbd.RBD().remove(ioctx, name, on_progress=self.client.progress())  # long for a large one
            except rbd.ImageNotFound:
                pass  # gone in Ceph already: the keys still go
            except rbd.Error as exc:
                raise self._failure(f'remove RBD volume "{name}"', exc, pool) from None
        self.zk.delete([schema.volume(pool, name), schema.snapshot(pool, name)])
        return quoted(f'Removed RBD volume "{name}" in pool "{pool}".')


def held_by(value: str | None) -> dict | None:
    """The JSON value of an upload's hold (``schema.UPLOADS``), or None when there is no hold; a value that is
    not such JSON (other tooling's) holds the volume all the same."""
    if value is None:
        return None
    try:
        record = json.loads(value)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _stop_copy_if_cancelled(handle: Any, pool: str, source: str, name: str, done: int, total: int) -> None:
    """Where a cancel stops a copy (409 to its request; the caller removes the partial volume)."""
    if handle is None or not handle.cancelled.is_set():
        return
    stopped = Cancelled(f"ERROR: Copy of RBD volume \"{source}\" to \"{name}\" cancelled after {done} of {total} "
                       f"pieces (DELETE /tasks/{handle.id}); the partial volume was removed")
    stopped.task_status = (f"Cancelled: the copy stopped after {done} of {total} pieces; the partial volume "
                           f"{pool}/{name} was removed")
    raise stopped

"""A disk image uploaded into an existing RBD volume (PVC 1.x's ``POST …/volume/<pool>/<volume>/upload``).

The body streams in (``pvc_core.stream``) and is never held whole:

* ``raw``: written straight into the image through librbd, one RBD object
  (4 MiB) at a time; a body longer than the volume is refused (400) at its
  Content-Length, or as soon as it passes the volume's size.
* other formats (qcow2, vmdk, vdi, vhdx, vpc = VHD, qed...): qemu-img needs a
  file it can seek in. The body is spooled to ``<data_dir>/uploads/`` (at most
  the volume's size plus a margin for the format's own tables), checked with
  ``qemu-img info`` (its virtual size must fit the volume; a backing file, an
  external data file or an extent outside the upload is refused: converting
  it would copy a file of this host into the volume), with ``qemu-img check``
  (errors: 400) and with ``qemu-img map`` (data placed past the file's end:
  400; qemu-img would convert a cut image, reading zeros), converted with
  ``qemu-img convert -O raw`` to a sparse raw file beside it and copied in
  through librbd. Debian's qemu-img reaches RBD only with
  ``qemu-block-extra`` (and its GlusterFS, iSCSI and NFS libraries), so the
  copy is ours; it needs up to twice the volume's size free in the data
  directory. Both files are removed when the request ends, and any left by a
  daemon that died meanwhile when the plugin starts.

Either way the volume's first bytes become the image (an all-zero object is
discarded, so the volume stays sparse) and the rest of the volume is kept.
Before the first write the volume is snapshotted; a failure after it (a cut
upload, Ceph failing, a raw body found too long) rolls the volume back, so a
refused or failed upload leaves it as it was. The volume must not be in use:
a running VM's disk is 409, a volume another client holds locked 400.

Those checks alone held only when the upload began: a VM started a moment later
ran on the disk being rewritten, and a second upload's writes mixed with the
first's (and its rollback wiped them). So the upload holds its volume, from
before its first check until it ends whatever way: an ephemeral ZooKeeper key
(``schema.UPLOADS``), which every API daemon of the cluster sees and a dead
daemon's session takes away. Meanwhile a second upload, a snapshot rollback, a
resize, rename or removal of the volume are 409, and so is whatever would make
a VM with the volume as a disk run (the vm plugin asks ``CephService.uploads_absent``).
"""

from __future__ import annotations

import errno
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pvc_core.errors import ApiError, BadRequest, Conflict, ServiceUnavailable
from pvc_core.routes import quoted
from pvc_core.zk import TransactionFailed

from . import schema, tasks, tools
from .area import bounded
from .volumes import Volumes, held_by

# qemu-img's names of the formats it reads (vpc is VHD); PVC 1.x took raw, vmdk, qcow2, qed, vdi and vpc.
FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc", "qed", "qcow", "parallels")
SPOOL_MARGIN = 0.01  # of the volume's size, plus MARGIN_BYTES: the spooled file's format tables
MARGIN_BYTES = 16 * 1024 * 1024
# qemu-img check's exit statuses after which the image converts whole: no errors, leaked clusters only (space the
# image wastes, no data it lacks), a format without checks (vpc, qcow)
CHECK_PASSES = (0, 3, 63)
CONVERT_RATE = 16 * 1024 * 1024  # bytes per second below which qemu-img convert is taken as stuck
SPOOL_READ = 1024 * 1024
SNAPSHOT_PREFIX = "pvc-upload-"

QEMU_IMG_MISSING = ("qemu-img is not installed on this API host (Debian package qemu-utils); "
                    "only raw images can be uploaded")

log = logging.getLogger("pvc.ceph")


class Hold:
    """An upload's hold on its volume (``Uploads.holding``): released when the upload ends, unless the
    rollback of a failed upload was left to the background (``handed_over``), which releases it when done."""

    def __init__(self, uploads: Uploads, pool: str, name: str, worker: str):
        self.uploads = uploads
        self.pool, self.name, self.worker = pool, name, worker
        self.key = schema.upload_hold(pool, name)
        self.handed_over = False

    def record(self, task_id: str | None) -> None:
        """The upload's task record id in the hold, for the 409 of whoever meets it; the hold stands without."""
        if task_id is None:
            return
        zk = self.uploads.runtime.zk
        try:
            transaction = zk.transaction()
            transaction.set_data(self.key, json.dumps({"task_id": task_id, "worker": self.worker}).encode())
            zk.commit(transaction, f"task id of the upload hold {self.key}")
        except ApiError as exc:
            log.warning("upload to %s/%s: its hold does not name its task %s (%s)", self.pool, self.name,
                        task_id, exc.message)

    def release(self) -> None:
        """Delete the hold if it is still this daemon's; while ZooKeeper is unreachable, tried again in the
        background (a session that expires meanwhile takes it away by itself)."""
        try:
            self.uploads.runtime.zk.delete_own(self.key)
        except ServiceUnavailable:
            self.uploads.client.later(f"release the hold of the upload to volume {self.pool}/{self.name}",
                                      self.uploads.runtime.zk.delete_own, self.key)
        except ApiError as exc:
            log.error("upload to %s/%s: its hold %s could not be released (%s); it goes with this daemon's "
                      "ZooKeeper session", self.pool, self.name, self.key, exc.message)


class Uploads:
    def __init__(self, runtime: Any, volumes: Volumes):
        self.runtime = runtime
        self.volumes = volumes
        self.client = volumes.client
        self._holds: dict[tuple[str, str], Hold] = {}  # this daemon's, by volume (one per volume in the cluster)
        self._lock = threading.Lock()

    @property
    def zk(self) -> Any:
        return self.runtime.zk

    @property
    def directory(self) -> Path:
        return Path(self.runtime.config["data_dir"]) / "uploads"

    def clear_leftovers(self) -> None:
        """Files of uploads cut short by the daemon's end (the request removes its own otherwise)."""
        for path in self.directory.glob("*.upload-*"):
            with suppress(OSError):
                path.unlink()

    # -- the volume held while it is written ------------------------------------------------

    @contextmanager
    def holding(self, pool: str, name: str, doing: str) -> Iterator[Hold]:
        """The volume held (``schema.UPLOADS``) for the block, 409 when another upload holds it. Taken before
        the checks that the volume is not in use, so that a VM start and an upload never both pass: the start's
        transaction fails once the hold exists (``Volumes.uploads_absent``), and the upload's check of running
        VMs after it sees a start committed before."""
        hold = Hold(self, pool, name, self.runtime.task_monitor.owner)
        self._take(hold, doing)
        with self._lock:
            self._holds[(pool, name)] = hold
        try:
            yield hold
        finally:
            with self._lock:
                self._holds.pop((pool, name), None)
            if not hold.handed_over:
                hold.release()

    def _take(self, hold: Hold, doing: str) -> None:
        value = json.dumps({"task_id": None, "worker": hold.worker})
        for _ in range(3):
            if self.zk.create_ephemeral(hold.key, value):
                return
            found, stat = self.zk.get_stats([hold.key])[hold.key]
            if stat is None:
                continue  # the upload holding it ended meanwhile
            held = held_by(found) or {}
            if held.get("worker") != hold.worker or self.zk.owns(stat):
                raise self.volumes.upload_refusal(hold.pool, hold.name, held, doing)
            # left by this daemon's previous run, killed under an upload, whose ZooKeeper session has not
            # expired yet: that upload is over (its record's recovery rolls it back under a hold of its own)
            transaction = self.zk.transaction()
            transaction.delete(hold.key, version=stat.version)
            try:
                self.zk.commit(transaction, f"removal of the stale upload hold {hold.key}")
            except TransactionFailed:
                continue
        raise Conflict(f"ERROR: Volume '{hold.name}' in pool '{hold.pool}' could not be held for {doing}: uploads "
                       "to it began and ended repeatedly meanwhile; try again")

    def _hand_over(self, pool: str, name: str) -> Callable[[], None] | None:
        """The hold of this daemon's upload to the volume, left to a background rollback: its release."""
        with self._lock:
            hold = self._holds.get((pool, name))
        if hold is None:
            return None
        hold.handed_over = True
        return hold.release

    # -- the upload -------------------------------------------------------------------------

    @bounded('upload an image to RBD volume "{1}"', pool=0)
    def upload(self, pool: str, name: str, image_format: str, body: Any,
               on_task: Callable[[str | None], None] | None = None) -> str:
        """As a task (``pvc_ceph.tasks``; ``on_task`` gets its id): the record counts the bytes written. The
        volume is held from before the checks that it is not in use until the upload ends (``holding``)."""
        self.volumes._require(pool, name)
        if body is None:
            raise BadRequest("Request body: expected the disk image (application/octet-stream, or "
                             "multipart/form-data with a part named 'file'), got none")
        doing = "uploading an image to it"
        with self.holding(pool, name, doing) as hold:
            self.volumes.refuse_running_vms(pool, name, doing)

            def announce(task_id: str | None) -> None:
                hold.record(task_id)
                if on_task is not None:
                    on_task(task_id)
            return self._upload(pool, name, image_format, body, announce)

    def _upload(self, pool: str, name: str, image_format: str, body: Any,
                on_task: Callable[[str | None], None]) -> str:
        """The upload's task, under its hold."""
        import rbd

        def write(handle: Any) -> str:
            with self.volumes.opened(pool, name) as (ioctx, image):
                try:
                    self.volumes.refuse_locked(pool, name, image, "uploading an image to it")
                    size, piece = image.size(), image.stat()["obj_size"]
                    with self.client.long():  # bounded piece by piece: body reads, librbd calls, qemu-img
                        if image_format == "raw":
                            self._raw(image, pool, name, body, size, piece, handle)
                        else:
                            self._converted(image, pool, name, image_format, body, size, piece, handle)
                    stats = self.volumes._info(ioctx, name)
                except rbd.Error as exc:
                    raise self.volumes._failure(f'write to RBD volume "{name}"', exc, pool) from None
            self.volumes._record(pool, name, stats, create=False)
            if image_format == "raw":
                return quoted(f"Wrote uploaded file to volume '{name}' in pool '{pool}'.")
            return quoted(f"Converted and wrote uploaded file to volume '{name}' in pool '{pool}'.")
        expected = body.image_length() or 0
        return self.runtime.task_monitor.run(
            tasks.VOLUME_UPLOAD, {"pool": pool, "volume": name, "image_format": image_format},
            f"Uploading a {image_format} image to RBD volume {pool}/{name}", write, on_task,
            total=max(expected, 1))

    # -- the two ways in --------------------------------------------------------------------

    def _raw(self, image: Any, pool: str, name: str, body: Any, size: int, piece: int, handle: Any) -> None:
        length = body.image_length()
        if length is not None:
            if length > size:
                raise BadRequest(self._too_long(pool, name, size, f"{length} bytes"))
            self._fits_pool(pool, name, length, "its Content-Length")
        with self._guarded(image, pool, name):
            self._write(image, body.pieces(piece), size, piece, pool, name, handle,
                        size if length is None else length)

    def _converted(self, image: Any, pool: str, name: str, image_format: str, body: Any, size: int,
                   piece: int, handle: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"{pool}.{name}.upload-{secrets.token_hex(6)}"
        spool, raw = self.directory / f"{stem}.spool", self.directory / f"{stem}.raw"
        try:
            limit = size + int(size * SPOOL_MARGIN) + MARGIN_BYTES
            with self._host_space(), open(spool, "wb") as out:
                for data in body.pieces(SPOOL_READ):
                    if out.tell() + len(data) > limit:
                        raise BadRequest(f"Image data: expected at most {limit} bytes of {image_format} for volume "
                                         f"'{name}' in pool '{pool}' of {size} bytes (its size and a margin for "
                                         "the format's tables), got more; grow the volume first")
                    out.write(data)
                    handle.stop_if_cancelled(f"the upload to RBD volume '{name}' in pool '{pool}' after receiving "
                                             f"{out.tell()} bytes; the volume was not written")
                    handle.progress(out.tell(), body.length or limit, f"Received {out.tell()} bytes of the "
                                                                      f"{image_format} image")
            virtual = self._inspect(spool, image_format, pool, name, size)
            self._check(spool, image_format)
            self._within_file(spool, image_format)
            with self._host_space():
                self._qemu_img(["convert", "-q", "-f", image_format, "-O", "raw", str(spool), str(raw)],
                               self.client.timeout + virtual / CONVERT_RATE, f"convert the {image_format} image")
            spool.unlink()
            self._fits_pool(pool, name, raw.stat().st_blocks * 512, "the data of its raw conversion")
            handle.log(f"Converted the {image_format} image ({virtual} bytes raw); writing it")
            with open(raw, "rb") as data, self._guarded(image, pool, name):
                self._write(image, iter(lambda: data.read(piece), b""), size, piece, pool, name, handle,
                            raw.stat().st_size)
        finally:
            for path in (spool, raw):
                with suppress(FileNotFoundError):
                    path.unlink()

    # -- room for it -------------------------------------------------------------------------

    def _fits_pool(self, pool: str, name: str, needed: int, what: str) -> None:
        """400 before the first write when the pool cannot take the image: Ceph would block the writes of a full
        pool (every client's, not only this one's) rather than refuse them. The volume's own data is no room:
        the snapshot taken before the first write keeps it until the upload ends."""
        free = self.runtime.service("ceph").pool_free_bytes([pool]).get(pool)
        if free is None:
            return  # Ceph's df does not list the pool yet: the writes find out
        if needed > free:
            raise BadRequest(f"Image data: {what} is {needed} bytes, but pool '{pool}' can store only {free} more "
                             f"bytes (Ceph's max_avail) while volume '{name}' keeps its present data until the "
                             "upload ends; expected an image that fits the pool: free space in it first")

    @contextmanager
    def _host_space(self) -> Iterator[None]:
        """The spooled and converted files live on the API host: its disk filling up is the host's problem
        (507), not the client's, and said so rather than answered as a failure of the daemon."""
        try:
            yield
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise ApiError(f"The API host's data directory {self.directory} has no space left for the upload "
                           "(a non-raw image is spooled and converted there: up to twice the volume's size); "
                           "free space there or upload a raw image, which is written straight through", 507) \
                from None
        except BadRequest as exc:
            if "No space left on device" not in exc.message:
                raise
            raise ApiError(f"The API host's data directory {self.directory} has no space left to convert the image "
                           f"({exc.message}); free space there or upload a raw image", 507) from None

    # -- pieces ---------------------------------------------------------------------------------

    def _write(self, image: Any, pieces: Iterable[bytes], size: int, piece: int, pool: str, name: str,
               handle: Any, total: int) -> None:
        """``pieces`` (one RBD object each, aligned) into the image from its start; an all-zero object is
        discarded rather than written. A cancel stops it between pieces, and after the last one (the caller's guard
        rolls back; its end, which removes the snapshot, is what keeps the upload)."""
        zero = bytes(piece)
        offset = 0

        def stop_if_cancelled() -> None:
            handle.stop_if_cancelled(f"the upload to RBD volume '{name}' in pool '{pool}' after writing {offset} "
                                     "bytes; the volume was rolled back to what it held before")

        for data in pieces:
            stop_if_cancelled()
            if offset + len(data) > size:
                raise BadRequest(self._too_long(pool, name, size, "more"))
            if len(data) == piece and data == zero:
                image.discard(offset, piece)
            else:
                image.write(data, offset)
            offset += len(data)
            handle.progress(offset, max(total, offset), f"Wrote {offset} of {max(total, offset)} bytes")
        image.flush()
        stop_if_cancelled()

    @staticmethod
    def _too_long(pool: str, name: str, size: int, got: str) -> str:
        return (f"Image data: expected at most {size} bytes (the size of volume '{name}' in pool '{pool}'), got "
                f"{got}; grow the volume first (PUT /storage/ceph/volume/{pool}/{name}?size=...)")

    # -- qemu-img -------------------------------------------------------------------------------

    def _qemu_img(self, args: list[str], timeout: float, what: str) -> str:
        return tools.run(["qemu-img", *args], timeout, what, QEMU_IMG_MISSING,
                         lambda stderr: BadRequest(f"Image data: qemu-img could not {what}: "
                                                   f"{self._unnamed(stderr, args)}"))

    def _unnamed(self, stderr: str, args: list[str]) -> str:
        """qemu-img's message without the paths of the spooled and converted files (they say nothing to the
        client, and name the API host's data directory)."""
        for arg in args:
            if arg.startswith(str(self.directory)):
                label = "the uploaded image's raw conversion" if arg.endswith(".raw") else "the uploaded image"
                stderr = stderr.replace(f"'{arg}'", label).replace(arg, label)
        return stderr

    def _inspect(self, path: Path, image_format: str, pool: str, name: str, size: int) -> int:
        """The image's virtual size, once it is known to be a self-contained image of ``image_format``
        that fits the volume."""
        what = f"read it as {image_format}"
        info = json.loads(self._qemu_img(["info", "-f", image_format, "--output=json", str(path)],
                                         self.client.timeout, what))
        data = (info.get("format-specific") or {}).get("data") or {}
        outside = [extent.get("filename") for extent in data.get("extents", [])
                   if extent.get("filename") not in (None, str(path))]
        if info.get("backing-filename") or data.get("data-file") or outside:
            raise BadRequest(f"Image data: expected a self-contained {image_format} image; this one refers to "
                             "other files (a backing file, an external data file or extents), which are not "
                             "uploaded with it")
        virtual = int(info.get("virtual-size", 0))
        if virtual > size:
            raise BadRequest(f"Image data: its virtual size of {virtual} bytes exceeds the {size} bytes of volume "
                             f"'{name}' in pool '{pool}'; grow the volume to at least {virtual} bytes first")
        return virtual

    def _check(self, path: Path, image_format: str) -> None:
        """400 for an image ``qemu-img check`` finds damaged (exit 2) or cannot check through (exit 1): a cut
        qcow2 still opens and converts, its missing clusters read as zeros, so the volume would be overwritten
        with zeros and the upload answered as done. Leaked clusters (3) and formats without checks (63) pass."""
        args = ["check", "-f", image_format, str(path)]
        result = tools.finished(["qemu-img", *args], self.client.timeout, f"check the {image_format} image",
                                QEMU_IMG_MISSING)
        if result.returncode in CHECK_PASSES:
            return
        raise BadRequest(f"Image data: the uploaded {image_format} image is damaged (qemu-img check: "
                         f"{self._unnamed(self._summary(result), args)}); expected an intact {image_format} image, "
                         "one that `qemu-img check` finds no errors in: was the file cut short? Upload it whole")

    @staticmethod
    def _summary(result: Any) -> str:
        """qemu-img check's own conclusion: its summary ("3 errors were found on the image."), else its last
        word on standard error (one line per error can run to thousands: not all of them)."""
        said = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if said and result.returncode == 2:
            return said[0]
        complained = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        return complained[-1] if complained else f"exit status {result.returncode}"

    def _within_file(self, path: Path, image_format: str) -> None:
        """400 when the image's tables place data past the end of the file: a file cut after its tables,
        which ``qemu-img check`` does not notice for every format (vdi; qcow has no check). qemu-img reads past
        the end as zeros, so the conversion would succeed and write zeros over the volume."""
        mapped = json.loads(self._qemu_img(["map", "-f", image_format, "--output=json", str(path)],
                                           self.client.timeout, f"map the {image_format} image"))
        end = max((extent["offset"] + extent["length"] for extent in mapped
                   if extent.get("data") and "offset" in extent), default=0)
        length = path.stat().st_size
        if end > length:
            raise BadRequest(f"Image data: the uploaded {image_format} image is cut short: its tables place data "
                             f"up to byte {end}, but the file has {length} bytes; expected the whole image file")

    # -- leaving the volume as it was ----------------------------------------------------------

    @contextmanager
    def _guarded(self, image: Any, pool: str, name: str) -> Iterator[None]:
        """The writes inside are undone (rollback to a snapshot taken first) when they fail half-way."""
        snapshot = SNAPSHOT_PREFIX + secrets.token_hex(4)
        image.create_snap(snapshot)
        try:
            yield
        except BaseException:
            try:
                image.rollback_to_snap(snapshot)
                image.remove_snap(snapshot)
            except Exception as exc:  # noqa: BLE001 - Ceph failing now: put it back once it answers
                log.warning("upload to %s/%s failed and its rollback too (%s); retried in the background, the "
                            "volume held until then", pool, name, exc)
                self.client.later(f"roll back the failed upload to volume {pool}/{name}", self._put_back, pool,
                                  name, snapshot, then=self._hand_over(pool, name))
            raise
        image.remove_snap(snapshot)

    def put_back(self, pool: str, name: str) -> str:
        """After the daemon ended under an upload (its record's recovery): the volume rolled back to the
        snapshot taken before the first write, which is then removed, under a hold of its own; unless a
        running VM has the volume now, which would see its disk change under it, or another upload holds it
        (begun through another daemon meanwhile), whose data the rollback would wipe."""
        doing = "rolling back the upload cut short"
        try:
            with self.holding(pool, name, doing):
                self.volumes.refuse_running_vms(pool, name, doing)
                return self._put_back_cut(pool, name)
        except Conflict as exc:
            return f"volume {pool}/{name} was left as it is: {exc.message}"

    def _put_back_cut(self, pool: str, name: str) -> str:
        import rbd
        with self.volumes._ioctx(pool) as ioctx:
            try:
                with rbd.Image(ioctx, name) as image:
                    taken = sorted((snap["id"], snap["name"]) for snap in image.list_snaps()
                                   if snap["name"].startswith(SNAPSHOT_PREFIX))
                    if not taken:
                        return f"volume {pool}/{name} had not been written"
                    self.volumes.break_dead_owner(image)
                    image.rollback_to_snap(taken[0][1])
                    for _, snapshot in taken:
                        image.remove_snap(snapshot)
            except rbd.ImageNotFound:
                return f"volume {pool}/{name} is gone"
        return f"volume {pool}/{name} was rolled back to what it held before the upload"

    def _put_back(self, pool: str, name: str, snapshot: str) -> None:
        import rbd
        with self.client.ioctx(pool) as ioctx:
            if ioctx is None:
                return
            try:
                with rbd.Image(ioctx, name) as image:
                    image.rollback_to_snap(snapshot)
                    image.remove_snap(snapshot)
            except rbd.ImageNotFound:
                return
            except rbd.Error as exc:
                raise self.client.unavailable(f"roll back volume {pool}/{name}: {exc}") from None


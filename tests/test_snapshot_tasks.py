"""Snapshot export, import and rollback, volume snapshot rollback and upload as tasks, on a real memstore Ceph.

Each route answers as before and names its record in ``X-Task-Id``; the record counts the disks (or
bytes) done, ends with the answer's message, and is read back through the API and straight from the
daemon's database (``ended``). A cancel (``DELETE /tasks/<id>``) stops the work between two disks and
undoes it; a daemon killed under a rollback undoes it when it starts again. To stop the work at a known
point, the test freezes Ceph's OSD (SIGSTOP) while the work waits on it, and thaws it once the cancel is
recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

import requests
from pvc_vm.schema import ROLLBACKS
from test_cluster import tree
from test_task_kinds import check, ended
from test_vm import UUID
from test_vm_storage import POOL, images, pair, rbd_handle, storage, vm_xml, volume_keys

from conftest import REQUEST_TIMEOUT, deep_merge, wait_until

__all__ = ["pair", "rbd_handle", "storage"]  # the fixtures, shared with test_vm_storage

MIB = 1024 * 1024
DISKS = ("task1_sda", "task1_sdb")


def define_vm(daemon, sizes: tuple[str, str] = ("8M", "8M")) -> None:
    for volume, size in zip(DISKS, sizes, strict=True):
        made = daemon.post("/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": size})
        assert made.status_code == 200, made.text
    disks = tuple(f"{POOL}/{volume}" for volume in DISKS)
    assert daemon.post("/vm", params={"node": "pvchv1"}, data={"xml": vm_xml("task1", UUID, disks)}).status_code \
        == 200


def fill(ioctx, volume: str, byte: bytes, objects: int) -> None:
    """One byte in each of the first ``objects`` 4 MiB objects: a rollback of the volume then takes a while."""
    import rbd
    with rbd.Image(ioctx, volume) as image:
        writes = [image.aio_write(byte, index * 4 * MIB, lambda completion: None) for index in range(objects)]
        for write in writes:
            write.wait_for_complete_and_cb()


def digests(ioctx) -> list[str]:
    import rbd
    out = []
    for volume in DISKS:
        with rbd.Image(ioctx, volume, read_only=True) as image:
            digest = hashlib.sha256()
            for offset in range(0, image.size(), 4 * MIB):
                digest.update(image.read(offset, min(4 * MIB, image.size() - offset)))
            out.append(digest.hexdigest())
    return out


def rbd_snaps(ioctx) -> list[list[str]]:
    import rbd
    out = []
    for volume in DISKS:
        with rbd.Image(ioctx, volume, read_only=True) as image:
            out.append(sorted(snap["name"] for snap in image.list_snaps()))
    return out


def osd_signal(ceph_cluster, sig: int) -> None:
    for name, pid in ceph_cluster.pids().items():
        if name.startswith("osd"):
            with contextlib.suppress(ProcessLookupError):  # the pid file of an OSD an earlier test removed
                os.kill(pid, sig)


@contextlib.contextmanager
def osd_frozen(ceph_cluster) -> Iterator[None]:
    osd_signal(ceph_cluster, signal.SIGSTOP)
    try:
        yield
    finally:
        osd_signal(ceph_cluster, signal.SIGCONT)


@contextlib.contextmanager
def frozen_when_marked(zk, ceph_cluster) -> Iterator[threading.Event]:
    """Freeze the OSD as soon as a VM rollback records itself in ZooKeeper (a watch, on ZooKeeper's event), before
    any of its disks can have been rolled back: the rollback then waits on the OSD, RUNNING, however fast the
    machine. The event is set once frozen; the OSD is thawed at the end (if ``cancelled`` has not already)."""
    frozen = threading.Event()
    zk.ensure_path(ROLLBACKS)

    def seen(children: list[str]) -> bool:
        if children and not frozen.is_set():
            osd_signal(ceph_cluster, signal.SIGSTOP)
            frozen.set()
        return not frozen.is_set()  # False ends the watch
    zk.ChildrenWatch(ROLLBACKS, seen)
    try:
        yield frozen
    finally:
        osd_signal(ceph_cluster, signal.SIGCONT)


def marked(frozen: threading.Event, answers: list) -> None:
    """Wait for ``frozen_when_marked`` to have frozen the OSD under the request in the background."""
    wait_until(lambda: frozen.is_set() or bool(answers), interval=0.02,
               message="the rollback's record in ZooKeeper")
    assert not answers, f"the rollback answered before it recorded itself: {answers[0].status_code} {answers[0].text}"


def running(daemon, kind: str, answers: list) -> dict:
    """The RUNNING record of the request in the background; an answer that comes first fails at once, with it."""
    def seen() -> list:
        assert not answers, f"the {kind} answered before its record was seen RUNNING: " \
                            f"{answers[0].status_code} {answers[0].text}"
        return daemon.get("/tasks", params={"kind": kind, "state": "RUNNING"}).json()
    (record,) = wait_until(seen, message=f"a RUNNING {kind} record")
    return record


def rbd_child(spec: str, answers: list) -> int | None:
    """The pid of the ``rbd`` process that works on ``spec`` (``pool/volume@snapshot``): the request in the background
    has passed its check for a cancel before that disk. None when the request answered first."""
    def seen() -> int | bool | None:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    argv = open(f"/proc/{entry.name}/cmdline", "rb").read().split(b"\0")
                    if os.path.basename(argv[0]) == b"rbd" and spec.encode() in argv:
                        return int(entry.name)
        return bool(answers)
    found = wait_until(seen, interval=0.002, message=f"an rbd process working on {spec}")
    return None if found is True else found


def cancelled_before_step(daemon, kind: str, step: int, ceph_cluster) -> tuple[dict, bool]:
    """Cancel the newest record of ``kind`` while the OSD is frozen, then thaw it. Also whether the cancel was marked
    before the work recorded its step ``step``: the work records each step before its check after it, so that check
    must then stop it (otherwise the moment was missed: the caller tries again)."""
    try:
        (record,) = daemon.get("/tasks", params={"kind": kind, "limit": "1"}).json()
        cancel = daemon.delete(f"/tasks/{record['id']}")
        now = daemon.get(f"/tasks/{record['id']}").json()
    finally:
        osd_signal(ceph_cluster, signal.SIGCONT)
    return record, cancel.status_code == 202 and now["current"] < step


def in_background(call) -> tuple[threading.Thread, list]:
    answers: list = []

    def run() -> None:
        with contextlib.suppress(requests.ConnectionError):  # a request whose daemon is killed
            answers.append(call())
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


def cancelled(daemon, thread: threading.Thread, answers: list, record: dict, ceph_cluster) -> dict:
    """Cancel the record while the OSD is frozen, thaw it, and return the ended record after the 409."""
    try:
        cancel = daemon.delete(f"/tasks/{record['id']}")
        assert cancel.status_code == 202, cancel.text
    finally:
        osd_signal(ceph_cluster, signal.SIGCONT)
    return stopped_by_cancel(daemon, thread, answers, record)


def stopped_by_cancel(daemon, thread: threading.Thread, answers: list, record: dict) -> dict:
    """The request's 409 and its record ended as cancelled."""
    thread.join(timeout=REQUEST_TIMEOUT)
    (answer,) = answers
    assert answer.status_code == 409 and answer.headers["X-Task-Id"] == record["id"], answer.text
    assert answer.json()["message"].startswith("ERROR: Cancelled ")
    done = ended(daemon, record["id"])
    assert done["state"] == "FAILURE" and done["cancelled"] is not None
    assert done["status"] == f"Cancelled: {answer.json()['message']}"
    assert done["result"] == {"error": "cancelled", "cancelled": True}
    return done


def recorded(daemon, answer, kind: str, first: str) -> dict:
    """The answer's record, ended SUCCESS with the answer's message, its first log line ``first``."""
    assert answer.status_code == 200, answer.text
    record = ended(daemon, answer.headers["X-Task-Id"])
    check(record, kind, kind.split(".")[0], answer.json()["message"], first)
    return record


def snapshotted(daemon, ioctx, first: bytes, second: bytes) -> list[str]:
    """The two-disk VM with known bytes, snapshotted as 'one'; the disks' digests then."""
    define_vm(daemon)
    fill(ioctx, DISKS[0], first, 2)
    fill(ioctx, DISKS[1], second, 2)
    assert daemon.post("/vm/task1/snapshot", params={"snapshot_name": "one"}).status_code == 200
    return digests(ioctx)


def test_export_rollback_and_import_are_recorded_as_tasks(pair, storage, tmp_path):
    first, _ = pair
    zk, ioctx = storage
    at_one = snapshotted(first, ioctx, b"\x01", b"\x02")

    exported = first.post("/vm/task1/snapshot/export", params={"snapshot_name": "one", "export_path": str(tmp_path)})
    record = recorded(first, exported, "vm.snapshot.export",
                      f"Exporting snapshot 'one' of VM 'task1' (full) to '{tmp_path / 'task1' / 'one'}'")
    assert (record["current"], record["total"]) == (2, 2)
    assert [line["message"] for line in record["log"][1:-1]] == [
        f"Exported 1 of 2 disks ({POOL}/{DISKS[0]})", f"Exported 2 of 2 disks ({POOL}/{DISKS[1]})"]
    assert record["kwargs"] == {"vm": "task1", "snapshot": "one", "target": str(tmp_path / "task1" / "one"),
                                "vm_dir": str(tmp_path / "task1")}

    fill(ioctx, DISKS[0], b"\x03", 2)
    fill(ioctx, DISKS[1], b"\x04", 2)
    assert first.post("/vm/task1/state", params={"state": "stop"}).status_code == 200
    rolled = first.post("/vm/task1/snapshot/rollback", params={"snapshot_name": "one"})
    record = recorded(first, rolled, "vm.snapshot.rollback", "Rolling VM 'task1' back to snapshot 'one'")
    assert (record["current"], record["total"]) == (2, 2) and record["kwargs"]["disks"] == [
        f"{POOL}/{volume}" for volume in DISKS]
    assert digests(ioctx) == at_one and rbd_snaps(ioctx) == [["one"], ["one"]]
    assert not zk.exists(f"/pvcapid/vm-rollbacks/{record['kwargs']['safety']}")
    # its disks' rollbacks are steps of its record, not records of their own
    assert first.get("/tasks", params={"kind": "ceph.snapshot.rollback"}).json() == []

    # one volume back to its RBD snapshot: one librbd call, recorded; it cannot be cancelled once running
    fill(ioctx, DISKS[0], b"\x05", 1)
    volume = first.post(f"/storage/ceph/snapshot/{POOL}/{DISKS[0]}/one/rollback")
    recorded(first, volume, "ceph.snapshot.rollback", f"Rolling RBD volume {POOL}/{DISKS[0]} back to snapshot one")
    assert digests(ioctx) == at_one

    assert first.delete("/vm/task1", params={"delete_disks": "true"}).status_code == 200
    imported = first.post("/vm/task1/snapshot/import", params={"snapshot_name": "one", "import_path": str(tmp_path)})
    record = recorded(first, imported, "vm.snapshot.import",
                      f"Importing VM 'task1' from snapshot 'one' in '{tmp_path}'")
    assert (record["current"], record["total"]) == (2, 2)
    assert digests(ioctx) == at_one
    # refused before any work: no record
    before = len(first.get("/tasks").json())
    assert first.post("/vm/task1/snapshot/import", params={"snapshot_name": "one",
                                                           "import_path": str(tmp_path)}).status_code == 400
    assert "X-Task-Id" not in first.post("/vm/nosuch/snapshot/rollback", params={"snapshot_name": "one"}).headers
    assert len(first.get("/tasks").json()) == before


def test_cancelled_export_and_import_remove_what_they_made(pair, storage, ceph_cluster, tmp_path):
    first, _ = pair
    zk, ioctx = storage
    at_one = snapshotted(first, ioctx, b"\x11", b"\x12")

    # the export waits on the frozen OSD at its first disk; cancelled there, it removes its files
    target = tmp_path / "cancelled"
    target.mkdir()
    with osd_frozen(ceph_cluster):
        thread, answers = in_background(lambda: first.post("/vm/task1/snapshot/export", params={
            "snapshot_name": "one", "export_path": str(target)}))
        record = running(first, "vm.snapshot.export", answers)
        done = cancelled(first, thread, answers, record, ceph_cluster)
    assert done["status"].startswith("Cancelled: ERROR: Cancelled the export of snapshot 'one' of VM 'task1' after 1 "
                                     "of 2 disks"), done["status"]
    assert list(target.iterdir()) == []

    # a whole export, then the import of it cancelled at its first disk: no volume, key or VM stays
    assert first.post("/vm/task1/snapshot/export", params={"snapshot_name": "one",
                                                           "export_path": str(tmp_path)}).status_code == 200
    assert first.delete("/vm/task1", params={"delete_disks": "true"}).status_code == 200
    keys = volume_keys(zk)
    with osd_frozen(ceph_cluster):
        thread, answers = in_background(lambda: first.post("/vm/task1/snapshot/import", params={
            "snapshot_name": "one", "import_path": str(tmp_path)}))
        record = running(first, "vm.snapshot.import", answers)
        done = cancelled(first, thread, answers, record, ceph_cluster)
    assert "after 1 of 2 disks; the volumes imported were removed" in done["status"], done["status"]
    assert not set(DISKS) & set(images(ioctx)) and volume_keys(zk) == keys
    assert not zk.exists(f"/domains/{UUID}") and first.get("/vm/task1").status_code == 404

    imported = first.post("/vm/task1/snapshot/import", params={"snapshot_name": "one", "import_path": str(tmp_path)})
    assert imported.status_code == 200, imported.text
    assert digests(ioctx) == at_one


def cancelled_at_the_last_disk(daemon, kind: str, start: Callable[[], tuple[threading.Thread, list]],
                               working: Callable[[list], bool], ceph_cluster, what: str
                               ) -> tuple[threading.Thread, list, dict]:
    """Start the work (``start``), freeze the OSD once ``working(answers)`` has seen its last disk worked on,
    cancel it and thaw. The cancel counts when it was marked before the record's last step; else the moment was
    missed, and the work is started again (at most 5 times)."""
    for _ in range(5):
        thread, answers = start()
        try:
            if working(answers):
                osd_signal(ceph_cluster, signal.SIGSTOP)
            record, in_time = cancelled_before_step(daemon, kind, 2, ceph_cluster)
        finally:
            osd_signal(ceph_cluster, signal.SIGCONT)
        if in_time:
            return thread, answers, record
        thread.join(timeout=REQUEST_TIMEOUT)
    raise AssertionError(f"no cancel came while {what}, in 5 attempts")


def test_a_cancel_while_the_last_disk_is_exported_removes_the_export(pair, storage, ceph_cluster, tmp_path):
    """The cancel comes after the check before the second (last) disk, while ``rbd export`` works on it: the export
    still stops (after that disk, before its snapshot.json) and removes its files. The OSD is frozen as soon as
    that rbd process is seen."""
    first, _ = pair
    _, ioctx = storage
    snapshotted(first, ioctx, b"\x41", b"\x42")
    targets: list = []

    def start() -> tuple[threading.Thread, list]:
        targets.append(tmp_path / f"last{len(targets)}")
        targets[-1].mkdir()
        return in_background(lambda target=targets[-1]: first.post("/vm/task1/snapshot/export", params={
            "snapshot_name": "one", "export_path": str(target)}))

    thread, answers, record = cancelled_at_the_last_disk(
        first, "vm.snapshot.export", start, lambda answers: rbd_child(f"{POOL}/{DISKS[1]}@one", answers) is not None,
        ceph_cluster, "the last disk was exported")
    done = stopped_by_cancel(first, thread, answers, record)
    assert done["status"] == ("Cancelled: ERROR: Cancelled the export of snapshot 'one' of VM 'task1' after 2 of 2 "
                              f"disks; the files written were removed (DELETE /tasks/{record['id']})"), done["status"]
    assert list(targets[-1].iterdir()) == []


def test_a_cancel_while_the_last_disk_rolls_back_puts_the_disks_back(pair, storage, ceph_cluster):
    """The cancel comes while librbd rolls the second (last) disk back, after the check before it: the rollback
    stops before its ZooKeeper commit and puts both disks back. The second disk has 500 objects, so its rollback
    takes a while; its first object holding the snapshot's byte again shows that rollback has begun, and the OSD
    is frozen at once."""
    import rbd
    first, _ = pair
    zk, ioctx = storage
    define_vm(first, ("8M", "2000M"))
    fill(ioctx, DISKS[0], b"\x51", 2)
    fill(ioctx, DISKS[1], b"\x52", 500)
    assert first.post("/vm/task1/snapshot", params={"snapshot_name": "one"}).status_code == 200
    assert first.post("/vm/task1/state", params={"state": "stop"}).status_code == 200
    xml = zk.get(f"/domains/{UUID}/xml")[0]
    vm = first.get("/vm/task1").json()
    later: list = []

    def start() -> tuple[threading.Thread, list]:
        fill(ioctx, DISKS[0], b"\x53", 2)
        fill(ioctx, DISKS[1], b"\x54", 500)
        later[:] = digests(ioctx)
        return in_background(lambda: first.post("/vm/task1/snapshot/rollback", params={"snapshot_name": "one"}))

    def rolling(answers: list) -> bool:
        def seen() -> bool:
            with rbd.Image(ioctx, DISKS[1], read_only=True) as image:
                return image.read(0, 1) == b"\x52" or bool(answers)
        return wait_until(seen, interval=0, message="the rollback of the last disk")

    thread, answers, record = cancelled_at_the_last_disk(first, "vm.snapshot.rollback", start, rolling, ceph_cluster,
                                                         "the last disk rolled back")
    done = stopped_by_cancel(first, thread, answers, record)
    assert done["status"] == ("Cancelled: ERROR: Cancelled the rollback of VM 'task1' to snapshot 'one' after 2 of 2 "
                              f"disks (DELETE /tasks/{record['id']}); the disks already rolled back were restored"), \
        done["status"]
    assert digests(ioctx) == later and rbd_snaps(ioctx) == [["one"], ["one"]]
    assert zk.get(f"/domains/{UUID}/xml")[0] == xml and first.get("/vm/task1").json() == vm
    assert tree(zk, ROLLBACKS) == {}


def test_a_cancelled_or_interrupted_rollback_puts_the_disks_back(pair, storage, ceph_cluster, daemon_factory,
                                                                  ceph_config):
    """The first disk has 500 objects, so that its rollback takes a while: the OSD is frozen as soon as the
    rollback records itself in ZooKeeper, and the cancel (or the daemon's end) comes before the second disk."""
    import rbd
    first, _ = pair
    zk, ioctx = storage
    define_vm(first, ("2000M", "8M"))
    fill(ioctx, DISKS[0], b"\x21", 500)
    fill(ioctx, DISKS[1], b"\x22", 2)
    assert first.post("/vm/task1/snapshot", params={"snapshot_name": "one"}).status_code == 200
    fill(ioctx, DISKS[0], b"\x23", 500)
    fill(ioctx, DISKS[1], b"\x24", 2)
    assert first.post("/vm/task1/state", params={"state": "stop"}).status_code == 200
    later = digests(ioctx)
    xml = zk.get(f"/domains/{UUID}/xml")[0]
    vm = first.get("/vm/task1").json()

    with frozen_when_marked(zk, ceph_cluster) as frozen:
        thread, answers = in_background(lambda: first.post("/vm/task1/snapshot/rollback",
                                                           params={"snapshot_name": "one"}))
        marked(frozen, answers)
        record = running(first, "vm.snapshot.rollback", answers)
        done = cancelled(first, thread, answers, record, ceph_cluster)
    assert "the disks already rolled back were restored" in done["status"] or "after 0 of 2 disks" in done["status"]
    assert digests(ioctx) == later and rbd_snaps(ioctx) == [["one"], ["one"]]
    assert zk.get(f"/domains/{UUID}/xml")[0] == xml and first.get("/vm/task1").json() == vm
    assert tree(zk, "/pvcapid/vm-rollbacks") == {}

    # a daemon killed under the rollback: started again on its port, it puts the disks back and ends the record
    roller = daemon_factory(deep_merge(ceph_config, {"vm": {"delete_grace": "0.05"}}))
    with frozen_when_marked(zk, ceph_cluster) as frozen:
        thread, answers = in_background(lambda: roller.post("/vm/task1/snapshot/rollback",
                                                            params={"snapshot_name": "one"}))
        marked(frozen, answers)
        record = running(roller, "vm.snapshot.rollback", answers)
        assert zk.exists(f"{ROLLBACKS}/{record['kwargs']['safety']}")
        roller.process.kill()
        roller.process.wait()
        roller.process = None
    thread.join(timeout=REQUEST_TIMEOUT)
    roller.start()
    done = ended(roller, record["id"])
    assert done["state"] == "FAILURE" and done["status"].startswith(
        "Interrupted: the API daemon that ran it stopped; the rollback had not been committed: the disks were put "
        "back as they were before it"), done["status"]
    assert (digests(ioctx), rbd_snaps(ioctx)) == (later, [["one"], ["one"]]), done["status"]
    assert zk.get(f"/domains/{UUID}/xml")[0] == xml and first.get("/vm/task1").json() == vm
    assert tree(zk, "/pvcapid/vm-rollbacks") == {}
    roller.stop()
    # and the rollback itself still works
    rolled = first.post("/vm/task1/snapshot/rollback", params={"snapshot_name": "one"})
    assert rolled.status_code == 200, rolled.text
    with rbd.Image(ioctx, DISKS[1], read_only=True) as image:
        assert image.read(0, 1) == b"\x22"

    # the second disk goes away while the first rolls back (here: its keys, as a rename by another request
    # moves them): 409 saying so, not Ceph's "not found" about a name the caller never gave; the first disk
    # is put back
    fill(ioctx, DISKS[0], b"\x25", 500)
    later = digests(ioctx)[0]
    with frozen_when_marked(zk, ceph_cluster) as frozen:
        thread, answers = in_background(lambda: first.post("/vm/task1/snapshot/rollback",
                                                           params={"snapshot_name": "one"}))
        marked(frozen, answers)
        for path in (f"/ceph/snapshots/{POOL}/{DISKS[1]}", f"/ceph/volumes/{POOL}/{DISKS[1]}"):
            zk.delete(path, recursive=True)
    thread.join(timeout=REQUEST_TIMEOUT)
    (answer,) = answers
    assert answer.status_code == 409 and answer.json()["message"].startswith(
        f"ERROR: Disk volume '{POOL}/{DISKS[1]}' of VM 'task1' went away meanwhile"), answer.text
    assert digests(ioctx)[0] == later


def test_an_import_leaves_an_image_of_its_volume_name_it_did_not_make(pair, storage, tmp_path):
    """An RBD image named as the import's second volume, which Ceph has but the cluster never recorded (or
    that another client made meanwhile): the import fails there (409 naming it) and its undo removes its own
    first volume only; that image and its data stay."""
    import rbd
    first, _ = pair
    zk, ioctx = storage
    at_one = snapshotted(first, ioctx, b"\x31", b"\x32")
    assert first.post("/vm/task1/snapshot/export", params={"snapshot_name": "one",
                                                           "export_path": str(tmp_path)}).status_code == 200
    assert first.delete("/vm/task1", params={"delete_disks": "true"}).status_code == 200
    rbd.RBD().create(ioctx, DISKS[1], 4 * MIB)
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.write(b"\x99" * 4096, 0)
    keys = volume_keys(zk)
    failed = first.post("/vm/task1/snapshot/import", params={"snapshot_name": "one", "import_path": str(tmp_path)})
    assert failed.status_code == 409 and failed.json()["message"].startswith(
        f"ERROR: Volume '{DISKS[1]}' already exists in pool '{POOL}' in Ceph (not recorded in the cluster, or "
        "made meanwhile): "), failed.text
    assert images(ioctx) == [DISKS[1]] and not zk.exists(f"/domains/{UUID}")
    with rbd.Image(ioctx, DISKS[1], read_only=True) as image:
        assert image.read(0, 4096) == b"\x99" * 4096
    # the image is recorded now, as Ceph holds it: the cluster knows what is there
    assert set(volume_keys(zk)) - set(keys) == {f"/ceph/{kind}/{POOL}/{DISKS[1]}" for kind in ("volumes", "snapshots")}
    assert first.delete(f"/storage/ceph/volume/{POOL}/{DISKS[1]}").status_code == 200
    imported = first.post("/vm/task1/snapshot/import", params={"snapshot_name": "one", "import_path": str(tmp_path)})
    assert imported.status_code == 200, imported.text
    assert digests(ioctx) == at_one

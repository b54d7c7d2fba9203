"""Whole-VM snapshots (PVC 1.x's /vm/<vm>/snapshot) on a real memstore Ceph, through two daemons."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import time

from test_cluster import tree
from test_vm import UUID
from test_vm_storage import (
    OTHER_UUID,
    POOL,
    define_with_volumes,
    images,
    in_use,
    lock_description,
    pair,
    rbd_handle,
    same_everywhere,
    storage,
    vm_xml,
    volume_keys,
)

from conftest import wait_until

__all__ = ["pair", "rbd_handle", "storage"]  # the module's fixtures, shared with test_vm_storage

DISKS = ("snap1_sda", "snap1_sdb")
SIZE = 4096


def xml_diff(snapshot_xml: str, current_xml: str) -> list[str]:
    """PVC 1.x's ``xml_diff_lines``: from the current XML to the snapshot's, one line of context."""
    return list(difflib.unified_diff(current_xml.split("\n"), snapshot_xml.split("\n"), fromfile="current",
                                     tofile="snapshot", fromfiledate="", tofiledate="", n=1, lineterm=""))


def snaps(ioctx, volume: str) -> list[str]:
    import rbd
    with rbd.Image(ioctx, volume, read_only=True) as image:
        return sorted(snap["name"] for snap in image.list_snaps())


def contents(ioctx) -> list[bytes]:
    import rbd
    out = []
    for volume in DISKS:
        with rbd.Image(ioctx, volume, read_only=True) as image:
            out.append(image.read(0, SIZE))
    return out


def write(ioctx, data: list[bytes]) -> None:
    import rbd
    for volume, chunk in zip(DISKS, data, strict=True):
        with rbd.Image(ioctx, volume) as image:
            image.write(chunk, 0)


def write_mapped(ceph_cluster, data: list[bytes]) -> None:
    """Write each disk's bytes (at offset 0) through the volume mapping the provisioner writes a new VM's disks
    through (``hostops.Mapper``: ``rbd map``, or rbd-fuse and a loop device), flushed and unmapped."""
    from pvc_provisioner.hostops import Mapper
    mapper = Mapper(ceph_cluster.conf, "client.admin", ceph_cluster.keyring)
    for volume, chunk in zip(DISKS, data, strict=True):
        mapping = mapper.map(POOL, volume)
        try:
            with open(mapping.device, "r+b", buffering=0) as device:
                device.write(chunk)
                os.fsync(device.fileno())
        finally:
            mapper.unmap(mapping)


def test_snapshot_rollback_failure_and_delete_of_a_two_disk_vm(pair, storage, ceph_cluster):
    import rbd
    first, second = pair
    zk, ioctx = storage
    define_with_volumes(first, "snap1", UUID, DISKS)
    known = [bytes(range(256)) * (SIZE // 256), bytes(reversed(range(256))) * (SIZE // 256)]
    write_mapped(ceph_cluster, known)
    at_first = [digest(ioctx, volume) for volume in DISKS]  # the whole disks, as the snapshot will hold them
    original = first.get("/vm/snap1").json()
    assert original["snapshots"] == []
    xml = zk.get(f"/domains/{UUID}/xml")[0]
    base = f"/domains/{UUID}/snapshots"

    # the snapshot: both disks under one name, the XML and the list in ZooKeeper, through both daemons
    before = time.time()
    made = second.post("/vm/snap1/snapshot", params={"snapshot_name": "first"})
    assert made.json() == {"message": "Successfully created snapshot 'first' of VM 'snap1'."}, made.text
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first"]]
    rbd_snapshots = [f"{POOL}/{volume}@first" for volume in DISKS]
    stored = tree(zk, base)
    timestamp = stored[f"{base}/first/timestamp"].decode()
    assert before - 1 <= int(timestamp) <= time.time()
    assert stored == {f"{base}/first": b"first", f"{base}/first/timestamp": timestamp.encode(),
                      f"{base}/first/xml": xml,
                      f"{base}/first/rbdsnaplist": ",".join(rbd_snapshots).encode()}
    listed = [{"name": "first", "timestamp": timestamp, "xml_diff_lines": [], "rbd_snapshots": rbd_snapshots}]
    summary = [{"name": "first", "timestamp": timestamp, "rbd_snapshots": rbd_snapshots, "xml": xml.decode()}]
    assert json.loads(zk.get(base)[0]) == summary
    for volume in DISKS:
        assert zk.exists(f"/ceph/snapshots/{POOL}/{volume}/first")
    snapshotted = {**original, "snapshots": listed}
    same_everywhere(pair, "snap1", snapshotted)
    duplicate = first.post("/vm/snap1/snapshot", params={"snapshot_name": "first"})
    assert duplicate.status_code == 400
    assert duplicate.json() == {"message": "ERROR: Snapshot 'first' already exists for VM 'snap1'; expected a new "
                                           "name"}
    assert first.post("/vm/snap1/snapshot", params={"snapshot_name": "a/b"}).status_code == 400
    assert first.post("/vm/nosuch/snapshot").status_code == 404
    # v0.6 flattened a JSON false to "False": a snapshot of that name was made
    flag = first.post("/vm/snap1/snapshot", json={"snapshot_name": False})
    assert flag.status_code == 400 and flag.json()["message"].startswith("Parameter 'snapshot_name': expected ")
    assert flag.json()["message"].endswith(", got a JSON boolean")
    assert tree(zk, base) == stored and [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first"]]
    same_everywhere(pair, "snap1", snapshotted)

    # overwrite both disks and change the XML; a running VM is not rolled back (409), nothing changes
    write_mapped(ceph_cluster, [b"\xaa" * SIZE, b"\x55" * SIZE])
    bigger = original["xml"].replace("<memory unit='MiB'>2048</memory>", "<memory unit='MiB'>4096</memory>")
    assert bigger != original["xml"]
    assert first.put("/vm/snap1", data={"xml": bigger}).status_code == 200
    changed = first.get("/vm/snap1").json()
    assert changed["memory"] == 4096
    # the snapshot's xml_diff_lines now say what a rollback changes, through both daemons; ZooKeeper keeps the
    # snapshot's XML only (the diff is made by the daemons, never stored)
    current = zk.get(f"/domains/{UUID}/xml")[0].decode()
    diff = xml_diff(xml.decode(), current)
    assert diff == ["--- current", "+++ snapshot", "@@ -4,3 +4,3 @@", "   <description>Test VM</description>",
                    '-  <memory unit="MiB">4096</memory>', '+  <memory unit="MiB">2048</memory>',
                    "   <vcpu>2</vcpu>"], diff
    assert changed == {**original, "memory": 4096, "xml": changed["xml"],
                       "snapshots": [{**listed[0], "xml_diff_lines": diff}]}
    same_everywhere(pair, "snap1", changed)
    assert json.loads(zk.get(base)[0]) == summary and tree(zk, base) == stored
    assert first.post("/vm/snap1/state", params={"state": "start"}).status_code == 200
    running = second.post("/vm/snap1/snapshot/rollback", params={"snapshot_name": "first"})
    assert running.status_code == 409
    assert running.json()["message"].startswith("ERROR: VM 'snap1' is not stopped (state 'start')")
    assert contents(ioctx) == [b"\xaa" * SIZE, b"\x55" * SIZE]
    # a running VM is snapshotted (disk after disk, see the README) and the snapshot removed again
    live = second.post("/vm/snap1/snapshot", params={"snapshot_name": "live"})
    assert live.status_code == 200, live.text
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first", "live"], ["first", "live"]]
    for daemon in (second, first):  # the writer at once, the other once its watch delivers it
        wait_until(lambda daemon=daemon: sorted(item["name"] for item in daemon.get("/vm/snap1").json()["snapshots"])
                   == ["first", "live"], message=daemon.base)
    assert first.delete("/vm/snap1/snapshot", params={"snapshot_name": "live"}).status_code == 200
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first"]]
    assert first.post("/vm/snap1/state", params={"state": "stop"}).status_code == 200
    missing = second.post("/vm/snap1/snapshot/rollback", params={"snapshot_name": "nosuch"})
    assert missing.status_code == 404
    assert missing.json() == {"message": "ERROR: Snapshot 'nosuch' does not exist for VM 'snap1'"}

    # a client holds the second disk's lock: 400 before anything is done
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.lock_exclusive("test-holder")
        expected = in_use(ioctx, POOL, DISKS[1], "rolling VM 'snap1' back", ("snap1",))
        locked = second.post("/vm/snap1/snapshot/rollback", params={"snapshot_name": "first"})
        image.unlock("test-holder")
    assert locked.status_code == 400, locked.text
    assert locked.json() == {"message": expected}
    assert contents(ioctx) == [b"\xaa" * SIZE, b"\x55" * SIZE]
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first"]]

    # the second disk's RBD snapshot is renamed behind the cluster's back, so its rollback fails after the first
    # disk's, which is put back from its temporary snapshot: bytes, XML and snapshots are as they were
    changed_keys = tree(zk, "/domains")
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.rename_snap("first", "hidden")
    halfway = second.post("/vm/snap1/snapshot/rollback", params={"snapshot_name": "first"})
    with rbd.Image(ioctx, DISKS[1]) as image:
        assert sorted(snap["name"] for snap in image.list_snaps()) == ["hidden"]
        image.rename_snap("hidden", "first")
    assert halfway.status_code == 404, halfway.text
    assert halfway.json()["message"] == (f"ERROR: No snapshot with name 'first' is present for volume '{DISKS[1]}' in "
                                         f"pool '{POOL}'; the disks already rolled back were restored")
    assert contents(ioctx) == [b"\xaa" * SIZE, b"\x55" * SIZE]
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first"]]
    assert [zk.get_children(f"/ceph/snapshots/{POOL}/{volume}") for volume in DISKS] == [["first"], ["first"]]
    assert tree(zk, "/domains") == changed_keys
    same_everywhere(pair, "snap1", {**changed, "state": "stop"})

    # the rollback: both disks hold the first bytes again, the XML is the stored one, no helper snapshot stays
    rolled = second.post("/vm/snap1/snapshot/rollback", params={"snapshot_name": "first"})
    assert rolled.json() == {"message": "Successfully rolled back to snapshot 'first' of VM 'snap1'."}, rolled.text
    assert contents(ioctx) == known and [digest(ioctx, volume) for volume in DISKS] == at_first
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first"]]
    assert [zk.get_children(f"/ceph/snapshots/{POOL}/{volume}") for volume in DISKS] == [["first"], ["first"]]
    assert zk.get(f"/domains/{UUID}/xml")[0] == xml
    assert zk.get(f"/domains/{UUID}/rbdlist")[0] == ",".join(f"{POOL}/{volume}" for volume in DISKS).encode()
    assert tree(zk, base) == stored
    same_everywhere(pair, "snap1", {**snapshotted, "state": "stop"})

    # the second disk's snapshot fails in Ceph (a snapshot of that name made there only): the first disk's
    # is removed again and no key is written
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.create_snap("second")
    domains, volumes, ceph_images = tree(zk, "/domains"), volume_keys(zk), images(ioctx)
    failed = first.post("/vm/snap1/snapshot", params={"snapshot_name": "second"})
    assert failed.status_code == 409, failed.text
    message = failed.json()["message"]
    assert "second" in message and message.endswith("; the RBD snapshots already made were removed")
    assert ".;" not in message
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first", "second"]]
    assert tree(zk, "/domains") == domains and volume_keys(zk) == volumes and images(ioctx) == ceph_images
    same_everywhere(pair, "snap1", {**snapshotted, "state": "stop"})
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.remove_snap("second")

    # the default name is the time, as in PVC 1.x
    dated = first.post("/vm/snap1/snapshot")
    name = re.fullmatch(r"Successfully created snapshot '(\d{14})' of VM 'snap1'\.", dated.json()["message"])
    assert name, dated.text
    assert [snaps(ioctx, volume) for volume in DISKS] == [sorted(["first", name[1]])] * 2

    # delete removes the RBD snapshots, their /ceph keys and the VM's keys; the list follows
    assert second.delete("/vm/snap1/snapshot", params={"snapshot_name": "nosuch"}).status_code == 404
    for snapshot in ("first", name[1]):
        removed = second.delete("/vm/snap1/snapshot", params={"snapshot_name": snapshot})
        assert removed.json() == {"message": f"Successfully removed snapshot '{snapshot}' of VM 'snap1'."}
    assert [snaps(ioctx, volume) for volume in DISKS] == [[], []]
    assert tree(zk, base) == {} and json.loads(zk.get(base)[0]) == []
    for volume in DISKS:
        assert zk.get_children(f"/ceph/snapshots/{POOL}/{volume}") == []
    same_everywhere(pair, "snap1", {**original, "state": "stop"})
    assert contents(ioctx) == known

    # a rename carries the snapshots along: their XML and RBD snapshot lists name the renamed VM and volumes
    assert first.post("/vm/snap1/snapshot", params={"snapshot_name": "last"}).status_code == 200
    assert first.post("/vm/snap1/rename", params={"new_name": "snap2"}).status_code == 200
    renamed = tuple(volume.replace("snap1", "snap2") for volume in DISKS)
    assert zk.get(f"{base}/last/rbdsnaplist")[0] == ",".join(f"{POOL}/{volume}@last" for volume in renamed).encode()
    assert zk.get(f"{base}/last/xml")[0] == zk.get(f"/domains/{UUID}/xml")[0]
    for daemon in pair:
        wait_until(lambda daemon=daemon: daemon.get("/vm/snap2").json()["snapshots"][0]["rbd_snapshots"] ==
                   [f"{POOL}/{volume}@last" for volume in renamed], message=daemon.base)
    assert second.post("/vm/snap2/snapshot/rollback", params={"snapshot_name": "last"}).status_code == 200

    # an undefine with delete_disks removes the RBD snapshots of the VM's snapshots with its volumes
    gone = second.delete("/vm/snap2", params={"delete_disks": "true"})
    assert gone.json() == {"message": "Removed VM 'snap2' and disks from the cluster."}, gone.text
    assert not {*DISKS, *renamed} & set(images(ioctx))
    assert not zk.exists(f"/domains/{UUID}")
    for daemon in pair:
        wait_until(lambda daemon=daemon: daemon.get("/vm/snap2").status_code == 404, message=daemon.base)
    assert all(not zk.exists(f"/ceph/volumes/{POOL}/{volume}") and not zk.exists(f"/ceph/snapshots/{POOL}/{volume}")
               for volume in renamed)


@contextlib.contextmanager
def zk_timestamp(zk, snapshot: str, value: str):
    """The VM snapshot's stored time changed for the block (and put back)."""
    path = f"/domains/{UUID}/snapshots/{snapshot}/timestamp"
    kept = zk.get(path)[0]
    zk.set(path, value.encode())
    try:
        yield
    finally:
        zk.set(path, kept)


def rbd_cli(ceph_cluster, *args: str) -> None:
    import subprocess
    subprocess.run(["rbd", "--conf", ceph_cluster.conf, "--keyring", ceph_cluster.keyring, *args], check=True,
                   capture_output=True, timeout=60)


def imported_snapshots(zk, disks: tuple[str, ...], chain: list[str]) -> list[dict]:
    """The VM answer's ``snapshots`` once the exports ``chain`` (oldest first) are imported and kept as the VM's
    snapshots (each with the imported VM's XML: no diff); ZooKeeper's list is checked on the way."""
    xml = zk.get(f"/domains/{UUID}/xml")[0].decode()
    timestamps = {snap: zk.get(f"/domains/{UUID}/snapshots/{snap}/timestamp")[0].decode() for snap in chain}
    assert json.loads(zk.get(f"/domains/{UUID}/snapshots")[0]) == [
        {"name": snap, "timestamp": timestamps[snap], "rbd_snapshots": [f"{disk}@{snap}" for disk in disks],
         "xml": xml} for snap in reversed(chain)]
    return [{"name": snap, "timestamp": timestamps[snap], "xml_diff_lines": [],
             "rbd_snapshots": [f"{disk}@{snap}" for disk in disks]} for snap in reversed(chain)]


def test_export_full_then_incremental_and_import(pair, storage, ceph_cluster, tmp_path):
    import rbd
    first, second = pair
    zk, ioctx = storage
    for volume in DISKS:
        assert first.post("/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "8M"}).status_code \
            == 200
    disks = tuple(f"{POOL}/{volume}" for volume in DISKS)
    assert first.post("/vm", params={"node": "pvchv1"}, data={"xml": vm_xml("snap1", UUID, disks)}).status_code == 200
    old, new = [b"\x01" * SIZE, b"\x02" * SIZE], [b"\x03" * SIZE, b"\x04" * SIZE]
    write(ioctx, old)
    assert first.post("/vm/snap1/snapshot", params={"snapshot_name": "one"}).status_code == 200
    write(ioctx, new)
    assert first.post("/vm/snap1/snapshot", params={"snapshot_name": "two"}).status_code == 200
    xml = zk.get(f"/domains/{UUID}/xml")[0].decode()

    full = second.post("/vm/snap1/snapshot/export", params={"snapshot_name": "one", "export_path": str(tmp_path)})
    target = tmp_path / "snap1" / "one"
    assert full.json() == {"message": f"Successfully exported snapshot 'one' of VM 'snap1' (full) to '{target}'."}
    document = json.loads((target / "snapshot.json").read_text())
    files = [{"srcvol": f"{POOL}/{volume}", "file": f"images/{POOL}.{volume}.rbdimg"} for volume in DISKS]
    assert {key: value for key, value in document.items() if key not in ("vm_detail", "datestring")} == {
        "type": "full", "snapshot_name": "one", "incremental_parent": None, "export_files": files,
        "export_size_bytes": sum((target / item["file"]).stat().st_size for item in files)}
    assert {key: value for key, value in document["vm_detail"].items() if key != "timestamp"} == {
        "name": "snap1", "uuid": UUID, "xml": xml, "rbd_snapshots": [f"{disk}@one" for disk in disks]}
    assert re.fullmatch(r"\d{14}", document["datestring"])

    # refused, nothing written: the same target again, a relative or missing path, an unknown parent
    listing = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    again = first.post("/vm/snap1/snapshot/export", params={"snapshot_name": "one", "export_path": str(tmp_path)})
    assert again.status_code == 400 and again.json()["message"] == (
        f"ERROR: Export target '{target}' already exists; expected a snapshot not exported there")
    (tmp_path / "afile").write_text("")
    for path, problem in (("relative", "is not an absolute path"),
                          (str(tmp_path / "nosuch"), "does not exist on the API host"),
                          (str(tmp_path / "afile"), "is not a directory on the API host")):
        bad = first.post("/vm/snap1/snapshot/export", params={"snapshot_name": "two", "export_path": path})
        assert bad.status_code == 400 and bad.json()["message"] == (
            f"ERROR: Target path '{path}' {problem}; expected the absolute path of a directory")
    (tmp_path / "afile").unlink()
    unknown = first.post("/vm/snap1/snapshot/export", params={"snapshot_name": "two", "export_path": str(tmp_path),
                                                              "incremental_parent": "nosuch"})
    assert unknown.json() == {"message": "Parameter 'incremental_parent': VM 'snap1' has no snapshot 'nosuch'"}
    with zk_timestamp(zk, "one", "9999999999"):  # 'one' as if taken after 'two'
        later = first.post("/vm/snap1/snapshot/export", params={
            "snapshot_name": "two", "export_path": str(tmp_path), "incremental_parent": "one"})
    assert later.status_code == 400 and later.json() == {
        "message": "Parameter 'incremental_parent': snapshot 'one' was taken after 'two'; expected an earlier "
                   "snapshot than 'snapshot_name'"}
    assert first.post("/vm/snap1/snapshot/export", params={"snapshot_name": "nosuch",
                                                           "export_path": str(tmp_path)}).status_code == 404
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == listing
    # the second disk's export fails (its RBD snapshot renamed behind the cluster's back): no file stays
    other = tmp_path / "other"
    other.mkdir()
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.rename_snap("two", "hidden")
    halfway = first.post("/vm/snap1/snapshot/export", params={"snapshot_name": "two", "export_path": str(other)})
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.rename_snap("hidden", "two")
    assert halfway.status_code == 409, halfway.text
    assert halfway.json()["message"].startswith(f"ERROR: Failed to export {POOL}/{DISKS[1]}@two: ")
    assert list(other.iterdir()) == []

    diff = second.post("/vm/snap1/snapshot/export", params={"snapshot_name": "two", "export_path": str(tmp_path),
                                                            "incremental_parent": "one"})
    assert diff.status_code == 200, diff.text
    document = json.loads((tmp_path / "snap1" / "two" / "snapshot.json").read_text())
    assert document["type"] == "incremental" and document["incremental_parent"] == "one"

    # the files hold the data: imported by the rbd CLI, the full export has the first bytes, the diff the second
    for volume, before, after in zip(DISKS, old, new, strict=True):
        copy = f"{volume}_copy"
        rbd_cli(ceph_cluster, "import", str(target / "images" / f"{POOL}.{volume}.rbdimg"), f"{POOL}/{copy}")
        with rbd.Image(ioctx, copy) as image:
            assert image.read(0, SIZE) == before
            image.create_snap("one")  # what an incremental import starts from
        rbd_cli(ceph_cluster, "import-diff", str(tmp_path / "snap1" / "two" / "images" / f"{POOL}.{volume}.rbddiff"),
                f"{POOL}/{copy}")
        with rbd.Image(ioctx, copy, read_only=True) as image:
            assert image.read(0, SIZE) == after
            assert [snap["name"] for snap in image.list_snaps()] == ["one", "two"]

    # the VM gone with its disks, the import recreates both volumes from the chain (full, then the diff) and the
    # VM from the snapshot's XML, with the two snapshots kept as the VM's
    before = {key: value for key, value in first.get("/vm/snap1").json().items() if key != "snapshots"}
    assert second.delete("/vm/snap1", params={"delete_disks": "true"}).status_code == 200
    assert not set(DISKS) & set(images(ioctx))
    # the second disk's diff is damaged: its import fails (409, rbd's reason) and both volumes are removed again
    damaged = tmp_path / "snap1" / "two" / "images" / f"{POOL}.{DISKS[1]}.rbddiff"
    kept = damaged.read_bytes()
    # cut short (its size no longer the one snapshot.json records): refused before anything is made
    damaged.write_bytes(kept[:100])
    cut = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(tmp_path)})
    assert cut.status_code == 400 and cut.json()["message"].startswith(
        "ERROR: Export 'two' of VM 'snap1' is damaged: its files hold "), cut.text
    assert not set(DISKS) & set(images(ioctx)) and not zk.exists(f"/domains/{UUID}")
    # gone, a FIFO, a symbolic link (to the right bytes, even): not the files the export wrote
    elsewhere = tmp_path / "elsewhere.rbddiff"
    elsewhere.write_bytes(kept)
    for make, problem in ((lambda: None, f"lacks its file 'images/{damaged.name}'"),
                          (lambda: os.mkfifo(damaged), f"'images/{damaged.name}' is not a regular file"),
                          (lambda: damaged.symlink_to(elsewhere), f"'images/{damaged.name}' is not a regular file")):
        damaged.unlink(missing_ok=True)
        make()
        odd = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(tmp_path)})
        assert odd.status_code == 400 and odd.json() == {
            "message": f"ERROR: Export 'two' of VM 'snap1' {problem}; expected the files as the export wrote them"}
    damaged.unlink()
    assert not set(DISKS) & set(images(ioctx)) and not zk.exists(f"/domains/{UUID}")
    damaged.write_bytes(b"garbage".ljust(len(kept), b"\xee"))  # its size kept: not refused before the import
    failed = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(tmp_path)})
    damaged.write_bytes(kept)
    assert failed.status_code == 409, failed.text
    assert failed.json()["message"].startswith(f"ERROR: Failed to import {damaged}: ")
    assert not set(DISKS) & set(images(ioctx))
    assert not any(zk.exists(f"/ceph/volumes/{POOL}/{volume}") for volume in DISKS)
    assert not zk.exists(f"/domains/{UUID}")
    notdir = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(damaged)})
    assert notdir.status_code == 400 and notdir.json()["message"] == (
        f"ERROR: Import path '{damaged}' is not a directory on the API host; expected the absolute path of a "
        "directory")
    imported = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(tmp_path)})
    assert imported.json() == {"message": f"Successfully imported VM 'snap1' from snapshot 'two' in '{tmp_path}'."}, \
        imported.text
    assert contents(ioctx) == new
    assert [snaps(ioctx, volume) for volume in DISKS] == [["one", "two"], ["one", "two"]]
    assert zk.get(f"/domains/{UUID}/xml")[0].decode() == xml
    same_everywhere(pair, "snap1", {**before, "snapshots": imported_snapshots(zk, disks, ["one", "two"])})
    for volume in DISKS:
        assert sorted(zk.get_children(f"/ceph/snapshots/{POOL}/{volume}")) == ["one", "two"]
    again = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(tmp_path)})
    assert again.status_code == 400 and "already exists in the cluster" in again.json()["message"]


def fill(ioctx, seed: int) -> None:
    """Known bytes (from ``seed``) at the start, the middle and the end of each disk."""
    import random

    import rbd
    for index, volume in enumerate(DISKS):
        known = random.Random(seed * 10 + index)
        with rbd.Image(ioctx, volume) as image:
            size = image.size()
            for offset in (0, size // 2 + 512, size - SIZE):
                image.write(known.randbytes(SIZE), offset)


def checksum(ioctx, volume: str, snapshot: str | None = None) -> str:
    """sha256 of the whole image (as of ``snapshot``)."""
    import hashlib

    import rbd
    digest = hashlib.sha256()
    with rbd.Image(ioctx, volume, snapshot=snapshot, read_only=True) as image:
        size = image.size()
        for offset in range(0, size, 1 << 20):
            digest.update(image.read(offset, min(1 << 20, size - offset)))
    return digest.hexdigest()


def test_snapshots_of_one_second_are_ordered_as_taken(pair, storage, tmp_path):
    """Snapshot times are whole seconds: two taken in one second, the earlier named to sort after the later
    ('b…' then 'a…'), are ordered as they were taken: the VM answer lists the later first, an incremental export
    of the later from the earlier is made (200), and the reverse is refused (400) before rbd export-diff, which
    would fail. The pair is taken again (new names) until both fall in one second."""
    first, _ = pair
    zk, ioctx = storage
    define_with_volumes(first, "snap1", UUID, DISKS)

    def stamp(name: str) -> bytes:
        return zk.get(f"/domains/{UUID}/snapshots/{name}/timestamp")[0]

    for attempt in range(10):
        earlier, later = f"b{attempt}", f"a{attempt}"
        write(ioctx, [bytes([attempt + 1]) * SIZE] * 2)
        assert first.post("/vm/snap1/snapshot", params={"snapshot_name": earlier}).status_code == 200
        write(ioctx, [bytes([attempt + 101]) * SIZE] * 2)
        assert first.post("/vm/snap1/snapshot", params={"snapshot_name": later}).status_code == 200
        if stamp(earlier) == stamp(later):
            break
    else:
        raise AssertionError("no two snapshots were taken within one second, in 10 attempts")
    listed = [item["name"] for item in first.get("/vm/snap1").json()["snapshots"]]
    assert listed.index(later) < listed.index(earlier), listed

    export = {"export_path": str(tmp_path)}
    assert first.post("/vm/snap1/snapshot/export", params={"snapshot_name": earlier, **export}).status_code == 200
    (tmp_path / "reverse").mkdir()
    reverse = first.post("/vm/snap1/snapshot/export", params={"snapshot_name": earlier, "incremental_parent": later,
                                                              "export_path": str(tmp_path / "reverse")})
    assert reverse.status_code == 400 and reverse.json() == {
        "message": f"Parameter 'incremental_parent': snapshot '{later}' was taken after '{earlier}'; expected an "
                   "earlier snapshot than 'snapshot_name'"}
    incremental = first.post("/vm/snap1/snapshot/export", params={"snapshot_name": later, **export,
                                                                  "incremental_parent": earlier})
    assert incremental.status_code == 200, incremental.text
    document = json.loads((tmp_path / "snap1" / later / "snapshot.json").read_text())
    assert (document["type"], document["incremental_parent"]) == ("incremental", earlier)


def test_import_under_a_new_name_beside_the_original(pair, storage, tmp_path):
    from lxml import etree
    first, second = pair
    zk, ioctx = storage
    for volume in (*DISKS, "lone_sda", "plain"):
        assert first.post("/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "8M"}).status_code \
            == 200
    assert first.post("/vm", params={"node": "pvchv1"},
                      data={"xml": vm_xml("snap1", UUID, tuple(f"{POOL}/{volume}" for volume in DISKS))}) \
        .status_code == 200
    fill(ioctx, 1)
    assert first.post("/vm/snap1/snapshot", params={"snapshot_name": "one"}).status_code == 200
    assert second.post("/vm/snap1/snapshot/export", params={"snapshot_name": "one", "export_path": str(tmp_path)}) \
        .status_code == 200
    fill(ioctx, 2)
    assert first.post("/vm/snap1/snapshot", params={"snapshot_name": "two"}).status_code == 200
    diff = second.post("/vm/snap1/snapshot/export", params={"snapshot_name": "two", "export_path": str(tmp_path),
                                                            "incremental_parent": "one"})
    assert diff.status_code == 200, diff.text
    fill(ioctx, 3)  # the original moves on: the copy must hold 'two', not the current data
    at = {snap: {volume: checksum(ioctx, volume, snap) for volume in DISKS} for snap in ("one", "two")}
    assert len({*at["one"].values(), *at["two"].values(), *(checksum(ioctx, volume) for volume in DISKS)}) == 6
    copies = tuple(volume.replace("snap1", "copy1") for volume in DISKS)

    def original() -> dict:
        """The original VM as far as an import could touch it: object, keys, volumes' keys, bytes, snapshots."""
        return {"vm": first.get("/vm/snap1").json(), "keys": tree(zk, f"/domains/{UUID}"),
                "volumes": {path: value for path, value in volume_keys(zk).items() if path.split("/")[4] in DISKS},
                "bytes": {(volume, snap): checksum(ioctx, volume, snap) for volume in DISKS
                          for snap in (None, "one", "two")},
                "snaps": [snaps(ioctx, volume) for volume in DISKS]}

    def untouched() -> tuple:
        return tree(zk, "/domains"), volume_keys(zk), images(ioctx)

    kept = original()
    assert len(kept["vm"]["snapshots"]) == 2

    def import_two(daemon, **extra: str):
        return daemon.post("/vm/snap1/snapshot/import",
                           params={"snapshot_name": "two", "import_path": str(tmp_path), **extra})

    # refused before anything is made: the original's own name (with or without new_name), a name a VM has,
    # a VM with a disk not named for it, a volume of the copy's name existing already
    assert first.post("/vm", params={"node": "pvchv1"},
                      data={"xml": vm_xml("lone", OTHER_UUID, (f"{POOL}/lone_sda", f"{POOL}/plain"))}).status_code \
        == 200
    assert first.post("/vm/lone/snapshot", params={"snapshot_name": "s"}).status_code == 200
    assert first.post("/vm/lone/snapshot/export", params={"snapshot_name": "s", "export_path": str(tmp_path)}) \
        .status_code == 200
    before = untouched()
    exists = import_two(first)
    assert exists.status_code == 400 and "already exists in the cluster" in exists.json()["message"]
    same = import_two(second, new_name="snap1")
    assert same.status_code == 400 and same.json() == {
        "message": "Parameter 'new_name': 'snap1' is the exported VM's own name; expected another name, or no "
                   "new_name to import VM 'snap1' as it was exported"}
    taken = import_two(first, new_name="lone")
    assert taken.status_code == 400
    assert taken.json() == {"message": "A VM named 'lone' is already present in the cluster"}
    assert import_two(first, new_name="a/b").status_code == 400
    spaced = import_two(second, new_name="copy 1")  # a VM name, but no volume name
    assert spaced.status_code == 400 and spaced.json() == {
        "message": f"Parameter 'new_name': volume name(s) {POOL}/copy 1_sda, {POOL}/copy 1_sdb of VM 'copy 1' are "
                   "not RBD volume names; expected a name that leaves them of letters, digits, '_', '.', '+', '-'"}
    unnamed = second.post("/vm/lone/snapshot/import", params={"snapshot_name": "s", "import_path": str(tmp_path),
                                                              "new_name": "lone2"})
    assert unnamed.status_code == 400
    assert unnamed.json() == {"message": f"ERROR: Disk volume(s) {POOL}/plain of exported VM 'lone' are not named "
                                         "for it, so VM 'lone2' would take the original's volume names; expected "
                                         "every rbd disk's volume name to contain 'lone' (replaced by 'lone2'), or "
                                         "an import without new_name"}
    assert untouched() == before
    # no node to define the VM on (the only one flushed): refused before any volume is copied
    zk.set("/nodes/pvchv1/domainstate", b"flushed")
    wait_until(lambda: second.get("/node/pvchv1").json()["domain_state"] == "flushed")
    nowhere = import_two(second, new_name="copy1")
    assert nowhere.status_code == 400 and nowhere.json() == {
        "message": "ERROR: Could not find a valid target node for VM 'copy1': no node is in daemon state 'run' and "
                   "domain state 'ready' with free memory; expected one to define the imported VM on (nothing was "
                   "imported)"}, nowhere.text
    zk.set("/nodes/pvchv1/domainstate", b"ready")
    wait_until(lambda: second.get("/node/pvchv1").json()["domain_state"] == "ready")
    assert untouched() == before
    assert first.post("/storage/ceph/volume", params={"pool": POOL, "volume": copies[1], "size": "4M"}) \
        .status_code == 200
    before = untouched()
    occupied = import_two(second, new_name="copy1")
    assert occupied.status_code == 409 and occupied.json() == {
        "message": f"ERROR: Volume '{copies[1]}' already exists in pool '{POOL}'; expected no volume of that name "
                   "for the imported VM 'copy1' (nothing was imported)"}
    assert untouched() == before  # the volume that was there stays
    assert first.delete(f"/storage/ceph/volume/{POOL}/{copies[1]}").status_code == 200

    # the second disk's diff is damaged: its import fails and nothing of the copy stays (volumes, their RBD
    # snapshots, keys under /ceph and /domains)
    before = untouched()
    damaged = tmp_path / "snap1" / "two" / "images" / f"{POOL}.{DISKS[1]}.rbddiff"
    whole = damaged.read_bytes()
    damaged.write_bytes(b"garbage".ljust(len(whole), b"\xee"))  # its size kept: not refused before the import
    failed = import_two(first, new_name="copy1")
    damaged.write_bytes(whole)
    assert failed.status_code == 409, failed.text
    assert failed.json()["message"].startswith(f"ERROR: Failed to import {damaged}: ")
    assert untouched() == before
    assert not set(copies) & set(images(ioctx))
    assert not any(zk.exists(f"/ceph/{kind}/{POOL}/{volume}") for kind in ("volumes", "snapshots")
                   for volume in copies)
    for daemon in pair:
        assert daemon.get("/vm/copy1").status_code == 404
    assert original() == kept

    # the copy: a new UUID, its name and renamed volumes in its XML and in its snapshots, every disk as the
    # original's at 'two' (and at 'one' through the kept snapshot), the original as it was
    imported = import_two(second, new_name="copy1")
    assert imported.status_code == 200, imported.text
    answer = re.fullmatch(rf"Successfully imported VM 'snap1' as 'copy1' \(UUID '([0-9a-f-]{{36}})'\) from snapshot "
                          rf"'two' in '{re.escape(str(tmp_path))}'\.", imported.json()["message"])
    assert answer, imported.text
    new_uuid = answer[1]
    assert sorted(zk.get_children("/domains")) == sorted([UUID, OTHER_UUID, new_uuid]) and new_uuid != UUID
    for volume, copy in zip(DISKS, copies, strict=True):
        assert checksum(ioctx, copy) == at["two"][volume]
        assert checksum(ioctx, copy, "two") == at["two"][volume] and checksum(ioctx, copy, "one") == at["one"][volume]
        assert snaps(ioctx, copy) == ["one", "two"]
        assert zk.exists(f"/ceph/volumes/{POOL}/{copy}")
        assert sorted(zk.get_children(f"/ceph/snapshots/{POOL}/{copy}")) == ["one", "two"]
    assert original() == kept

    def swapped(text: str) -> str:
        return text.replace("snap1", "copy1").replace(UUID, new_uuid)

    xml = etree.fromstring(zk.get(f"/domains/{new_uuid}/xml")[0])
    assert (xml.findtext("name"), xml.findtext("uuid")) == ("copy1", new_uuid)
    assert [source.get("name") for source in xml.iterfind("devices/disk/source")] == \
        [f"{POOL}/{copy}" for copy in copies]
    assert tree(zk, f"/domains/{new_uuid}") == {swapped(path): swapped(value.decode()).encode()
                                                for path, value in kept["keys"].items()}
    same_everywhere(pair, "copy1", json.loads(swapped(json.dumps(kept["vm"]))))
    assert kept["vm"]["snapshots"][0]["rbd_snapshots"] == [f"{POOL}/{volume}@two" for volume in DISKS]

    # again: the name is taken now; the copy's kept snapshot rolls it back, and only it
    before = untouched()
    again = import_two(first, new_name="copy1")
    assert again.status_code == 400
    assert again.json() == {"message": "A VM named 'copy1' is already present in the cluster"}
    assert untouched() == before
    rolled = first.post("/vm/copy1/snapshot/rollback", params={"snapshot_name": "one"})
    assert rolled.status_code == 200, rolled.text
    assert [checksum(ioctx, copy) for copy in copies] == [at["one"][volume] for volume in DISKS]
    assert original() == kept


def two_disk_vm(daemon, name: str = "snap1") -> tuple[str, ...]:
    """A VM ``name`` with the two disks ``DISKS`` (8 MiB volumes); their ``pool/volume`` names."""
    for volume in DISKS:
        made = daemon.post("/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "8M"})
        assert made.status_code == 200, made.text
    disks = tuple(f"{POOL}/{volume}" for volume in DISKS)
    defined = daemon.post("/vm", params={"node": "pvchv1"}, data={"xml": vm_xml(name, UUID, disks)})
    assert defined.status_code == 200, defined.text
    return disks


def lock_refusal(ioctx, volume: str, vm: str | None, refused: str = "makes no snapshot of") -> str:
    """The 400's message for ``volume`` locked as its lockers are now (ceph's Volumes.lock_refusal)."""
    held, ways = lock_description(ioctx, POOL, volume, (vm,) if vm else ())
    return (f"ERROR: Volume '{volume}' in pool '{POOL}' is locked by another client: {held}, and Ceph {refused} a "
            f"volume locked by another client; release the lock ({ways}) and try again")


def test_a_disk_locked_by_another_client_is_refused_with_400_and_nothing_left(pair, storage, ceph_cluster):
    """Issue 16: a snapshot of a disk locked from outside answers 400, not 409 (v0.6 answers every snapshot its
    node could not make with 400), with a message naming the lock and how to release it."""
    import rbd
    first, second = pair
    zk, ioctx = storage
    two_disk_vm(first)
    original = first.get("/vm/snap1").json()
    unchanged = (tree(zk, "/domains"), volume_keys(zk), images(ioctx))

    def nothing_left() -> None:
        assert [snaps(ioctx, volume) for volume in DISKS] == [[], []]
        assert (tree(zk, "/domains"), volume_keys(zk), images(ioctx)) == unchanged
        same_everywhere(pair, "snap1", original)

    # the second disk locked through librbd (held while the request runs): the first disk's snapshot, made
    # before, is removed again, and the answer names the lock and how to release it
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.lock_exclusive("test-holder")
        expected = lock_refusal(ioctx, DISKS[1], "snap1")
        locked = second.post("/vm/snap1/snapshot", params={"snapshot_name": "locked"})
        image.unlock("test-holder")
    assert locked.status_code == 400, locked.text
    assert locked.json() == {"message": f"{expected}; the RBD snapshots already made were removed"}
    nothing_left()

    # the second disk has a snapshot of that name through the API already: the ceph plugin's 400 (v0.6's
    # "already exists"), its full stop dropped before what was undone
    made = second.post("/storage/ceph/snapshot", params={"pool": POOL, "volume": DISKS[1], "snapshot": "taken"})
    assert made.status_code == 200, made.text
    taken = first.post("/vm/snap1/snapshot", params={"snapshot_name": "taken"})
    assert taken.status_code == 400, taken.text
    assert taken.json() == {"message": f"ERROR: Snapshot 'taken' already exists for volume '{DISKS[1]}' in pool "
                                       f"'{POOL}'; the RBD snapshots already made were removed"}
    assert [snaps(ioctx, volume) for volume in DISKS] == [[], ["taken"]]
    assert second.delete(f"/storage/ceph/snapshot/{POOL}/{DISKS[1]}/taken").status_code == 200
    assert [snaps(ioctx, volume) for volume in DISKS] == [[], []]

    # a lock left by a client that is gone (the rbd CLI's `lock add`) on the first disk: refused before any
    # snapshot is made; the way the answer offers (POST /vm/<vm>/locks, the VM stopped) releases it
    rbd_cli(ceph_cluster, "lock", "add", f"{POOL}/{DISKS[0]}", "cli-holder")
    expected = lock_refusal(ioctx, DISKS[0], "snap1")
    locked = first.post("/vm/snap1/snapshot", params={"snapshot_name": "locked"})
    assert locked.status_code == 400, locked.text
    assert locked.json() == {"message": expected}
    nothing_left()

    # the volume snapshot routes refuse the same way (400, no RBD snapshot, no key), in both forms
    for path, params in (("/storage/ceph/snapshot", {"pool": POOL, "volume": DISKS[0], "snapshot": "plain"}),
                         (f"/storage/ceph/snapshot/{POOL}/{DISKS[0]}/plain", {})):
        refused = second.post(path, params=params)
        assert refused.status_code == 400, refused.text
        assert refused.json() == {"message": expected}
        assert not zk.exists(f"/ceph/snapshots/{POOL}/{DISKS[0]}/plain")
        nothing_left()

    assert first.post("/vm/snap1/locks").json() == {"message": "Flushed locks on VM 'snap1'"}
    made = second.post("/vm/snap1/snapshot", params={"snapshot_name": "unlocked"})
    assert made.status_code == 200, made.text
    assert [snaps(ioctx, volume) for volume in DISKS] == [["unlocked"], ["unlocked"]]


def digest(ioctx, volume: str, snapshot: str | None = None) -> str:
    """sha256 of the whole volume (as of ``snapshot``)."""
    import hashlib

    import rbd
    with rbd.Image(ioctx, volume, snapshot=snapshot, read_only=True) as image:
        return hashlib.sha256(image.read(0, image.size())).hexdigest()


def consistent_keys(zk, ioctx) -> None:
    """ZooKeeper records each disk and exactly the RBD snapshots Ceph holds of it."""
    import rbd
    for volume in DISKS:
        with rbd.Image(ioctx, volume, read_only=True) as image:
            size = image.size()
        assert json.loads(zk.get(f"/ceph/volumes/{POOL}/{volume}/stats")[0])["size"] == size
        assert sorted(zk.get_children(f"/ceph/snapshots/{POOL}/{volume}")) == snaps(ioctx, volume)


def test_import_of_pvc1_export_format_2(pair, storage, ceph_cluster, tmp_path):
    first, second = pair
    zk, ioctx = storage
    disks = two_disk_vm(first)
    write(ioctx, [b"\x11" * SIZE, b"\x12" * SIZE])
    assert first.post("/vm/snap1/snapshot", params={"snapshot_name": "one"}).status_code == 200
    write(ioctx, [b"\x21" * SIZE, b"\x22" * SIZE])
    assert first.post("/vm/snap1/snapshot", params={"snapshot_name": "two"}).status_code == 200
    write(ioctx, [b"\x31" * SIZE, b"\x32" * SIZE])  # the data after the last snapshot
    expected = {snap: [digest(ioctx, volume, snap) for volume in DISKS] for snap in ("one", "two", None)}
    assert len({tuple(value) for value in expected.values()}) == 3
    before = {key: value for key, value in first.get("/vm/snap1").json().items() if key != "snapshots"}

    # our exporter lays out the directories and snapshot.json; its images are replaced by PVC 1.x's (rbd export
    # --export-format 2 of the snapshot), which carry both snapshots and the data after the last one
    for name, parent in (("one", None), ("two", "one")):
        params = {"snapshot_name": name, "export_path": str(tmp_path), **({"incremental_parent": parent} if parent
                                                                        else {})}
        assert second.post("/vm/snap1/snapshot/export", params=params).status_code == 200
    target = tmp_path / "snap1" / "one"
    for volume in DISKS:
        image = target / "images" / f"{POOL}.{volume}.rbdimg"
        image.unlink()
        rbd_cli(ceph_cluster, "export", "--export-format", "2", f"{POOL}/{volume}@one", str(image))
        assert image.read_bytes().startswith(b"rbd image v2\n")
    document = json.loads((target / "snapshot.json").read_text())
    document["export_size_bytes"] = sum((target / item["file"]).stat().st_size for item in document["export_files"])
    (target / "snapshot.json").write_text(json.dumps(document, indent=2))

    for name, chain in (("one", ["one"]), ("two", ["one", "two"])):
        assert second.delete("/vm/snap1", params={"delete_disks": "true"}).status_code == 200
        assert not set(DISKS) & set(images(ioctx))
        imported = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": name,
                                                                    "import_path": str(tmp_path)})
        assert imported.status_code == 200, imported.text
        # the snapshot's bytes (not the data the v2 file carries after it), only the chain's snapshots
        assert [digest(ioctx, volume) for volume in DISKS] == expected[name]
        assert [digest(ioctx, volume, snap) for volume in DISKS for snap in chain] == \
            [expected[snap][index] for index in range(len(DISKS)) for snap in chain]
        assert [snaps(ioctx, volume) for volume in DISKS] == [chain, chain]
        consistent_keys(zk, ioctx)
        same_everywhere(pair, "snap1", {**before, "snapshots": imported_snapshots(zk, disks, chain)})


def test_xml_diff_lines_made_once_per_pair_of_xmls():
    from pvc_vm import xmldiff
    current = "<domain>\n  <name>a</name>\n  <memory>1</memory>\n</domain>\n"
    older = current.replace("<memory>1", "<memory>2")
    assert xmldiff.diff_lines(current, current) == []
    made = xmldiff.diff_lines(older, current)
    assert made == xml_diff(older, current) == ["--- current", "+++ snapshot", "@@ -2,3 +2,3 @@", "   <name>a</name>",
                                                "-  <memory>1</memory>", "+  <memory>2</memory>", " </domain>"]
    key = next(reversed(xmldiff._cache))  # kept, and a caller's change of its copy does not reach it
    kept = xmldiff._cache[key]
    made.clear()
    assert xmldiff.diff_lines(older, current) == xml_diff(older, current)
    assert xmldiff._cache[key] is kept  # not made again
    assert xmldiff.diff_lines(current, older) == xml_diff(current, older)  # the other way round: another pair


def test_a_volume_listed_twice_in_the_xml_is_snapshotted_once(pair, storage):
    """An XML may name one RBD volume as two disks: the snapshot takes it once (its second snapshot was
    refused as one that exists already, which pointed at the wrong problem), and the rollback restores it."""
    import rbd
    first, second = pair
    zk, ioctx = storage
    assert first.post("/storage/ceph/volume", params={"pool": POOL, "volume": "twice_sda", "size": "8M"}) \
        .status_code == 200
    assert first.post("/vm", params={"node": "pvchv1"},
                      data={"xml": vm_xml("twice", UUID, (f"{POOL}/twice_sda", f"{POOL}/twice_sda"))}).status_code \
        == 200
    with rbd.Image(ioctx, "twice_sda") as image:
        image.write(b"\x01" * SIZE, 0)
    made = second.post("/vm/twice/snapshot", params={"snapshot_name": "once"})
    assert made.json() == {"message": "Successfully created snapshot 'once' of VM 'twice'."}, made.text
    assert snaps(ioctx, "twice_sda") == ["once"]
    assert zk.get(f"/domains/{UUID}/snapshots/once/rbdsnaplist")[0] == f"{POOL}/twice_sda@once".encode()
    with rbd.Image(ioctx, "twice_sda") as image:
        image.write(b"\x02" * SIZE, 0)
    assert first.post("/vm/twice/state", params={"state": "stop"}).status_code == 200
    rolled = first.post("/vm/twice/snapshot/rollback", params={"snapshot_name": "once"})
    assert rolled.status_code == 200, rolled.text
    with rbd.Image(ioctx, "twice_sda", read_only=True) as image:
        assert image.read(0, SIZE) == b"\x01" * SIZE


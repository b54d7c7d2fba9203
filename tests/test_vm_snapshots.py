"""Whole-VM snapshots (PVC 1.x's /vm/<vm>/snapshot) on a real memstore Ceph, through two daemons."""

from __future__ import annotations

import json
import re
import time

from test_cluster import tree
from test_vm import UUID
from test_vm_storage import (
    POOL,
    define_with_volumes,
    images,
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


def test_snapshot_rollback_failure_and_delete_of_a_two_disk_vm(pair, storage):
    import rbd
    first, second = pair
    zk, ioctx = storage
    define_with_volumes(first, "snap1", UUID, DISKS)
    known = [bytes(range(256)) * (SIZE // 256), bytes(reversed(range(256))) * (SIZE // 256)]
    write(ioctx, known)
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
    listed = [{"name": "first", "timestamp": timestamp, "rbd_snapshots": rbd_snapshots}]
    assert json.loads(zk.get(base)[0]) == listed
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

    # overwrite both disks and change the XML; a running VM is not rolled back (409), nothing changes
    write(ioctx, [b"\xaa" * SIZE, b"\x55" * SIZE])
    bigger = original["xml"].replace("<memory unit='MiB'>2048</memory>", "<memory unit='MiB'>4096</memory>")
    assert bigger != original["xml"]
    assert first.put("/vm/snap1", data={"xml": bigger}).status_code == 200
    changed = first.get("/vm/snap1").json()
    assert changed["memory"] == 4096
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

    # a client holds the second disk's lock: 409 before anything is done
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.lock_exclusive("test-holder")
        locked = second.post("/vm/snap1/snapshot/rollback", params={"snapshot_name": "first"})
        image.unlock("test-holder")
    assert locked.status_code == 409, locked.text
    assert locked.json()["message"].startswith(f"ERROR: Volume '{DISKS[1]}' in pool '{POOL}' is in use (locked by ")
    assert locked.json()["message"].endswith("; stop what uses it before rolling VM 'snap1' back")
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
                                         f"pool '{POOL}'.; the disks already rolled back were restored")
    assert contents(ioctx) == [b"\xaa" * SIZE, b"\x55" * SIZE]
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first"]]
    assert tree(zk, "/domains") == changed_keys
    same_everywhere(pair, "snap1", {**changed, "state": "stop"})

    # the rollback: both disks hold the first bytes again, the XML is the stored one, no helper snapshot stays
    rolled = second.post("/vm/snap1/snapshot/rollback", params={"snapshot_name": "first"})
    assert rolled.json() == {"message": "Successfully rolled back to snapshot 'first' of VM 'snap1'."}, rolled.text
    assert contents(ioctx) == known
    assert [snaps(ioctx, volume) for volume in DISKS] == [["first"], ["first"]]
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


def rbd_cli(ceph_cluster, *args: str) -> None:
    import subprocess
    subprocess.run(["rbd", "--conf", ceph_cluster.conf, "--keyring", ceph_cluster.keyring, *args], check=True,
                   capture_output=True, timeout=60)


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
    for path in ("relative", str(tmp_path / "nosuch")):
        bad = first.post("/vm/snap1/snapshot/export", params={"snapshot_name": "two", "export_path": path})
        assert bad.status_code == 400 and "does not exist on the API host" in bad.json()["message"]
    unknown = first.post("/vm/snap1/snapshot/export", params={"snapshot_name": "two", "export_path": str(tmp_path),
                                                              "incremental_parent": "nosuch"})
    assert unknown.json() == {"message": "Parameter 'incremental_parent': VM 'snap1' has no snapshot 'nosuch'"}
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
    damaged.write_bytes(b"garbage")
    failed = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(tmp_path)})
    damaged.write_bytes(kept)
    assert failed.status_code == 409, failed.text
    assert failed.json()["message"].startswith(f"ERROR: Failed to import {damaged}: ")
    assert not set(DISKS) & set(images(ioctx))
    assert not any(zk.exists(f"/ceph/volumes/{POOL}/{volume}") for volume in DISKS)
    assert not zk.exists(f"/domains/{UUID}")
    imported = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(tmp_path)})
    assert imported.json() == {"message": f"Successfully imported VM 'snap1' from snapshot 'two' in '{tmp_path}'."}, \
        imported.text
    assert contents(ioctx) == new
    assert [snaps(ioctx, volume) for volume in DISKS] == [["one", "two"], ["one", "two"]]
    assert zk.get(f"/domains/{UUID}/xml")[0].decode() == xml
    listed = [{"name": snap, "timestamp": zk.get(f"/domains/{UUID}/snapshots/{snap}/timestamp")[0].decode(),
               "rbd_snapshots": [f"{disk}@{snap}" for disk in disks]} for snap in ("two", "one")]
    same_everywhere(pair, "snap1", {**before, "snapshots": listed})
    for volume in DISKS:
        assert sorted(zk.get_children(f"/ceph/snapshots/{POOL}/{volume}")) == ["one", "two"]
    again = first.post("/vm/snap1/snapshot/import", params={"snapshot_name": "two", "import_path": str(tmp_path)})
    assert again.status_code == 400 and "already exists in the cluster" in again.json()["message"]

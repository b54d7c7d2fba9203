"""VM rename with its RBD volumes, and volume snapshot rollback (PVC 1.x), on a real memstore Ceph."""

from __future__ import annotations

import pytest
from test_ceph import initialize_with_a_node
from test_cluster import tree
from test_vm import UUID, XML

from conftest import REQUEST_TIMEOUT, deep_merge, wait_until

POOL = "rn"
OTHER_UUID = "00000000-0000-4000-8000-0000000000aa"


def vm_xml(name: str, uuid: str, disks: tuple[str, ...]) -> str:
    """test_vm's XML with these rbd disks (``pool/volume``) in place of its one."""
    start, end = XML.index("<disk "), XML.index("</disk>") + len("</disk>")
    devices = "".join(f"<disk type='network' device='disk'><source protocol='rbd' name='{disk}'>"
                      f"<host name='pvchv1' port='6789'/></source><target dev='sd{chr(97 + index)}' bus='scsi'/>"
                      "</disk>" for index, disk in enumerate(disks))
    return (XML[:start] + devices + XML[end:]).replace("test1", name).replace(UUID, uuid)


def define_with_volumes(daemon, name: str, uuid: str, volumes: tuple[str, ...]) -> None:
    """Volumes of 8 MiB in POOL, and a VM (on pvchv1) whose rbd disks they are."""
    for volume in volumes:
        made = daemon.post("/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "8M"})
        assert made.status_code == 200, made.text
    defined = daemon.post("/vm", params={"node": "pvchv1"},
                          data={"xml": vm_xml(name, uuid, tuple(f"{POOL}/{volume}" for volume in volumes))})
    assert defined.status_code == 200, defined.text


def lock_description(ioctx, pool: str, volume: str, vms: tuple[str, ...] = ()) -> tuple[str, str]:
    """(each lock of ``volume`` as its lockers are now; the ways to release them, ``vms`` being the VMs with it
    as a disk): what every 400 for a locked volume says (ceph's Volumes._lock_description)."""
    import rbd
    with rbd.Image(ioctx, volume, read_only=True) as image:
        lockers = image.list_lockers()["lockers"]
    assert lockers, f"{volume} is not locked"
    held = "; ".join(f"{client} (lock '{cookie}', from {address})" for client, cookie, address in lockers)
    ways = [f"POST /vm/{vm}/locks (VM '{vm}' stopped)" for vm in vms]
    ways += [f"rbd lock rm {pool}/{volume} '{cookie}' {client}" for client, cookie, _ in lockers]
    return held, " or ".join(ways)


def in_use(ioctx, pool: str, volume: str, doing: str, vms: tuple[str, ...] = ()) -> str:
    """The 400's message for a rollback or an upload of ``volume`` while it is locked (Volumes.refuse_locked)."""
    held, ways = lock_description(ioctx, pool, volume, vms)
    return (f"ERROR: Volume '{volume}' in pool '{pool}' is in use, locked by another client: {held}; release the "
            f"lock ({ways}) before {doing}")


@pytest.fixture(scope="module")
def pair(daemon_factory, ceph_config):
    config = deep_merge(ceph_config, {"vm": {"delete_grace": "0.05"}})
    first, second = daemon_factory(config), daemon_factory(config)
    yield first, second
    first.stop()  # their collectors must not write into the trees of later tests
    second.stop()


@pytest.fixture(scope="module")
def rbd_handle(ceph_cluster):
    import rados
    handle = rados.Rados(conffile=ceph_cluster.conf, conf={"keyring": ceph_cluster.keyring})
    handle.connect(timeout=REQUEST_TIMEOUT)
    yield handle
    handle.shutdown()


@pytest.fixture
def storage(pair, clean_zk, rbd_handle):
    first, _ = pair
    initialize_with_a_node(first, clean_zk)
    made = first.post("/storage/ceph/pool", params={"pool": POOL, "pgs": "8", "replcfg": "copies=1,mincopies=1"})
    assert made.status_code == 200, made.text
    rbd_handle.wait_for_latest_osdmap()  # the pool of the same name a previous test removed is gone
    ioctx = rbd_handle.open_ioctx(POOL)
    yield clean_zk, ioctx
    ioctx.close()
    first.delete(f"/storage/ceph/pool/{POOL}", params={"yes-i-really-mean-it": ""})


def images(ioctx) -> list[str]:
    import rbd
    return sorted(rbd.RBD().list(ioctx))


def volume_keys(zk) -> dict:
    """The volumes' and snapshots' keys, without the stats the collector refreshes."""
    return {path: value for path, value in {**tree(zk, f"/ceph/volumes/{POOL}"),
                                            **tree(zk, f"/ceph/snapshots/{POOL}")}.items()
            if not path.endswith("/stats")}


def same_everywhere(pair, name: str, expected: dict) -> None:
    for daemon in pair:
        wait_until(lambda daemon=daemon: daemon.get(f"/vm/{name}").json() == expected,
                   message=f"VM {name} through {daemon.base}")
        assert daemon.get(f"/vm/{expected['uuid']}").json() == expected
        assert daemon.get("/vm", params={"limit": f"^{name}$"}).json() == expected


def test_rename_moves_xml_keys_and_volumes_in_one_step(pair, storage):
    first, second = pair
    zk, ioctx = storage
    for volume in ("web1_sda", "web1_sdb", "shared"):
        made = first.post("/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "8M"})
        assert made.status_code == 200, made.text
    assert first.post(f"/storage/ceph/snapshot/{POOL}/web1_sdb/before").status_code == 200
    disks = (f"{POOL}/web1_sda", f"{POOL}/web1_sdb", f"{POOL}/shared")
    defined = first.post("/vm", params={"node": "pvchv1", "user_tags": "blue"},
                         data={"xml": vm_xml("web1", UUID, disks)})
    assert defined.status_code == 200, defined.text
    other = first.post("/vm", params={"node": "pvchv1"}, data={"xml": vm_xml("taken", OTHER_UUID, ())})
    assert other.status_code == 200, other.text
    original = first.get("/vm/web1").json()
    same_everywhere(pair, "web1", original)
    domains, volumes, ceph_images = tree(zk, "/domains"), volume_keys(zk), images(ioctx)

    def unchanged() -> None:
        assert tree(zk, "/domains") == domains
        assert volume_keys(zk) == volumes
        assert images(ioctx) == ceph_images
        same_everywhere(pair, "web1", original)

    # running: 409; a taken name, no name, a bad one: 400; unknown VM: 404; nothing changes
    assert first.post("/vm/web1/state", params={"state": "start"}).status_code == 200
    running = second.post("/vm/web1/rename", params={"new_name": "web2"})
    assert running.status_code == 409
    assert running.json()["message"].startswith("ERROR: VM 'web1' is not in stopped state ('start')")
    assert first.post("/vm/web1/state", params={"state": "stop"}).status_code == 200
    taken = first.post("/vm/web1/rename", params={"new_name": "taken"})
    assert taken.status_code == 400
    assert taken.json() == {"message": "A VM named 'taken' is already present in the cluster"}
    assert first.post("/vm/web1/rename").status_code == 400
    assert first.post("/vm/web1/rename", params={"new_name": "a/b"}).status_code == 400
    assert first.post("/vm/nosuch/rename", params={"new_name": "x"}).status_code == 404
    # v0.6 flattened a JSON true to "True": the VM and its volumes were renamed True
    flag = first.post("/vm/web1/rename", json={"new_name": True})
    assert flag.status_code == 400 and flag.json() == {"message": "Parameter 'new_name': expected a name without "
                                                                  "'/' or control characters, not '.' or '..' of "
                                                                  "at most 255 characters, got a JSON boolean"}
    unchanged()

    # the second volume's rename fails in Ceph (an image of that name exists there only): the first is
    # renamed back, and the VM, its keys and its volumes are as they were
    import rbd
    rbd.RBD().create(ioctx, "web2_sdb", 4 * 1024 * 1024)
    ceph_images = images(ioctx)
    failed = first.post("/vm/web1/rename", params={"new_name": "web2"})
    assert failed.status_code == 409, failed.text
    assert "web2_sdb" in failed.json()["message"]
    assert failed.json()["message"].endswith("; the volumes already renamed were renamed back")
    unchanged()
    rbd.RBD().remove(ioctx, "web2_sdb")
    ceph_images = images(ioctx)

    # the last step fails, after every volume was renamed: the transaction renames the VM's snapshots too and
    # meets one whose stored XML another tool wrote unreadable; every volume is renamed back
    base = f"/domains/{UUID}/snapshots"
    transaction = zk.transaction()
    for path, value in ((base, b"[]"), (f"{base}/odd", b"odd"), (f"{base}/odd/timestamp", b"0"),
                        (f"{base}/odd/xml", b"<not xml"), (f"{base}/odd/rbdsnaplist", b"")):
        transaction.create(path, value)
    assert all(result is not None and not isinstance(result, Exception) for result in transaction.commit())
    broken = first.post("/vm/web1/rename", params={"new_name": "web2"})
    assert broken.status_code == 400, broken.text
    assert broken.json()["message"].startswith("Error: XML is malformed or incorrect")
    assert broken.json()["message"].endswith("; the volumes already renamed were renamed back")
    assert images(ioctx) == ceph_images and zk.get(f"/domains/{UUID}")[0] == b"web1"
    zk.delete(base, recursive=True)
    unchanged()

    # the rename: XML (name, disk sources), the name key, the volumes and their keys; UUID, tags stay
    done = second.post("/vm/web1/rename", params={"new_name": "web2"})
    assert done.json() == {"message": "Successfully renamed VM 'web1' to 'web2'."}
    assert images(ioctx) == ["shared", "web2_sda", "web2_sdb"]
    assert zk.get(f"/domains/{UUID}")[0] == b"web2"
    xml = zk.get(f"/domains/{UUID}/xml")[0].decode()
    assert "<name>web2</name>" in xml and "web1" not in xml
    assert f'name="{POOL}/web2_sda"' in xml and f'name="{POOL}/web2_sdb"' in xml and f'name="{POOL}/shared"' in xml
    assert zk.get(f"/domains/{UUID}/rbdlist")[0] == f"{POOL}/web2_sda,{POOL}/web2_sdb,{POOL}/shared".encode()
    after = tree(zk, "/domains")
    changed = {f"/domains/{UUID}", f"/domains/{UUID}/xml", f"/domains/{UUID}/rbdlist"}
    assert {path: value for path, value in after.items() if path not in changed} == \
        {path: value for path, value in domains.items() if path not in changed}
    assert volume_keys(zk) == {path.replace("web1_", "web2_"): value for path, value in volumes.items()}
    # web1 was in the name and the two disks' sources only: nothing else of the XML changed
    expected = {**original, "name": "web2", "xml": original["xml"].replace("web1", "web2"),
                "disks": [{**disk, "name": disk["name"].replace("web1_", "web2_")} for disk in original["disks"]]}
    same_everywhere(pair, "web2", expected)
    for daemon in pair:
        wait_until(lambda daemon=daemon: daemon.get("/vm/web1").status_code == 404)
        assert daemon.get(f"/storage/ceph/volume/{POOL}/web2_sdb").json()["name"] == "web2_sdb"
        assert daemon.get(f"/storage/ceph/snapshot/{POOL}/web2_sdb/before").status_code == 200
        assert daemon.get(f"/storage/ceph/volume/{POOL}/web1_sda").status_code == 404


def test_snapshot_rollback_restores_the_bytes(pair, storage):
    import rbd
    first, second = pair
    zk, ioctx = storage
    assert first.post("/storage/ceph/volume", params={"pool": POOL, "volume": "data", "size": "8M"}).status_code == 200
    known, other = bytes(range(256)) * 16, b"\xff" * 4096
    with rbd.Image(ioctx, "data") as image:
        image.write(known, 0)
    assert first.post(f"/storage/ceph/snapshot/{POOL}/data/known").status_code == 200
    with rbd.Image(ioctx, "data") as image:
        image.write(other, 0)
        assert image.read(0, 4096) == other
    keys = volume_keys(zk)

    missing = second.post(f"/storage/ceph/snapshot/{POOL}/data/nosuch/rollback")
    assert missing.status_code == 404
    assert missing.json() == {"message": f"ERROR: No snapshot with name 'nosuch' is present for volume 'data' "
                                         f"in pool '{POOL}'."}
    assert second.post(f"/storage/ceph/snapshot/{POOL}/nodata/known/rollback").status_code == 404

    # a disk of a running VM: 409, and the bytes stay
    assert first.post("/vm", params={"node": "pvchv1"},
                      data={"xml": vm_xml("db1", UUID, (f"{POOL}/data",))}).status_code == 200
    assert first.post("/vm/db1/state", params={"state": "start"}).status_code == 200
    busy = second.post(f"/storage/ceph/snapshot/{POOL}/data/known/rollback")
    assert busy.status_code == 409 and "running VM(s) db1" in busy.json()["message"]
    # a client holding the image's lock (a mapping the cluster does not know of): 400, as for a snapshot
    assert first.post("/vm/db1/state", params={"state": "stop"}).status_code == 200
    with rbd.Image(ioctx, "data") as image:
        image.lock_exclusive("test-holder")
        expected = in_use(ioctx, POOL, "data", "rolling it back", ("db1",))
        locked = second.post(f"/storage/ceph/snapshot/{POOL}/data/known/rollback")
        image.unlock("test-holder")
    assert locked.status_code == 400, locked.text
    assert locked.json() == {"message": expected}
    with rbd.Image(ioctx, "data", read_only=True) as image:
        assert image.read(0, 4096) == other

    done = second.post(f"/storage/ceph/snapshot/{POOL}/data/known/rollback")
    assert done.json() == {"message": f"Rolled back RBD volume 'data' in pool '{POOL}' to snapshot 'known'."}
    with rbd.Image(ioctx, "data", read_only=True) as image:
        assert image.read(0, 4096) == known
    assert volume_keys(zk) == keys  # the volume and its snapshot stay recorded as they were
    for daemon in pair:
        assert daemon.get(f"/storage/ceph/snapshot/{POOL}/data/known").json() == {
            "pool": POOL, "volume": "data", "snapshot": "known"}

"""An import's snapshot.json documents (PVC 1.x's export layout) come from whoever could write the import path:
every field of every export of the chain is checked before anything is made, each problem a 400 naming the
file and the field, and a failure after a volume was made leaves nothing. On a real memstore Ceph, through the
daemons of test_vm_storage; the exports are real ones (made once per module), copied and tampered with."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cluster import tree
from test_vm import UUID
from test_vm_snapshots import rbd_cli
from test_vm_storage import OTHER_UUID, POOL, define_with_volumes, images, pair, rbd_handle, storage, vm_xml

__all__ = ["pair", "rbd_handle", "storage"]  # test_vm_storage's fixtures

VM = "evilvm"
DISKS = ("evilvm_sda", "evilvm_sdb")
SRCVOLS = [f"{POOL}/{volume}" for volume in DISKS]
SIZE = 4096


def write(ioctx, byte: int) -> None:
    import rbd
    for index, volume in enumerate(DISKS):
        with rbd.Image(ioctx, volume) as image:
            image.write(bytes([byte + index]) * SIZE, 0)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict:
    """Where the module's real exports are kept, made by the first test that needs them (``exports``)."""
    return {"root": tmp_path_factory.mktemp("pristine"), "made": False}


@pytest.fixture
def exports(pair, storage, pristine, tmp_path) -> Path:
    """An import path holding a copy of real exports of VM ``evilvm`` (two disks): ``s0`` (full) and ``s1``
    (incremental from ``s0``). The VM and its volumes are gone, so an import would make them."""
    first, second = pair
    zk, ioctx = storage
    if not pristine["made"]:
        define_with_volumes(first, VM, UUID, DISKS)
        for name, parent, byte in (("s0", None, 0x10), ("s1", "s0", 0x20)):
            write(ioctx, byte)
            assert first.post(f"/vm/{VM}/snapshot", params={"snapshot_name": name}).status_code == 200
            params = {"snapshot_name": name, "export_path": str(pristine["root"]),
                      **({"incremental_parent": parent} if parent else {})}
            made = second.post(f"/vm/{VM}/snapshot/export", params=params)
            assert made.status_code == 200, made.text
        assert first.delete(f"/vm/{VM}", params={"delete_disks": "true"}).status_code == 200
        pristine["made"] = True
    root = tmp_path / "imports"
    shutil.copytree(pristine["root"], root)
    return root


def made_by_an_import(zk, ioctx) -> tuple:
    """Everything an import makes: images in Ceph, their keys, and the VMs' keys. The volumes' stats values are
    left out (their keys are kept): the Ceph collector refreshes them (access and modify times) meanwhile."""
    def keys(root: str) -> dict:
        return {path: None if path.endswith("/stats") else value for path, value in tree(zk, root).items()}
    return images(ioctx), keys("/ceph/volumes"), keys("/ceph/snapshots"), tree(zk, "/domains")


def tamper(root: Path, name: str, change: Callable[[dict], object] | str) -> Path:
    """Rewrite ``<root>/evilvm/<name>/snapshot.json`` with ``change`` applied (what it returns, when not None,
    is the new document), or as the text ``change``; its path."""
    path = root / VM / name / "snapshot.json"
    if change is FIFO:
        path.unlink()
        os.mkfifo(path)
        return path
    if isinstance(change, str):
        path.write_bytes(change.encode(errors="surrogateescape"))
        return path
    document = json.loads(path.read_text())
    changed = change(document)
    path.write_text(json.dumps(document if changed is None else changed))
    return path


def setting(*keys, value) -> Callable[[dict], None]:
    """A change setting the field at ``keys`` (``vm_detail``, ``xml``; an int indexes a list) to ``value``."""
    def change(document: dict) -> None:
        for key in keys[:-1]:
            document = document[key]
        document[keys[-1]] = value
    return change


def dropping(*keys) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        for key in keys[:-1]:
            document = document[key]
        del document[keys[-1]]
    return change


def file_entry(value) -> Callable[[dict], None]:
    return setting("export_files", 0, "file", value=value)


def srcvol_entry(value) -> Callable[[dict], None]:
    return setting("export_files", 0, "srcvol", value=value)


def xml_of(name: str = VM, uuid: str = UUID) -> str:
    return vm_xml(name, uuid, tuple(SRCVOLS))


FIFO = "<a FIFO>"  # read, it would hold the request
NOT_A_DOMAIN = "field 'vm_detail.xml' is not a libvirt domain's XML"
# (the export tampered with, the change, the field the 400 names); the import asks for s1, so s0 is read as its
# parent. Each document is otherwise the real export's.
CASES = {
    "not-an-object": ("s1", lambda document: [document], "is a JSON array; expected a JSON object"),
    "not-json": ("s1", '{"type": "full", ', "Cannot read export"),
    "too-deep": ("s1", "[" * 100000 + "]" * 100000, "Cannot read export"),  # deeper than Python's recursion
    "not-utf8": ("s1", "\udcff", "Cannot read export"),  # written as the byte 0xff (surrogateescape)
    "fifo": ("s1", FIFO, "Cannot read export"),
    "too-large": ("s1", " " * (16 << 20) + "{}", "larger than 16777216 bytes"),
    "type-missing": ("s1", dropping("type"), "field 'type' is missing"),
    "type-unknown": ("s1", setting("type", value="partial"), "field 'type' is 'partial'; expected 'full' or"),
    "type-number": ("s1", setting("type", value=5), "field 'type' is a JSON number"),
    "snapshot_name-missing": ("s1", dropping("snapshot_name"), "field 'snapshot_name' is missing; expected 's1'"),
    "snapshot_name-number": ("s1", setting("snapshot_name", value=5), "field 'snapshot_name' is a JSON number"),
    "snapshot_name-other": ("s1", setting("snapshot_name", value="s0"),
                            "field 'snapshot_name' is 's0'; expected 's1', the name of the directory it was read"),
    "snapshot_name-traversal": ("s1", setting("snapshot_name", value="../../pvc-exports/demo/before-upgrade"),
                                "field 'snapshot_name' is '../../pvc-exports/demo/before-upgrade'; expected 's1'"),
    "parent-missing": ("s1", dropping("incremental_parent"), "field 'incremental_parent' is missing"),
    "parent-traversal": ("s1", setting("incremental_parent", value="../x"),
                         "field 'incremental_parent' is '../x'; expected the name of the export this one continues"),
    "parent-dotdot": ("s1", setting("incremental_parent", value=".."), "field 'incremental_parent' is '..'"),
    "parent-number": ("s1", setting("incremental_parent", value=7), "field 'incremental_parent' is a JSON number"),
    "parent-itself": ("s1", setting("incremental_parent", value="s1"), "field 'incremental_parent' is 's1'"),
    "parent-absent": ("s1", setting("incremental_parent", value="nosuch"), "Cannot read export"),
    "parent-of-full": ("s0", setting("incremental_parent", value="s1"),
                       "field 'incremental_parent' is 's1'; expected null or no field in a full export"),
    "parent-loop": ("s0", lambda document: {**document, "type": "incremental", "incremental_parent": "s1"},
                    "field 'incremental_parent' is 's1', an export this chain holds already"),
    "vm_detail-missing": ("s1", dropping("vm_detail"), "field 'vm_detail' is missing"),
    "vm_detail-string": ("s1", setting("vm_detail", value="x"), "field 'vm_detail' is 'x'; expected a JSON object"),
    "vm_detail-empty": ("s1", setting("vm_detail", value={}), "field 'vm_detail.xml' is missing"),
    "xml-number": ("s1", setting("vm_detail", "xml", value=5), "field 'vm_detail.xml' is a JSON number"),
    "xml-malformed": ("s1", setting("vm_detail", "xml", value="<domain"), NOT_A_DOMAIN),
    "xml-surrogate": ("s1", setting("vm_detail", "xml", value="<domain>\ud800</domain>"), NOT_A_DOMAIN),
    "xml-no-domain": ("s1", setting("vm_detail", "xml", value="<network/>"), NOT_A_DOMAIN),
    "xml-no-name": ("s1", setting("vm_detail", "xml", value=f"<domain><uuid>{UUID}</uuid></domain>"),
                    "field 'vm_detail.xml' is the XML of a domain named null"),
    "xml-other-name": ("s1", setting("vm_detail", "xml", value=xml_of("demo")),
                       "field 'vm_detail.xml' is the XML of a domain named 'demo'"),
    "xml-no-uuid": ("s1", setting("vm_detail", "xml", value=f"<domain><name>{VM}</name></domain>"),
                    "field 'vm_detail.xml' is the XML of a domain named 'evilvm' with UUID null"),
    "xml-not-libvirt": ("s1", setting("vm_detail", "xml", value=xml_of().replace("<memory unit='MiB'>2048</memory>",
                                                                                   "<memory unit='MiB'>x</memory>")),
                        "field 'vm_detail.xml' is not a domain libvirt accepts"),
    "xml-other-uuid-in-chain": ("s0", setting("vm_detail", "xml", value=xml_of(uuid=OTHER_UUID)),
                                "field 'vm_detail.xml' is of a domain with another UUID"),
    "xml-other-disks": ("s1", setting("vm_detail", "xml", value=vm_xml(VM, UUID, (SRCVOLS[0],))),
                        "field 'export_files' holds the disk(s)"),
    "timestamp-object": ("s1", setting("vm_detail", "timestamp", value={}), "field 'vm_detail.timestamp' is a JSON"),
    "timestamp-text": ("s1", setting("vm_detail", "timestamp", value="soon"), "field 'vm_detail.timestamp' is 'soon'"),
    "size-text": ("s1", setting("export_size_bytes", value="12"), "field 'export_size_bytes' is '12'"),
    "size-negative": ("s1", setting("export_size_bytes", value=-1), "field 'export_size_bytes' is a JSON number"),
    "files-missing": ("s1", dropping("export_files"), "field 'export_files' is missing"),
    "files-object": ("s1", setting("export_files", value={}), "field 'export_files' is a JSON object"),
    "files-empty": ("s1", setting("export_files", value=[]),
                    f"field 'export_files' holds the disk(s) none; expected each rbd disk of vm_detail.xml once "
                    f"({', '.join(SRCVOLS)})"),
    "files-string-entry": ("s1", setting("export_files", value=["x"]), "field 'export_files[0]' is 'x'"),
    "files-twice": ("s1", lambda document: {**document, "export_files": [document["export_files"][0]] * 2},
                    "field 'export_files[1]' is a JSON object; expected each disk and each file once"),
    "srcvol-missing": ("s1", setting("export_files", value=[{"file": "images/a"}]),
                       "field 'export_files[0].srcvol' is missing"),
    "srcvol-number": ("s1", srcvol_entry(5), "field 'export_files[0].srcvol' is a JSON number"),
    "srcvol-no-pool": ("s1", srcvol_entry(DISKS[0]), f"field 'export_files[0].srcvol' is '{DISKS[0]}'"),
    "srcvol-three-parts": ("s1", srcvol_entry(f"{POOL}/a/b"), "field 'export_files[0].srcvol' is "),
    "srcvol-dotdot": ("s1", srcvol_entry("../x"), "field 'export_files[0].srcvol' is '../x'"),
    "srcvol-not-a-disk": ("s1", srcvol_entry(f"{POOL}/victim"), "field 'export_files' holds the disk(s) "),
    "file-missing": ("s1", dropping("export_files", 0, "file"), "field 'export_files[0].file' is missing"),
    "file-number": ("s1", file_entry(5), "field 'export_files[0].file' is a JSON number"),
    "file-traversal": ("s1", file_entry("images/../x"), "field 'export_files[0].file' is 'images/../x'"),
    "file-deep-traversal": ("s1", file_entry("images/../../s0/images/x"), "field 'export_files[0].file' is "),
    "file-absolute": ("s1", file_entry("/etc/passwd"), "field 'export_files[0].file' is '/etc/passwd'"),
    "file-subdirectory": ("s1", file_entry("images/a/b"), "field 'export_files[0].file' is 'images/a/b'"),
    "file-dotdot": ("s1", file_entry("images/.."), "field 'export_files[0].file' is 'images/..'"),
    "file-directory": ("s1", file_entry("images/"), "field 'export_files[0].file' is 'images/'"),
    "file-nul": ("s1", file_entry("images/a\x00b"), "field 'export_files[0].file' is 'images/a\\x00b'"),
    "file-elsewhere": ("s1", file_entry("other/x"), "field 'export_files[0].file' is 'other/x'"),
    "file-of-parent-malformed": ("s0", file_entry("images/../../s1/images/x"), "field 'export_files[0].file'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_export_document_is_a_400_naming_the_field_and_nothing_is_made(pair, storage, exports, case):
    first, _ = pair
    zk, ioctx = storage
    name, change, expected = CASES[case]
    if case == "parent-absent":
        path = exports / VM / "nosuch" / "snapshot.json"
        tamper(exports, name, change)
    else:
        path = tamper(exports, name, change)
    before = made_by_an_import(zk, ioctx)
    refused = first.post(f"/vm/{VM}/snapshot/import", params={"snapshot_name": "s1", "import_path": str(exports)})
    assert refused.status_code == 400, refused.text
    message = refused.json()["message"]
    assert f"'{path}'" in message and expected in message, message
    assert made_by_an_import(zk, ioctx) == before
    assert not images(ioctx) and first.get(f"/vm/{VM}").status_code == 404


def test_the_untampered_exports_import(pair, storage, exports):
    """The documents the cases above tamper with are valid: the import of the copy as it is succeeds."""
    first, _ = pair
    zk, ioctx = storage
    imported = first.post(f"/vm/{VM}/snapshot/import", params={"snapshot_name": "s1", "import_path": str(exports)})
    assert imported.status_code == 200, imported.text
    assert images(ioctx) == list(DISKS)
    assert sorted(zk.get_children(f"/ceph/snapshots/{POOL}/{DISKS[0]}")) == ["s0", "s1"]


def test_a_document_naming_another_export_reads_no_file_outside_its_directory(pair, storage, tmp_path):
    """The new user's trial: a valid export of VM demo in <tmp>/pvc-exports, and in <tmp>/evil/evilvm/s1 its
    snapshot.json made VM evilvm's, whose names (snapshot_name, a file, an images directory linked to demo's)
    point at demo's files. Each is a 400 naming the field; no volume, RBD snapshot or key is made (the volume
    evilvm_sda was left behind, with an RBD snapshot named '../../pvc-exports/demo/before-upgrade'). The same
    document with the file copied into its own directory imports: the refusals are of the names alone."""
    first, second = pair
    zk, ioctx = storage
    define_with_volumes(first, "demo", OTHER_UUID, ("demo_sda",))
    assert first.post("/vm/demo/snapshot", params={"snapshot_name": "before-upgrade"}).status_code == 200
    outside = tmp_path / "pvc-exports"
    outside.mkdir()
    exported = second.post("/vm/demo/snapshot/export", params={"snapshot_name": "before-upgrade",
                                                               "export_path": str(outside)})
    assert exported.status_code == 200, exported.text
    demo = outside / "demo" / "before-upgrade"
    document = json.loads((demo / "snapshot.json").read_text())
    image = f"images/{POOL}.demo_sda.rbdimg"
    assert document["export_files"] == [{"srcvol": f"{POOL}/demo_sda", "file": image}]
    evil = tmp_path / "evil" / VM / "s1"
    evil.mkdir(parents=True)
    document["vm_detail"]["xml"] = vm_xml(VM, UUID, (f"{POOL}/{VM}_sda",))
    document["export_files"] = [{"srcvol": f"{POOL}/{VM}_sda", "file": image}]
    path = evil / "snapshot.json"
    before = made_by_an_import(zk, ioctx)
    assert images(ioctx) == ["demo_sda"]

    def refused(expected: str) -> None:
        answer = first.post(f"/vm/{VM}/snapshot/import", params={"snapshot_name": "s1",
                                                                 "import_path": str(tmp_path / "evil")})
        assert answer.status_code == 400, answer.text
        assert f"'{path}'" in answer.json()["message"] and expected in answer.json()["message"], answer.text
        assert made_by_an_import(zk, ioctx) == before

    path.write_text(json.dumps({**document, "snapshot_name": "../../pvc-exports/demo/before-upgrade"}))
    refused("field 'snapshot_name' is '../../pvc-exports/demo/before-upgrade'; expected 's1'")
    traversal = f"images/../../../../pvc-exports/demo/before-upgrade/{image}"
    path.write_text(json.dumps({**document, "snapshot_name": "s1",
                                "export_files": [{"srcvol": f"{POOL}/{VM}_sda", "file": traversal}]}))
    refused(f"field 'export_files[0].file' is '{traversal}'")
    # the file named as an export writes it, but its images directory is a link to demo's
    path.write_text(json.dumps({**document, "snapshot_name": "s1"}))
    (evil / "images").symlink_to(demo / "images")
    refused(f"field 'export_files[0].file' is '{image}', which resolves outside the export's directory '{evil}'")
    # demo's own UUID: the definition would be refused, so the import is before anything is made
    (evil / "images").unlink()
    (evil / "images").mkdir()
    shutil.copy(demo / image, evil / image)
    path.write_text(json.dumps({**document, "snapshot_name": "s1",
                                "vm_detail": {**document["vm_detail"],
                                              "xml": vm_xml(VM, OTHER_UUID, (f"{POOL}/{VM}_sda",))}}))
    refused(f"field 'vm_detail.xml' has the UUID '{OTHER_UUID}' of VM 'demo' of the cluster")

    path.write_text(json.dumps({**document, "snapshot_name": "s1"}))
    imported = first.post(f"/vm/{VM}/snapshot/import", params={"snapshot_name": "s1",
                                                               "import_path": str(tmp_path / "evil")})
    assert imported.status_code == 200, imported.text
    assert images(ioctx) == ["demo_sda", f"{VM}_sda"]
    assert zk.get_children(f"/ceph/snapshots/{POOL}/{VM}_sda") == ["s1"]


def test_a_failure_after_volumes_were_made_removes_them(pair, storage, exports, ceph_cluster):
    """A file's contents are not checked before the import: a diff whose end snapshot has a name no ZooKeeper
    key takes ('x/y', which librbd makes) fails the second disk's import after its volume was made, and
    after the first disk was imported whole. Both volumes go, with their RBD snapshots and keys (the volume
    whose keys could not be recorded was left behind, in Ceph and under /ceph/volumes)."""
    import rbd
    first, _ = pair
    zk, ioctx = storage
    diff = exports / VM / "s1" / "images" / f"{POOL}.{DISKS[1]}.rbddiff"
    diff.unlink()
    rbd.RBD().create(ioctx, "crafted", 8 << 20)
    try:
        with rbd.Image(ioctx, "crafted") as image:
            image.create_snap("s0")
            image.write(b"\x99" * SIZE, 0)
            image.create_snap("x/y")
        rbd_cli(ceph_cluster, "export-diff", "--from-snap", "s0", "--pool", POOL, "--image", "crafted", "--snap",
                "x/y", str(diff))
    finally:
        rbd_cli(ceph_cluster, "snap", "purge", f"{POOL}/crafted")
        rbd.RBD().remove(ioctx, "crafted")
    tamper(exports, "s1", lambda document: {**document, "export_size_bytes": sum(
        (exports / VM / "s1" / item["file"]).stat().st_size for item in document["export_files"])})
    before = made_by_an_import(zk, ioctx)
    failed = first.post(f"/vm/{VM}/snapshot/import", params={"snapshot_name": "s1", "import_path": str(exports)})
    assert failed.status_code == 400, failed.text
    assert made_by_an_import(zk, ioctx) == before
    assert not images(ioctx) and first.get(f"/vm/{VM}").status_code == 404
    assert failed.json()["message"].startswith(
        f"ERROR: Failed to record imported RBD volume '{DISKS[1]}' in pool '{POOL}' as Ceph holds it (Snapshot name "
        "'x/y': expected "), failed.text

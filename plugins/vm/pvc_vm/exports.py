"""Exporting a VM's snapshot to files on the API host (PVC 1.x's ``POST /vm/<vm>/snapshot/export``).

PVC 1.x's layout: ``<export_path>/<vm name>/<snapshot name>/`` holds ``snapshot.json`` (what was
exported, with the VM's details and its XML as snapshotted) and ``images/<pool>.<volume>.rbdimg`` (``rbd
export``: the raw image as of the snapshot; PVC 1.x's ``--export-format 2`` also carries later snapshots and
the current data, see the ceph service) or, for an export with ``incremental_parent``, ``.rbddiff`` (``rbd export-diff
--from-snap <parent>``: what changed since that earlier snapshot of the VM, which must have been exported
before). The files are written by the ceph service; when any disk fails, the snapshot's directory (and
the VM's, if this export made it) is removed, so a failed export leaves no partial copy that a later
import would take for whole.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvc_core.errors import BadRequest, Conflict, NotFound

from . import domainxml, rename, snapshots, tasks

log = logging.getLogger("pvc.vm")
_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.+-]+")  # a pool's, a volume's or a file's name


def _directory(what: str, path: str) -> Path:
    """``path`` as the existing directory on the API host that an export or import needs; 400 saying what it is
    instead (relative, missing, or something other than a directory)."""
    root = Path(path)
    if not root.is_absolute():
        problem = "is not an absolute path"
    elif not root.exists():
        problem = "does not exist on the API host"
    elif not root.is_dir():
        problem = "is not a directory on the API host"
    else:
        return root
    raise BadRequest(f"ERROR: {what} '{path}' {problem}; expected the absolute path of a directory")


def export(service: Any, ident: str, name: str, export_path: str, incremental_parent: str | None,
           on_task: Callable[[str | None], None] | None = None) -> str:
    """As a task (``tasks.SNAPSHOT_EXPORT``; ``on_task`` gets its id), one disk after the other."""
    zk = service.zk
    uuid, entry = service.require(ident)
    vm_name = entry.get("") or ident
    fields, snaps = snapshots.stored(zk, uuid, ident, name)
    parent: dict[tuple[str, str], str] = {}
    if incremental_parent:
        if incremental_parent == name:
            raise BadRequest("Parameter 'incremental_parent': expected an earlier snapshot than 'snapshot_name'")
        try:
            parent_fields, parent_snaps = snapshots.stored(zk, uuid, ident, incremental_parent)
        except NotFound:
            raise BadRequest(f"Parameter 'incremental_parent': VM '{ident}' has no snapshot "
                             f"'{incremental_parent}'") from None
        if snapshots.taken_after(zk, uuid, (incremental_parent, parent_fields), (name, fields)):
            raise BadRequest(f"Parameter 'incremental_parent': snapshot '{incremental_parent}' was taken after "
                             f"'{name}'; expected an earlier snapshot than 'snapshot_name'")
        parent = {(pool, volume): snap for pool, volume, snap in parent_snaps}
        lacking = [f"{pool}/{volume}" for pool, volume, _ in snaps if (pool, volume) not in parent]
        if lacking:
            raise BadRequest(f"Parameter 'incremental_parent': snapshot '{incremental_parent}' does not hold "
                             f"disk(s) {', '.join(lacking)}; expected a snapshot of every disk of '{name}'")
    root = _directory("Target path", export_path)
    vm_dir = root / vm_name
    target = vm_dir / name
    if target.exists():
        raise BadRequest(f"ERROR: Export target '{target}' already exists; expected a snapshot not exported there")
    storage = service.runtime.service("ceph") if snaps else None
    if storage is not None:
        storage.require_reachable()
    made_vm_dir = not vm_dir.exists()
    kind = f"incremental (from '{incremental_parent}')" if parent else "full"

    def write(handle: Any) -> str:
        try:
            (target / "images").mkdir(parents=True)
        except OSError as exc:
            raise BadRequest(f"ERROR: Cannot create export target '{target}': {exc.strerror}") from None
        try:
            def stop_if_cancelled(done: int) -> None:
                handle.stop_if_cancelled(f"the export of snapshot '{name}' of VM '{ident}' after {done} of "
                                         f"{len(snaps)} disks; the files written were removed")

            files = []
            for index, (pool, volume, snap) in enumerate(snaps):
                stop_if_cancelled(index)
                file = f"images/{pool}.{volume}.{'rbddiff' if parent else 'rbdimg'}"
                storage.export_snapshot(pool, volume, snap, str(target / file), parent.get((pool, volume)))
                files.append({"srcvol": f"{pool}/{volume}", "file": file})
                handle.step(index + 1, len(snaps), f"Exported {index + 1} of {len(snaps)} disks ({pool}/{volume})")
            stop_if_cancelled(len(snaps))  # after the last disk too: snapshot.json below completes the export
            document = {
                "type": "incremental" if parent else "full",
                "snapshot_name": name,
                "incremental_parent": incremental_parent or None,
                "vm_detail": {"name": vm_name, "uuid": uuid, "xml": fields["xml"], "timestamp": fields["timestamp"],
                              "rbd_snapshots": [f"{pool}/{volume}@{snap}" for pool, volume, snap in snaps]},
                "export_files": files,
                "export_size_bytes": sum((target / item["file"]).stat().st_size for item in files),
                "datestring": time.strftime("%Y%m%d%H%M%S"),
            }
            # written last, whole: its presence says the export is complete (a restart keeps it)
            partial = target / "snapshot.json.partial"
            partial.write_text(json.dumps(document, indent=2))
            partial.rename(target / "snapshot.json")
        except BaseException:
            shutil.rmtree(vm_dir if made_vm_dir else target, ignore_errors=True)
            raise
        return f"Successfully exported snapshot '{name}' of VM '{ident}' ({kind}) to '{target}'."
    return service.runtime.task_monitor.run(
        tasks.SNAPSHOT_EXPORT, {"vm": ident, "snapshot": name, "target": str(target),
                                "vm_dir": str(vm_dir) if made_vm_dir else None},
        f"Exporting snapshot '{name}' of VM '{ident}' ({kind}) to '{target}'", write, on_task,
        total=max(len(snaps), 1))


def recover_export(service: Any, args: dict) -> str:
    """After the daemon ended under an export: an export without its ``snapshot.json`` is partial and goes."""
    target = Path(args["target"])
    if (target / "snapshot.json").is_file():
        return f"the export in '{target}' had been completed"
    made = Path(args["vm_dir"]) if args.get("vm_dir") else None
    alone = made is not None and made.is_dir() and all(path == target for path in made.iterdir())
    shutil.rmtree(made if alone else target, ignore_errors=True)
    return f"the partial export in '{target}' was removed"


def _document(root: Path, vm_name: str, name: str) -> dict:
    path = root / vm_name / name / "snapshot.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadRequest(f"ERROR: Cannot read export '{path}': {exc}; expected a snapshot exported to "
                         f"<import_path>/{vm_name}/{name}") from None
    if not isinstance(document, dict) or document.get("type") not in ("full", "incremental") or \
            not isinstance(document.get("vm_detail"), dict) or not isinstance(document.get("export_files"), list):
        raise BadRequest(f"ERROR: Export '{path}' is not a snapshot export (type, vm_detail, export_files)")
    return document


def _as_copy(chain: list[dict], disks: list[str], ident: str, new_name: str) -> tuple[list[str], dict[str, str]]:
    """The chain's XML documents as those of a new VM ``new_name`` beside the original: a new UUID, and
    ``<name>`` and the rbd disks named for ``ident`` renamed as a rename would (``rename.plan``), so that a
    rollback of the copy's snapshots keeps it the copy; and each disk's new ``pool/volume``. A disk not named
    for the VM would be imported under the original's volume name: 400 before anything is made."""
    uuid = str(uuidlib.uuid4())
    xmls, moves = [], []
    for document in chain:
        domain = domainxml.parse(str(document["vm_detail"].get("xml") or ""))
        if not domain.name or not domain.uuid:
            raise BadRequest(f"ERROR: The XML of export '{document['snapshot_name']}' of VM '{ident}' has no "
                             "<name> or <uuid>; expected a libvirt domain's XML")
        moves = rename.plan(domain, ident, new_name)
        domain.root.find("uuid").text = uuid
        xmls.append(domain.pretty())
    renamed = {f"{pool}/{volume}": f"{pool}/{target}" for pool, volume, target in moves}
    kept = [disk for disk in disks if disk not in renamed]
    if kept:
        raise BadRequest(f"ERROR: Disk volume(s) {', '.join(kept)} of exported VM '{ident}' are not named for it, so "
                         f"VM '{new_name}' would take the original's volume names; expected every rbd disk's volume "
                         f"name to contain '{ident}' (replaced by '{new_name}'), or an import without new_name")
    unfit = [target for target in renamed.values() if not _NAME.fullmatch(target.split("/")[1])]
    if unfit:
        raise BadRequest(f"Parameter 'new_name': volume name(s) {', '.join(unfit)} of VM '{new_name}' are not RBD "
                         "volume names; expected a name that leaves them of letters, digits, '_', '.', '+', '-'")
    return xmls, {disk: renamed[disk] for disk in disks}


def import_(service: Any, ident: str, name: str, import_path: str, retain_snapshot: bool,
            new_name: str | None = None, on_task: Callable[[str | None], None] | None = None) -> str:
    """Recreate an exported VM: its volumes from the chain of exports (the full one, then each incremental
    one up to ``name``), then the VM from the snapshot's XML; with ``retain_snapshot`` the snapshots of the
    chain stay, as VM snapshots. With ``new_name`` the VM is made as a copy (``_as_copy``), also while the
    original exists. Anything made is removed again when a step fails. As a task (``tasks.SNAPSHOT_IMPORT``;
    ``on_task`` gets its id), one disk after the other."""
    root = _directory("Import path", import_path)
    if new_name == ident:
        raise BadRequest(f"Parameter 'new_name': '{new_name}' is the exported VM's own name; expected another "
                         f"name, or no new_name to import VM '{ident}' as it was exported")
    if new_name is not None:
        rename.refuse_taken(service, new_name)
    elif service.find(ident) is not None:
        raise BadRequest(f"ERROR: VM '{ident}' already exists in the cluster; expected an exported VM's name "
                         "that no VM has")
    chain = [_document(root, ident, name)]
    while chain[0]["type"] == "incremental":
        parent = str(chain[0].get("incremental_parent") or "")
        if not parent or len(chain) > 1000 or any(doc["snapshot_name"] == parent for doc in chain):
            raise BadRequest(f"ERROR: Export '{chain[0]['snapshot_name']}' of VM '{ident}' names no usable parent")
        chain.insert(0, _document(root, ident, parent))
    disks = [item["srcvol"] for item in chain[-1]["export_files"]]
    for document in chain:
        for item in document["export_files"]:
            parts = str(item.get("file") or "").split("/") if isinstance(item, dict) else []
            volume = str(item.get("srcvol") or "").split("/") if isinstance(item, dict) else []
            if len(parts) != 2 or parts[0] != "images" or not _NAME.fullmatch(parts[1]) or len(volume) != 2 or \
                    not all(_NAME.fullmatch(part) for part in volume):
                raise BadRequest(f"ERROR: Export '{document['snapshot_name']}' of VM '{ident}' lists a file or "
                                 f"volume that is not of an export: {item!r}; expected images/<file> of pool/volume")
        if [item["srcvol"] for item in document["export_files"]] != disks:
            raise BadRequest(f"ERROR: Export '{document['snapshot_name']}' of VM '{ident}' holds other disks than "
                             f"'{name}'; expected one chain of exports of the same disks")
    for document in chain:
        for item in document["export_files"]:
            path = root / ident / document["snapshot_name"] / item["file"]
            if path.is_symlink() or not path.is_file():
                problem = (f"'{item['file']}' is not a regular file" if path.exists() or path.is_symlink()
                           else f"lacks its file '{item['file']}'")
                raise BadRequest(f"ERROR: Export '{document['snapshot_name']}' of VM '{ident}' {problem}; expected "
                                 "the files as the export wrote them")
        recorded = document.get("export_size_bytes")
        held = sum((root / ident / document["snapshot_name"] / item["file"]).stat().st_size
                   for item in document["export_files"])
        if isinstance(recorded, int) and not isinstance(recorded, bool) and held != recorded:
            raise BadRequest(f"ERROR: Export '{document['snapshot_name']}' of VM '{ident}' is damaged: its files "
                             f"hold {held} bytes, its snapshot.json says {recorded} (export_size_bytes); expected "
                             "the files as the export wrote them")
    vm, xmls, targets = ident, [doc["vm_detail"]["xml"] for doc in chain], {disk: disk for disk in disks}
    if new_name is not None:
        vm, (xmls, targets) = new_name, _as_copy(chain, disks, ident, new_name)
    if not service.can_place():
        raise BadRequest(f"ERROR: Could not find a valid target node for VM '{vm}': no node is in daemon state "
                         "'run' and domain state 'ready' with free memory; expected one to define the imported VM "
                         "on (nothing was imported)")
    storage = service.runtime.service("ceph") if disks else None
    if storage is not None:
        storage.require_reachable()
        for disk in targets.values():  # met by the import instead, its undo would remove that volume
            pool, volume = disk.split("/", 1)
            if storage.volume_exists(pool, volume):
                raise Conflict(f"ERROR: Volume '{volume}' already exists in pool '{pool}'; expected no volume of "
                               f"that name for the imported VM '{vm}' (nothing was imported)")

    def recreate(handle: Any) -> str:
        made: list[tuple[str, str]] = []
        defined = False
        try:
            for index, srcvol in enumerate(disks):
                handle.stop_if_cancelled(f"the import of VM '{ident}' from snapshot '{name}' after {index} of "
                                         f"{len(disks)} disks; the volumes imported were removed")
                pool, volume = targets[srcvol].split("/", 1)
                files = [root / ident / document["snapshot_name"] / document["export_files"][index]["file"]
                         for document in chain]
                storage.import_volume(pool, volume, str(files[0]), chain[0]["snapshot_name"],
                                      [str(f) for f in files[1:]])  # a volume it fails on is not left
                made.append((pool, volume))
                handle.step(index + 1, len(disks), f"Imported {index + 1} of {len(disks)} disks ({pool}/{volume})")
            handle.stop_if_cancelled(f"the import of VM '{ident}' from snapshot '{name}' before its definition; "
                                     "the volumes imported were removed")
            service.define(xmls[-1], None, None, None, False)
            defined = True
            uuid = service.require(vm)[0]
            for document, xml in zip(chain, xmls, strict=True):
                snap = document["snapshot_name"]
                if retain_snapshot:
                    snapshots.commit(service.zk, uuid, vm, snap, {
                        "timestamp": str(document["vm_detail"].get("timestamp") or int(time.time())),
                        "xml": xml,
                        "rbdsnaplist": ",".join(f"{disk}@{snap}" for disk in targets.values())})
                else:
                    for pool, volume in made:
                        storage.remove_snapshot(pool, volume, snap)
        except BaseException:
            _discard(service, vm if defined else None, storage, made)
            raise
        copy = f" as '{vm}' (UUID '{uuid}')" if new_name is not None else ""
        return f"Successfully imported VM '{ident}'{copy} from snapshot '{name}' in '{import_path}'."
    copy = f" as '{vm}'" if new_name is not None else ""
    return service.runtime.task_monitor.run(
        tasks.SNAPSHOT_IMPORT, {"vm": vm, "snapshot": name, "import_path": import_path,
                                "volumes": list(targets.values())},
        f"Importing VM '{ident}'{copy} from snapshot '{name}' in '{import_path}'", recreate, on_task,
        total=max(len(disks), 1))


def _discard(service: Any, vm: str | None, storage: Any, volumes: list[tuple[str, str]]) -> None:
    """Remove what an import made: the VM's keys (when it was defined) and the volumes, last first."""
    if vm is not None:
        found = service.find(vm)
        if found is not None:
            service.zk.delete([f"/domains/{found[0]}"])
    for pool, volume in reversed(volumes):
        try:
            storage.discard_volume(pool, volume)
        except Exception:  # noqa: BLE001 - the first failure is the answer
            log.exception("import of a VM: could not remove volume %s/%s again", pool, volume)


def recover_import(service: Any, args: dict) -> str:
    """After the daemon ended under an import: an import that had not defined its VM yet made only volumes
    (the import refuses volumes that exist), which go; a VM that was defined stays, as imported."""
    if service.find(args["vm"]) is not None:
        return f"VM '{args['vm']}' had been defined; its snapshots may not all be recorded"
    disks = [tuple(disk.split("/", 1)) for disk in args.get("volumes") or []]
    if not disks:
        return "no volume had been imported"
    storage = service.runtime.service("ceph")
    for pool, volume in disks:  # an image the dead daemon made in Ceph without its keys is found too
        storage.reconcile_volume(pool, volume)
    present = [(pool, volume) for pool, volume in disks if storage.volume_exists(pool, volume)]
    storage.remove_locks([f"{pool}/{volume}" for pool, volume in present])  # the dead daemon's librbd's
    _discard(service, None, storage, present)
    return f"the volumes imported were removed ({', '.join(f'{p}/{v}' for p, v in present) or 'none left'})"

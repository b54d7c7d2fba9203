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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc_core.errors import BadRequest, Conflict, NotFound

from . import domainxml, rename, snapshots, tasks
from .additions import SNAPSHOT_HELP, SNAPSHOT_PATTERN, TAG_MAX

log = logging.getLogger("pvc.vm")
_NAME = re.compile(SNAPSHOT_PATTERN)  # a snapshot's, a pool's, a volume's or an export file's name
_DOCUMENT_MAX = 16 << 20  # a snapshot.json holds an XML and a few names: kilobytes, never this


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


@dataclass(frozen=True)
class _Export:
    """One export of the chain as the import uses it: the snapshot's name (its directory's, which its
    ``snapshot_name`` equals), its checked ``snapshot.json``, the path of each of its ``export_files`` and
    the UUID of its XML (parsed once, by ``_document``)."""

    name: str
    path: Path  # its snapshot.json, as messages name it
    document: dict
    files: list[Path]
    uuid: str


def _shown(value: Any) -> str:
    """A value of snapshot.json as a message quotes it: its JSON kind, or a string shortened."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else value[:77] + "...")
    kinds = {bool: "a JSON boolean", int: "a JSON number", float: "a JSON number", dict: "a JSON object",
             list: "a JSON array"}
    return kinds.get(type(value), type(value).__name__)


def _document(root: Path, vm_name: str, name: str) -> _Export:
    """The export in ``<root>/<vm_name>/<name>/``, every field of its ``snapshot.json`` the import uses checked
    before anything is made: whoever could write the file chose them, and each ends up in a path, a volume's
    or snapshot's name or the VM's definition, where an unchecked one was a 500 half-way or read a file of
    another directory (PVC 1.x's files took ``snapshot_name`` into their paths). Paths are built from
    ``vm_name`` and ``name`` (checked by the route) and from files checked to be ``images/<name>``, never
    from the document's names (``import_`` checks, as a second guard, that each file resolves to a path
    inside the export's directory: ``images`` may be a link to elsewhere). A problem is a 400 naming the
    file, the field and what was expected."""
    directory = root / vm_name / name
    path = directory / "snapshot.json"
    try:
        if path.exists() and not path.is_file():  # a FIFO or a device would hold the request, or never end
            raise OSError("not a regular file")
        with path.open("rb") as handle:
            text = handle.read(_DOCUMENT_MAX + 1)
        if len(text) > _DOCUMENT_MAX:
            raise OSError(f"larger than {_DOCUMENT_MAX} bytes")
        document = json.loads(text.decode())
    except (OSError, ValueError, RecursionError) as exc:
        raise BadRequest(f"ERROR: Cannot read export '{path}': {exc}; expected a snapshot exported to "
                         f"<import_path>/{vm_name}/{name}") from None
    if not isinstance(document, dict):
        raise BadRequest(f"ERROR: Export '{path}' is {_shown(document)}; expected a JSON object (a snapshot "
                         "export's snapshot.json)")

    def refuse(field: str, value: Any, expected: str, missing: bool = False) -> BadRequest:
        problem = "is missing" if missing else f"is {_shown(value)}"
        return BadRequest(f"ERROR: Export '{path}': field '{field}' {problem}; expected {expected}")

    def field(container: dict, key: str, label: str, expected: str, fits: Callable[[Any], bool]) -> Any:
        if key not in container:
            raise refuse(label, None, expected, missing=True)
        if not fits(container[key]):
            raise refuse(label, container[key], expected)
        return container[key]

    kind = field(document, "type", "type", "'full' or 'incremental'", lambda v: v in ("full", "incremental"))
    field(document, "snapshot_name", "snapshot_name", f"'{name}', the name of the directory it was read from",
          lambda v: v == name)
    if kind == "incremental":
        field(document, "incremental_parent", "incremental_parent",
              f"the name of the export this one continues ({SNAPSHOT_HELP}), other than '{name}'",
              lambda v: _snapshot_name(v) and v != name)
    elif document.get("incremental_parent") is not None:
        raise refuse("incremental_parent", document["incremental_parent"], "null or no field in a full export")
    detail = field(document, "vm_detail", "vm_detail", "a JSON object with the VM's XML (xml)",
                   lambda v: isinstance(v, dict))
    xml = field(detail, "xml", "vm_detail.xml", "a libvirt domain's XML as a string", lambda v: isinstance(v, str))
    try:
        domain = domainxml.parse(xml)
    except (BadRequest, ValueError) as exc:  # ValueError: a lone surrogate (JSON's "\ud800") is not UTF-8
        raise BadRequest(f"ERROR: Export '{path}': field 'vm_detail.xml' is not a libvirt domain's XML "
                         f"({getattr(exc, 'message', exc)}); expected a libvirt domain's XML") from None
    if domain.name != vm_name or not domain.uuid:
        raise BadRequest(f"ERROR: Export '{path}': field 'vm_detail.xml' is the XML of a domain named "
                         f"{_shown(domain.name)} with UUID {_shown(domain.uuid)}; expected a libvirt domain named "
                         f"'{vm_name}' (the directory it was read from) with a <uuid>")
    if detail.get("timestamp") is not None:
        field(detail, "timestamp", "vm_detail.timestamp", "the snapshot's time in Unix seconds (a number or "
              "a string of digits), or null", lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
              or (isinstance(v, str) and v.isascii() and v.isdigit()))
    if document.get("export_size_bytes") is not None:
        field(document, "export_size_bytes", "export_size_bytes", "the size of the export's files in bytes (an "
              "integer of at least 0), or null", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
    items = field(document, "export_files", "export_files", 'a JSON array of {"srcvol", "file"} objects',
                  lambda v: isinstance(v, list))
    files, volumes = [], []
    for index, item in enumerate(items):
        label = f"export_files[{index}]"
        if not isinstance(item, dict):
            raise refuse(label, item, 'a JSON object {"srcvol": "<pool>/<volume>", "file": "images/<name>"}')
        volume = field(item, "srcvol", f"{label}.srcvol", f"'<pool>/<volume>', each name of {SNAPSHOT_HELP}",
                       lambda v: isinstance(v, str) and v.count("/") == 1 and all(map(_snapshot_name, v.split("/"))))
        file = field(item, "file", f"{label}.file", f"'images/<name>', the name of {SNAPSHOT_HELP}",
                     lambda v: isinstance(v, str) and v.startswith("images/") and _snapshot_name(v[len("images/"):]))
        if volume in volumes or directory / file in files:
            raise refuse(label, item, "each disk and each file once in export_files")
        files.append(directory / file)
        volumes.append(volume)
    disks = list(dict.fromkeys(disk for disk in domain.rbd_volumes() if disk.count("/") == 1))
    if sorted(volumes) != sorted(disks):
        raise BadRequest(f"ERROR: Export '{path}': field 'export_files' holds the disk(s) "
                         f"{', '.join(volumes) or 'none'}; expected each rbd disk of vm_detail.xml once "
                         f"({', '.join(disks) or 'none'})")
    return _Export(name, path, document, files, domain.uuid)


def _snapshot_name(value: Any) -> bool:
    """Whether ``value`` is a name an export may give a snapshot, a pool, a volume or a file: the rule of the
    routes' ``snapshot_name`` (``additions.SNAPSHOT_PATTERN``), which is what librbd and ZooKeeper keys take."""
    return isinstance(value, str) and len(value) <= TAG_MAX and _NAME.fullmatch(value) is not None


def _as_copy(chain: list[_Export], disks: list[str], ident: str, new_name: str) -> tuple[list[str], dict[str, str]]:
    """The chain's XML documents as those of a new VM ``new_name`` beside the original: a new UUID, and
    ``<name>`` and the rbd disks named for ``ident`` renamed as a rename would (``rename.plan``), so that a
    rollback of the copy's snapshots keeps it the copy; and each disk's new ``pool/volume``. A disk not named
    for the VM would be imported under the original's volume name: 400 before anything is made."""
    uuid = str(uuidlib.uuid4())
    xmls, moves = [], []
    for export in chain:  # each XML is a domain with a <name> and a <uuid> (_document)
        domain = domainxml.parse(export.document["vm_detail"]["xml"])
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
    original exists. Whatever the files say is checked before anything is made (``_document``, then the chain
    and the files); anything made is removed again when a later step fails (the files' contents are only met
    by rbd). As a task (``tasks.SNAPSHOT_IMPORT``; ``on_task`` gets its id), one disk after the other."""
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
    while chain[0].document["type"] == "incremental":
        parent = chain[0].document["incremental_parent"]  # a snapshot's name (_document)
        if any(export.name == parent for export in chain) or len(chain) >= 1000:
            raise BadRequest(f"ERROR: Export '{chain[0].path}': field 'incremental_parent' is '{parent}', an export "
                             f"this chain holds already (or the chain is longer than 1000); expected a chain of "
                             f"exports of VM '{ident}' back to a full one")
        chain.insert(0, _document(root, ident, parent))
    disks = [item["srcvol"] for item in chain[-1].document["export_files"]]
    exported_uuid = chain[-1].uuid
    for export in chain:
        if [item["srcvol"] for item in export.document["export_files"]] != disks:
            raise BadRequest(f"ERROR: Export '{export.name}' of VM '{ident}' holds other disks than "
                             f"'{name}'; expected one chain of exports of the same disks")
        if export.uuid != exported_uuid:
            raise BadRequest(f"ERROR: Export '{export.path}': field 'vm_detail.xml' is of a domain with another UUID "
                             f"than export '{name}''s ('{exported_uuid}'); expected one chain of exports of the same "
                             "VM")
    for export in chain:
        for index, (item, path) in enumerate(zip(export.document["export_files"], export.files, strict=True)):
            if path.is_symlink() or not path.is_file():
                problem = (f"'{item['file']}' is not a regular file" if path.exists() or path.is_symlink()
                           else f"lacks its file '{item['file']}'")
                raise BadRequest(f"ERROR: Export '{export.name}' of VM '{ident}' {problem}; expected "
                                 "the files as the export wrote them")
            # a second guard to _document's: the file is inside its export's directory (not so through an
            # images directory that links elsewhere, another export's even)
            try:
                inside = path.resolve().is_relative_to(export.path.parent.resolve())
            except (OSError, RuntimeError):  # a loop of links
                inside = False
            if not inside:
                raise BadRequest(f"ERROR: Export '{export.path}': field 'export_files[{index}].file' is "
                                 f"'{item['file']}', which resolves outside the export's directory "
                                 f"'{export.path.parent}'; expected a file inside it, as the export wrote it")
        recorded = export.document.get("export_size_bytes")  # an integer or null (_document)
        held = sum(path.stat().st_size for path in export.files)
        if recorded is not None and held != recorded:
            raise BadRequest(f"ERROR: Export '{export.name}' of VM '{ident}' is damaged: its files "
                             f"hold {held} bytes, its snapshot.json says {recorded} (export_size_bytes); expected "
                             "the files as the export wrote them")
    vm, xmls, targets = ident, [export.document["vm_detail"]["xml"] for export in chain], {disk: disk for disk in disks}
    if new_name is not None:
        vm, (xmls, targets) = new_name, _as_copy(chain, disks, ident, new_name)
    try:  # what the definition would refuse, refused before any volume is made
        service.validate_xml(xmls[-1])
    except BadRequest as exc:
        raise BadRequest(f"ERROR: Export '{chain[-1].path}': field 'vm_detail.xml' is not a domain libvirt accepts "
                         f"({exc.message}); expected a libvirt domain's XML") from None
    holder = service.find(exported_uuid) if new_name is None else None
    if holder is not None:
        raise BadRequest(f"ERROR: Export '{chain[-1].path}': field 'vm_detail.xml' has the UUID '{exported_uuid}' of "
                         f"VM '{holder[1].get('') or exported_uuid}' of the cluster; expected an exported VM no VM of "
                         "the cluster is, or an import with new_name (a new UUID)")
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
                files = [export.files[index] for export in chain]
                storage.import_volume(pool, volume, str(files[0]), chain[0].name,
                                      [str(f) for f in files[1:]])  # a volume it fails on is not left
                made.append((pool, volume))
                handle.step(index + 1, len(disks), f"Imported {index + 1} of {len(disks)} disks ({pool}/{volume})")
            handle.stop_if_cancelled(f"the import of VM '{ident}' from snapshot '{name}' before its definition; "
                                     "the volumes imported were removed")
            service.define(xmls[-1], None, None, None, False)
            defined = True
            uuid = service.require(vm)[0]
            for export, xml in zip(chain, xmls, strict=True):
                snap = export.name
                if retain_snapshot:
                    snapshots.commit(service.zk, uuid, vm, snap, {
                        "timestamp": str(export.document["vm_detail"].get("timestamp") or int(time.time())),
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

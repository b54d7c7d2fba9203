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
import shutil
import time
from pathlib import Path
from typing import Any

from pvc_core.errors import BadRequest, NotFound

from . import snapshots


def export(service: Any, ident: str, name: str, export_path: str, incremental_parent: str | None) -> str:
    zk = service.zk
    uuid, entry = service.require(ident)
    vm_name = entry.get("") or ident
    fields, snaps = snapshots.stored(zk, uuid, ident, name)
    parent: dict[tuple[str, str], str] = {}
    if incremental_parent:
        if incremental_parent == name:
            raise BadRequest("Parameter 'incremental_parent': expected an earlier snapshot than 'snapshot_name'")
        try:
            _, parent_snaps = snapshots.stored(zk, uuid, ident, incremental_parent)
        except NotFound:
            raise BadRequest(f"Parameter 'incremental_parent': VM '{ident}' has no snapshot "
                             f"'{incremental_parent}'") from None
        parent = {(pool, volume): snap for pool, volume, snap in parent_snaps}
        lacking = [f"{pool}/{volume}" for pool, volume, _ in snaps if (pool, volume) not in parent]
        if lacking:
            raise BadRequest(f"Parameter 'incremental_parent': snapshot '{incremental_parent}' does not hold "
                             f"disk(s) {', '.join(lacking)}; expected a snapshot of every disk of '{name}'")
    root = Path(export_path)
    if not root.is_absolute() or not root.is_dir():
        raise BadRequest(f"ERROR: Target path '{export_path}' does not exist on the API host; expected the "
                         "absolute path of a directory")
    vm_dir = root / vm_name
    target = vm_dir / name
    if target.exists():
        raise BadRequest(f"ERROR: Export target '{target}' already exists; expected a snapshot not exported there")
    storage = service.runtime.service("ceph") if snaps else None
    if storage is not None:
        storage.require_reachable()
    made_vm_dir = not vm_dir.exists()
    try:
        (target / "images").mkdir(parents=True)
    except OSError as exc:
        raise BadRequest(f"ERROR: Cannot create export target '{target}': {exc.strerror}") from None
    try:
        files = []
        for pool, volume, snap in snaps:
            file = f"images/{pool}.{volume}.{'rbddiff' if parent else 'rbdimg'}"
            storage.export_snapshot(pool, volume, snap, str(target / file), parent.get((pool, volume)))
            files.append({"srcvol": f"{pool}/{volume}", "file": file})
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
        (target / "snapshot.json").write_text(json.dumps(document, indent=2))
    except BaseException:
        shutil.rmtree(vm_dir if made_vm_dir else target, ignore_errors=True)
        raise
    kind = f"incremental (from '{incremental_parent}')" if parent else "full"
    return f"Successfully exported snapshot '{name}' of VM '{ident}' ({kind}) to '{target}'."

"""Renaming a stopped VM together with the RBD volumes named for it (PVC 1.x's ``POST /vm/<vm>/rename``).

PVC 1.x replaced the old name everywhere in the XML text and renamed the
volumes, then undefined and defined the VM again; a failure half-way left
some volumes renamed and the VM under its old name. Here only ``<name>`` and
the ``rbd`` sources whose volume names contain the old name change; the
volumes are renamed one by one through the ceph service (which moves their
keys), and the VM's keys in one transaction guarded by the versions the
checks read (its state, and ``/domains`` as a definition guards it, so no
other VM takes the name meanwhile); the VM's snapshots (their XML and RBD snapshot lists) follow in the
same transaction. When anything fails, the volumes already
renamed are renamed back, so the VM, its XML and its disks keep one name.
"""

from __future__ import annotations

import logging
from typing import Any

from pvc_core.errors import ApiError, BadRequest, Conflict
from pvc_core.routes import quoted

from . import domainxml, schema, snapshots

log = logging.getLogger("pvc.vm")
STOPPED = ("stop", "disable")


def plan(domain: domainxml.Domain, old: str, new: str) -> list[tuple[str, str, str]]:
    """Point the XML at the new names; ``(pool, volume, new volume)`` of each rbd disk to rename."""
    moves = []
    for source in domain.root.iterfind("devices/disk/source"):
        if source.get("protocol") != "rbd" or (source.get("name") or "").count("/") != 1:
            continue
        pool, volume = source.get("name").split("/")
        if old in volume:
            target = volume.replace(old, new)
            source.set("name", f"{pool}/{target}")
            moves.append((pool, volume, target))
    domain.root.find("name").text = new
    return moves


def refuse_taken(service: Any, new_name: str) -> None:
    """400 when a VM has the name, or has it as its UUID (``/vm/<name>`` would then reach that VM); the view
    first takes in every VM committed before (one defined a moment ago through another daemon counts)."""
    service.view.sync()
    names = service.view.names()
    if new_name in names.values():
        raise BadRequest(f"A VM named '{new_name}' is already present in the cluster")
    if new_name in names:
        raise BadRequest(f"'{new_name}' is the UUID of VM '{names[new_name]}'; expected a name no VM has as its "
                         "name or UUID")


def rename(service: Any, ident: str, new_name: str) -> str:
    zk = service.zk
    uuid, entry = service.require(ident)
    old_name = entry.get("") or ""
    if new_name == old_name:
        raise BadRequest(f"ERROR: VM '{ident}' is already named '{new_name}'")
    paths = [schema.ROOT, schema.vm(uuid), schema.key(uuid, "state"), schema.key(uuid, "xml")]
    read = zk.get_versioned(paths)
    state = read[schema.key(uuid, "state")][0]
    if state not in STOPPED:
        raise Conflict(f"ERROR: VM '{ident}' is not in stopped state ('{state}'); VMs cannot be renamed "
                       "while running. Stop or disable it first.")
    refuse_taken(service, new_name)
    domain = domainxml.parse(read[schema.key(uuid, "xml")][0] or "")
    moves = plan(domain, old_name, new_name)
    stored = domain.pretty()
    service.validate_xml(stored)
    storage = service.runtime.service("ceph") if moves else None  # 400 naming ceph when it is off
    if storage is not None:
        for pool, volume, target in moves:
            if not storage.volume_exists(pool, volume):
                raise BadRequest(f"ERROR: Disk volume '{pool}/{volume}' of VM '{ident}' is not a volume of the "
                                 "cluster; expected every rbd disk named for the VM to be one")
            if storage.volume_exists(pool, target):
                raise BadRequest(f"ERROR: Volume '{target}' already exists in pool '{pool}'; expected the "
                                 f"renamed disk of VM '{ident}' to take that name")
            storage.refuse_uploading(pool, volume, f"renaming VM '{ident}'")
        storage.require_reachable()
    done: list[tuple[str, str, str]] = []

    def attempt() -> None:
        current = zk.get_versioned(paths)
        if current[schema.key(uuid, "state")][0] not in STOPPED:
            raise Conflict(f"ERROR: VM '{ident}' left the stopped state during its rename; nothing was renamed")
        refuse_taken(service, new_name)
        transaction = zk.transaction()
        transaction.set_data(schema.ROOT, b"", version=current[schema.ROOT][1])
        transaction.set_data(schema.vm(uuid), new_name.encode(), version=current[schema.vm(uuid)][1])
        transaction.check(schema.key(uuid, "state"), current[schema.key(uuid, "state")][1])
        transaction.set_data(schema.key(uuid, "xml"), stored.encode(), version=current[schema.key(uuid, "xml")][1])
        rbdlist = schema.key(uuid, "rbdlist")
        if zk.exists(rbdlist):
            transaction.set_data(rbdlist, ",".join(domain.rbd_volumes()).encode())
        snapshots.follow_rename(zk, uuid, transaction, lambda snapshot: plan(snapshot, old_name, new_name), moves)
        zk.commit(transaction, f"rename of VM {ident}")

    try:
        for move in moves:
            pool, volume, target = move
            storage.rename_volume(pool, volume, target)
            done.append(move)
        with zk.in_turn(service._defining, "VM definitions"):
            zk.optimistic(attempt)
    except ApiError as exc:
        left = _undo(storage, done)
        if left:
            exc.message = f"{exc.message}; the rename was not undone for: {'; '.join(left)}"
        elif done:
            exc.message = f"{exc.message}; the volumes already renamed were renamed back"
        raise
    except Exception:
        _undo(storage, done)
        raise
    return quoted(f'Successfully renamed VM "{old_name}" to "{new_name}".')


def _undo(storage: Any, done: list[tuple[str, str, str]]) -> list[str]:
    """Rename back what was renamed, last first; what could not be, as text for the answer."""
    left = []
    for pool, volume, target in reversed(done):
        try:
            storage.rename_volume(pool, target, volume)
        except ApiError as exc:
            log.error("rename of a VM: could not rename volume %s/%s back to %s: %s", pool, target, volume,
                      exc.message)
            left.append(f"{pool}/{target} (should be {volume}: {exc.message})")
    return left

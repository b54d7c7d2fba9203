"""Whole-VM snapshots (PVC 1.x's ``/vm/<vm>/snapshot``): every rbd disk snapshotted under one name, plus the XML.

PVC 1.x keeps a VM's snapshot under ``/domains/<uuid>/snapshots/<name>`` with
its time, the domain XML and the list of RBD snapshots it made. The RBD
snapshots are made, rolled back and removed through the ceph service (which
keeps their ``/ceph/snapshots`` keys), one disk after the other; the keys are
written in one transaction guarded by the versions the checks read. The VM
answer is served from the watched view, which follows fixed keys per VM, so
the value of ``<vm>/snapshots`` holds the JSON list of the snapshots, written
in the same transaction as their children (as tags.py does).

Failing half-way leaves nothing behind: a snapshot whose second disk fails
removes the first disk's; a rollback first snapshots every disk under a
temporary name and rolls the disks already done back to it when a later one
fails, and those temporary snapshots are removed either way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from pvc_core.errors import ApiError, BadRequest, Conflict, NotFound
from pvc_core.schema import DAEMON_ROOT

from . import domainxml, fsfreeze, schema, tasks, xmldiff

log = logging.getLogger("pvc.vm")
STOPPED = ("stop", "disable")
Disk = tuple[str, str]  # (pool, volume)


def default_name() -> str:
    """PVC 1.x's default snapshot name: the local time as ``YYYYMMDDHHMMSS``."""
    return datetime.now().strftime("%Y%m%d%H%M%S")


def parse(value: str | None, current_xml: str = "") -> list[dict]:
    """The VM answer's ``snapshots`` (PVC 1.x: ``[{name, timestamp, xml_diff_lines, rbd_snapshots}]``, newest
    first); ``xml_diff_lines`` against ``current_xml`` (xmldiff.py), empty for a list written without the
    snapshots' XML."""
    out = [{"name": item["name"], "timestamp": str(item.get("timestamp") or ""),
            "xml_diff_lines": xmldiff.diff_lines(item["xml"], current_xml) if isinstance(item.get("xml"), str)
            else [],
            "rbd_snapshots": [str(snap) for snap in item.get("rbd_snapshots") or []]}
           for item in schema.stored_items(value)]
    return newest_first(out)


def newest_first(items: list[dict]) -> list[dict]:
    """``items`` (each with a ``timestamp``) in the order they were taken, newest first. The stored time is whole
    seconds, so two snapshots of one second are ordered as given: the list kept as ``<vm>/snapshots``'s value,
    which has each new snapshot put first (``commit``), not by name (a later snapshot of that second may sort
    first by name, and an export from it as ``incremental_parent`` would fail in rbd export-diff)."""
    return sorted(items, key=lambda item: _seconds(str(item.get("timestamp") or "")), reverse=True)  # stable


def _seconds(timestamp: str) -> int:
    """A stored snapshot time (Unix seconds as text; written by other tooling, perhaps not)."""
    try:
        return int(timestamp)
    except ValueError:
        return 0


def taken_after(zk: Any, uuid: str, first: tuple[str, dict[str, str]], second: tuple[str, dict[str, str]]) -> bool:
    """Whether snapshot ``first`` was taken after ``second`` (each a name with its stored fields), in the order
    ``newest_first`` lists them: by their times, and within one second by the stored list, which has each new
    snapshot first (one the list lacks, written by other tooling, counts as older than those it holds)."""
    (newer, newer_fields), (older, older_fields) = first, second
    times = _seconds(newer_fields["timestamp"]), _seconds(older_fields["timestamp"])
    if times[0] != times[1]:
        return times[0] > times[1]
    listed = [item["name"] for item in schema.stored_items(zk.get(schema.snapshots(uuid)))]

    def rank(name: str) -> int:
        return listed.index(name) if name in listed else len(listed)
    return rank(newer) < rank(older)


def _listed(value: str | None, snapshots: dict[str, dict[str, str]], new: str | None = None) -> list[dict]:
    """``snapshots`` (name -> fields) as items in the stored list's order (``value``), ``new`` first."""
    listed = [item["name"] for item in schema.stored_items(value) if item["name"] in snapshots]
    names = [*([new] if new in snapshots else []), *(name for name in dict.fromkeys(listed) if name != new),
             *sorted(name for name in snapshots if name not in listed and name != new)]
    return [{"name": name, **snapshots[name]} for name in names]


def _disks(xml: str) -> list[Disk]:
    """The VM's RBD volumes, each once: an XML may list one volume as two disks, and its second snapshot
    would be refused as one that exists already."""
    names = dict.fromkeys(name for name in domainxml.parse(xml).rbd_volumes() if name.count("/") == 1)
    return [tuple(name.split("/", 1)) for name in names]  # type: ignore[misc]


def read(zk: Any, uuid: str) -> dict[str, dict[str, str]]:
    """Every snapshot as its children say (PVC 1.x's truth): name -> {timestamp, xml, rbdsnaplist}."""
    names = zk.children(schema.snapshots(uuid)) or []
    values = zk.get_many(schema.snapshot(uuid, name, field) for name in names for field in schema.SNAPSHOT_FIELDS)
    return {name: {field: values[schema.snapshot(uuid, name, field)] or "" for field in schema.SNAPSHOT_FIELDS}
            for name in names}


def summary(items: list[dict]) -> str:
    """The list kept as ``<vm>/snapshots``'s value, newest first (``newest_first``), with each snapshot's XML: the
    watched view has it then for ``xml_diff_lines``."""
    return json.dumps([{"name": item["name"], "timestamp": item["timestamp"],
                        "rbd_snapshots": [snap for snap in item["rbdsnaplist"].split(",") if snap],
                        "xml": item["xml"]}
                       for item in newest_first(items)])


def commit(zk: Any, uuid: str, ident: str, name: str, values: dict[str, str] | None) -> None:
    """Create (``values``) or delete (None) one snapshot's keys and rewrite the list, in one transaction
    guarded by the VM's key and the list's version."""
    container, root = schema.snapshots(uuid), schema.vm(uuid)

    def attempt() -> None:
        versions = zk.get_versioned([root, container])
        if versions[root][0] is None:
            raise NotFound(f"ERROR: Could not find VM '{ident}' in the cluster!")
        version = versions[container][1]
        current = read(zk, uuid)
        transaction = zk.transaction()
        transaction.check(root, versions[root][1])
        if values is not None:
            if version < 0:
                transaction.create(container, b"")
            transaction.create(schema.snapshot(uuid, name), name.encode())
            for field in schema.SNAPSHOT_FIELDS:
                transaction.create(schema.snapshot(uuid, name, field), values[field].encode())
            current[name] = values
        else:
            for path in sorted(zk.subtree(schema.snapshot(uuid, name)), key=lambda p: (-p.count("/"), p)):
                transaction.delete(path)
            current.pop(name, None)
        items = _listed(versions[container][0], current, name if values is not None else None)
        transaction.set_data(container, summary(items).encode(), version=max(version, 0))
        zk.commit(transaction, f"snapshot change of VM {ident}")

    zk.optimistic(attempt)


def create(service: Any, ident: str, name: str | None) -> str:
    """Snapshot every rbd disk under ``name``, back to back, then record the snapshot with the XML."""
    zk = service.zk
    name = name or default_name()
    uuid, _ = service.require(ident)
    if zk.exists(schema.snapshot(uuid, name)):
        raise BadRequest(f"ERROR: Snapshot '{name}' already exists for VM '{ident}'; expected a new name")
    xml = zk.get(schema.key(uuid, "xml")) or ""
    disks = _disks(xml)
    storage = service.runtime.service("ceph") if disks else None  # 400 naming ceph when it is off
    if storage is not None:
        for pool, volume in disks:
            if not storage.volume_exists(pool, volume):
                raise BadRequest(f"ERROR: Disk volume '{pool}/{volume}' of VM '{ident}' is not a volume of the "
                                 "cluster; expected every rbd disk of the VM to be one")
        storage.require_reachable()
    done: list[Disk] = []
    try:
        with fsfreeze.frozen(service, uuid, bool(disks)) as guest:  # a running VM's disks at one point in time
            for pool, volume in disks:
                with _still_there(storage, ident, pool, volume):
                    storage.add_snapshot(pool, volume, name)
                done.append((pool, volume))
        commit(zk, uuid, ident, name, {
            "timestamp": str(int(time.time())), "xml": xml,
            "rbdsnaplist": ",".join(f"{pool}/{volume}@{name}" for pool, volume in disks)})
    except ApiError as exc:
        exc.message = _joined(exc.message, _undo_create(storage, done, name))
        raise
    except Exception:
        _undo_create(storage, done, name)
        raise
    return f"Successfully created snapshot '{name}' of VM '{ident}'{guest.note}."


def follow_rename(zk: Any, uuid: str, transaction: Any, rename_xml: Any, moves: list[tuple[str, str, str]]) -> None:
    """Add to a VM's rename transaction what its snapshots must say afterwards: each stored XML renamed as the
    VM's (``rename_xml`` edits a parsed domain), each ``rbdsnaplist`` naming the renamed volumes (whose RBD
    snapshots moved with them), and the list; guarded by the list's version. Without it a rollback would
    restore the old name and volumes, and a delete would miss the renamed volumes' snapshots."""
    container = schema.snapshots(uuid)
    value, version = zk.get_versioned([container])[container]
    if version < 0:
        return
    targets = {(pool, volume): target for pool, volume, target in moves}
    current = read(zk, uuid)
    for name, fields in current.items():
        if fields["xml"]:
            domain = domainxml.parse(fields["xml"])
            rename_xml(domain)
            fields["xml"] = domain.pretty()
            transaction.set_data(schema.snapshot(uuid, name, "xml"), fields["xml"].encode())
        fields["rbdsnaplist"] = ",".join(f"{pool}/{targets.get((pool, volume), volume)}@{snap}"
                                         for pool, volume, snap in _rbd_snapshots(fields["rbdsnaplist"]))
        transaction.set_data(schema.snapshot(uuid, name, "rbdsnaplist"), fields["rbdsnaplist"].encode())
    transaction.set_data(container, summary(_listed(value, current)).encode(), version=version)


@contextlib.contextmanager
def _still_there(storage: Any, ident: str, pool: str, volume: str) -> Iterator[None]:
    """A disk that went away meanwhile (the VM renamed, the volume removed by another request): a conflict
    with that change (409), not Ceph's "image not found" about a name the caller never gave."""
    try:
        yield
    except ApiError as exc:
        if exc.status in (400, 404) and not storage.volume_exists(pool, volume):
            raise Conflict(f"ERROR: Disk volume '{pool}/{volume}' of VM '{ident}' went away meanwhile (the VM "
                           "renamed, or the volume removed, by another request); expected the VM's disks to stay "
                           "while its snapshots change") from None
        raise


def _joined(message: str, undo: str) -> str:
    """A failure's message followed by what was undone (``"; ..."``), without the full stop that ends the
    ceph plugin's messages (v0.6's wording) in between."""
    return f"{message.rstrip('.') if undo else message}{undo}"


def _undo_create(storage: Any, done: list[Disk], name: str) -> str:
    """Remove the RBD snapshots already made, last first; what the answer says about it."""
    left = []
    for pool, volume in reversed(done):
        try:
            storage.remove_snapshot(pool, volume, name)
        except ApiError as exc:
            log.error("snapshot of a VM: could not remove RBD snapshot %s/%s@%s again: %s", pool, volume, name,
                      exc.message)
            left.append(f"{pool}/{volume}@{name} ({exc.message})")
    if left:
        return f"; these RBD snapshots could not be removed again: {'; '.join(left)}"
    return "; the RBD snapshots already made were removed" if done else ""


def _rbd_snapshots(rbdsnaplist: str) -> list[tuple[str, str, str]]:
    """``(pool, volume, snapshot)`` of a stored ``rbdsnaplist``."""
    snaps = []
    for item in rbdsnaplist.split(","):
        volume, _, snap = item.partition("@")
        if volume.count("/") == 1 and snap:
            pool, volume = volume.split("/")
            snaps.append((pool, volume, snap))
    return snaps


def rbd_snapshots_of(zk: Any, uuid: str) -> list[tuple[str, str, str]]:
    """Every RBD snapshot the VM's snapshots made: an undefine with ``delete_disks`` removes them first, since
    a volume with snapshots is not removed."""
    return [snap for fields in read(zk, uuid).values() for snap in _rbd_snapshots(fields["rbdsnaplist"])]


def stored(zk: Any, uuid: str, ident: str, name: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """The snapshot's keys and its ``(pool, volume, snapshot)`` list; 404 when the VM has no such snapshot."""
    values = zk.get_many([schema.snapshot(uuid, name), *(schema.snapshot(uuid, name, f)
                                                         for f in schema.SNAPSHOT_FIELDS)])
    if values[schema.snapshot(uuid, name)] is None:
        raise NotFound(f"ERROR: Snapshot '{name}' does not exist for VM '{ident}'")
    fields = {field: values[schema.snapshot(uuid, name, field)] or "" for field in schema.SNAPSHOT_FIELDS}
    return fields, _rbd_snapshots(fields["rbdsnaplist"])


def remove(service: Any, ident: str, name: str) -> str:
    """Remove the RBD snapshots (those already gone are skipped, so a repeated call finishes one that
    failed half-way), then the keys."""
    zk = service.zk
    uuid, _ = service.require(ident)
    _, snaps = stored(zk, uuid, ident, name)
    if snaps:
        storage = service.runtime.service("ceph")
        storage.require_reachable()
        for pool, volume, snap in snaps:
            if storage.snapshot_exists(pool, volume, snap):
                storage.remove_snapshot(pool, volume, snap)
    commit(zk, uuid, ident, name, None)
    return f"Successfully removed snapshot '{name}' of VM '{ident}'."


def rollback(service: Any, ident: str, name: str, on_task: Callable[[str | None], None] | None = None) -> str:
    """Roll every disk back and make the stored XML the VM's again; only for a stopped VM. A task
    (``tasks.SNAPSHOT_ROLLBACK``; ``on_task`` gets its id): one step per disk, and a cancel between them
    puts the disks already rolled back as they were."""
    zk = service.zk
    uuid, _ = service.require(ident)
    fields, snaps = stored(zk, uuid, ident, name)
    state_key, xml_key, rbdlist = schema.key(uuid, "state"), schema.key(uuid, "xml"), schema.key(uuid, "rbdlist")
    state = zk.get(state_key)
    if state not in STOPPED:
        raise Conflict(f"ERROR: VM '{ident}' is not stopped (state '{state}'); expected it in state 'stop' or "
                       "'disable' to roll it back to a snapshot")
    domain = domainxml.parse(fields["xml"])
    if domain.uuid != uuid:
        raise BadRequest(f"ERROR: The XML of snapshot '{name}' is not of VM '{ident}' (UUID '{domain.uuid}')")
    storage = service.runtime.service("ceph") if snaps else None
    if storage is not None:
        for pool, volume, snap in snaps:
            if not storage.snapshot_exists(pool, volume, snap):
                raise Conflict(f"ERROR: RBD snapshot '{pool}/{volume}@{snap}' of snapshot '{name}' of VM '{ident}' "
                               "no longer exists; nothing was rolled back")
        storage.require_reachable()
        for pool, volume, _ in snaps:
            storage.refuse_in_use(pool, volume, f"rolling VM '{ident}' back")
    safety = f"pvc-rollback-{uuidlib.uuid4().hex[:12]}"
    disks = [f"{pool}/{volume}" for pool, volume, _ in snaps]
    marker = schema.rollback_marker(safety)

    def roll_back(handle: Any) -> str:
        guarded: list[tuple[str, str]] = []
        rolled: list[tuple[str, str]] = []
        kept: list[tuple[str, str]] = []  # disks left on their safety snapshot's data: it stays
        if snaps:
            _mark(zk, marker, {"uuid": uuid, "vm": ident, "snapshot": name, "disks": disks})
        try:
            for pool, volume, _ in snaps:
                with _still_there(storage, ident, pool, volume):
                    storage.add_snapshot(pool, volume, safety)
                guarded.append((pool, volume))
            def stop_if_cancelled(done: int) -> None:
                handle.stop_if_cancelled(f"the rollback of VM '{ident}' to snapshot '{name}' after {done} of "
                                         f"{len(snaps)} disks")

            for index, (pool, volume, snap) in enumerate(snaps):
                stop_if_cancelled(index)
                with _still_there(storage, ident, pool, volume):
                    storage.rollback_snapshot(pool, volume, snap)
                rolled.append((pool, volume))
                handle.step(index + 1, len(snaps), f"Rolled back {index + 1} of {len(snaps)} disks "
                                                   f"({pool}/{volume})")

            def attempt() -> None:
                stop_if_cancelled(len(snaps))  # after the last disk too: the transaction below commits it
                current = zk.get_versioned([state_key, xml_key])
                if current[state_key][0] not in STOPPED:
                    raise Conflict(f"ERROR: VM '{ident}' left the stopped state during its rollback")
                transaction = zk.transaction()
                transaction.check(state_key, current[state_key][1])
                transaction.set_data(xml_key, domain.pretty().encode(), version=current[xml_key][1])
                if zk.exists(rbdlist):
                    transaction.set_data(rbdlist, ",".join(domain.rbd_volumes()).encode())
                if snaps:
                    transaction.delete(marker)  # committed: a restart finds no rollback to undo
                zk.commit(transaction, f"rollback of VM {ident}")

            zk.optimistic(attempt)
        except ApiError as exc:
            exc.message = _joined(exc.message, _undo_rollback(storage, rolled, safety, kept))
            _unmark(zk, marker, kept)
            raise
        except Exception:
            _undo_rollback(storage, rolled, safety, kept)
            _unmark(zk, marker, kept)
            raise
        finally:
            _drop(storage, [disk for disk in guarded if disk not in kept], safety)
        return f"Successfully rolled back to snapshot '{name}' of VM '{ident}'."
    return service.runtime.task_monitor.run(
        tasks.SNAPSHOT_ROLLBACK, {"vm": ident, "uuid": uuid, "snapshot": name, "safety": safety, "disks": disks},
        f"Rolling VM '{ident}' back to snapshot '{name}'", roll_back, on_task, total=max(len(snaps), 1))


def _mark(zk: Any, marker: str, record: dict) -> None:
    """Record the rollback in ZooKeeper before any disk changes (``schema.ROLLBACKS``)."""
    parents = [path for path in (DAEMON_ROOT, schema.ROLLBACKS) if not zk.exists(path)]
    zk.create({**{path: "" for path in parents}, marker: json.dumps(record)})


def _unmark(zk: Any, marker: str, kept: list[tuple[str, str]]) -> None:
    """An undone rollback leaves no record, unless a disk could not be put back: a restart tries again."""
    if not kept:
        try:
            zk.delete([marker])
        except ApiError as exc:
            log.error("rollback of a VM: could not remove its record %s: %s", marker, exc.message)


def recover_rollback(service: Any, args: dict) -> str:
    """After the daemon ended under a rollback (its record's recovery). The dead daemon's librbd may have left
    a temporary snapshot made in Ceph but not recorded, and its exclusive locks on the disks: the disks'
    snapshots are recorded as Ceph holds them, and, the VM being stopped, the locks broken. Then, with the
    rollback's ZooKeeper record present (not committed), every disk is put back from its temporary snapshot
    (a disk not rolled yet is put back to what it holds already); absent, either committed (the temporary
    snapshots go) or not begun."""
    zk = service.zk
    safety, marker = args["safety"], schema.rollback_marker(args["safety"])
    disks = [tuple(disk.split("/", 1)) for disk in args.get("disks") or []]
    if not disks:
        return "no disk had been changed"
    storage = service.runtime.service("ceph")
    state = zk.get(schema.key(args["uuid"], "state"))
    stopped = state is None or state in STOPPED
    if stopped:
        storage.remove_locks([f"{pool}/{volume}" for pool, volume in disks])
    for pool, volume in disks:
        storage.reconcile_volume(pool, volume)
    present = [(pool, volume) for pool, volume in disks if storage.snapshot_exists(pool, volume, safety)]
    if not zk.exists(marker):
        _drop(storage, present, safety)
        return ("the rollback had been committed; its temporary snapshots were removed" if present else
                "no disk had been changed")
    if not stopped:
        return (f"the rollback had not been committed, but VM '{args['vm']}' is in state '{state}' now: its disks "
                f"were left as they are, with their snapshots '{safety}' ({marker} records it)")
    kept: list[tuple[str, str]] = []
    left = _undo_rollback(storage, present, safety, kept)
    _drop(storage, [disk for disk in present if disk not in kept], safety)
    _unmark(zk, marker, kept)
    return f"the rollback had not been committed: the disks were put back as they were before it{left}"


def _undo_rollback(storage: Any, rolled: list[tuple[str, str]], safety: str, kept: list[tuple[str, str]]) -> str:
    """Put the disks already rolled back as they were before (from ``safety``); those that fail go to ``kept``."""
    left = []
    for pool, volume in reversed(rolled):
        try:
            storage.rollback_snapshot(pool, volume, safety)
        except ApiError as exc:
            log.error("rollback of a VM: could not restore %s/%s from %s: %s", pool, volume, safety, exc.message)
            left.append(f"{pool}/{volume} ({exc.message})")
            kept.append((pool, volume))
    if left:
        return f"; these disks could not be restored from their snapshot '{safety}' (kept): {'; '.join(left)}"
    return "; the disks already rolled back were restored" if rolled else ""


def _drop(storage: Any, guarded: list[tuple[str, str]], safety: str) -> None:
    for pool, volume in guarded:
        try:
            storage.remove_snapshot(pool, volume, safety)
        except ApiError as exc:
            log.error("rollback of a VM: could not remove snapshot %s/%s@%s: %s", pool, volume, safety, exc.message)

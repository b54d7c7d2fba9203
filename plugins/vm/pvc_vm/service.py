"""What a VM can do: be listed, defined, modified, removed, started and stopped, migrated.

Plain Python over the core's ZooKeeper helpers and watched view. Every
multi-key change is one transaction; state and placement changes are guarded
by the znode versions they were decided on, so concurrent requests on one VM
serialise (the loser re-decides on fresh data, or gets 409).
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from functools import partial
from typing import Any

from pvc_core import etags, matching
from pvc_core.config import parse_bool
from pvc_core.errors import ApiError, BadRequest, NotFound, ServiceUnavailable
from pvc_core.routes import API_PREFIX, Encoded, EncodedArray, collapse_encoded, encode_json

from . import domainxml, exports, placement, schema, snapshots, tags, tasks

VM_NOT_FOUND = "VM not found."
# States in which the VM runs (or is being moved while running): a migration live-migrates it.
RUNNING = ("start", "migrate", "unmigrate", "restart")
# What a change that makes a VM run is called in the refusal of it (``VMService._uploads_absent``).
DOING = {"start": "starting", "restart": "restarting", "migrate": "migrating", "move": "moving",
         "unmigrate": "unmigrating"}


def not_found(ident: str) -> NotFound:
    return NotFound(f"ERROR: Could not find VM '{ident}' in the cluster!")


def _is_uuid(text: str) -> bool:
    try:
        uuidlib.UUID(text)
        return True
    except ValueError:
        return False


def vm_object(uuid: str, entry: dict[str, str | None]) -> dict:
    """The v0.6 VM object (nodes-vms.md §3.1), keys in order."""
    xml = entry.get("xml") or ""
    info = domainxml.info(xml)
    lastnode = entry.get("lastnode") or ""
    node_limit = entry.get("node_limit")
    autostart = entry.get("node_autostart")
    try:
        autostart_value = parse_bool(autostart) if autostart else False
    except ValueError:
        autostart_value = False
    out = {
        "name": info["name"] if info["name"] is not None else entry.get(""),
        "uuid": info["uuid"] if info["uuid"] is not None else uuid,
        "state": entry.get("state") or "",
        "node": entry.get("node") or "",
        "last_node": lastnode,
        "migrated": f"from {lastnode}" if lastnode else "no",
        "failed_reason": entry.get("failedreason") or "",
        "node_limit": node_limit.split(",") if node_limit else None,
        "node_selector": entry.get("node_selector"),
        "node_autostart": autostart_value,
        "tags": tags.parse(entry.get(schema.TAGS)),
        "snapshots": snapshots.parse(entry.get(schema.SNAPSHOTS), xml),
        "description": info["description"],
        "profile": entry.get("profile"),
    }
    for field in ("memory", "vcpu", "vcpu_topology", "networks", "type", "arch", "machine", "console",
                  "emulator", "features", "disks", "controllers", "xml"):
        out[field] = info[field]
    return out


class VMService:
    """VMs of the cluster; also answers the network plugin's ``vms_using_network``."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self._view: Any = None
        self.validator = domainxml.SchemaValidator()
        # Definitions guard the whole /domains version: made at once in one process they would only
        # retry against each other (409 after eight tries), so this process makes them in turn.
        self._defining = threading.Lock()
        self._tagging = threading.Lock()  # one tag change at a time here (``ZooKeeper.in_turn``)

    # -- plumbing --------------------------------------------------------------------------

    @property
    def zk(self) -> Any:
        return self.runtime.zk

    @property
    def config(self) -> Any:
        return self.runtime.config

    @property
    def view(self) -> Any:
        if self._view is None:
            # every answer is built before the view says it is ready; reads during warm-up wait for it
            self._view = self.runtime.view(schema.ROOT, schema.VIEW_KEYS, watch=self.runtime.config["vm.watch"],
                                           index=schema.INDEXED_KEYS, encoder=self._encode,
                                           warmup_wait=self.config["vm.warmup_wait"])
        return self._view

    @property
    def nodes(self) -> Any:
        return self.runtime.service("node")

    def start(self) -> None:
        _ = self.view

    # -- reading ---------------------------------------------------------------------------

    def entries(self) -> dict[str, dict[str, str | None]]:
        return self.view.snapshot()

    def find(self, ident: str) -> tuple[str, dict] | None:
        """nodes-vms.md §1.3: a UUID-shaped identifier is a UUID only; otherwise a name."""
        if _is_uuid(ident):
            entry = self.view.one(ident)
            return (ident, entry) if entry is not None else None
        uuid = self.view.child_with_value(ident)
        if uuid is None:
            return None
        entry = self.view.one(uuid)
        return (uuid, entry) if entry is not None else None

    def require(self, ident: str, error: ApiError | None = None) -> tuple[str, dict]:
        found = self.find(ident)
        if found is None:
            # Perhaps defined through another daemon a moment ago, and the watches have not
            # delivered it yet: a change must find it (as the network plugin's changes find a
            # network). Only a miss costs the round trip.
            self.view.sync()
            found = self.find(ident)
        if found is None:
            raise error or not_found(ident)
        return found

    # -- serialized answers (what the routes send) -----------------------------------------

    @staticmethod
    def _encode(uuid: str, entry: dict[str, str | None]) -> bytes:
        return encode_json(vm_object(uuid, entry))

    def _warm(self) -> None:
        """A list waits for the view to warm rather than start a second full read of the tree."""
        view = self.view
        if self.config["vm.watch"] and not view.ready and self.zk.connected:
            wait = self.config["vm.warmup_wait"]
            if not view.wait_ready(wait):
                raise ServiceUnavailable(f"The view of {schema.ROOT} is still loading after {wait:g} s "
                                         "(pvc.vm.warmup_wait); try again shortly")

    def list(self, limit: str | None, node: str | None, state: str | None, tag: str | None = None,
             negate: bool = False) -> Encoded | EncodedArray:
        """The VM list as the bytes sent: kept per VM (by its keys' revisions), filtered by the view's indexes.

        ``negate`` (PVC 1.x) keeps the VMs that do not match ``node``, ``state`` and ``tag`` instead.
        """
        if node and not self.nodes.exists_now(node):
            raise BadRequest(f'Specified node "{node}" is invalid.')
        self._warm()
        view = self.view
        order = view.ordered()
        if limit:
            pattern = matching.fuzzy(limit)
            order = [(name, u) for name, u in order if pattern.match(u) or pattern.match(name)]
        for key, value in (("node", node), ("state", state)):
            if value:
                members = view.select(key, value)
                order = [(name, u) for name, u in order if (u in members) != negate]
        if tag is not None:
            entries = view.entries(u for _, u in order)
            order = [(name, u) for name, u in order
                     if u in entries and tags.has(entries[u].get(schema.TAGS), tag) != negate]
        parts = view.encoded([u for _, u in order], self._encode) if order else []
        if not parts:
            raise NotFound(VM_NOT_FOUND)
        return collapse_encoded(parts)

    def get(self, ident: str) -> tuple[Encoded, str]:
        """One VM's kept answer and its ETag; by UUID or name (as ``find``) without copying its entry first."""
        uuid = ident if _is_uuid(ident) else self.view.child_with_value(ident)
        found = self.view.answer(uuid, self._encode) if uuid is not None else None
        if found is None:
            raise NotFound(VM_NOT_FOUND)
        data, etag = found
        return Encoded(data), etag

    def guard(self, uuid: str, ident: str, if_match: etags.Precondition | None) -> etags.Guard:
        """The VM's keys as a change reads them, 412 unless ``if_match`` holds (the ETag of GET /vm/<vm>);
        the change commits with ``checks`` so that a write in between makes it retry, and then 412."""
        return etags.guard(self.zk, if_match, schema.answer_keys(uuid), f"VM '{ident}'", f"{API_PREFIX}/vm/{ident}")

    def state_of(self, ident: str) -> dict:
        _, entry = self.require(ident, NotFound(VM_NOT_FOUND))
        return {"name": ident, "state": entry.get("state") or ""}

    def node_of(self, ident: str) -> dict:
        _, entry = self.require(ident, NotFound(VM_NOT_FOUND))
        return {"name": ident, "node": entry.get("node") or "", "last_node": entry.get("lastnode") or ""}

    def meta_of(self, ident: str) -> dict:
        uuid, entry = self.require(ident, NotFound(VM_NOT_FOUND))
        vm = vm_object(uuid, entry)
        return {"name": ident, "node_limit": vm["node_limit"], "node_selector": vm["node_selector"],
                "node_autostart": vm["node_autostart"]}

    def tags_of(self, ident: str) -> dict:
        """PVC 1.x's ``{name, tags}``, from the view like the VM answer."""
        uuid, entry = self.require(ident, NotFound(VM_NOT_FOUND))
        return {"name": ident, "tags": tags.parse(entry.get(schema.TAGS))}

    def rename(self, ident: str, new_name: str) -> str:
        from .rename import rename
        return rename(self, ident, new_name)

    def set_tag(self, ident: str, action: str, tag: str, protected: bool) -> str:
        uuid, _ = self.require(ident, NotFound(VM_NOT_FOUND))
        with self.zk.in_turn(self._tagging, "tag changes"):
            return tags.change(self.zk, uuid, ident, action, tag, protected)

    def snapshot(self, ident: str, name: str | None) -> str:
        return snapshots.create(self, ident, name)

    def remove_snapshot(self, ident: str, name: str) -> str:
        return snapshots.remove(self, ident, name)

    def rollback_snapshot(self, ident: str, name: str, on_task: Callable[[str | None], None] | None = None) -> str:
        return snapshots.rollback(self, ident, name, on_task)

    def export_snapshot(self, ident: str, name: str, export_path: str, incremental_parent: str | None,
                        on_task: Callable[[str | None], None] | None = None) -> str:
        return exports.export(self, ident, name, export_path, incremental_parent, on_task)

    def import_snapshot(self, ident: str, name: str, import_path: str, retain_snapshot: bool,
                        new_name: str | None = None, on_task: Callable[[str | None], None] | None = None) -> str:
        return exports.import_(self, ident, name, import_path, retain_snapshot, new_name, on_task)

    def vms_using_network(self, vni: int) -> list[str]:
        bridge = f"vmbr{vni}"
        return sorted(entry.get("") or uuid for uuid, entry in self.entries().items()
                      if any(source == bridge for _, source in domainxml.interfaces(entry.get("xml") or "")))

    def vms_using_volume(self, volume: str) -> dict[str, str]:
        """Name -> state of every VM with ``pool/volume`` as an rbd disk (the ceph plugin names them when it
        refuses a change of the volume)."""
        return {entry.get("") or uuid: entry.get("state") or "" for uuid, entry in self.entries().items()
                if volume in domainxml.rbd_disks(entry.get("xml") or "")}

    def _uploads_absent(self, xml: str | None, doing: str) -> etags.Guard | None:
        """409 while an upload (the ceph plugin's) writes one of the rbd disks of ``xml``; else the guard that
        makes the transaction of a change that lets the VM run on them fail should an upload take one before it
        commits (``zk.optimistic`` tries again, and is refused here). Every change that makes a VM run (a
        start, a restart, a migration that starts a stopped VM) adds it. None without the ceph plugin (nothing
        is checked) or rbd disks."""
        storage = self.runtime.service("ceph", required=False)
        volumes = domainxml.rbd_disks(xml or "")
        if storage is None or not volumes:
            return None
        return storage.uploads_absent(volumes, doing)

    def can_place(self) -> bool:
        """Whether a VM defined now finds a node by define's default placement (the node view caught up once,
        as define does): an import asks before it copies any volume, not after."""
        if placement.select(self.nodes.objects(), [], "mem") is not None:
            return True
        self.nodes.catch_up()
        return placement.select(self.nodes.objects(), [], "mem") is not None

    def running_vms_using_volume(self, volume: str) -> list[str]:
        """Names of the VMs not stopped (stop, disable, fail) with ``pool/volume`` as an rbd disk (the ceph
        plugin's snapshot rollback and upload refuse then). The view is brought up to date first: an upload
        asks after taking its hold, and must see a start another daemon committed just before."""
        self.view.sync()
        return sorted(name for name, state in self.vms_using_volume(volume).items()
                      if state not in ("stop", "disable", "fail"))

    def with_mac(self, mac: str) -> dict | None:
        """``{"uuid", "name", "profile"}`` of the first VM with an interface of this MAC (any case), or None.

        ``profile`` is None when the VM has none (stored as ``None`` or empty).
        """
        wanted = mac.lower()
        for uuid, entry in self.entries().items():
            if any(address == wanted for address, _ in domainxml.interfaces(entry.get("xml") or "")):
                profile = entry.get("profile")
                return {"uuid": uuid, "name": entry.get("") or "",
                        "profile": profile if profile not in (None, "", "None") else None}
        return None

    def status(self) -> dict:
        """From the view's state index: no VM is visited (an absent state counts as "", not healthy)."""
        counts = self.view.counts("state")
        degraded = any(state not in schema.HEALTHY for state in counts)
        vms = {"total": sum(counts.values())}
        vms.update((state, counts[state]) for state in schema.STATES if counts.get(state))
        return {"fields": {"vms": vms}, "degraded": degraded}

    # -- define, modify, remove ------------------------------------------------------------

    def _parse_checked(self, xml: str) -> domainxml.Domain:
        domain = domainxml.parse(xml)
        for field in ("name", "uuid"):
            if not getattr(domain, field):
                raise BadRequest(f"Error: XML is malformed or incorrect: the domain has no <{field}> element")
        self.validator.validate(domain.pretty())
        return domain

    def define(self, xml: str, node: str | None, limit: str | None, selector: str | None,
               autostart: bool, state: str = "stop", profile: str = "None",
               initial_tags: tags.Tags | None = None, if_match: etags.Precondition | None = None,
               path_vm: str | None = None) -> str:
        """Check the XML against libvirt's schema, place and write the VM in one transaction.

        ``state="provision"`` (the provisioner) makes node daemons leave it alone
        until its disks are ready; ``profile`` links it to its userdata;
        ``initial_tags`` (PVC 1.x's ``user_tags``/``protected_tags``) are written with it.
        ``if_match`` (POST /vm/<vm>, whose path v0.6 ignores): only while the VM
        ``path_vm`` is as read; it then exists, so a definition of that very VM
        is refused as any duplicate.
        """
        guarded = None
        if if_match is not None:
            found = self.find(path_vm or "")
            if found is None:
                self.view.sync()
                found = self.find(path_vm or "")
            if found is None:
                if_match.require(None, f"VM '{path_vm}'", f"{API_PREFIX}/vm/{path_vm}")
            guarded = found[0]
        domain = self._parse_checked(xml)
        name, uuid = domain.name, domain.uuid
        selector = selector or "mem"
        limit_list = [item for item in (limit or "").split(",") if item]
        nodes = self.nodes.objects()
        if (node and node not in nodes) or placement.select(nodes, limit_list, selector) is None:
            self.nodes.catch_up()  # a node registered a moment ago may not be in the view yet
            nodes = self.nodes.objects()
        note = ""
        if node and node in nodes:
            target = node
        else:
            target = placement.select(nodes, limit_list, selector)
            if target is None:
                raise BadRequest(f"ERROR: Could not find a valid target node for VM '{name}'.")
            reason = f"node '{node}' does not exist, so " if node else ""
            note = f" {reason}Node '{target}' was chosen by selector '{selector}'."
        stored = domain.pretty()

        def attempt() -> None:
            guard = self.guard(guarded, path_vm or "", if_match) if guarded else etags.Guard(None)
            _, version = self.zk.get_versioned([schema.ROOT])[schema.ROOT]
            if version < 0:
                raise BadRequest("ERROR: The cluster is not initialized (no /domains key); "
                                 "POST /api/v1/initialize first")
            # Every VM committed before that version was read is in the view after this (a round
            # trip, where reading every VM's keys directly cost one read per key of the cluster).
            self.view.sync()
            names = self.view.names()
            # a name that is another VM's UUID (or the reverse) would make /vm/<that> reach the other VM
            if uuid in names or name in names.values() or name in names or uuid in names.values():
                raise BadRequest(f"ERROR: Specified VM '{name}' or UUID '{uuid}' matches an existing VM on the cluster")
            transaction = self.zk.transaction()
            guard.add_to(transaction)
            keys = schema.new_vm_keys(uuid, name, target, limit or "", selector, autostart,
                                      ",".join(domain.rbd_volumes()), stored, state=state, profile=profile)
            keys.update(tags.new_keys(uuid, initial_tags or {}))
            for path, value in sorted(keys.items()):
                transaction.create(path, value.encode())
            transaction.set_data(schema.ROOT, b"", version=version)
            self.zk.commit(transaction, f"definition of VM {name}")

        with self.zk.in_turn(self._defining, "VM definitions"):
            self.zk.optimistic(attempt)
        return f"Added new VM with Name '{name}' and UUID '{uuid}' to database.{note}"

    def validate_xml(self, xml: str) -> None:
        """400 with libvirt's explanation unless ``xml`` passes the RNG schema."""
        self._parse_checked(xml)

    def discard_provisioning(self, name: str) -> bool:
        """Undefine a VM that never left the ``provision`` state (a failed creation's leftover).

        No node daemon runs such a VM, so its keys go at once, without the
        stop/delete grace of ``remove``; a VM in any other state is kept.
        """
        found = self.find(name)
        if found is None:
            return False
        uuid, _ = found
        if self.zk.get(schema.key(uuid, "state")) != "provision":
            return False
        self.zk.delete([schema.vm(uuid)])
        return True

    def modify(self, ident: str, xml: str, restart: bool, if_match: etags.Precondition | None = None) -> str:
        uuid, entry = self.require(ident)
        domain = self._parse_checked(xml)
        current_name = entry.get("") or ""
        if domain.uuid != uuid:
            raise BadRequest(f"ERROR: The XML's UUID '{domain.uuid}' is not the UUID '{uuid}' of VM '{ident}'")
        if domain.name != current_name:
            raise BadRequest(f"ERROR: The XML's name '{domain.name}' is not the name '{current_name}' of VM "
                             f"'{ident}'; renaming is not supported")
        values = {schema.vm(uuid): current_name, schema.key(uuid, "xml"): domain.pretty(),
                  schema.key(uuid, "rbdlist"): ",".join(domain.rbd_volumes())}
        if restart:
            values[schema.key(uuid, "state")] = "restart"  # a stopped VM starts: its new disks are checked
        uploads = partial(self._uploads_absent, values[schema.key(uuid, "xml")], f"restarting VM '{ident}'") \
            if restart else None
        self._write(uuid, ident, values, if_match, uploads)
        return f"Modified VM '{ident}'." + (" Restarting it." if restart else "")

    def _write(self, uuid: str, ident: str, values: dict[str, str], if_match: etags.Precondition | None,
               also: Callable[[], etags.Guard | None] | None = None) -> None:
        """``zk.write``; with ``if_match``, only while the VM is as read (retried on a write in between,
        which then answers 412); with ``also``, only while the guard it gives holds (read again each try)."""
        if if_match is None and also is None:
            self.zk.write(values)
            return

        def attempt() -> None:
            guard = self.guard(uuid, ident, if_match)
            extra = also() if also is not None else None
            if extra is not None:
                guard.checks += extra.checks
                guard.absent += extra.absent
            self.zk.write(values, guard)
        self.zk.optimistic(attempt)

    def remove(self, ident: str, delete_disks: bool, if_match: etags.Precondition | None = None) -> str:
        uuid, entry = self.require(ident)
        storage = self.runtime.service("ceph") if delete_disks else None  # 400 before anything if absent
        if storage is not None:
            storage.require_reachable()
        disks = [disk.get("name") for disk in domainxml.info(entry.get("xml") or "")["disks"]]
        # the RBD snapshots of the VM's snapshots go with its disks (a volume with snapshots is not removed)
        vm_snapshots = snapshots.rbd_snapshots_of(self.zk, uuid) if storage is not None else []
        grace = self.config["vm.delete_grace"]
        state_key = schema.key(uuid, "state")

        def first() -> str:
            """The first write of the sequence; with ``if_match``, the one made only while the VM is as read
            (once it is made, the VM is being removed and the rest follows)."""
            guard = self.guard(uuid, ident, if_match)
            current = guard.values[state_key] if if_match is not None else self.zk.get(state_key)
            state = "stop" if current != "stop" else "delete"
            self.zk.write({state_key: state}, guard)
            return state

        if (self.zk.optimistic(first) if if_match is not None else first()) == "stop":
            time.sleep(grace)  # the node daemon destroys the domain
            self.zk.write({state_key: "delete"})  # a node running a stray copy destroys it
        time.sleep(grace)
        self.zk.delete([schema.vm(uuid)])
        if storage is None:
            return f"Undefined VM '{ident}' from the cluster."
        failed = []
        for name in disks:
            if name and name.count("/") == 1:
                pool, volume = name.split("/")
                try:
                    for snap_pool, snap_volume, snap in vm_snapshots:
                        if (snap_pool, snap_volume) == (pool, volume) and storage.snapshot_exists(pool, volume, snap):
                            storage.remove_snapshot(pool, volume, snap)
                    storage.remove_volume_if_exists(pool, volume)
                except ApiError as exc:  # the VM is gone already: report, as v0.6 answered 200 anyway
                    failed.append(f"{name} ({exc.message})")
        if failed:
            return f"Removed VM '{ident}' from the cluster; could not remove disk(s): {'; '.join(failed)}"
        return f"Removed VM '{ident}' and disks from the cluster."

    def set_meta(self, ident: str, limit: str | None, selector: str | None, autostart: bool | None,
                 profile: str | None, if_match: etags.Precondition | None = None) -> str:
        if limit is None and selector is None and autostart is None and profile is None:
            # v0.6 answered 200 and wrote nothing; a client that sent a misspelt option deserves to know.
            raise BadRequest("Expected at least one of 'limit', 'selector', 'autostart' (or 'no-autostart') "
                             "and 'profile'; nothing was changed")
        uuid, _ = self.require(ident)
        values: dict[str, str] = {}
        if limit is not None:
            values[schema.key(uuid, "node_limit")] = limit
        if selector is not None:
            values[schema.key(uuid, "node_selector")] = selector
        if autostart is not None:
            values[schema.key(uuid, "node_autostart")] = "True" if autostart else "False"
        if profile is not None:
            values[schema.key(uuid, "profile")] = profile
        if values:
            self._write(uuid, ident, values, if_match)
        return f"Successfully modified PVC metadata of VM '{ident}'."

    # -- state -----------------------------------------------------------------------------

    STATE_RULES = {
        "start": (None, "Starting VM '{vm}'.", None),
        "restart": ("start", "Restarting VM '{vm}'.", "ERROR: VM '{vm}' is not in 'start' state!"),
        "shutdown": ("start", "Shutting down VM '{vm}'.", "ERROR: VM '{vm}' is not in 'start' state!"),
        "stop": (None, "Forcibly stopping VM '{vm}'.", None),
        "disable": ("stop", "Marked VM '{vm}' as disable.", "ERROR: VM '{vm}' must be stopped before disabling!"),
    }

    def set_state(self, ident: str, state: str, wait: bool,
                  on_task: Callable[[str | None], None] | None = None,
                  if_match: etags.Precondition | None = None) -> str:
        """A shutdown or restart is followed by a task record (``pvc_vm.tasks``); ``on_task`` gets its id."""
        uuid, _ = self.require(ident)
        required, done, refused = self.STATE_RULES[state]
        path, xml_key = schema.key(uuid, "state"), schema.key(uuid, "xml")

        def attempt() -> None:
            guard = self.guard(uuid, ident, if_match)
            read = self.zk.get_versioned([path, xml_key] if state in RUNNING else [path])
            current, version = read[path]
            if current is None:
                raise not_found(ident)
            if required is not None and current != required:
                raise BadRequest(refused.format(vm=ident))
            transaction = self.zk.transaction()
            guard.add_to(transaction)
            uploads = self._uploads_absent(read[xml_key][0], f"{DOING[state]} VM '{ident}'") \
                if state in RUNNING else None
            if uploads is not None:  # and its disks as read
                uploads.add_to(transaction)
                transaction.check(xml_key, read[xml_key][1])
            transaction.set_data(path, state.encode(), version=version)
            self.zk.commit(transaction, f"state change of VM {ident}")

        self.zk.optimistic(attempt)
        task_id = None
        if state in tasks.STATES:
            task_id = self.runtime.task_monitor.follow(tasks.STATES[state], {"uuid": uuid, "vm": ident, "state": state},
                                                       done.format(vm=ident))
            if on_task is not None:
                on_task(task_id)
        if wait:
            self._wait_state(ident, uuid, state)
            self.runtime.task_monitor.confirm(task_id)
        return done.format(vm=ident)

    def _wait_state(self, ident: str, uuid: str, state: str) -> None:
        """Wait (bounded) until the node daemon has acted on ``state``."""
        timeout = self.config["vm.wait_timeout"]
        deadline = time.monotonic() + timeout
        while True:
            values = self.zk.get_many([schema.key(uuid, "state"), schema.key(uuid, "node"),
                                       schema.key(uuid, "failedreason")])
            current = values[schema.key(uuid, "state")]
            node = values[schema.key(uuid, "node")] or ""
            if current == "fail":
                raise BadRequest(f"ERROR: VM '{ident}' failed: {values[schema.key(uuid, 'failedreason')]}")
            running = node != "" and self.nodes.exists(node) and uuid in self.nodes.get(node)["running_domains"]
            if state in ("start", "migrate"):
                finished = current == "start" and running
            elif state == "restart":
                finished = current == "start" and running
            elif state in ("shutdown", "stop"):
                finished = current == "stop" and not running
            else:
                finished = True
            if finished:
                return
            if time.monotonic() >= deadline:
                raise ApiError(f"VM '{ident}' has not finished '{state}' after {timeout:g} s "
                               f"(pvc.vm.wait_timeout; state is now '{current}'); the node daemon continues "
                               "in the background", 409)
            time.sleep(0.1)

    # -- placement -------------------------------------------------------------------------

    def change_node(self, ident: str, action: str, node: str | None, force: bool, wait: bool,
                    selector: str | None = None, on_task: Callable[[str | None], None] | None = None,
                    if_match: etags.Precondition | None = None) -> str:
        """``selector`` (seed B) picks the target for this change only; the stored one stays. A migrate or move
        is followed by a task record (``pvc_vm.tasks``); ``on_task`` gets its id."""
        uuid, _ = self.require(ident)
        # the XML: its rbd disks must not be held by an upload when the VM is to run (checked, in the transaction)
        paths = {name: schema.key(uuid, name) for name in ("state", "node", "lastnode", "node_limit",
                                                             "node_selector", "xml")}
        result: dict[str, str] = {}

        def attempt() -> None:
            guard = self.guard(uuid, ident, if_match)
            read = self.zk.get_versioned(paths.values())
            current = {name: read[path][0] for name, path in paths.items()}
            if current["state"] is None:
                raise not_found(ident)
            state, home, lastnode = current["state"], current["node"] or "", current["lastnode"] or ""
            if action == "unmigrate":
                if not lastnode:
                    raise BadRequest(f"ERROR: VM '{ident}' has not been previously migrated.")
                target = lastnode
                writes = {"state": "migrate" if state in RUNNING else state, "node": target, "lastnode": ""}
                message = f"Unmigrating VM '{ident}' back to node '{target}'."
            else:
                if action == "migrate" and lastnode and not force:
                    raise BadRequest(f"ERROR: VM '{ident}' has been previously migrated.")
                target = self._target(ident, node, current, selector)
                if action == "move":
                    writes = {"node": target, "lastnode": ""}
                    if state in RUNNING:
                        writes["state"] = "migrate"
                    message = f"Permanently migrating VM '{ident}' to node '{target}'."
                else:
                    keep = lastnode if (force and lastnode) else home
                    # DECISIONS: migrating a VM that is not running starts it on the target.
                    writes = {"state": "migrate" if state in RUNNING else "start", "node": target,
                              "lastnode": keep}
                    message = f"Migrating VM '{ident}' to node '{target}'."
            transaction = self.zk.transaction()
            guard.add_to(transaction)
            if writes.get("state") in RUNNING:
                doing = (f"{DOING[action]} VM '{ident}' to node '{target}'" if state in RUNNING
                         else f"starting VM '{ident}' on node '{target}'")  # a stopped VM migrated starts there
                uploads = self._uploads_absent(current["xml"], doing)
                if uploads is not None:
                    uploads.add_to(transaction)
            for name, path in paths.items():
                version = read[path][1]
                if name in writes:
                    transaction.set_data(path, writes[name].encode(), version=version)
                elif version >= 0:
                    transaction.check(path, version)
            self.zk.commit(transaction, f"{action} of VM {ident}")
            result["message"], result["state"] = message, writes.get("state", state)
            result.update(source=home, lastnode=lastnode, target=writes["node"])

        self.zk.optimistic(attempt)
        task_id = None
        if action in tasks.PLACEMENT:
            expect = "start" if result["state"] in ("migrate", "start") else result["state"]
            task_id = self.runtime.task_monitor.follow(tasks.PLACEMENT[action], {
                "uuid": uuid, "vm": ident, "source": result["source"], "target": result["target"],
                "lastnode": result["lastnode"], "expect": expect}, result["message"])
            if on_task is not None:
                on_task(task_id)
        if wait and result["state"] in ("migrate", "start"):
            self._wait_state(ident, uuid, "migrate")
            now = self.zk.get(schema.key(uuid, "node"))
            if now != result["target"]:  # a cancel (DELETE /tasks/<id>: put back) or a concurrent change
                raise ApiError(f"VM '{ident}' runs on node '{now}', not '{result['target']}': the {action} was "
                               "cancelled or superseded", 409)
            self.runtime.task_monitor.confirm(task_id)
        return result["message"]

    def _target(self, ident: str, node: str | None, current: dict[str, str | None],
                selector: str | None = None) -> str:
        limit = [item for item in (current["node_limit"] or "").split(",") if item]
        home = current["node"] or ""
        if node:
            if not self.nodes.exists_now(node):
                raise BadRequest(f"ERROR: Specified node '{node}' is invalid.")
            if limit and node not in limit:
                raise BadRequest(f"ERROR: Specified node '{node}' is not in the allowed list of nodes "
                                 f"for VM '{ident}'.")
            if node == home:
                raise BadRequest(f"ERROR: VM '{ident}' is already running on node '{node}'.")
            return node
        selector = selector or current["node_selector"]
        target = placement.select(self.nodes.objects(), limit, "mem" if selector is None else selector, home)
        if target is None:
            self.nodes.catch_up()
            target = placement.select(self.nodes.objects(), limit, "mem" if selector is None else selector, home)
        if target is None:
            raise BadRequest(f"ERROR: Could not find a valid migration target for VM '{ident}'.")
        return target

    # -- console and locks -----------------------------------------------------------------

    def console(self, ident: str, lines: int) -> dict:
        uuid, _ = self.require(ident, NotFound(f'ERROR: Could not find VM "{ident}" in the cluster!'))
        log = self.zk.get(schema.key(uuid, "consolelog")) or ""
        return {"name": ident, "data": "\n".join(log.split("\n")[-lines:])}

    def flush_locks(self, ident: str) -> str:
        uuid, entry = self.require(ident)
        state = entry.get("state")
        if state not in ("stop", "disable"):
            raise BadRequest("VM must be stopped to flush locks")
        if state != "stop":
            raise BadRequest(f"ERROR: VM '{ident}' is not in stopped state; flushing RBD locks on a running VM "
                             "is dangerous.")
        storage = self.runtime.service("ceph")
        storage.require_reachable()
        volumes = [item for item in (self.zk.get(schema.key(uuid, "rbdlist")) or "").split(",") if item]
        storage.remove_locks(volumes)
        return f"Flushed locks on VM '{ident}'"

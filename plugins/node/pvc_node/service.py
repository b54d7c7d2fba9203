"""What a node can do through the API: be listed, change coordinator role, be flushed or readied.

Node keys are written by node daemons; the API writes only ``domainstate``
(flush/unflush) and the core's ``/primary_node``. Lists come from the
runtime's watched view of ``/nodes``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pvc_core import matching
from pvc_core import schema as core_schema
from pvc_core.errors import ApiError, BadRequest, NotFound

from . import schema, tasks

NODE_NOT_FOUND = "Node not found."


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0  # node daemons write numbers; a corrupt key must not break the list


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def node_object(name: str, entry: dict[str, str | None]) -> dict:
    """The v0.6 node object (nodes-vms.md §2.1), keys in order."""
    static = (entry.get("staticdata") or "").split()
    static += [""] * (4 - len(static))
    cpu_count = _int(static[0])
    return {
        "name": name,
        "daemon_state": entry.get("daemonstate") or "",
        "coordinator_state": entry.get("routerstate") or "",
        "domain_state": entry.get("domainstate") or "",
        "cpu_count": cpu_count,
        "kernel": static[1],
        "os": static[2],
        "arch": static[3],
        "load": _float(entry.get("cpuload")),
        "domains_count": _int(entry.get("domainscount")),
        "running_domains": (entry.get("runningdomains") or "").split(),
        "vcpu": {"total": cpu_count, "allocated": _int(entry.get("vcpualloc"))},
        "memory": {"total": _int(entry.get("memtotal")), "allocated": _int(entry.get("memalloc")),
                   "used": _int(entry.get("memused")), "free": _int(entry.get("memfree"))},
    }


class NodeService:
    """Nodes of the cluster; also used by the vm plugin for target selection."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self._view: Any = None

    @property
    def view(self) -> Any:
        """The shared watched view, or (``node.watch`` off) an unstarted one that reads directly."""
        if self._view is None:
            self._view = self.runtime.view(schema.ROOT, schema.KEYS, watch=self.runtime.config["node.watch"])
        return self._view

    def start(self) -> None:
        _ = self.view

    def entries(self) -> dict[str, dict[str, str | None]]:
        return self.view.snapshot()

    def entry(self, name: str) -> dict[str, str | None] | None:
        return self.view.one(name)

    def exists(self, name: str) -> bool:
        return bool(name) and self.entry(name) is not None

    def exists_now(self, name: str) -> bool:
        """``exists``, and when the view says no, once more after catching it up: a node a node daemon
        registered a moment ago is named by the next request (the view follows within a watch's latency)."""
        if self.exists(name):
            return True
        self.view.sync()
        return self.exists(name)

    def catch_up(self) -> None:
        """Catch the view up with every change committed before now (``SubtreeView.sync``)."""
        self.view.sync()

    def list(self, limit: str | None) -> list[dict]:
        entries = self.entries()
        names = sorted(entries)
        if limit:
            pattern = matching.fuzzy(limit)
            names = [name for name in names if pattern.match(name)]
        if not names:
            raise NotFound(NODE_NOT_FOUND)
        return [node_object(name, entries[name]) for name in names]

    def get(self, name: str) -> dict:
        entry = self.entry(name)
        if entry is None:
            raise NotFound(NODE_NOT_FOUND)
        return node_object(name, entry)

    def state(self, name: str, field: str) -> dict:
        node = self.get(name)
        return {"name": name, field: node[field]}

    # -- actions ---------------------------------------------------------------------------

    def _require(self, name: str) -> dict:
        entry = self.entry(name)
        if entry is None:
            raise NotFound(f"ERROR: No node named '{name}' is present in the cluster.")
        return entry

    def set_coordinator(self, name: str, state: str) -> str:
        entry = self._require(name)
        if entry.get("daemonmode") == "hypervisor":
            raise BadRequest(f"ERROR: Cannot change router mode on non-coordinator node '{name}'")
        if entry.get("daemonstate") != "run":
            raise BadRequest(f"ERROR: Node '{name}' is not active")
        current = entry.get("routerstate")
        if state == "primary":
            if current != "secondary":
                raise BadRequest(f"Node '{name}' is already in primary router mode.")
            self.runtime.zk.write({core_schema.PRIMARY_NODE: name})
            return f"Setting node {name} in primary router mode."
        if current != "primary":
            raise BadRequest(f"Node '{name}' is already in secondary router mode.")
        self.runtime.zk.write({core_schema.PRIMARY_NODE: "none"})
        return f"Setting node {name} in secondary router mode."

    def set_domain_state(self, name: str, state: str, wait: bool,
                         on_task: Callable[[str | None], None] | None = None) -> str:
        """``on_task`` gets the id of the task record that follows the node daemon's work (``pvc_node.tasks``)."""
        self._require(name)
        written = "flush" if state == "flush" else "unflush"
        vms = tasks.running_count(self.runtime, name)
        self.runtime.zk.write({schema.key(name, "domainstate"): written})
        if state == "flush":
            started, done = f"Flushing hypervisor {name} of running VMs.", f"Flushed hypervisor {name} of running VMs."
            task_id = self.runtime.task_monitor.follow(tasks.FLUSH, {"node": name, "target": "flushed", "vms": vms},
                                                       started, total=max(vms, 1))
        else:
            started, done = (f"Restoring hypervisor {name} to active service.",
                             f"Restored hypervisor {name} to active service.")
            task_id = self.runtime.task_monitor.follow(tasks.READY, {"node": name, "target": "ready"}, started)
        if on_task is not None:
            on_task(task_id)
        if not wait:
            return started
        self._wait_until_not(name, written)
        target = "flushed" if state == "flush" else "ready"
        now = self.runtime.zk.get(schema.key(name, "domainstate"))
        if now != target:  # a cancel (DELETE /tasks/<id>: unflush) or a concurrent request
            raise ApiError(f"Node '{name}' did not become {target}: its domain state is now '{now}' (the {state} "
                           "was cancelled or superseded)", 409)
        self.runtime.task_monitor.confirm(task_id)
        return done

    def _wait_until_not(self, name: str, value: str) -> None:
        """Bounded wait for the node daemon to finish (v0.6 waited forever)."""
        timeout = self.runtime.config["node.wait_timeout"]
        deadline = time.monotonic() + timeout
        path = schema.key(name, "domainstate")
        while self.runtime.zk.get(path) == value:
            if time.monotonic() >= deadline:
                raise ApiError(f"Node '{name}' is still in state '{value}' after {timeout:g} s "
                               "(pvc.node.wait_timeout); its node daemon continues in the background", 409)
            time.sleep(0.1)

    # -- for the status document and VM placement -----------------------------------------

    def status(self) -> dict:
        entries = self.entries()
        counts = {"total": len(entries)}
        degraded = False
        for entry in entries.values():
            daemon, domain = entry.get("daemonstate") or "", entry.get("domainstate") or ""
            pair = f"{daemon},{domain}"
            if pair in schema.STATUS_PAIRS:
                counts[pair] = counts.get(pair, 0) + 1
            if daemon != "run" and domain != "ready":  # v0.6 rule: both must be bad
                degraded = True
        ordered = {"total": counts["total"]}
        ordered.update((pair, counts[pair]) for pair in schema.STATUS_PAIRS if pair in counts)
        return {"fields": {"nodes": ordered}, "degraded": degraded}

    def objects(self) -> dict[str, dict]:
        """Every node object by name (for the vm plugin's target selection)."""
        return {name: node_object(name, entry) for name, entry in self.entries().items()}

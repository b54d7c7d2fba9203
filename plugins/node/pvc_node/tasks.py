"""Flush and ready as tasks: the route writes ``domainstate`` as v0.6 did, the API's task monitor follows it.

The node daemon does the work (migrating its VMs away, or back) and ends it
by writing ``flushed`` or ``ready``. A flush is cancelled the way v0.6 node
daemons already understand: ``unflush`` stops the flush after the VM being
moved and brings back those it moved; the task then follows that to
``ready`` and ends cancelled. A ready (unflush) is not cancelled: a flush
would be its undo, and that is a new request of its own.
"""

from __future__ import annotations

from typing import Any

from pvc_core.taskmonitor import Kind, Observation
from pvc_core.taskrecords import FAILURE, RUNNING, SUCCESS

from . import schema

FLUSH, READY = "node.flush", "node.ready"
# the value the node daemon ends with, and the one it works under
TARGETS = {"flushed": "flush", "ready": "unflush"}


def running_count(runtime: Any, name: str) -> int:
    return len((runtime.zk.get(schema.key(name, "runningdomains")) or "").split())


def check(runtime: Any, args: dict) -> Observation:
    name, target = args["node"], args["target"]
    state = runtime.zk.get(schema.key(name, "domainstate"))
    if state is None:
        return Observation(FAILURE, f"Node {name} is no longer in the cluster")
    if state == target:
        if args.get("_cancelling"):
            return Observation(SUCCESS, f"flush stopped; hypervisor {name} returned to service")
        done = "Flushed hypervisor {0} of running VMs." if target == "flushed" else \
            "Restored hypervisor {0} to active service."
        return Observation(SUCCESS, done.format(name))
    if state == TARGETS[target]:
        if target == "flushed":
            left, total = running_count(runtime, name), args.get("vms", 0)
            return Observation(RUNNING, f"Flushing hypervisor {name}: {left} of {total} VMs still running there",
                               max(0, total - left), max(total, 1))
        return Observation(RUNNING, f"Restoring hypervisor {name} to active service")
    return Observation(FAILURE, f"Superseded: the domain state of {name} is now '{state}'")


def cancel_flush(runtime: Any, args: dict) -> tuple[dict, str] | None:
    zk = runtime.zk
    path = schema.key(args["node"], "domainstate")
    value, version = zk.get_versioned([path])[path]
    if value != "flush":
        return None
    transaction = zk.transaction()
    transaction.set_data(path, b"unflush", version=version)
    zk.commit(transaction, f"cancel of the flush of {args['node']}")
    return ({"node": args["node"], "target": "ready"},
            f"Cancelling: wrote domain state 'unflush'; node {args['node']} stops migrating VMs away and brings "
            "back those it moved")


def kinds(runtime: Any) -> list[Kind]:
    def timeout() -> float:
        return runtime.config["node.wait_timeout"]
    return [
        Kind(FLUSH, "node", timeout, "pvc.node.wait_timeout", check=lambda args: check(runtime, args),
             cancel=lambda args: cancel_flush(runtime, args)),
        Kind(READY, "node", timeout, "pvc.node.wait_timeout", check=lambda args: check(runtime, args),
             refusal="a ready is undone by a flush, which is a request of its own"),
    ]

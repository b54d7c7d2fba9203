"""Migrate, move, shutdown and restart as tasks: the route writes as v0.6 did, the API's task monitor follows.

Node daemons act on a VM's ``state`` and ``node`` keys; the record ends when
they show the target (running on the target node, or stopped), when the VM
fails or another change supersedes this one, or at ``vm.wait_timeout``.
A migration or move still under way is cancelled by putting the VM back:
``node`` is its source again (``lastnode`` as before), so the source keeps
it running and the target stops waiting for it; the record then follows
that to its end. A shutdown or restart is one step of the node daemon and
is not cancelled.

A whole-VM snapshot's rollback, export and import run here, in their
request, one disk at a time: the record counts the disks, and a cancel
stops the work before the next disk and undoes what it made (the disks put
back, the files or the volumes and keys removed). A daemon that stopped
under one undoes it when it starts again (``recover``).
"""

from __future__ import annotations

from typing import Any

from pvc_core.taskmonitor import Kind, Observation
from pvc_core.taskrecords import FAILURE, RUNNING, SUCCESS

from . import schema

MIGRATE, MOVE, SHUTDOWN, RESTART = "vm.migrate", "vm.move", "vm.shutdown", "vm.restart"
PLACEMENT = {"migrate": MIGRATE, "move": MOVE}
STATES = {"shutdown": SHUTDOWN, "restart": RESTART}
SNAPSHOT_ROLLBACK, SNAPSHOT_EXPORT, SNAPSHOT_IMPORT = "vm.snapshot.rollback", "vm.snapshot.export", "vm.snapshot.import"
A_MONTH = 30 * 86400.0  # work run here has no deadline of its own beyond Ceph answering each step
ONE_STEP = "the node daemon does it in one step, which cannot be stopped midway"


def _read(runtime: Any, uuid: str) -> tuple[str | None, str, str, bool]:
    values = runtime.zk.get_many([schema.key(uuid, "state"), schema.key(uuid, "node"),
                                  schema.key(uuid, "failedreason")])
    node = values[schema.key(uuid, "node")] or ""
    nodes = runtime.service("node")
    running = node != "" and nodes.exists(node) and uuid in nodes.get(node)["running_domains"]
    return values[schema.key(uuid, "state")], node, values[schema.key(uuid, "failedreason")] or "", running


def check_placement(runtime: Any, args: dict) -> Observation:
    vm, target = args["vm"], args["target"]
    state, node, reason, running = _read(runtime, args["uuid"])
    if state is None:
        return Observation(FAILURE, f"VM '{vm}' is no longer in the cluster")
    if state == "fail":
        return Observation(FAILURE, f"VM '{vm}' failed: {reason}")
    if node != target:
        return Observation(FAILURE, f"Superseded: VM '{vm}' is now on node '{node}'")
    back = args.get("_cancelling")
    if args["expect"] != "start":
        return Observation(SUCCESS, f"VM '{vm}' (state '{state}') is recorded on node '{target}'")
    if state == "start" and running:
        if back:
            return Observation(SUCCESS, f"VM '{vm}' put back on node '{target}'")
        return Observation(SUCCESS, f"VM '{vm}' runs on node '{target}'")
    return Observation(RUNNING, f"Migrating VM '{vm}' to node '{target}' (state '{state}')")


def cancel_placement(runtime: Any, args: dict) -> tuple[dict, str] | None:
    zk = runtime.zk
    uuid = args["uuid"]
    paths = [schema.key(uuid, name) for name in ("state", "node", "lastnode")]
    read = zk.get_versioned(paths)
    state, node = read[paths[0]][0], read[paths[1]][0]
    if state != "migrate" or node != args["target"]:
        return None  # arrived already (or something else moved it): nothing to stop
    transaction = zk.transaction()
    transaction.check(paths[0], read[paths[0]][1])
    transaction.set_data(paths[1], args["source"].encode(), version=read[paths[1]][1])
    transaction.set_data(paths[2], args["lastnode"].encode(), version=read[paths[2]][1])
    zk.commit(transaction, f"cancel of the migration of VM {args['vm']}")
    return ({**args, "target": args["source"], "source": args["target"], "expect": "start"},
            f"Cancelling: VM '{args['vm']}' put back on node '{args['source']}' (the move to '{args['target']}' is "
            "abandoned)")


def check_state(runtime: Any, args: dict) -> Observation:
    vm, wanted = args["vm"], args["state"]
    state, node, reason, running = _read(runtime, args["uuid"])
    if state is None:
        return Observation(FAILURE, f"VM '{vm}' is no longer in the cluster")
    if state == "fail":
        return Observation(FAILURE, f"VM '{vm}' failed: {reason}")
    if wanted == "shutdown":
        if state == "stop" and not running:
            return Observation(SUCCESS, f"VM '{vm}' is shut down")
        if state in ("shutdown", "stop"):
            return Observation(RUNNING, f"Shutting down VM '{vm}' on node '{node}'")
    else:
        if state == "start" and running:
            return Observation(SUCCESS, f"VM '{vm}' restarted on node '{node}'")
        if state in ("restart", "start"):
            return Observation(RUNNING, f"Restarting VM '{vm}' on node '{node}'")
    return Observation(FAILURE, f"Superseded: the state of VM '{vm}' is now '{state}'")


def kinds(runtime: Any) -> list[Kind]:
    def timeout() -> float:
        return runtime.config["vm.wait_timeout"]
    setting = "pvc.vm.wait_timeout"
    return [Kind(name, "vm", timeout, setting, check=lambda args: check_placement(runtime, args),
                 cancel=lambda args: cancel_placement(runtime, args)) for name in (MIGRATE, MOVE)] + [
        Kind(name, "vm", timeout, setting, check=lambda args: check_state(runtime, args), refusal=ONE_STEP)
        for name in (SHUTDOWN, RESTART)] + [
        Kind(name, "vm", lambda: A_MONTH, "a month", recover=lambda args, name=name: _recover(runtime, name, args))
        for name in (SNAPSHOT_ROLLBACK, SNAPSHOT_EXPORT, SNAPSHOT_IMPORT)]


def _recover(runtime: Any, name: str, args: dict) -> str:
    from . import exports, snapshots
    undo = {SNAPSHOT_ROLLBACK: snapshots.recover_rollback, SNAPSHOT_EXPORT: exports.recover_export,
            SNAPSHOT_IMPORT: exports.recover_import}[name]
    return undo(runtime.service("vm"), args)

"""The provisioner service: the rows, task submission and the v0.6 status shapes (§2.10–§2.12, §3.9)."""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

from pvc_core.errors import BadRequest, Conflict, NotFound
from pvc_core.taskrecords import PENDING, RUNNING, TaskRecord

from .creation import STEPS, Cancelled, Creation, TaskFailure
from .store import Store

log = logging.getLogger("pvc.provisioner")

TASK_NAME = "provisioner.create_vm"
KIND = "provisioner.create"
PLUGIN = "provisioner"
ORPHANED = "Worker terminated during provisioning"
VM_NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.+-]+$")


def worker_name() -> str:
    return f"huey@{socket.gethostname()}"


class ProvisionerService:
    """Published as ``provisioner``; the metadata plugin reads userdata through it."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.store = Store(runtime)
        self.create_task: Any = None

    # -- creation -------------------------------------------------------------------------------

    def submit(self, name: str, profile: str, define_vm: bool, start_vm: bool, script_args: list[str]) -> str:
        if not VM_NAME.match(name):
            raise BadRequest(f"Parameter 'name': expected a VM name of letters, digits, '_', '.', '+', '-' "
                             f"(not '.' or '..'; its volumes are named <name>_<disk>), got {name!r}")
        if not self.store.profile_exists(profile):
            raise BadRequest(f'Profile "{profile}" is not valid.')
        if self.runtime.service("vm").find(name) is not None:
            # refused now rather than by the task's own check (§3.3 step 2), which still runs
            raise Conflict(f"A VM with the name '{name}' already exists in the cluster")
        kwargs: dict[str, Any] = {"define_vm": define_vm, "start_vm": start_vm}
        if script_args:
            kwargs["script_args"] = list(script_args)
        tasks = self.runtime.tasks
        with self.runtime.database.connection_context():
            tasks.purge(PLUGIN, self.runtime.config["provisioner.task_retention"])
            record = tasks.submit(self.create_task, PLUGIN, name, profile, total=1, kind=KIND, **kwargs)
        return record.id

    def execute(self, task_id: str, name: str, profile: str, define_vm: bool = True, start_vm: bool = True,
                script_args: list[str] | None = None) -> dict:
        """The body of the Huey task: runs in the consumer, records every step."""
        tasks = self.runtime.tasks

        def recorded(update: Any, *args: Any, **kwargs: Any) -> Any:
            # a connection per update: a database that blips during a long script is simply reconnected
            with self.runtime.database.connection_context():
                return update(task_id, *args, **kwargs)

        if not recorded(tasks.claim, STEPS[0], worker=worker_name(), current=1, total=len(STEPS)):
            # cancelled while queued (or ended by someone else): it never runs
            log.warning("provisioning task %s was cancelled before it started; not run", task_id)
            return {"state": "FAILURE", "status": "Cancelled before it started"}

        def progress(step: int, text: str) -> None:
            # a cancel is noticed between steps: what the steps before made is rolled back
            if recorded(tasks.cancel_requested):
                raise Cancelled(text)
            if step > 1:  # step 1 was published by claim()
                recorded(tasks.progress, step, len(STEPS), text)

        creation = Creation(self.runtime, task_id, name, profile, define_vm, start_vm, script_args, progress,
                            lambda ledger: recorded(tasks.note, {"ledger": ledger}))
        try:
            text = creation.run()
        except Cancelled as exc:
            recorded(tasks.fail, str(exc), result={"error": str(exc), "cancelled": True, "step": creation.step,
                                                   "undone": creation.undone}, current=1, total=1)
            return {"state": "FAILURE", "status": str(exc)}
        except TaskFailure as exc:
            recorded(tasks.fail, str(exc), result={"error": str(exc), "step": creation.step,
                                                   "timings": creation.timings}, current=1, total=1)
            return {"state": "FAILURE", "status": str(exc)}
        recorded(tasks.succeed, {"vm": name, "uuid": getattr(creation, "vm_uuid", None),
                                 "node": getattr(creation, "node", None), "timings": creation.timings}, status=text)
        return {"state": "SUCCESS", "status": text}

    def abandon_orphans(self) -> None:
        """At consumer start: this worker's RUNNING records belong to runs that died with it.

        Each ends FAILURE, and what its ledger says it had made (mounts,
        mappings, volumes, the VM definition) is undone, as for any failure.
        """
        try:
            self.store.ready()
            with self.runtime.database.connection_context():
                orphans = self.runtime.tasks.abandon_running(PLUGIN, worker_name(), ORPHANED)
        except Exception as exc:  # database down: the next start of the consumer tries again
            log.warning("could not check for orphaned provisioning tasks: %s", getattr(exc, "message", exc))
            return
        for record in orphans:
            ledger = (record.as_dict()["result"] or {}).get("ledger")
            log.warning("provisioning task %s was interrupted by the end of its worker", record.id)
            if ledger:
                try:
                    Creation.recover(self.runtime, ledger)
                except Exception:
                    log.exception("could not roll back the interrupted task %s", record.id)

    # -- status -------------------------------------------------------------------------------

    def status(self, task_id: str) -> dict:
        with self.store.session():
            record = TaskRecord.get_or_none((TaskRecord.id == task_id) & (TaskRecord.plugin == PLUGIN))
        if record is None:
            raise NotFound(f"No provisioner task with ID {task_id!r}")
        if record.state == PENDING:
            return {"state": PENDING, "current": 0, "total": 1, "status": "Pending job start"}
        out = {"state": record.state, "current": record.current, "total": record.total, "status": record.status}
        data = record.as_dict()
        if data["result"] is not None and record.state != RUNNING:
            out["result"] = data["result"]
        return out

    def queue(self) -> dict:
        """Celery-``inspect()``-shaped overview; each value null when the records cannot be read."""
        try:
            with self.store.session():
                records = list(TaskRecord.select().where((TaskRecord.plugin == PLUGIN)
                                                         & (TaskRecord.state.in_((PENDING, RUNNING))))
                               .order_by(TaskRecord.created))
        except Exception as exc:  # DECISIONS: the three keys in every case
            log.warning("provisioner status: task records unreadable: %s", exc)
            return {"scheduled": None, "active": None, "reserved": None}
        active: dict[str, list] = {}
        reserved: dict[str, list] = {}
        for record in records:
            data = record.as_dict()
            worker = record.worker or worker_name()
            entry = {"id": record.id, "name": TASK_NAME, "args": repr(tuple(data["args"])),
                     "kwargs": repr(data["kwargs"]), "type": TASK_NAME,
                     "hostname": worker, "time_start": record.started if record.state == RUNNING else None,
                     "acknowledged": record.state == RUNNING,
                     "delivery_info": {"exchange": "", "routing_key": "huey", "priority": 0, "redelivered": None},
                     "worker_pid": None, "status": record.status,
                     "current": record.current, "total": record.total}
            (active if record.state == RUNNING else reserved).setdefault(worker, []).append(entry)
        return {"scheduled": {}, "active": active, "reserved": reserved}

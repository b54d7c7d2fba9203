"""Persisted task records: the state and progress of every long operation.

Huey's result store is one-shot and says nothing while a task runs, so the
core keeps its own record per task (queued, running with progress, done with
a result, failed with a reason) in the database; any plugin's long work can
create one before enqueueing and update it from the worker, and the API
daemon keeps records of the work node daemons and the API itself do
(``pvc_core.taskmonitor``). Each record has a timestamped log in a table of
its own (``pvc_task_log``), so the columns of ``pvc_task`` only grow by
nullable ones (the additive migration at start).

A cancelled task ends ``FAILURE`` with a status that starts with
``Cancelled`` and its ``cancelled`` time set: the v0.6 provisioner status
(and the CLI reading it) knows no other final states.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import peewee

from .db import BaseModel
from .errors import NotFound

PENDING, RUNNING, SUCCESS, FAILURE = "PENDING", "RUNNING", "SUCCESS", "FAILURE"
# The end of the status of a record that succeeded although a cancel was asked for (``succeed``).
TOO_LATE = "Cancel came too late: it was asked after the work could no longer be stopped, so nothing was undone"
STATES = (PENDING, RUNNING, SUCCESS, FAILURE)
ENDED = (SUCCESS, FAILURE)
# Longest message kept in a task's log (a node daemon's failure reason can be a whole traceback).
LOG_MESSAGE_MAX = 4000


class TaskRecord(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=64)
    name = peewee.CharField(max_length=200)
    plugin = peewee.CharField(max_length=64)
    state = peewee.CharField(max_length=16, index=True, default=PENDING)
    current = peewee.IntegerField(default=0)
    total = peewee.IntegerField(default=1)
    status = peewee.TextField(default="")
    result = peewee.TextField(null=True)
    args = peewee.TextField(default="[]")
    kwargs = peewee.TextField(default="{}")
    created = peewee.DoubleField()
    updated = peewee.DoubleField()
    started = peewee.DoubleField(null=True)
    worker = peewee.CharField(max_length=200, null=True)
    # Added after v1 of the table: nullable, so the additive migration adds them to an existing one.
    kind = peewee.CharField(max_length=64, null=True, index=True)
    ended = peewee.DoubleField(null=True)
    cancelled = peewee.DoubleField(null=True)  # when a cancel was asked for
    deadline = peewee.DoubleField(null=True)  # a followed task not ended by then fails
    heartbeat = peewee.DoubleField(null=True)  # last sign of life of the API daemon that runs or follows it

    class Meta:
        table_name = "pvc_task"

    def as_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "plugin": self.plugin, "kind": self.kind or self.name,
            "state": self.state, "current": self.current, "total": self.total, "status": self.status,
            "result": json.loads(self.result) if self.result else None,
            "args": json.loads(self.args), "kwargs": json.loads(self.kwargs),
            "created": self.created, "updated": self.updated, "started": self.started, "worker": self.worker,
            "ended": self.ended, "cancelled": self.cancelled, "deadline": self.deadline,
        }


class TaskLog(BaseModel):
    """One timestamped line of a task's log."""

    id = peewee.AutoField()
    task_id = peewee.CharField(max_length=64, index=True)
    time = peewee.DoubleField()
    message = peewee.TextField()

    class Meta:
        table_name = "pvc_task_log"


class TaskRecords:
    """Create and update task records; every call is one short statement."""

    models = (TaskRecord, TaskLog)

    def __init__(self) -> None:
        # called with the id of every record this process ends (the API's waiters wake at once)
        self.on_end: list[Callable[[str], None]] = []

    def create(self, name: str, plugin: str, args: list | tuple = (), kwargs: dict | None = None,
               task_id: str | None = None, total: int = 1, kind: str | None = None, state: str = PENDING,
               status: str = "", worker: str | None = None, deadline: float | None = None) -> TaskRecord:
        now = time.time()
        record = TaskRecord.create(
            id=task_id or str(uuid.uuid4()), name=name, plugin=plugin, state=state, total=total, status=status,
            args=json.dumps(list(args)), kwargs=json.dumps(kwargs or {}), created=now, updated=now,
            kind=kind or name, worker=worker, deadline=deadline, heartbeat=now if worker else None,
            started=now if state == RUNNING else None)
        self.log(record.id, status or ("Queued" if state == PENDING else "Started"))
        return record

    def submit(self, task: Any, plugin: str, *args: Any, total: int = 1, kind: str | None = None,
               **kwargs: Any) -> TaskRecord:
        """Record, then enqueue ``task(record_id, *args, **kwargs)`` as the Huey task of that id.

        The record exists before the caller answers (clients poll it at once);
        if the queue refuses the task the record is removed again, so that an
        answer of 503 leaves nothing behind (no record stays PENDING for a task
        that never ran), and the queue's error propagates.
        """
        record = self.create(task.name, plugin, args=args, kwargs=kwargs, total=total, kind=kind)
        try:
            # Huey's id of the task is the record's: the worker's log lines name the id the client got.
            task(record.id, *args, id=record.id, **kwargs)
        except Exception:
            TaskRecord.delete().where(TaskRecord.id == record.id).execute()
            TaskLog.delete().where(TaskLog.task_id == record.id).execute()
            raise
        return record

    # -- the log ------------------------------------------------------------------------------

    def log(self, task_id: str, message: str, at: float | None = None) -> None:
        TaskLog.create(task_id=task_id, time=time.time() if at is None else at, message=message[:LOG_MESSAGE_MAX])

    def logs(self, task_id: str) -> list[dict]:
        return [{"time": line.time, "message": line.message} for line in
                TaskLog.select().where(TaskLog.task_id == task_id).order_by(TaskLog.time, TaskLog.id)]

    def get(self, task_id: str) -> TaskRecord:
        record = TaskRecord.get_or_none(TaskRecord.id == task_id)
        if record is None:
            raise NotFound(f"No task with ID {task_id!r}")
        return record

    def list(self, state: str | None = None, plugin: str | None = None, limit: int = 100, kind: str | None = None,
             since: float | None = None) -> list[TaskRecord]:
        """Newest first; ``kind`` also matches records made before kinds existed (their task name)."""
        query = TaskRecord.select().order_by(TaskRecord.created.desc()).limit(limit)
        if state:
            query = query.where(TaskRecord.state == state)
        if plugin:
            query = query.where(TaskRecord.plugin == plugin)
        if kind:
            query = query.where((TaskRecord.kind == kind) | (TaskRecord.kind.is_null() & (TaskRecord.name == kind)))
        if since is not None:
            query = query.where(TaskRecord.created >= since)
        return list(query)

    def _update(self, task_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        TaskRecord.update(**fields).where(TaskRecord.id == task_id).execute()

    def _ended(self, task_id: str) -> None:
        for listener in self.on_end:
            try:
                listener(task_id)
            except Exception:  # a waiter's wake-up never fails the task
                pass

    def claim(self, task_id: str, status: str, worker: str | None = None, current: int = 0,
              total: int | None = None) -> bool:
        """PENDING → RUNNING, only if still PENDING: a task cancelled while queued never runs."""
        now = time.time()
        fields: dict[str, Any] = {"state": RUNNING, "status": status, "started": now, "updated": now,
                                  "worker": worker, "current": current}
        if total is not None:
            fields["total"] = total
        taken = TaskRecord.update(**fields).where((TaskRecord.id == task_id) & (TaskRecord.state == PENDING)
                                                  & TaskRecord.cancelled.is_null()).execute()
        if taken:
            self.log(task_id, status)
        return bool(taken)

    def cancel(self, task_id: str, reason: str) -> str | None:
        """Ask for a cancel: a queued task ends at once (``PENDING``), a running one is marked for its runner
        (``RUNNING``); None when it had already ended. Each step is one conditional statement, so a
        cancel racing the task's start or end is decided by the database."""
        now = time.time()
        status = f"Cancelled before it started: {reason}"
        if TaskRecord.update(state=FAILURE, status=status, cancelled=now, ended=now, updated=now,
                             result=json.dumps({"error": status, "cancelled": True})).where(
                (TaskRecord.id == task_id) & (TaskRecord.state == PENDING)).execute():
            self.log(task_id, status)
            self._ended(task_id)
            return PENDING
        marked = TaskRecord.update(cancelled=now, updated=now).where(
            (TaskRecord.id == task_id) & (TaskRecord.state == RUNNING) & TaskRecord.cancelled.is_null()).execute()
        if marked:
            self.log(task_id, f"Cancel requested: {reason}")
            return RUNNING
        record = self.get(task_id)
        return RUNNING if record.state == RUNNING else None  # asked twice: still running

    def cancel_requested(self, task_id: str) -> bool:
        record = TaskRecord.select(TaskRecord.cancelled).where(TaskRecord.id == task_id).first()
        return record is not None and record.cancelled is not None

    def start(self, task_id: str, status: str = "Running", worker: str | None = None, current: int = 0,
              total: int | None = None) -> None:
        fields: dict[str, Any] = {"state": RUNNING, "status": status, "started": time.time(), "worker": worker,
                                  "current": current}
        if total is not None:
            fields["total"] = total
        self._update(task_id, **fields)
        self.log(task_id, status)

    def progress(self, task_id: str, current: int, total: int, status: str, log: bool = True) -> None:
        self._update(task_id, state=RUNNING, current=current, total=total, status=status)
        if log:
            self.log(task_id, status)

    def note(self, task_id: str, result: Any) -> None:
        """Replace the result of a running task (what it has done so far, for a crash recovery)."""
        self._update(task_id, result=json.dumps(result))

    def _end(self, task_id: str, fields: dict[str, Any], only: Any = None) -> bool:
        """An end is final: a record already ended (by a sweep, a cancel, another daemon) stays as it is.
        ``only`` narrows which records end (a condition on the row, decided by the database)."""
        now = time.time()
        fields.update(updated=now, ended=now)
        condition = (TaskRecord.id == task_id) & TaskRecord.state.in_((PENDING, RUNNING))
        if only is not None:
            condition &= only
        done = TaskRecord.update(**fields).where(condition).execute()
        if done:
            self.log(task_id, fields["status"], at=now)  # the last line is the end
            self._ended(task_id)
        return bool(done)

    def succeed(self, task_id: str, result: Any = None, status: str = "Done") -> bool:
        """End the record SUCCESS. A cancel marked on it meanwhile came after the work's last point where it could
        stop (its commit): the work stands, and the status says so, so that no record reads as a plain success
        while its ``cancelled`` is set. One conditional statement each: a cancel racing this end is decided by
        the database (after the first, ``cancel`` finds the record ended and answers 409)."""
        record = self.get(task_id)
        fields = {"state": SUCCESS, "status": status, "current": record.total, "result": json.dumps(result)}
        if self._end(task_id, dict(fields), TaskRecord.cancelled.is_null()):
            return True
        return self._end(task_id, {**fields, "status": f"{status} ({TOO_LATE})"})

    def fail(self, task_id: str, reason: str, result: dict | None = None, current: int | None = None,
             total: int | None = None) -> bool:
        fields: dict[str, Any] = {"state": FAILURE, "status": reason,
                                  "result": json.dumps(result if result is not None else {"error": reason})}
        if current is not None:
            fields["current"] = current
        if total is not None:
            fields["total"] = total
        return self._end(task_id, fields)

    def abandon_running(self, plugin: str, worker: str, reason: str) -> list[TaskRecord]:
        """A worker that starts again finds its RUNNING records orphaned: they end as failures.

        Returned as they were (their ``result`` may say what the dead run had made).
        """
        orphans = list(TaskRecord.select().where((TaskRecord.plugin == plugin) & (TaskRecord.worker == worker)
                                                 & (TaskRecord.state == RUNNING)))
        for record in orphans:
            self.fail(record.id, reason, current=1, total=1)
        return orphans

    def counts(self) -> dict[tuple[str, str], int]:
        """``{(name, state): records}`` over every record kept: one grouped statement."""
        query = (TaskRecord.select(TaskRecord.name, TaskRecord.state, peewee.fn.COUNT(TaskRecord.id).alias("n"))
                 .group_by(TaskRecord.name, TaskRecord.state).tuples())
        return {(name, state): count for name, state, count in query}

    def durations(self, bounds: tuple[float, ...]) -> dict[tuple[str, str], tuple[list[int], float, int]]:
        """``{(name, state): (cumulative count per bound in ``bounds``, sum of seconds, count)}`` of the
        finished records that ran (``updated`` - ``started``): a histogram made by one grouped statement,
        whatever the number of records, so a scrape costs the same after a thousand creations."""
        elapsed = TaskRecord.updated - TaskRecord.started
        columns = [peewee.fn.SUM(peewee.Case(None, [(elapsed <= bound, 1)], 0)) for bound in bounds]
        query = (TaskRecord.select(TaskRecord.name, TaskRecord.state, peewee.fn.SUM(elapsed),
                                   peewee.fn.COUNT(TaskRecord.id), *columns)
                 .where(TaskRecord.state.in_((SUCCESS, FAILURE)) & TaskRecord.started.is_null(False))
                 .group_by(TaskRecord.name, TaskRecord.state).tuples())
        return {(name, state): ([int(value or 0) for value in buckets], float(total or 0.0), int(count))
                for name, state, total, count, *buckets in query}

    def purge(self, plugin: str, older_than: float) -> int:
        """Forget finished records last changed more than ``older_than`` seconds ago."""
        old = [record.id for record in TaskRecord.select(TaskRecord.id).where(
            (TaskRecord.plugin == plugin) & (TaskRecord.state.in_(ENDED))
            & (TaskRecord.updated < time.time() - older_than))]
        if not old:
            return 0
        TaskLog.delete().where(TaskLog.task_id.in_(old)).execute()
        return TaskRecord.delete().where(TaskRecord.id.in_(old)).execute()

"""Persisted task records: the state and progress of every long operation.

Huey's result store is one-shot and says nothing while a task runs, so the
core keeps its own record per task (queued, running with progress, done with
a result, failed with a reason) in the database; any plugin's long work can
create one before enqueueing and update it from the worker.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import peewee

from .db import BaseModel
from .errors import NotFound

PENDING, RUNNING, SUCCESS, FAILURE = "PENDING", "RUNNING", "SUCCESS", "FAILURE"
STATES = (PENDING, RUNNING, SUCCESS, FAILURE)


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

    class Meta:
        table_name = "pvc_task"

    def as_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "plugin": self.plugin, "state": self.state,
            "current": self.current, "total": self.total, "status": self.status,
            "result": json.loads(self.result) if self.result else None,
            "args": json.loads(self.args), "kwargs": json.loads(self.kwargs),
            "created": self.created, "updated": self.updated, "started": self.started, "worker": self.worker,
        }


class TaskRecords:
    """Create and update task records; every call is one short statement."""

    models = (TaskRecord,)

    def create(self, name: str, plugin: str, args: list | tuple = (), kwargs: dict | None = None,
               task_id: str | None = None, total: int = 1) -> TaskRecord:
        now = time.time()
        return TaskRecord.create(
            id=task_id or str(uuid.uuid4()), name=name, plugin=plugin, state=PENDING, total=total,
            args=json.dumps(list(args)), kwargs=json.dumps(kwargs or {}), created=now, updated=now)

    def submit(self, task: Any, plugin: str, *args: Any, total: int = 1, **kwargs: Any) -> TaskRecord:
        """Record, then enqueue ``task(record_id, *args, **kwargs)`` as the Huey task of that id.

        The record exists before the caller answers (clients poll it at once);
        if the queue refuses the task the record is removed again, so that an
        answer of 503 leaves nothing behind (no record stays PENDING for a task
        that never ran), and the queue's error propagates.
        """
        record = self.create(task.name, plugin, args=args, kwargs=kwargs, total=total)
        try:
            # Huey's id of the task is the record's: the worker's log lines name the id the client got.
            task(record.id, *args, id=record.id, **kwargs)
        except Exception:
            TaskRecord.delete().where(TaskRecord.id == record.id).execute()
            raise
        return record

    def get(self, task_id: str) -> TaskRecord:
        record = TaskRecord.get_or_none(TaskRecord.id == task_id)
        if record is None:
            raise NotFound(f"No task with ID {task_id!r}")
        return record

    def list(self, state: str | None = None, plugin: str | None = None, limit: int = 100) -> list[TaskRecord]:
        query = TaskRecord.select().order_by(TaskRecord.created.desc()).limit(limit)
        if state:
            query = query.where(TaskRecord.state == state)
        if plugin:
            query = query.where(TaskRecord.plugin == plugin)
        return list(query)

    def _update(self, task_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        TaskRecord.update(**fields).where(TaskRecord.id == task_id).execute()

    def start(self, task_id: str, status: str = "Running", worker: str | None = None, current: int = 0,
              total: int | None = None) -> None:
        fields: dict[str, Any] = {"state": RUNNING, "status": status, "started": time.time(), "worker": worker,
                                  "current": current}
        if total is not None:
            fields["total"] = total
        self._update(task_id, **fields)

    def progress(self, task_id: str, current: int, total: int, status: str) -> None:
        self._update(task_id, state=RUNNING, current=current, total=total, status=status)

    def note(self, task_id: str, result: Any) -> None:
        """Replace the result of a running task (what it has done so far, for a crash recovery)."""
        self._update(task_id, result=json.dumps(result))

    def succeed(self, task_id: str, result: Any = None, status: str = "Done") -> None:
        record = self.get(task_id)
        self._update(task_id, state=SUCCESS, status=status, current=record.total,
                     result=json.dumps(result))

    def fail(self, task_id: str, reason: str, result: dict | None = None, current: int | None = None,
             total: int | None = None) -> None:
        fields: dict[str, Any] = {"state": FAILURE, "status": reason,
                                  "result": json.dumps(result if result is not None else {"error": reason})}
        if current is not None:
            fields["current"] = current
        if total is not None:
            fields["total"] = total
        self._update(task_id, **fields)

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
        return (TaskRecord.delete()
                .where((TaskRecord.plugin == plugin) & (TaskRecord.state.in_((SUCCESS, FAILURE)))
                       & (TaskRecord.updated < time.time() - older_than)).execute())

"""The /tasks routes: list and read task records, wait for one to end, cancel one.

A route that starts long work names its record in the ``X-Task-Id`` header
(``announce``); its v0.6 body stays as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import Conflict
from .params import INTEGER, NUMBER, STRING, Param
from .routes import Header, Response, Route
from .shapes import ANY, INT, JSON, NUM, STR, array, named, nullable, obj
from .taskrecords import ENDED, PENDING, STATES

TASK_HEADER = "X-Task-Id"
_TASK_HEADER_TEXT = ("ID of the task record of this work: GET /api/v1/tasks/<id>, …/wait, DELETE to cancel "
                     "(absent when the database did not answer; the work is done all the same)")
# ``Route.headers`` of a route that starts a task and answers once the record exists (the provisioner's 202).
TASK_HEADERS = {TASK_HEADER: _TASK_HEADER_TEXT}


def task_headers(*errors: int) -> dict[str, Header]:
    """``Route.headers`` of a route whose work may still fail after its record began: the error statuses it can
    answer then carry the header too (the server adds it to any error once ``ctx.task_id`` is set)."""
    return {TASK_HEADER: Header(_TASK_HEADER_TEXT, errors=tuple(sorted(errors)))}
TASK_LIMIT_MAX = 10000

_FIELDS = {
    "id": STR, "name": STR, "plugin": STR, "kind": STR, "state": {"type": "string", "enum": list(STATES)},
    "current": INT, "total": INT, "status": STR, "result": ANY, "args": array(ANY), "kwargs": {"type": "object"},
    "created": NUM, "updated": NUM, "started": nullable(NUM), "worker": nullable(STR), "ended": nullable(NUM),
    "cancelled": nullable(NUM), "deadline": nullable(NUM)}
TASK = named("Task", obj(_FIELDS))
LOG_LINE = obj({"time": NUM, "message": STR})
TASK_DETAIL = named("TaskDetail", obj({**_FIELDS, "log": array(LOG_LINE)}))


def announce(ctx: Any) -> Callable[[str | None], None]:
    """What a service calls with the id of the record it made: the answer's header and the request context
    (the audit log reads ``ctx.task_id``)."""
    def named_task(task_id: str | None) -> None:
        if task_id is not None:
            ctx.task_id = task_id
            ctx.response_headers[TASK_HEADER] = task_id
    return named_task


def _detail(runtime: Any, task_id: str) -> dict:
    record = runtime.tasks.get(task_id).as_dict()
    record["log"] = runtime.tasks.logs(task_id)
    return record


def list_tasks(ctx: Any, params: dict) -> list:
    runtime = ctx.runtime
    runtime.ensure_schema()
    since = params["since"]
    if params["max_age"] is not None:
        oldest = time.time() - params["max_age"]
        since = oldest if since is None else max(since, oldest)
    return [record.as_dict() for record in
            runtime.tasks.list(state=params["state"], plugin=params["plugin"], limit=params["limit"],
                               kind=params["kind"], since=since)]


def get_task(ctx: Any, params: dict, task_id: str) -> dict:
    ctx.runtime.ensure_schema()
    return _detail(ctx.runtime, task_id)


def wait_task(ctx: Any, params: dict, task_id: str) -> Response:
    runtime = ctx.runtime
    runtime.ensure_schema()
    record = _detail(runtime, task_id)
    if record["state"] not in ENDED and params["timeout"] > 0:
        runtime.task_monitor.wait(task_id, params["timeout"])
        record = _detail(runtime, task_id)
    return Response(record, status=200 if record["state"] in ENDED else 202)


def cancel_task(ctx: Any, params: dict, task_id: str) -> Response:
    runtime = ctx.runtime
    runtime.ensure_schema()
    record = runtime.tasks.get(task_id)
    if record.state in ENDED:
        raise Conflict(f"Task {task_id} has already ended ({record.state}: {record.status}); nothing to cancel")
    kind_name = record.kind or record.name
    kind = runtime.task_monitor.kinds.get(kind_name)
    if kind is None:
        raise Conflict(f"Tasks of kind {kind_name!r} cannot be cancelled: their plugin does not support it")
    if kind.refusal and record.state != PENDING:
        raise Conflict(f"Tasks of kind {kind_name!r} cannot be cancelled once running: {kind.refusal}")
    outcome = runtime.tasks.cancel(task_id, f"DELETE /tasks/{task_id}")
    if outcome is None:
        record = runtime.tasks.get(task_id)
        raise Conflict(f"Task {task_id} has already ended ({record.state}: {record.status}); nothing to cancel")
    runtime.task_monitor.cancelled_here(task_id)
    return Response(_detail(runtime, task_id), status=200 if outcome == PENDING else 202)


def routes(runtime: Any) -> list[Route]:
    core = ("core",)
    wait_max = runtime.config.get("tasks.wait_max", 300.0)
    still = {"description": "The timeout passed and the task still runs: the record as it is now",
             "content": {JSON: {"schema": TASK_DETAIL}}}
    running = {"description": "The task runs: it stops at its next step and rolls back what it made; "
                              "GET …/wait follows it to its end (FAILURE, status 'Cancelled…')",
               "content": {JSON: {"schema": TASK_DETAIL}}}
    return [
        Route("GET", "/tasks", list_tasks, (
            Param("state", STRING, choices=STATES, help="only tasks in this state"),
            Param("plugin", STRING, help="only tasks of this plugin"),
            Param("kind", STRING, help="only tasks of this kind, e.g. node.flush, vm.migrate, provisioner.create"),
            Param("since", NUMBER, minimum=0, help="only tasks created at or after this time (Unix seconds)"),
            Param("max_age", NUMBER, minimum=0, help="only tasks created within the last this many seconds"),
            Param("limit", INTEGER, default=100, minimum=1, maximum=TASK_LIMIT_MAX,
                  help="at most this many, newest first"),
        ), summary="Task records of long operations", tags=core, returns=array(TASK)),
        Route("GET", "/tasks/<task_id>", get_task, summary="One task record with progress and its timestamped log",
              tags=core, returns=TASK_DETAIL),
        Route("GET", "/tasks/<task_id>/wait", wait_task, (
            Param("timeout", NUMBER, default=min(30.0, wait_max), minimum=0, maximum=wait_max,
                  help="longest wait, seconds (at most pvc.tasks.wait_max)"),),
            summary="Wait for a task to end (long poll): answered the moment it ends, or at the timeout",
            tags=core, returns=TASK_DETAIL, responses={202: still}),
        # write: a cancel stops (and rolls back) work a write started
        Route("DELETE", "/tasks/<task_id>", cancel_task,
              summary="Cancel a task: a queued one never runs, a running one stops at its next step and rolls back",
              tags=core, returns=TASK_DETAIL, scope="write",
              responses={202: running, 409: "The task has ended already, or its kind cannot be cancelled"}),
    ]


__all__ = ["TASK", "TASK_DETAIL", "TASK_HEADER", "TASK_HEADERS", "announce", "routes", "task_headers"]

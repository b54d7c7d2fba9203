"""The API daemon's one task thread: follows node daemons' work, wakes waiters, notices cancels.

Work that node daemons do (flush, migrations, OSDs) is asked for by one
ZooKeeper write and then happens elsewhere; work the API does itself (a
volume copy) runs in a request. Either way the record is kept by this
daemon, so one thread per daemon does all the looking, every
``tasks.poll_interval``:

* one query for the records that requests wait on, that this daemon follows
  or runs (ended? cancel asked for?) — never one query per waiter;
* one check per followed task against ZooKeeper (``Kind.check``), ending the
  record when the node daemons reached the target state, or at its deadline
  (derived from the configured timeout of that work);
* every ``tasks.heartbeat``: mark the records it owns as followed, and fail
  any API-owned record nobody has marked for three heartbeats (its daemon is
  gone), so no record stays RUNNING for ever while any daemon runs.

A restarted daemon follows its RUNNING records again where ``Kind.check``
can tell the outcome from ZooKeeper; work that ran in its own process is
undone (``Kind.recover``) and failed. Records this process ends wake their
waiters at once (``TaskRecords.on_end``); records the Huey worker ends wake
them at the next poll.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, Conflict
from .taskrecords import ENDED, PENDING, RUNNING, SUCCESS, TaskRecord

log = logging.getLogger("pvc.tasks")

# Records read per query (SQLite's bound-parameter limit is 999 on old builds).
CHUNK = 500
# The key of a cancelled followed record's kwargs that holds what is followed since the cancel (its undo).
UNDO = "_undo"
# A record not marked by its daemon for this many heartbeats is failed by any daemon.
ORPHAN_HEARTBEATS = 3


@dataclass
class Observation:
    """What ZooKeeper says about a followed task now."""

    state: str  # RUNNING, SUCCESS or FAILURE
    status: str
    current: int | None = None
    total: int | None = None


@dataclass
class Kind:
    """A kind of task the API keeps a record of.

    ``check(args)`` tells from ZooKeeper where node daemons stand; ``cancel(args)``
    asks them to stop and undo, returning the args to follow from then on (the
    rollback's target) and a log line, or None when it is too late to stop.
    ``recover(args)`` undoes what a run in this process had made when the
    process ended under it. ``refusal`` says why a running task of this kind
    cannot be cancelled (empty: it can).
    """

    name: str
    plugin: str
    timeout: Callable[[], float]
    setting: str
    check: Callable[[dict], Observation] | None = None
    cancel: Callable[[dict], tuple[dict, str] | None] | None = None
    recover: Callable[[dict], str] | None = None
    refusal: str = ""


@dataclass
class _Follow:
    kind: Kind
    args: dict
    deadline: float
    status: str = ""
    cancelling: bool = False
    too_late: bool = False  # the cancel found nothing left to stop: not asked again, the record keeps it


class Cancelled(Conflict):
    """Work run here stopped at a step because ``DELETE /tasks/<id>`` asked it to (after undoing what it made;
    the undo's outcome is appended to the message, which the record keeps after "Cancelled: ")."""


class Handle:
    """A task that runs in this process (in a request): its record, and whether a cancel was asked for.

    Without a record (the database did not answer when it began) every call does nothing: the work
    itself still runs as v0.6 ran it.
    """

    def __init__(self, monitor: TaskMonitor, task_id: str | None):
        self.monitor = monitor
        self.id = task_id
        self.cancelled = threading.Event()
        self._last_progress = 0.0

    def _record(self, update: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.id is None:
            return None
        return self.monitor.recorded(update, self.id, *args, **kwargs)

    def log(self, message: str) -> None:
        self._record(self.monitor.runtime.tasks.log, message)

    def progress(self, current: int, total: int, status: str, every: float = 1.0) -> None:
        """At most one write per ``every`` seconds: a copy reports each chunk."""
        now = time.monotonic()
        if now - self._last_progress >= every or current >= total:
            self._last_progress = now
            self._record(self.monitor.runtime.tasks.progress, current, total, status, log=False)

    def step(self, current: int, total: int, status: str) -> None:
        """A step of few (a disk of a VM, a transaction of a restore): recorded and logged, each one."""
        self._last_progress = time.monotonic()
        self._record(self.monitor.runtime.tasks.progress, current, total, status, log=True)

    def stop_if_cancelled(self, where: str) -> None:
        """Called between the steps of the work: a cancel asked for stops it here (409 to its request)."""
        if self.cancelled.is_set():
            raise Cancelled(f"ERROR: Cancelled {where} (DELETE /tasks/{self.id})")

    def succeed(self, status: str, result: Any = None) -> None:
        self._record(self.monitor.runtime.tasks.succeed, result, status)
        self.monitor.release(self.id)

    def fail(self, status: str, result: dict | None = None) -> None:
        self._record(self.monitor.runtime.tasks.fail, status, result)
        self.monitor.release(self.id)


class TaskMonitor:
    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.kinds: dict[str, Kind] = {}
        self._follows: dict[str, _Follow] = {}
        self._handles: dict[str, Handle] = {}
        self._waiters: dict[str, list[threading.Event]] = {}
        self._waiting = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._resumed = False
        self._last_beat = 0.0
        self._last_error = 0.0
        runtime.tasks.on_end.append(self._ended_here)

    # -- configuration ------------------------------------------------------------------------

    def _setting(self, key: str, default: float) -> float:
        return self.runtime.config.get(f"tasks.{key}", default)

    @property
    def owner(self) -> str:
        """Who follows a record: this daemon, by host and port (a restart on them resumes it)."""
        return f"api@{socket.gethostname()}:{self.runtime.config['api.listen_port']}"

    def register(self, kind: Kind) -> None:
        self.kinds[kind.name] = kind

    # -- the database, from any thread -----------------------------------------------------------

    def recorded(self, update: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One database call on a connection of its own; a database that does not answer is logged, not raised:
        the operation the record describes goes on (and a record left RUNNING is failed by the sweep)."""
        try:
            self.runtime.ensure_schema()
            with self.runtime.database.connection_context():
                return update(*args, **kwargs)
        except (ApiError, *self.runtime.unavailable_errors) as exc:
            log.warning("task record not written (%s): %s", getattr(update, "__name__", "update"),
                        getattr(exc, "message", exc))
            return None

    def _create(self, kind_name: str, args: dict, status: str, total: int) -> str | None:
        kind = self.kinds[kind_name]
        record = self.recorded(self.runtime.tasks.create, kind.name, kind.plugin, kwargs=args, kind=kind.name,
                               state=RUNNING, status=status, worker=self.owner, total=total,
                               deadline=time.time() + kind.timeout())
        return None if record is None else record.id

    def follow(self, kind_name: str, args: dict, status: str, total: int = 1) -> str | None:
        """Record work that node daemons do after the caller's write, and follow it to its end.

        Returns the record's id, or None when the database did not answer (the caller answers as
        v0.6 did, only without a task).
        """
        task_id = self._create(kind_name, args, status, total)
        if task_id is not None:
            kind = self.kinds[kind_name]
            with self._lock:
                self._follows[task_id] = _Follow(kind, dict(args), time.time() + kind.timeout(), status)
            self._wake.set()
        return task_id

    def confirm(self, task_id: str | None) -> None:
        """A request that waited for followed work and saw it done: its record is looked at now, in the caller's
        thread, as the next turn would. A change made right after (an unmigrate after a migrate, a ready after
        a flush) would otherwise make that turn find the work superseded, and the record of a request answered
        200 a FAILURE."""
        if task_id is None:
            return
        with self._lock:
            follow = self._follows.get(task_id)
        if follow is not None:
            self.recorded(self._check, task_id, follow)

    def begin(self, kind_name: str, args: dict, status: str, total: int = 1) -> Handle:
        """Record work that runs here, in the caller's thread; the handle ends it."""
        handle = Handle(self, self._create(kind_name, args, status, total))
        if handle.id is not None:
            with self._lock:
                self._handles[handle.id] = handle
        return handle

    def run(self, kind_name: str, args: dict, status: str, work: Callable[[Handle], str],
            on_task: Callable[[str | None], None] | None = None, total: int = 1) -> str:
        """Run ``work`` in the caller's thread under a record (``begin``): its message ends the record as SUCCESS,
        its exception as FAILURE with the exception's message (a ``Cancelled`` one as cancelled), and the
        exception goes on to the request. ``on_task`` learns the record's id first (the X-Task-Id header)."""
        handle = self.begin(kind_name, args, status, total)
        if on_task is not None:
            on_task(handle.id)
        try:
            message = work(handle)
        except Cancelled as exc:
            handle.fail(getattr(exc, "task_status", None) or f"Cancelled: {exc.message}",
                        {"error": "cancelled", "cancelled": True})
            raise
        except BaseException as exc:
            handle.fail(getattr(exc, "task_status", None) or getattr(exc, "message", None)
                        or f"Failed: {type(exc).__name__}")
            raise
        handle.succeed(message)
        return message

    def release(self, task_id: str | None) -> None:
        with self._lock:
            self._handles.pop(task_id or "", None)

    def cancelled_here(self, task_id: str) -> None:
        """A cancel asked of this daemon: a task running here stops at its next step without waiting for the
        poll; a followed one is handled by the next turn of the thread, woken now."""
        with self._lock:
            handle = self._handles.get(task_id)
        if handle is not None:
            handle.cancelled.set()
        self._wake.set()

    # -- waiting ----------------------------------------------------------------------------------

    def wait(self, task_id: str, timeout: float) -> None:
        """Block until the record ends (as far as this process learns) or ``timeout`` passes."""
        event = threading.Event()
        limit = int(self._setting("max_waiters", 32))
        with self._lock:
            if self._waiting >= limit:
                raise ApiError(f"Too many requests are waiting on tasks already ({limit}, pvc.tasks.max_waiters); "
                               "poll GET /tasks/<task_id> or try again shortly", 429, headers={"Retry-After": "1"})
            self._waiting += 1
            self._waiters.setdefault(task_id, []).append(event)
        try:
            if not self._stopping.is_set():
                event.wait(timeout)
        finally:
            with self._lock:
                self._waiting -= 1
                events = self._waiters.get(task_id, [])
                if event in events:
                    events.remove(event)
                if not events:
                    self._waiters.pop(task_id, None)

    def _wake_waiters(self, task_id: str) -> None:
        with self._lock:
            events = list(self._waiters.get(task_id, ()))
        for event in events:
            event.set()

    def _ended_here(self, task_id: str) -> None:
        self._wake_waiters(task_id)

    # -- the thread ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="pvc-tasks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        with self._lock:
            events = [event for events in self._waiters.values() for event in events]
        for event in events:  # waiting requests answer now (the record as it is), not at their timeout
            event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        interval = self._setting("poll_interval", 0.25)
        while not self._stopping.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.runtime.ensure_schema()
                with self.runtime.database.connection_context():
                    self._turn()
            except Exception as exc:  # noqa: BLE001 - the thread outlives a database or ZooKeeper outage
                if time.monotonic() - self._last_error > 60:
                    self._last_error = time.monotonic()
                    log.warning("task monitor: %s (retrying every %g s)", getattr(exc, "message", exc) or
                                type(exc).__name__, interval)

    def _turn(self) -> None:
        if not self._resumed:
            self._resume()
        with self._lock:
            ids = set(self._waiters) | set(self._follows) | set(self._handles)
        rows: dict[str, Any] = {}
        listed = sorted(ids)
        for start in range(0, len(listed), CHUNK):
            for row in TaskRecord.select(TaskRecord.id, TaskRecord.state, TaskRecord.cancelled).where(
                    TaskRecord.id.in_(listed[start:start + CHUNK])):
                rows[row.id] = row
        for task_id in ids:
            row = rows.get(task_id)
            if row is None or row.state in ENDED:
                self._wake_waiters(task_id)
                with self._lock:
                    self._follows.pop(task_id, None)
                continue
            if row.cancelled is not None:
                with self._lock:
                    handle, follow = self._handles.get(task_id), self._follows.get(task_id)
                if handle is not None:
                    handle.cancelled.set()
                if follow is not None and not follow.cancelling and not follow.too_late:
                    self._cancel(task_id, follow)
        with self._lock:
            follows = list(self._follows.items())
        for task_id, follow in follows:
            self._check(task_id, follow)
        if time.monotonic() - self._last_beat >= self._setting("heartbeat", 10.0):
            self._last_beat = time.monotonic()
            self._heartbeat()

    def _check(self, task_id: str, follow: _Follow) -> None:
        tasks = self.runtime.tasks
        try:
            seen = follow.kind.check(follow.args)  # type: ignore[misc]
        except (ApiError, *self.runtime.unavailable_errors) as exc:
            seen = Observation(RUNNING, follow.status or f"Waiting: {getattr(exc, 'message', exc)}")
        if seen.state == RUNNING:
            if time.time() >= follow.deadline:
                timeout = follow.kind.timeout()
                tasks.fail(task_id, f"Not finished within {timeout:g} s ({follow.kind.setting}): {seen.status}; "
                                    "the node daemons may still finish it")
            elif seen.status != follow.status:
                follow.status = seen.status
                record = tasks.get(task_id)
                tasks.progress(task_id, record.current if seen.current is None else seen.current,
                               record.total if seen.total is None else seen.total, seen.status)
                return
            else:
                return
        elif follow.cancelling:
            if seen.state == SUCCESS:
                tasks.fail(task_id, f"Cancelled: {seen.status}", result={"error": "cancelled", "cancelled": True})
            else:
                tasks.fail(task_id, f"Cancelled, but the rollback did not finish: {seen.status}",
                           result={"error": seen.status, "cancelled": True})
        elif seen.state == SUCCESS:
            tasks.succeed(task_id, {"args": follow.args}, seen.status)
        else:
            tasks.fail(task_id, seen.status)
        with self._lock:
            self._follows.pop(task_id, None)

    def _cancel(self, task_id: str, follow: _Follow) -> None:
        tasks = self.runtime.tasks
        kind = follow.kind
        try:
            outcome = kind.cancel(follow.args) if kind.cancel is not None else None
        except (ApiError, *self.runtime.unavailable_errors) as exc:
            tasks.log(task_id, f"Cancel could not be applied yet: {getattr(exc, 'message', exc)}")
            return  # tried again at the next turn (the flag stays set)
        follow.cancelling = True
        if outcome is None:
            # the record still says a cancel was asked: its end says it came too late (``succeed``), as the
            # end of work run here does
            follow.cancelling, follow.too_late = False, True
            tasks.log(task_id, "Cancel came too late: the work is done or undone already")
            return
        args, line = outcome
        # the record keeps what was asked; what is followed now (the undo) is beside it, for a restart
        stored = {**follow.args, "_cancelling": True, UNDO: args}
        follow.args = {**args, "_cancelling": True}
        follow.deadline = time.time() + kind.timeout()
        follow.status = line
        TaskRecord.update(kwargs=json.dumps(stored), deadline=follow.deadline, status=line,
                          updated=time.time()).where(TaskRecord.id == task_id).execute()
        tasks.log(task_id, line)

    def _resume(self) -> None:
        """At start: this daemon's RUNNING records are followed again, or failed (with their undo) when
        their work ran in the process that ended."""
        tasks = self.runtime.tasks
        now = time.time()
        for row in TaskRecord.select().where((TaskRecord.state == RUNNING) & (TaskRecord.worker == self.owner)):
            kind = self.kinds.get(row.kind or "")
            args = json.loads(row.kwargs or "{}")
            if isinstance(args.get(UNDO), dict):  # cancelled: its undo is what is followed
                args = {**args[UNDO], "_cancelling": True}
            with self._lock:
                known = row.id in self._follows or row.id in self._handles
            if known:
                continue
            if kind is not None and kind.check is not None:
                follow = _Follow(kind, args, row.deadline or now + kind.timeout(), row.status,
                                 cancelling=bool(args.get("_cancelling")))
                with self._lock:
                    self._follows[row.id] = follow
                tasks.log(row.id, "Followed again after its daemon restarted")
                continue
            reason = "Interrupted: the API daemon that ran it stopped"
            if kind is not None and kind.recover is not None:
                try:
                    reason += f"; {kind.recover(args)}"
                except Exception as exc:  # noqa: BLE001 - the record must end either way
                    reason += f"; its undo failed: {getattr(exc, 'message', exc)}"
            tasks.fail(row.id, reason)
        self._resumed = True

    def _heartbeat(self) -> None:
        now = time.time()
        with self._lock:
            mine = sorted(set(self._follows) | set(self._handles))
        for start in range(0, len(mine), CHUNK):
            TaskRecord.update(heartbeat=now).where(TaskRecord.id.in_(mine[start:start + CHUNK])).execute()
        silent = now - ORPHAN_HEARTBEATS * self._setting("heartbeat", 10.0)
        orphans = TaskRecord.select().where(
            TaskRecord.state.in_((PENDING, RUNNING)) & TaskRecord.worker.startswith("api@")
            & (TaskRecord.worker != self.owner) & (TaskRecord.heartbeat < silent))
        for row in orphans:
            self.runtime.tasks.fail(row.id, f"Abandoned: {row.worker} stopped following it (no sign of it for "
                                            f"{now - row.heartbeat:.0f} s); the outcome is not known to this record")

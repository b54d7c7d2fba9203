"""The audit log: every mutating request, who made it and what came of it, kept in the database.

Every request with a method other than GET, HEAD and OPTIONS on a listener
with authenticated routes is recorded, refused ones too (401, 403, 404, 405,
a 400 of validation, a 503): its arrival time, the description of the token
or session (``anonymous`` when authentication is off, none when the request
presented no valid credential), remote address, method, route template
and path, parameters (``pvc_core.redaction``: secrets masked, large values
cut), status, request id and the id of a task it started.

An audit row must never cost a request its speed or its answer, so request
threads only add the row (a few bounded strings) to a bounded backlog once
the answer is sent; one writer thread inserts them in batches. When the
database does not answer, the writer keeps the backlog (``audit.backlog``
entries), logs that once, and retries with a growing pause; entries that
arrive while the backlog is full are dropped and counted, and the count is
logged when the database has taken the backlog. The same thread purges rows older than
``audit.retention_days`` at start and every ``audit.purge_interval``.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import cherrypy
import peewee

from .auth import OPEN
from .db import BaseModel
from .db import describe as describe_database
from .errors import ServiceUnavailable
from .redaction import shorten, storable, summarize
from .routes import Response, Route

log = logging.getLogger("pvc.audit")

# Requests that change nothing are not recorded.
UNAUDITED_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
ANONYMOUS = "anonymous"  # the token description recorded when authentication is off
BATCH = 500  # rows per transaction at most
# Seconds the writer waits after a transaction that emptied the backlog, so that entries arriving
# meanwhile share the next one: a commit per request cost a write-heavy daemon much of its throughput
# on a 2-core machine (bench/bench_audit.py).
COALESCE = 0.5
PATH_LIMIT = 2048  # characters of a recorded path
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between attempts while the database does not answer
STOP_WAIT = 10.0  # seconds a stop waits for the writer to write what is left
DAY = 86400.0
_UNREACHABLE = (peewee.OperationalError, peewee.InterfaceError, ServiceUnavailable)


class AuditEntry(BaseModel):
    id = peewee.BigAutoField()
    time = peewee.DoubleField(index=True)
    token = peewee.TextField(null=True)
    credential = peewee.CharField(max_length=16, null=True)
    remote = peewee.CharField(max_length=64)
    method = peewee.CharField(max_length=16)
    route = peewee.TextField(null=True)
    path = peewee.TextField()
    params = peewee.TextField(default="{}")
    status = peewee.IntegerField()
    request_id = peewee.CharField(max_length=32)
    task_id = peewee.CharField(max_length=64, null=True)

    class Meta:
        table_name = "pvc_audit"

    def as_dict(self) -> dict:
        return {"id": self.id, "time": self.time, "token": self.token, "credential": self.credential,
                "remote": self.remote, "method": self.method, "route": self.route, "path": self.path,
                "params": json.loads(self.params), "status": self.status, "request_id": self.request_id,
                "task_id": self.task_id}


MODELS = (AuditEntry,)
# The columns a row gives, in the order the writer inserts them.
COLUMNS = tuple(field.column_name for field in AuditEntry._meta.sorted_fields if field is not AuditEntry.id)
# The driver's exceptions as peewee's (OperationalError...), as its own queries raise them.
_AS_PEEWEE_ERRORS = peewee.ExceptionWrapper(peewee.EXCEPTIONS)


def answered_task_id(result: Any) -> str | None:
    """The ``task_id`` of a handler's JSON object answer (``POST /provisioner/create``), for a route that
    starts a task without setting ``ctx.task_id``."""
    body = result.body if isinstance(result, Response) else result
    value = body.get("task_id") if isinstance(body, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def row(started: float, credential: Any, remote: str, method: str, route: Route | None, path: str,
        values: dict[str, list[str]] | None, query_string: str, status: int, request_id: str,
        task_id: str | None, max_value_length: int) -> dict:
    """The database row of one request. ``values`` are its parsed parameters, or None when it was
    refused before they were read: then only its query string is known."""
    if credential is None:
        token, kind = None, None
    elif credential.kind == "none":
        token, kind = ANONYMOUS, "none"
    else:
        token, kind = credential.description, credential.kind
    if values is None:
        values = parse_qs(query_string, keep_blank_values=True, errors="replace") if query_string else {}
    secret = [name for param in route.params if param.secret for name in param.names] if route else []
    # the parameters are JSON with every non-ASCII character escaped: storable as they are
    return {"time": started, "token": token, "credential": kind, "remote": remote[:64],
            "method": storable(method[:16]), "route": route.path if route else None,
            "path": storable(shorten(path, PATH_LIMIT)),
            "params": json.dumps(summarize(values, secret, max_value_length)), "status": status,
            "request_id": request_id, "task_id": None if task_id is None else storable(task_id[:64])}


def purge(retention_days: float, now: float | None = None) -> int:
    """Forget the entries older than ``retention_days`` (0: none); the number forgotten."""
    if retention_days <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - retention_days * DAY
    return AuditEntry.delete().where(AuditEntry.time < cutoff).execute()


def query(since: float | None = None, until: float | None = None, token: str | None = None,
          method: str | None = None, route: str | None = None, path: str | None = None,
          status: int | None = None, request_id: str | None = None, task_id: str | None = None,
          limit: int = 100) -> list[AuditEntry]:
    """Entries matching every filter given, newest first; ``route`` and ``path`` are prefixes."""
    conditions = []
    if since is not None:
        conditions.append(AuditEntry.time >= since)
    if until is not None:
        conditions.append(AuditEntry.time <= until)
    for field, value in ((AuditEntry.token, token), (AuditEntry.method, method and method.upper()),
                         (AuditEntry.status, status), (AuditEntry.request_id, request_id),
                         (AuditEntry.task_id, task_id)):
        if value is not None:
            conditions.append(field == value)
    for field, prefix in ((AuditEntry.route, route), (AuditEntry.path, path)):
        if prefix:  # SUBSTR, not LIKE: "_" and "%" are plain characters here, and case counts
            conditions.append(peewee.fn.SUBSTR(field, 1, len(prefix)) == prefix)
    selection = AuditEntry.select()
    if conditions:
        selection = selection.where(*conditions)
    return list(selection.order_by(AuditEntry.time.desc(), AuditEntry.id.desc()).limit(limit))


class AuditLog:
    """The backlog and its writer thread; ``hook`` runs on request threads once the answer is sent."""

    def __init__(self, database: peewee.Database, ensure_schema: Any, auth: Any, backlog: int = 10000,
                 retention_days: float = 90, purge_interval: float = 3600.0, max_value_length: int = 1024,
                 listeners: Iterable[str] = ("main",)):
        self.database = database
        self.ensure_schema = ensure_schema
        self.auth = auth
        self.backlog = backlog
        self.retention_days = retention_days
        self.purge_interval = purge_interval
        self.max_value_length = max_value_length
        self.listeners = frozenset(listeners)
        self._items: collections.deque[dict] = collections.deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._dropped = 0
        self._thread: threading.Thread | None = None

    @classmethod
    def from_runtime(cls, runtime: Any) -> AuditLog | None:
        """The daemon's audit log (None when ``audit.enabled`` is false); every listener with an
        authenticated route is audited."""
        config = runtime.config
        if not config["audit.enabled"]:
            return None
        return cls(runtime.database, runtime.ensure_schema, runtime.auth, backlog=config["audit.backlog"],
                   retention_days=config["audit.retention_days"], purge_interval=config["audit.purge_interval"],
                   max_value_length=config["audit.max_value_length"],
                   listeners={route.listener for route in runtime.routes.routes if route.auth})

    # -- request threads ----------------------------------------------------------------------

    def attach(self, request: Any, listener: str) -> None:
        """Called by the dispatcher for every request: an audited one gets the two hooks below."""
        if request.method not in UNAUDITED_METHODS and listener in self.listeners:
            request.hooks.attach("before_handler", self.identify)
            request.hooks.attach("on_end_request", self.hook)

    def identify(self) -> None:
        """Who sent a request that was answered without authenticating it (a route without authentication,
        an unknown path or method): the credential it presented, if valid, taken before the handler runs
        (a logout ends its session). A session is checked as its authentication would check it (the watched
        revocation list); a check that fails leaves the entry without a name and the answer unchanged."""
        request = cherrypy.serving.request
        if getattr(request, "pvc_credential", None) is not None:
            return
        auth = self.auth
        if not auth.enabled:
            request.pvc_presented = OPEN
            return
        key = request.headers.get("X-Api-Key")
        entry = auth.token_entry(key) if key else None
        if entry is not None:
            request.pvc_presented = entry.credential
            return
        morsel = request.cookie.get("session")
        if morsel is not None:
            try:
                request.pvc_presented = auth.session_credential(morsel.value)
            except Exception:  # noqa: BLE001 - ZooKeeper away: no name, and no wait
                log.debug("the session of request %s could not be checked", request.pvc_request_id,
                          exc_info=True)

    def hook(self) -> None:
        """``on_end_request`` of an audited request (its answer is sent): its row, from what the dispatcher
        left on the request, queued. Built here, the row is bounded (``redaction``): a backlog of rows
        holds no request's 16 MB body."""
        request = cherrypy.serving.request
        elapsed = time.perf_counter() - request.pvc_started
        context = getattr(request, "pvc_context", None)
        self.record(row(
            time.time() - elapsed, getattr(request, "pvc_credential", None) or getattr(request, "pvc_presented", None),
            request.remote.ip or "", request.method, getattr(request, "pvc_route", None), request.path_info,
            getattr(request, "pvc_values", None), request.query_string or "",
            int(str(cherrypy.serving.response.status).split(" ", 1)[0]), request.pvc_request_id,
            None if context is None else context.task_id, self.max_value_length))

    def record(self, item: dict) -> None:
        """Queue one entry; when the backlog is full it is dropped (and counted), never waited for."""
        with self._condition:
            if len(self._items) >= self.backlog:
                self._dropped += 1
                first = self._dropped == 1
            else:
                self._items.append(item)
                self._condition.notify()
                return
        if first:
            log.warning("the backlog of %d entries is full; entries are dropped until the database takes it "
                        "(pvc.audit.backlog)", self.backlog)

    # -- the writer -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="pvc-audit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Write what is left (one attempt), then end the writer."""
        thread = self._thread
        if thread is None:
            return
        with self._condition:
            self._stopping = True
            self._condition.notify()
        thread.join(timeout=STOP_WAIT)
        self._thread = None
        if thread.is_alive():
            log.error("the writer did not finish within %g s; %d entries were not written", STOP_WAIT,
                      len(self._items))

    def _take(self, timeout: float | None) -> list[dict]:
        with self._condition:
            self._condition.wait_for(lambda: self._items or self._stopping, timeout)
            return [self._items.popleft() for _ in range(min(BATCH, len(self._items)))]

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` unless a stop comes first."""
        with self._condition:
            self._condition.wait_for(lambda: self._stopping, seconds)

    def _write(self, batch: list[dict]) -> None:
        """One transaction, on the writer's own connection, kept open between batches (opening a SQLite
        connection costs more than the insert); a failed one is closed, so the next attempt reconnects.
        The rows go straight to the driver (``executemany``; PostgreSQL: one multi-row statement): peewee's
        ``insert_many`` cost 56 µs of CPU per row, this 7."""
        self.ensure_schema()
        database = self.database
        quote = database.quote
        columns = ", ".join(f"{quote[0]}{name}{quote[1]}" for name in COLUMNS)
        table = f"{quote[0]}{AuditEntry._meta.table_name}{quote[1]}"
        values = [tuple(entry[name] for name in COLUMNS) for entry in batch]
        try:
            with database.atomic(), _AS_PEEWEE_ERRORS:
                cursor = database.cursor()
                if isinstance(database, peewee.PostgresqlDatabase):
                    from psycopg2.extras import execute_values
                    execute_values(cursor, f"INSERT INTO {table} ({columns}) VALUES %s", values, page_size=BATCH)
                else:
                    placeholders = ", ".join([database.param] * len(COLUMNS))
                    cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", values)
        except Exception:
            self._close()
            raise

    def _close(self) -> None:
        try:
            self.database.close()
        except Exception:  # noqa: BLE001 - a connection that is already broken
            log.debug("closing the writer's connection failed", exc_info=True)

    def _write_each(self, batch: list[dict]) -> None:
        for entry in batch:
            try:
                self._write([entry])
            except Exception:
                log.error("entry of request %s dropped: the database refused it", entry["request_id"], exc_info=True)

    def _purge(self) -> None:
        self.ensure_schema()
        try:
            forgotten = purge(self.retention_days)
        except Exception:
            self._close()
            raise
        if forgotten:
            log.info("forgot %d entries older than %g days (pvc.audit.retention_days)", forgotten,
                     self.retention_days)

    def _run(self) -> None:
        purging = self.retention_days > 0
        next_purge = time.monotonic()  # at start
        batch: list[dict] = []
        pause, unreachable = RETRY_FIRST, False
        while True:
            if not batch:
                batch = self._take(max(0.0, next_purge - time.monotonic()) if purging else None)
            stopping = self._stopping
            coalesce = 0 < len(batch) < BATCH and not stopping
            try:
                if batch:
                    self._write(batch)
                    batch = []
                if purging and time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + self.purge_interval
                    self._purge()
            except _UNREACHABLE as exc:
                if stopping:
                    log.error("%d entries were not written before the stop: the %s does not answer",
                              len(batch) + len(self._items), describe_database(self.database))
                    return
                if not unreachable:
                    unreachable = True
                    reason = exc.message if isinstance(exc, ServiceUnavailable) else _first_line(exc)
                    log.warning("the %s does not answer (%s); keeping up to %d entries until it does "
                                "(pvc.audit.backlog)", describe_database(self.database), reason, self.backlog)
                self._pause(pause)
                pause = min(pause * 2, RETRY_MAX)
                continue
            except Exception:
                # not the database's absence but a row or the purge (a bug): one by one, the others are kept
                log.exception("writing %d entries or purging old ones failed; writing them one by one", len(batch))
                self._write_each(batch)
                batch = []
            pause = RETRY_FIRST
            if (unreachable or self._dropped) and not self._items:  # caught up: the episode is over
                self._recovered(unreachable)
                unreachable = False
            if stopping and not self._items:
                self._close()
                return
            if coalesce:
                self._pause(COALESCE)

    def _recovered(self, unreachable: bool) -> None:
        with self._condition:
            dropped, self._dropped = self._dropped, 0
        if unreachable:
            log.warning("the %s answers again; entries dropped meanwhile (backlog full): %d",
                        describe_database(self.database), dropped)
        elif dropped:
            log.warning("%d entries were dropped while the backlog was full", dropped)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

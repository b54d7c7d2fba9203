"""``GET /audit``: the audit log, newest first, for admin tokens only.

Admin only because the log names every token's holder and what each did:
knowing who may do what, and when they did it, is the admins' business, as
the tokens themselves are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from . import audit
from .params import INTEGER, NUMBER, STRING, Param, ParamType
from .routes import ADMIN, Route
from .shapes import INT, NUM, STR, array, map_of, named, nullable, obj

LIMIT_MAX = 10000


def _parse_time(value: str) -> float:
    """Epoch seconds, or an ISO 8601 time (UTC unless it names its zone)."""
    try:
        return NUMBER.parse(value)
    except ValueError:
        pass
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except OverflowError:  # year 1 or 9999 shifted out of range by its zone
        raise ValueError(value) from None


TIME = ParamType("time", "epoch seconds or an ISO 8601 time (2024-06-11T12:00:00Z; UTC unless a zone is given)",
                 _parse_time, {"type": "string"})

ENTRY = named("AuditEntry", obj({
    "id": INT, "time": NUM, "token": nullable(STR),
    "credential": nullable({"type": "string", "enum": ["token", "session", "none"]}),
    "remote": STR, "method": STR, "route": nullable(STR), "path": STR,
    "params": map_of({"oneOf": [STR, array(STR)]}), "status": INT, "request_id": STR, "task_id": nullable(STR)}))

PARAMS = (
    Param("since", TIME, help="only entries of requests that arrived at or after this time"),
    Param("until", TIME, help="only entries of requests that arrived at or before this time"),
    Param("token", STRING, help="only requests made with the token (or a session of the token) of this "
                                "description; 'anonymous' when authentication is off"),
    Param("method", STRING, max_length=16, help="only requests of this method (POST, PUT, DELETE...)"),
    Param("route", STRING, help="only requests to a route whose template starts with this (/vm/<vm>, /vm)"),
    Param("path", STRING, help="only requests whose path starts with this (/api/v1/vm/web1)"),
    Param("status", INTEGER, minimum=100, maximum=599, help="only requests answered with this status"),
    Param("request_id", STRING, help="only the request of this id (its X-Request-Id)"),
    Param("task_id", STRING, help="only the request that started this task"),
    Param("limit", INTEGER, default=100, minimum=1, maximum=LIMIT_MAX, help="at most this many, newest first"),
)


def list_entries(ctx: Any, params: dict) -> list:
    ctx.runtime.ensure_schema()
    return [entry.as_dict() for entry in audit.query(**params)]


def routes() -> list[Route]:
    # admin: the log says who holds which token and everything each did with it
    return [Route("GET", "/audit", list_entries, PARAMS, tags=("core",), returns=array(ENTRY), scope=ADMIN,
                  summary="Audit log: every mutating request (refused ones too), newest first")]

"""The one log format of the API daemon, the worker (the Huey consumer) and every plugin.

An operator follows one request or one task across the access log, the
daemon's own lines, a plugin's lines and the worker's; before this each of
them wrote its own shape (the access log its own lines, the consumer Huey's
format, and the worker's own warnings reached stderr through Python's
last-resort handler with neither time nor level). Every record now has the
time, the level, the logger, the request id (in the API, taken from the
request being served) or the task id (in the worker, of the task running), and
the message, in one of two shapes (``pvc.log.format``):

* ``text``: one line per record,
  ``2026-01-02T03:04:05.678+00:00 INFO pvc.access: request_id=4f2a9c1e0b7d3a55 <message>``;
  the context is ``request_id=<id>``, ``task_id=<id>`` or ``-``. Control
  characters of the message and of an exception's traceback are escaped
  (``\\n``), so one record is always one line and no text a client sent can
  forge a line.
* ``json``: one JSON object per line with ``time``, ``level``, ``logger``,
  ``request_id`` or ``task_id`` (when there is one), ``message``, and
  ``exception`` (the traceback) when there is one; access lines add their
  fields (``remote``, ``method``, ``path``, ``status``, ``elapsed_ms``, ``who``).

The context is a ``ContextVar``: it follows the thread (or greenlet) serving
the request or running the task, and a ``contextvars.copy_context()`` hands it
to the threads doing the request's work.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import sys
from typing import Any, TextIO

FORMATS = ("text", "json")

# ("request_id", id) while a request is served, ("task_id", id) while a task runs; None otherwise.
_context: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("pvc_log_context", default=None)

_format = "text"

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def set_format(name: str) -> None:
    """Choose ``text`` or ``json`` for every line written from now on (this process)."""
    global _format
    if name not in FORMATS:
        raise ValueError(f"log format {name!r} is not one of {', '.join(FORMATS)}")
    _format = name


def current_format() -> str:
    return _format


def bind(key: str, value: str) -> None:
    """Make ``key`` (``request_id`` or ``task_id``) = ``value`` the context of this thread's lines."""
    _context.set((key, value))


def unbind() -> None:
    """End this thread's context: its next lines (between requests, between tasks) carry none."""
    _context.set(None)


def _time(created: float) -> str:
    return datetime.datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


def escape(text: str) -> str:
    """Control characters (newlines too; not tab) as ``\\n``/``\\x00``: one record stays one line."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def render(created: float, level: str, logger: str, ctx: tuple[str, str] | None, message: str,
           exception: str | None = None, extra: dict[str, Any] | None = None) -> str:
    """One record as one line (with its newline) in the format in force."""
    if _format == "json":
        document: dict[str, Any] = {"time": _time(created), "level": level, "logger": logger}
        if ctx is not None:
            document[ctx[0]] = ctx[1]
        document["message"] = message
        if exception:
            document["exception"] = exception
        if extra:
            document.update(extra)
        return json.dumps(document, default=str) + "\n"
    text = message if not exception else f"{message}\n{exception}"
    where = "-" if ctx is None else f"{ctx[0]}={ctx[1]}"
    return f"{_time(created)} {level} {logger}: {where} {escape(text)}\n"


class Formatter(logging.Formatter):
    """``logging``'s side: every handler of the process formats with this (``setup``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        exception = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            exception = record.exc_text
        if record.stack_info:
            exception = f"{exception}\n{record.stack_info}" if exception else record.stack_info
        return render(record.created, record.levelname, record.name, _context.get(), message,
                      exception).rstrip("\n")


def handler(stream: TextIO | None = None) -> logging.Handler:
    made = logging.StreamHandler(stream or sys.stdout)
    made.setFormatter(Formatter())
    return made


def setup(format_name: str, debug: bool, stream: TextIO | None = None) -> None:
    """The process's logging: one handler on the root logger, in ``format_name``, at INFO (DEBUG with
    ``debug``). Every logger (the daemon's, the plugins', kazoo's, Huey's) propagates to it."""
    set_format(format_name)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(stream))
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("pvc.zk.kazoo").setLevel(logging.WARNING)
    logging.getLogger("kazoo").setLevel(logging.WARNING)


def adopt_handlers(logger: logging.Logger) -> None:
    """Move the handlers another library set up on ``logger`` to the root logger, with this format.

    ``huey_consumer`` gives the ``huey`` logger a handler of its own (stderr,
    or the file of its ``-l``) in its own format after importing our module:
    its lines, and every other line of the worker, then go there in ours.
    """
    adopted = [old for old in logger.handlers if not isinstance(old.formatter, Formatter)]
    if not adopted:
        return
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for moved in adopted:
        logger.removeHandler(moved)
        moved.setFormatter(Formatter())
        root.addHandler(moved)
    logger.propagate = True

"""The access log: one line per request with its request id, written behind the request.

Formatting and writing a log line through ``logging`` on the request thread
cost about as much as the rest of a cheap request together, so request
threads only append a tuple to a queue; a writer thread formats the lines and
writes them in batches to stdout (the journal, under systemd), in the one log
format of ``pvc_core.logformat`` (logger ``pvc.access``, the request id as the
line's context). Paths are logged without their query strings, which can carry
a login token.

The last field names who made the request: the description of the token
(``pvc.api.authentication.tokens``, never the token itself), or
``session:<description>`` for a login session, or ``-`` when no credential
was needed or authentication is off. It is last because a description may
hold spaces: everything after the elapsed time is the name.
"""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from typing import TextIO

from . import logformat

_STOP = object()


class AccessLog:
    """Started and stopped with the server; ``record`` is safe from any thread."""

    def __init__(self, stream: TextIO | None = None, batch: int = 512):
        self.stream = stream or sys.stdout
        self.batch = batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def record(self, remote: str, request_id: str, method: str, path: str, status: object,
               elapsed_ms: float, who: str = "-") -> None:
        self._queue.put((time.time(), remote, request_id, method, path, status, elapsed_ms, who))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pvc-access-log", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in items)
            lines = [self._format(item) for item in items if item is not _STOP]
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):
                    pass  # a closed stdout must not take the daemon down
            if stop:
                return

    @staticmethod
    def _format(item: tuple) -> str:
        stamp, remote, request_id, method, path, status, elapsed, who = item
        code = str(status).split(" ", 1)[0]
        message = f'{remote} "{_printable(method)} {_printable(path)}" {code} {elapsed:.1f}ms {_printable(who)}'
        extra = None
        if logformat.current_format() == "json":
            extra = {"remote": remote, "method": method, "path": path,
                     "status": int(code) if code.isdigit() else code, "elapsed_ms": round(elapsed, 1), "who": who}
        return logformat.render(stamp, "INFO", "pvc.access", ("request_id", request_id), message, extra=extra)


def _printable(text: str) -> str:
    """A decoded path may hold %0a or NUL: escaped, a client cannot forge a line or binary-taint the log."""
    return _UNPRINTABLE.sub(lambda match: '\\"' if match.group() == '"'
                            else match.group().encode("unicode_escape").decode("ascii"), text)


_UNPRINTABLE = re.compile(r'[\x00-\x1f\x7f"\\]')

"""What a request carries, read as parameters: its query string, a form body, a JSON body.

CherryPy's own readers differ from what clients of v0.6 send in three ways
that lost data or crashed: form bodies were also split on ``;`` (cutting a
cloud-config's ``Content-Type`` line), a JSON body nested too deeply raised
RecursionError (a 500), and a body that could not be read as HTTP framed it
(bad chunking, shorter than its Content-Length) became a 500 followed by an
unrequested 400 on the same connection. Every failure here is an ApiError.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import cherrypy

from .connections import deadline_passed, timeout_message
from .errors import ApiError


class BodyUnreadable(ApiError):
    """The request body could not be read as HTTP frames it (bad chunking, shorter than its
    Content-Length): the rest of the connection cannot be trusted, so it is closed after the answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message, status, headers={"Connection": "close"})


def parse_query_string(request: Any) -> None:
    """Query string into ``request.params`` (400 when it is not UTF-8, CherryPy says 404)."""
    request.process_query_string = _nothing
    if not request.query_string:
        return
    try:
        parsed = parse_qs(request.query_string, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ApiError("Query string: expected UTF-8 text in percent-encoding", 400) from None
    _merge(request.params, parsed)


def _merge(params: dict, parsed: dict[str, list[str]]) -> None:
    """Add parsed values to CherryPy's params (a single value bare, several as a list)."""
    for key, values in parsed.items():
        existing = params.get(key)
        if existing is not None:
            values = (existing if isinstance(existing, list) else [existing]) + values
        params[key] = values if len(values) > 1 else values[0]


def _nothing() -> None:
    return None


def _process_urlencoded(entity: Any) -> None:
    """A form body split on ``&`` only (CherryPy also splits on ``;``, which cuts a
    cloud-config's ``Content-Type: text/cloud-config; charset=...`` line in two)."""
    raw = entity.fp.read()
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ApiError("Form body: expected UTF-8 text in percent-encoding", 400) from None
    entity.charset = "utf-8"
    _merge(entity.params, parsed)


class _BodyReader:
    """cheroot's body stream; what fails while reading it (chunk framing, a body shorter than its
    Content-Length that ends in the socket timeout, a reset) is a BodyUnreadable."""

    def __init__(self, fp: Any, length: str | None, clock: Any = None):
        self._fp = fp
        self._length = length
        self._clock = clock  # the socket reader whose deadline counts (connections.body_clock), if not this thread's

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)

    def _failed(self, exc: Exception) -> BodyUnreadable:
        if isinstance(exc, TimeoutError):
            phase = deadline_passed(self._clock)
            if phase:
                return BodyUnreadable(timeout_message(phase), 408)
            expected = (f"the {self._length} bytes of its Content-Length" if self._length is not None else
                        "the rest of its chunked transfer coding")
            return BodyUnreadable(f"Request body: expected {expected}, but it stopped arriving (socket timeout)")
        if isinstance(exc, ValueError):
            return BodyUnreadable(f"Request body: expected valid chunked transfer coding, got: {exc}")
        return BodyUnreadable(f"Request body: the connection failed while it was read ({exc or type(exc).__name__})")

    def read(self, *args: Any) -> bytes:
        try:
            return self._fp.read(*args)
        except (ValueError, OSError) as exc:
            raise self._failed(exc) from None

    def readline(self, *args: Any) -> bytes:
        try:
            return self._fp.readline(*args)
        except (ValueError, OSError) as exc:
            raise self._failed(exc) from None

    def read_trailer_lines(self) -> Any:
        try:
            yield from self._fp.read_trailer_lines()
        except (ValueError, OSError) as exc:
            raise self._failed(exc) from None


def process_body(request: Any) -> None:
    request.body.fp = _BodyReader(request.body.fp, request.headers.get("Content-Length"))
    request.body.processors["application/x-www-form-urlencoded"] = _process_urlencoded
    try:
        request.body.process()
    except cherrypy.HTTPError:
        raise
    except (ValueError, UnicodeDecodeError, LookupError, IndexError) as exc:
        media = request.headers.get("Content-Type", "unknown")
        raise ApiError(f"Request body: could not parse it as {media} ({type(exc).__name__})", 400) from None


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def read_json(request: Any) -> Any:
    raw = request.body.read()
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw)
        # JSON's "\ud800" escapes decode to lone surrogates, text no UTF-8 store (ZooKeeper,
        # PostgreSQL) can hold: refused here like invalid UTF-8 in a query string.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError("JSON body: expected text without lone UTF-16 surrogates (\\ud800-\\udfff escapes)",
                       400) from None
    except ValueError as exc:
        raise ApiError(f"JSON body: could not parse it ({exc}); expected a JSON object", 400) from None
    except RecursionError:
        raise ApiError("JSON body: nested too deeply; expected an object of parameter names to values",
                       400) from None
    return document


def plain(params: dict) -> dict:
    """CherryPy gives multipart fields as Part objects; parameters are text."""
    out = {}
    for key, value in params.items():
        items = value if isinstance(value, list) else [value]
        out[key] = [item.fullvalue() if hasattr(item, "fullvalue") else item for item in items]
    return out

"""The route table: the single source for dispatch, validation and OpenAPI.

Plugins return ``Route`` objects from their ``pvc_routes`` hook; the table
indexes them per listener for matching. Static paths are one dict lookup;
templated paths are tried only among templates with the same number of
segments, so matching cost does not grow with the number of plugins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .auth import SCOPES
from .errors import ApiError, MethodNotAllowed, NotFound
from .params import Param

API_PREFIX = "/api/v1"
MAIN_LISTENER = "main"
NOT_FOUND_MESSAGE = ("The requested URL was not found on the server. If you entered the URL "
                     "manually please check your spelling and try again.")
METHOD_NOT_ALLOWED_MESSAGE = "The method is not allowed for the requested URL."
# Methods whose routes need only the read scope unless they declare another (``Route.scope``).
READ_METHODS = ("GET", "HEAD")
# ``Route.scope`` of a route that changes the cluster's foundations or its access.
ADMIN = "admin"


@dataclass(frozen=True)
class Header:
    """A response header of a route: on its success answer, and on the error answers ``errors`` lists."""

    description: str
    errors: tuple[int, ...] = ()


@dataclass
class Route:
    """One method on one path template, e.g. ``GET /vm/<vm>``.

    ``path`` is relative to ``/api/v1`` for the main listener and absolute
    for other listeners. ``handler(ctx, params, **path_vars)`` returns a
    JSON-serialisable value (or a ``Response``); ``ctx`` is the request
    context with the runtime on it. ``aliases`` are extra path templates that
    lead to the same route (the seeds' spellings).

    What it answers is declared here too, for the OpenAPI document and the
    test suite's contract check: ``status`` and ``media_type`` of success,
    ``returns`` the JSON schema of that body (see ``pvc_core.shapes``), and
    ``responses`` the other statuses it can give beyond the generic ones
    (400, 401, 404, 413, 503 are derived from params, auth, path variables
    and method): a text is the description of a ``{"message"}`` body, a dict
    a whole OpenAPI response object.

    ``scope`` is what a token (or a session) must hold to use an
    authenticated route: ``read`` < ``write`` < ``admin``. Left empty it is
    derived from the method: GET and HEAD read, every other method writes.
    A route that changes the cluster's foundations or who may do what
    declares ``admin`` (``ADMIN``): creating the cluster, maintenance mode,
    coordinator roles, Ceph's OSDs, flags and pools, and the provisioner's
    scripts, which the worker runs as root. ``auth=False`` routes ignore it.

    ``headers`` are the headers a success answer may carry beyond the
    generic ones (``X-Task-Id`` of a route that starts a task); a ``Header``
    also names the error statuses that may carry it (the task's header is
    sent on an error answered after its record began).
    ``etag`` (``pvc_core.etags``): on a GET, the handler sets the object's
    ``ETag`` (``ctx.response_headers``) and ``If-None-Match`` may answer 304;
    on a change, ``If-Match`` is parsed into ``ctx.if_match`` for the handler
    to check inside its write (412 when it does not hold). The document
    declares the headers and statuses from this one flag.
    """

    method: str
    path: str
    handler: Callable[..., Any]
    params: tuple[Param, ...] = ()
    summary: str = ""
    auth: bool = True
    listener: str = MAIN_LISTENER
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    plugin: str = ""
    responses: dict[int, str | dict] = field(default_factory=dict)
    status: int = 200
    media_type: str = "application/json"
    returns: dict | None = None
    scope: str = ""
    # A JSON body is the request's document (``ctx.document``, e.g. a cluster backup), not parameters.
    json_document: bool = False
    headers: dict[str, str | Header] = field(default_factory=dict)  # response headers: name -> description
    etag: bool = False
    # The body is data handed to the handler as it arrives (``ctx.body``, a ``pvc_core.stream.StreamedBody``;
    # a disk image of many GB), never read whole: ``api.max_body_size`` does not apply (the handler bounds
    # it, e.g. by the volume's size), parameters come from the query string only, and the body must keep
    # arriving: each piece within ``api.body_timeout``.
    stream_body: bool = False

    def __post_init__(self) -> None:
        if not self.scope:
            self.scope = "read" if self.method.upper() in READ_METHODS else "write"
        if self.scope not in SCOPES:
            raise ValueError(f"route {self.method} {self.path}: scope {self.scope!r} is not one of "
                             f"{', '.join(SCOPES)}")

    def full_paths(self) -> list[str]:
        prefix = API_PREFIX if self.listener == MAIN_LISTENER else ""
        return [prefix + template for template in (self.path, *self.aliases)]


@dataclass
class _Template:
    segments: tuple[str, ...]
    variables: tuple[tuple[int, str], ...]
    methods: dict[str, Route]


def _split(template: str) -> tuple[str, ...]:
    return tuple(template.split("/"))


class RouteTable:
    """All routes of one daemon, indexed for matching per listener."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._static: dict[tuple[str, str], dict[str, Route]] = {}
        self._templates: dict[tuple[str, int], list[_Template]] = {}

    def add(self, route: Route) -> None:
        route.method = route.method.upper()
        for full in route.full_paths():
            methods = self._methods_for(route.listener, full)
            if route.method in methods:
                other = methods[route.method]
                raise ValueError(f"route {route.method} {full} declared twice "
                                 f"(plugins {other.plugin or 'core'!r} and {route.plugin or 'core'!r})")
            methods[route.method] = route
        self.routes.append(route)

    def _methods_for(self, listener: str, full: str) -> dict[str, Route]:
        if "<" not in full:
            return self._static.setdefault((listener, full), {})
        segments = _split(full)
        bucket = self._templates.setdefault((listener, len(segments)), [])
        for existing in bucket:
            if existing.segments == segments:
                return existing.methods
        variables = tuple((index, seg[1:-1]) for index, seg in enumerate(segments)
                          if seg.startswith("<") and seg.endswith(">"))
        template = _Template(segments, variables, {})
        bucket.append(template)
        return template.methods

    def lookup(self, listener: str, path: str) -> tuple[dict[str, Route], dict[str, str]] | None:
        """The methods served at ``path`` and its path variables, or None.

        ``path`` is the WSGI PATH_INFO, already percent-decoded by the server.
        """
        methods = self._static.get((listener, path))
        if methods is not None:
            return methods, {}
        segments = _split(path)
        for template in self._templates.get((listener, len(segments)), ()):
            variables = {}
            for index, expected in enumerate(template.segments):
                actual = segments[index]
                if expected.startswith("<"):
                    if not actual:
                        break
                    variables[expected[1:-1]] = actual
                elif expected != actual:
                    break
            else:
                return template.methods, variables
        return None

    def match(self, listener: str, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """Resolve a request; 404 for an unknown path, 405 (with Allow) for a wrong method."""
        found = self.lookup(listener, path)
        if found is None:
            raise NotFound(NOT_FOUND_MESSAGE)
        methods, variables = found
        route = methods.get(method)
        if route is None and method == "HEAD":
            route = methods.get("GET")
        if route is None:
            raise MethodNotAllowed(METHOD_NOT_ALLOWED_MESSAGE, headers={"Allow": allow_header(methods)})
        return route, variables

    def for_listener(self, listener: str) -> list[Route]:
        return [route for route in self.routes if route.listener == listener]

    def listeners(self) -> set[str]:
        return {route.listener for route in self.routes}


def allow_header(methods: dict[str, Route]) -> str:
    allowed = set(methods)
    if "GET" in allowed:
        allowed.add("HEAD")
    allowed.add("OPTIONS")
    return ", ".join(sorted(allowed))


class Response:
    """A handler result that needs a status or headers other than 200 JSON."""

    def __init__(self, body: Any = None, status: int = 200, headers: dict | None = None,
                 raw: bytes | None = None, content_type: str | None = None):
        self.body = body
        self.status = status
        self.headers = headers or {}
        self.raw = raw
        self.content_type = content_type


def quoted(text: str) -> str:
    """v0.6 rewrote every double quote of a mutation's message to a single quote (api-general.md §2.3)."""
    return text.replace('"', "'")


# ``Route.responses`` of a route whose write can meet a concurrent change or a busy object.
CONFLICT = {409: "Conflict with the object's current state or a concurrent change"}
# ``Route.responses`` of a list that answers 404 when nothing matches (v0.6).
NO_MATCH = {404: "Nothing matched (v0.6 answers an empty list with 404)"}


def collapse(items: list) -> Any:
    """v0.6 single-element collapse: a list of one element is answered as that element."""
    return items[0] if len(items) == 1 else items


class Encoded(bytes):
    """A JSON answer already serialized (with ``encode_json``): the server sends it as it is."""


def encode_json(value: Any) -> bytes:
    """The bytes the server would send for ``value`` (without debug indentation or the final newline)."""
    return json.dumps(value).encode("utf-8")


class EncodedArray:
    """A JSON array of serialized elements, sent in pieces of about 256 KB made as the socket takes them.

    A 10,000-VM list is ~20 MB. Joined whole, it was copied several times over and then
    again by cheroot's writer for every partial send; made whole at all, eight concurrent
    lists left their blocks in per-thread heaps (RSS +40 % and not given back). Pieces made
    lazily copy each byte once and keep one piece per request alive; 16 KB pieces (cheroot's
    own write size) cost a 1,000-VM list 30 % more writes' overhead than 256 KB ones.
    """

    PIECE_BYTES = 256 * 1024

    def __init__(self, parts: list[bytes]):
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts) + 2 * (len(self.parts) - 1) + 2

    def pieces(self) -> Iterator[bytes]:
        batch, size = [b"["], 1
        for index, part in enumerate(self.parts):
            if index:
                batch.append(b", ")
            batch.append(part)
            size += len(part) + 2
            if size >= self.PIECE_BYTES:
                yield b"".join(batch)
                batch, size = [], 0
        batch.append(b"]")
        yield b"".join(batch)

    def joined(self) -> bytes:
        return b"".join(self.pieces())


def collapse_encoded(parts: list[bytes]) -> Encoded | EncodedArray:
    """``collapse`` for serialized elements: one is answered as itself, several as a JSON array."""
    return Encoded(parts[0]) if len(parts) == 1 else EncodedArray(parts)


__all__ = ["ADMIN", "API_PREFIX", "ApiError", "CONFLICT", "MAIN_LISTENER", "NO_MATCH", "Encoded", "EncodedArray",
           "READ_METHODS", "Response", "Route", "RouteTable", "collapse", "collapse_encoded", "encode_json", "quoted"]

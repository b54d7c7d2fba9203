"""The HTTP side: CherryPy configuration, the route-table dispatcher, JSON rendering.

CherryPy runs in production mode with one custom dispatcher for the whole
tree. The dispatcher resolves the route and checks authentication before the
request body is read (so an unauthenticated or unknown request never has its
body processed), then hands CherryPy a handler that parses the declared
parameters, calls the plugin's handler and renders JSON. Every error path,
including CherryPy's own (bad request line aside, which cheroot answers),
ends as ``{"message": ...}``; a 500 also carries the request id that the
log line has.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import cherrypy
from cherrypy.process.plugins import SimplePlugin

from . import connections, deadlines, etags, health, logformat
from .accesslog import AccessLog
from .audit import AuditLog, answered_task_id
from .auth import forbidden, scope_allows
from .body import BodyUnreadable, is_json, parse_query_string, plain, process_body, read_json
from .connections import close_connection
from .errors import ApiError, PayloadTooLarge, PluginError, ServiceUnavailable
from .params import ignored_names, json_to_multidict, merge_sources, parse_params
from .routes import API_PREFIX, MAIN_LISTENER, Encoded, EncodedArray, Response, Route, allow_header
from .stream import StreamedBody

log = logging.getLogger("pvc.api")

REQUEST_ID_HEADER = "X-Request-Id"
IGNORED_HEADER = "X-Pvc-Ignored-Parameters"
_CONTROL = re.compile("[\x00-\x1f\x7f]")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE", "GET")


SERVER_INSTANCE = f"{connections.__name__}.WSGIServer"


class RequestContext:
    """What a handler gets besides its parameters: the runtime and the request.

    ``task_id``: a handler that starts a task sets it, for the audit log.
    """

    __slots__ = ("runtime", "request", "request_id", "listener", "response_headers", "document", "task_id",
                 "if_match", "body")

    def __init__(self, runtime: Any, request: Any, request_id: str, listener: str):
        self.runtime = runtime
        self.request = request
        self.request_id = request_id
        self.listener = listener
        self.response_headers: dict[str, str] = {}
        self.document: Any = None  # the JSON body of a ``Route.json_document`` route
        self.task_id: str | None = None  # the task record a long route made (pvc_core.taskroutes.announce)
        self.if_match: etags.Precondition | None = None  # a change's If-Match (routes with ``etag``)
        self.body: StreamedBody | None = None  # the body of a ``Route.stream_body`` route, unread

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    def cookie(self, name: str) -> str | None:
        morsel = self.request.cookie.get(name)
        return None if morsel is None else morsel.value

    @property
    def remote_address(self) -> str:
        return self.request.remote.ip

    def service(self, name: str, required: bool = True) -> Any:
        return self.runtime.service(name, required=required)


class Dispatcher:
    """CherryPy ``request.dispatch``: route table lookup, auth, then a bound handler."""

    def __init__(self, runtime: Any, listener_ports: dict[int, str]):
        self.runtime = runtime
        self.table = runtime.routes
        self.auth = runtime.auth
        self.listener_ports = listener_ports
        self.unavailable = runtime.unavailable_errors
        # CherryPy's own dispatcher merges global and app config per request;
        # ours has one config for the whole tree, merged once.
        self.request_config = dict(cherrypy.config)
        self.reconfigure(runtime.config)
        self.access_log = AccessLog() if runtime.config["api.access_log"] else None
        self.metrics = runtime.metrics  # None unless pvc.metrics.enabled
        self.audit_log = AuditLog.from_runtime(runtime)

    def reconfigure(self, config: Any) -> None:
        """What a reload (SIGHUP) may change here: the body limit and the JSON indentation."""
        self.max_body = config["api.max_body_size"]
        self.request_config = {**self.request_config, "request.body.maxbytes": self.max_body}
        self.indent = 4 if config["debug"] else None

    def __call__(self, path_info: str) -> None:
        request = cherrypy.serving.request
        request.config = self.request_config
        request_id = secrets.token_hex(8)
        request.pvc_started = time.perf_counter()
        request.pvc_request_id = request_id
        request.pvc_credential = None  # set when an authenticated route is asked for
        request.pvc_route = None  # the route that matched, for the metrics
        logformat.bind("request_id", request_id)  # every line logged for this request carries it
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        request.hooks.attach("on_end_request", self._ended)
        cherrypy.serving.response.headers[REQUEST_ID_HEADER] = request_id
        listener = self.listener_ports.get(request.local.port, MAIN_LISTENER)
        if self.audit_log is not None:
            self.audit_log.attach(request, listener)  # its hooks read the pvc_* attributes set below
        request.process_request_body = False
        try:
            if path_info == API_PREFIX and listener == MAIN_LISTENER:
                request.handler = partial(self._redirect, API_PREFIX + "/")
                return
            route, variables = self.table.match(listener, request.method, path_info)
            request.pvc_route = route
            if request.method == "OPTIONS":
                request.handler = partial(self._options, path_info, listener)
                return
            if route.auth:
                morsel = request.cookie.get("session")
                credential = self.auth.check(None if morsel is None else morsel.value,
                                             request.headers.get("X-Api-Key"))
                request.pvc_credential = credential
                # Before the parameters and the body, like the 401: a refused caller learns nothing more.
                if not scope_allows(credential.scope, route.scope):
                    raise forbidden(credential, route.scope, f"{route.method} {route.full_paths()[0]}")
            for name, value in variables.items():
                if _CONTROL.search(value):
                    raise ApiError(f"Path segment <{name}>: expected a name without control characters "
                                   "or NUL bytes", 400)
            length = request.headers.get("Content-Length")
            has_body = False
            if length is not None:
                if not (length.isascii() and length.isdigit()):
                    raise ApiError("Content-Length: expected a non-negative integer", 400)
                if int(length) > self.max_body and not route.stream_body:
                    raise PayloadTooLarge(
                        f"Request body of {length} bytes exceeds the limit of {self.max_body} bytes "
                        "(pvc.api.max_body_size)", headers={"Connection": "close"})
                has_body = int(length) > 0
            elif "Transfer-Encoding" in request.headers:
                has_body = True
            parse_query_string(request)
            request.pvc_context = RequestContext(self.runtime, request, request_id, listener)
            request.handler = partial(self._invoke, route, variables, has_body, request.pvc_context)
        except ApiError as exc:
            if exc.status == 405 and request.method == "OPTIONS":
                request.handler = partial(self._options, path_info, listener)
                return
            if "Transfer-Encoding" in request.headers:
                # a chunked body is never read now, and cheroot does not skip it: the
                # connection goes, or its chunks would be parsed as the next request
                exc.headers = {**exc.headers, "Connection": "close"}
            request.handler = partial(self._error, exc)

    def _ended(self) -> None:
        """After the answer was sent (CherryPy's ``on_end_request``): the access line, the request's
        metrics, and the end of its log context."""
        request = cherrypy.serving.request
        elapsed = time.perf_counter() - request.pvc_started
        status = cherrypy.serving.response.status
        if self.access_log is not None:
            credential = getattr(request, "pvc_credential", None)
            self.access_log.record(request.remote.ip, request.pvc_request_id, request.method, request.path_info,
                                   status, elapsed * 1000, "-" if credential is None else credential.label)
        if self.metrics is not None:
            self.metrics.request_ended(request.method, request.pvc_route, status, elapsed)
        logformat.unbind()

    # -- handlers CherryPy calls --------------------------------------------------------

    def _invoke(self, route: Route, variables: dict, has_body: bool, ctx: RequestContext) -> bytes:
        request = ctx.request
        try:
            sources = [request.params]
            if route.stream_body:
                # handed to the handler as it arrives, never read here
                ctx.body = StreamedBody(request) if has_body else None
                if ctx.body is not None:
                    ctx.body.require_unencoded()
            elif has_body:
                # Read here rather than in CherryPy's stage so that a malformed
                # body becomes a 400 like any other bad input.
                process_body(request)
                if is_json(request.headers.get("Content-Type", "")):
                    if route.json_document:
                        ctx.document = read_json(request)
                    else:
                        sources.append(json_to_multidict(read_json(request)))
                else:
                    # a body of a type CherryPy has no processor for (text/plain...) is left unread, and
                    # cheroot drains it only after the answer: one that stops arriving then ends the
                    # connection without the answer. Read (and dropped) here, like any other body.
                    request.body.read()
                connections.end_of_body()
            values = request.pvc_values = merge_sources(*(plain(source) for source in sources))
            ignored = ignored_names(route.params, values)
            if ignored:
                # v0.6 ignored unknown arguments silently; they are still accepted, but said
                # (on errors too: a misspelt option is the likeliest cause of one).
                cherrypy.serving.response.headers[IGNORED_HEADER] = ", ".join(ignored)
            params = parse_params(route.params, values)
            ctx.if_match = etags.if_match(route, request.headers)
            with deadlines.request():
                result = route.handler(ctx, params, **variables)
            ctx.task_id = ctx.task_id or answered_task_id(result)
        except ApiError as exc:
            if isinstance(exc, BodyUnreadable):  # the client's fault, often a client gone: one line
                log.warning("request %s: %s %s: %s", ctx.request_id, route.method, request.path_info, exc.message)
            if ctx.task_id is not None:  # a task that began and then failed is named on the error too
                cherrypy.serving.response.headers.update(ctx.response_headers)
            return self._error(exc)
        except self.unavailable as exc:
            if ctx.task_id is not None:
                cherrypy.serving.response.headers.update(ctx.response_headers)
            return self._error(ServiceUnavailable(self.runtime.describe_unavailable(exc)))
        except cherrypy.HTTPError as exc:
            if exc.code == 413:
                return self._error(PayloadTooLarge(
                    f"Request body exceeds the limit of {self.max_body} bytes (pvc.api.max_body_size)",
                    headers={"Connection": "close"}))
            return self._error(ApiError(html.unescape(exc._message or exc.reason), exc.code))
        except Exception:
            log.exception("request %s: unhandled error in %s %s", ctx.request_id, route.method, route.path)
            return internal_error_body(ctx.request_id)
        finally:
            if ctx.body is not None:
                ctx.body.finish()
        if ctx.if_match is not None and not ctx.if_match.checked:
            log.error("request %s: %s %s declares etag but its handler never checked If-Match (a bug of its "
                      "plugin: the change was made unconditionally)", ctx.request_id, route.method, route.path)
        headers = cherrypy.serving.response.headers
        headers.update(ctx.response_headers)
        if route.etag and etags.not_modified(request.headers, ctx.response_headers.get(etags.HEADER)):
            cherrypy.serving.response.status = 304
            return b""
        if isinstance(result, Response):
            cherrypy.serving.response.status = result.status
            headers.update(result.headers)
            if result.raw is not None:
                headers["Content-Type"] = result.content_type or "application/octet-stream"
                return result.raw
            result = result.body
        headers["Content-Type"] = "application/json"
        return self.render(result)

    def render(self, body: Any) -> bytes | Iterator[bytes]:
        if isinstance(body, EncodedArray):
            if self.indent is None:
                # With Content-Length set, CherryPy sends the pieces as they come, never joined.
                cherrypy.serving.response.headers["Content-Length"] = str(len(body) + 1)
                return itertools.chain(body.pieces(), (b"\n",))
            body = json.loads(body.joined())
        elif isinstance(body, Encoded):
            if self.indent is None:
                return body + b"\n"
            body = json.loads(body)
        return (json.dumps(body, indent=self.indent) + "\n").encode("utf-8")

    def _error(self, exc: ApiError) -> bytes:
        response = cherrypy.serving.response
        response.status = exc.status
        response.headers.update(exc.headers)
        if exc.headers.get("Connection", "").lower() == "close":
            close_connection()
        response.headers["Content-Type"] = "application/json"
        return self.render({"message": exc.message})

    def _redirect(self, target: str) -> bytes:
        response = cherrypy.serving.response
        response.status = 301
        # A relative reference (RFC 7231 §7.1.2): the client's Host header is never echoed back.
        response.headers["Location"] = target
        response.headers["Content-Type"] = "application/json"
        return self.render({"message": f"Moved permanently to {target}"})

    def _options(self, path_info: str, listener: str) -> bytes:
        found = self.table.lookup(listener, path_info)
        response = cherrypy.serving.response
        response.headers["Allow"] = allow_header(found[0] if found else {})
        response.headers["Content-Type"] = "application/json"
        response.status = 200
        return b""


def internal_error_body(request_id: str) -> bytes:
    response = cherrypy.serving.response
    response.status = 500
    response.headers["Content-Type"] = "application/json"
    return (json.dumps({"message": f"Internal Server Error (request id {request_id})",
                        "request_id": request_id}) + "\n").encode()


def _json_error_page(status: str, message: str, traceback: str, version: str) -> bytes:
    """CherryPy's own errors (bad query string, 411, 413 while reading...) as JSON."""
    response = cherrypy.serving.response
    response.headers["Content-Type"] = "application/json"
    code = int(str(status).split(" ", 1)[0])
    if code == 413:
        response.headers["Connection"] = "close"
    return (json.dumps({"message": html.unescape(message or status)}) + "\n").encode()


def _json_internal_error() -> None:
    request = cherrypy.serving.request
    request_id = getattr(request, "pvc_request_id", "-")
    log.error("request %s: unhandled error", request_id, exc_info=True)
    cherrypy.serving.response.body = internal_error_body(request_id)


class RuntimePlugin(SimplePlugin):
    """Starts the runtime (ZooKeeper, database, plugins) before the servers and stops it after."""

    def __init__(self, bus: Any, runtime: Any):
        super().__init__(bus)
        self.runtime = runtime

    def start(self) -> None:
        try:
            self.runtime.start()
        except PluginError as exc:
            # A plugin that must not run here (simnode on a real cluster) says why in one line; the
            # engine then stops without serving and the process exits non-zero.
            log.error("ERROR: Failed to start plugins: %s", exc)
            self.runtime.stop()
            raise SystemExit(1) from None

    start.priority = 40

    def stop(self) -> None:
        self.runtime.stop()

    stop.priority = 60


def configure(runtime: Any) -> dict[int, str]:
    """Set CherryPy's global config and servers; returns port -> listener name."""
    config = runtime.config
    ssl_on = config["api.ssl.enabled"]
    connections.LIMITS = connections.limits(config)
    cherrypy.config.update({
        "environment": "production",
        "engine.autoreload.on": False,
        "checker.on": False,
        "log.screen": False,
        "log.access_file": "",
        "log.error_file": "",
        "request.show_tracebacks": False,
        "request.show_mismatched_params": False,
        "request.methods_with_bodies": BODY_METHODS,
        "request.body.maxbytes": config["api.max_body_size"],
        "request.error_response": _json_internal_error,
        "error_page.default": _json_error_page,
        "tools.encode.on": False,
        "tools.trailing_slash.on": False,
        "server.socket_host": config["api.listen_address"],
        "server.socket_port": config["api.listen_port"],
        "server.thread_pool": config["api.threads"],
        "server.thread_pool_max": max(config["api.threads"], config["api.threads_max"]),
        "server.socket_queue_size": config["api.backlog"],
        "server.socket_timeout": config["api.socket_timeout"],
        "server.max_request_body_size": 0,
        "server.shutdown_timeout": 5,
        "server.instance": SERVER_INSTANCE,
    })
    # An error found before CherryPy applies any configuration to a request (a missing Host
    # header, found while the headers are processed) used the Request class's own defaults: an
    # HTML page with a traceback.
    request_class = cherrypy._cprequest.Request
    request_class.show_tracebacks = False
    request_class.show_mismatched_params = False
    request_class.error_page = {"default": _json_error_page}
    request_class.error_response = staticmethod(_json_internal_error)
    if ssl_on:
        cherrypy.config.update({
            "server.ssl_module": "pvc",  # connections.LazyTLSAdapter
            "server.ssl_certificate": config["api.ssl.cert_file"],
            "server.ssl_private_key": config["api.ssl.key_file"],
        })
    ports = {config["api.listen_port"]: MAIN_LISTENER}
    for name, (address, port) in runtime.listeners.items():
        server = cherrypy._cpserver.Server()
        server.socket_host = address
        server.socket_port = port
        server.thread_pool = config["api.threads"]
        server.thread_pool_max = max(config["api.threads"], config["api.threads_max"])
        server.socket_queue_size = config["api.backlog"]
        server.socket_timeout = config["api.socket_timeout"]
        server.max_request_body_size = 0
        server.instance = SERVER_INSTANCE
        PluginListener(cherrypy.engine, name, server, config["api.listener_retry"]).subscribe()
        ports[port] = name
    return ports


class PluginListener(SimplePlugin):
    """A plugin's own server, started when its address can be bound, retried until then.

    CherryPy ends the whole process when a server cannot bind; a plugin's
    listener (the metadata API's well-known address, which only the primary
    coordinator holds) must not take the cluster API down with it.
    """

    def __init__(self, bus: Any, name: str, server: Any, retry: float = 10.0):
        super().__init__(bus)
        self.name = name
        self.server = server
        self.retry = retry
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        if not self._try_start(first=True):
            self._thread = threading.Thread(target=self._retry, name=f"pvc-listener-{self.name}", daemon=True)
            self._thread.start()

    start.priority = 75

    def _bindable(self) -> str | None:
        family = socket.AF_INET6 if ":" in self.server.socket_host else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((self.server.socket_host, self.server.socket_port))
            return None
        except OSError as exc:
            return exc.strerror or str(exc)
        finally:
            probe.close()

    def _try_start(self, first: bool = False) -> bool:
        problem = self._bindable()
        if problem is None:
            self.server.start()
            log.info("listener %s serving at %s:%s", self.name, self.server.socket_host, self.server.socket_port)
            return True
        if first:
            log.warning("listener %s cannot bind %s:%s yet (%s); retrying every %g s", self.name,
                        self.server.socket_host, self.server.socket_port, problem, self.retry)
        return False

    def _retry(self) -> None:
        while not self._stopping.wait(self.retry):
            try:
                if self._try_start():
                    return
            except Exception:
                log.exception("listener %s failed to start", self.name)

    def stop(self) -> None:
        self._stopping.set()
        if self.server.running:
            self.server.stop()

    stop.priority = 25


def mount(runtime: Any) -> Dispatcher:
    ports = configure(runtime)
    dispatcher = Dispatcher(runtime, ports)
    app = cherrypy.tree.mount(None, "", {"/": {"request.dispatch": dispatcher}})
    # CherryPy formats its own access line per request even with no handler; ours replaces it.
    app.log.access = _no_access_log
    cherrypy.log.access = _no_access_log
    return dispatcher


def _no_access_log(*args: Any, **kwargs: Any) -> None:
    return None


def _graceful_exit(engine: Any) -> None:
    """Exit cleanly (status 0) even when the signal arrives while the engine is still starting.

    CherryPy's own exit during STARTING ends the process with status 70; the
    signal handler runs on the thread that is starting the engine, so the
    exit is handed to a thread that waits for the start to finish.
    """
    if engine.state == engine.states.STARTING:
        def later() -> None:
            engine.wait(engine.states.STARTED, interval=0.05)
            engine.exit()
        threading.Thread(target=later, name="pvc-exit", daemon=True).start()
    else:
        engine.exit()


STOP_WITHIN = 30.0  # seconds a stop may take before the process ends anyway (see _bounded_stop)


def _bounded_stop() -> None:
    """A stop that has not finished within STOP_WITHIN seconds ends the process (status 1), after writing
    every thread's stack to the log: a daemon left running for minutes without its ZooKeeper once hung in
    its stop for good, and a process that cannot be stopped is worse than one stopped roughly."""
    def watch() -> None:
        time.sleep(STOP_WITHIN)
        log.error("the stop did not finish within %.0f s; exiting now. Threads:", STOP_WITHIN)
        import faulthandler
        import sys
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(1)
    threading.Thread(target=watch, name="pvc-stop-bound", daemon=True).start()


def _stop_on_failure(runtime: Any) -> None:
    """``runtime.fail``: a SystemExit raised in the engine's loop stops the servers, then the runtime and
    its plugins, and leaves ``serve`` with that status."""
    if runtime.failure is not None:
        raise SystemExit(1)


def _reload_later(runtime: Any, dispatcher: Any) -> None:
    """SIGHUP: reload off the signal handler's thread (it reads files and loads certificates)."""
    from .reload import reload
    threading.Thread(target=reload, args=(runtime, dispatcher, getattr(cherrypy.server, "httpserver", None)),
                     name="pvc-reload", daemon=True).start()


def _port_taken(address: str, port: int) -> str:
    """Why the API cannot listen there (as cheroot binds: SO_REUSEADDR), or "" when it can."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return ""


def serve(runtime: Any) -> None:
    """Run until SIGTERM/SIGINT; the engine stops the servers, then the runtime."""
    config = runtime.config
    taken = _port_taken(config["api.listen_address"], config["api.listen_port"])
    if taken:
        # CherryPy's engine answers a start listener's failure with os._exit(70): no finally runs, and
        # pvcapid-embedded's ZooKeeper, Ceph and worker were left running. Said and exited here instead,
        # before anything is subscribed to the engine (its exit at interpreter shutdown would stop them).
        log.error("cannot listen at %s:%s: %s", config["api.listen_address"], config["api.listen_port"], taken)
        raise SystemExit(f"pvcapid: cannot listen at {config['api.listen_address']}:{config['api.listen_port']} "
                         f"({taken}); is another server using that port? (pvc.api.listen_port)")
    dispatcher = mount(runtime)
    engine = cherrypy.engine
    RuntimePlugin(engine, runtime).subscribe()
    if dispatcher.access_log is not None:
        engine.subscribe("start", dispatcher.access_log.start, priority=10)
        engine.subscribe("stop", dispatcher.access_log.stop, priority=90)
    if dispatcher.audit_log is not None:  # after the runtime starts, until it stops, and the servers within
        engine.subscribe("start", dispatcher.audit_log.start, priority=45)
        engine.subscribe("stop", dispatcher.audit_log.stop, priority=55)
    handler = engine.signal_handler
    handler.handlers = {"SIGTERM": partial(_graceful_exit, engine), "SIGINT": partial(_graceful_exit, engine),
                        "SIGHUP": partial(_reload_later, runtime, dispatcher)}
    handler.subscribe()
    engine.subscribe("main", partial(_stop_on_failure, runtime))  # the engine's loop, every 0.1 s
    engine.subscribe("stop", _bounded_stop, priority=1)  # before anything else stops
    log.info("Listening at %s:%s with SSL=%s, Authentication=%s", config["api.listen_address"],
             config["api.listen_port"], config["api.ssl.enabled"], config["api.authentication.enabled"])
    engine.start()
    watchdog = None
    if engine.state == engine.states.STARTED:
        health.notify("READY=1")
        interval = health.watchdog_interval()
        if interval:
            watchdog = health.Watchdog(config["api.listen_address"], config["api.listen_port"],
                                       config["api.ssl.enabled"], interval)
            watchdog.start()
    engine.block()
    if watchdog is not None:
        watchdog.stop()

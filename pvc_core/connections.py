"""The HTTP connections: how long a client may take to send a request, how many it may hold open,
and how many threads serve them.

cheroot gives a connection a worker thread from the first byte of a request
until its answer is sent, and bounds only each single read (``socket_timeout``):
a client that sends a header byte every few seconds held a thread for ever,
and twenty of them stopped the API. Here

* a request's line and headers must arrive within ``api.header_timeout`` of
  their first byte, and its body within ``api.body_timeout`` of the headers
  (each read waits at most what is left, so the bound holds however the
  bytes are spread); a keep-alive connection between requests holds no
  thread and is closed after ``api.socket_timeout`` idle, as before;
* the worker pool starts at ``api.threads`` and grows, one thread per
  request that finds none idle, up to ``api.threads_max``; threads above the
  minimum that have been idle for a while are retired;
* one client address holds at most ``api.max_connections_per_client``
  connections; the next is answered 429 at once and closed;
* the TLS handshake happens in the connection's worker thread, bounded like
  the headers, instead of in the one thread that accepts connections (where
  one client that connected and sent nothing stopped every new connection for
  ``socket_timeout``); plain HTTP sent to the TLS port is answered 400 in
  plain HTTP, saying to use https;
* cheroot's own plain-text answers (a malformed request line, 408, 413, 414)
  are ``{"message": ...}`` JSON like every other error.

A handler marks the request of its thread with ``close_connection()`` when the
connection cannot be trusted after its answer: cheroot keeps a connection open
after any answer and parses whatever follows as the next request; after a body
it could not read, that is the rest of the body.
"""

from __future__ import annotations

import _pyio
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import cheroot.server
import cherrypy
from cheroot.makefile import StreamReader
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cheroot.workers.threadpool import ThreadPool
from cherrypy._cpwsgi_server import CPWSGIHTTPRequest, CPWSGIServer

log = logging.getLogger("pvc.api")

_serving = threading.local()


@dataclass
class Limits:
    """What ``server.configure`` sets from ``pvc.api``; read at every connection and request."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    per_client: int = 64  # 0: no cap
    retire_after: float = 30.0  # seconds a thread above the minimum may stay idle


LIMITS = Limits()


def limits(config: Any) -> Limits:
    """The limits a configuration states (at start and on SIGHUP)."""
    return Limits(header_timeout=config["api.header_timeout"], body_timeout=config["api.body_timeout"],
                  per_client=config["api.max_connections_per_client"])


# -- reading within a deadline ----------------------------------------------------------------


class _DeadlineIO(_pyio.RawIOBase):
    """The socket's reads, each bounded by what is left of the current phase's deadline."""

    def __init__(self, sock: socket.socket, idle: float):
        super().__init__()
        self._sock = sock
        self.idle = idle
        self.deadline: float | None = None
        self.phase = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            return self._sock.recv_into(buffer)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(min(self.idle, remaining))
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self.idle)

    def fileno(self) -> int:
        return self._sock.fileno()


class _Reader(StreamReader):
    def __init__(self, sock: socket.socket, bufsize: int, idle: float):
        _pyio.BufferedReader.__init__(self, _DeadlineIO(sock, idle), bufsize)
        self.bytes_read = 0


def _limit(conn: Any, seconds: float | None, phase: str = "") -> None:
    raw = conn.rfile.raw
    raw.deadline = None if seconds is None else time.monotonic() + seconds
    raw.phase = phase


def end_of_body() -> None:
    """The body has been read: what the handler does now is not bounded by ``body_timeout``."""
    request = getattr(_serving, "request", None)
    if request is not None:
        _limit(request.conn, None)


def deadline_passed(raw: Any = None) -> str | None:
    """The phase ("headers", "body") whose deadline this thread's request (or the reader ``raw`` of
    ``body_clock``) has passed, if any."""
    if raw is None:
        request = getattr(_serving, "request", None)
        if request is None:
            return None
        raw = request.conn.rfile.raw
    if raw.deadline is not None and time.monotonic() >= raw.deadline:
        return raw.phase
    return None


def body_clock() -> Any:
    """This thread's request's socket reader, whose body deadline ``renew_body_deadline`` moves (a streamed
    body is read by a worker thread, where the request is not this module's thread-local)."""
    request = getattr(_serving, "request", None)
    return None if request is None else request.conn.rfile.raw


def renew_body_deadline(raw: Any) -> None:
    """The next piece of a streamed body must arrive within ``api.body_timeout`` from now."""
    raw.deadline = time.monotonic() + LIMITS.body_timeout
    raw.phase = "body"


def timeout_message(phase: str) -> str:
    if phase == "body":
        return (f"Request body: not received within {LIMITS.body_timeout:g} s of the headers "
                "(pvc.api.body_timeout); send it without pauses")
    return (f"Request line and headers: not received within {LIMITS.header_timeout:g} s of their first "
            "byte (pvc.api.header_timeout)")


# -- requests and connections -----------------------------------------------------------------


class _HTTPRequest(CPWSGIHTTPRequest):
    def parse_request(self) -> None:
        _limit(self.conn, LIMITS.header_timeout, "headers")
        try:
            super().parse_request()
        finally:
            if self.ready and self._has_body():
                _limit(self.conn, LIMITS.body_timeout, "body")
            else:
                _limit(self.conn, None)

    def _has_body(self) -> bool:
        length = self.inheaders.get(b"Content-Length", b"0")
        return b"Transfer-Encoding" in self.inheaders or (length.isdigit() and int(length) > 0)

    def respond(self) -> None:
        _serving.request = self
        try:
            super().respond()
        finally:
            _serving.request = None
            _limit(self.conn, None)

    def simple_response(self, status: Any, msg: Any = "") -> None:
        """cheroot's own answers, as JSON."""
        status = str(status)
        if isinstance(msg, bytes):
            msg = msg.decode("ISO-8859-1")
        if status.startswith("408"):
            msg = timeout_message(self.conn.rfile.raw.phase)
            self.close_connection = True
        body = (json.dumps({"message": msg or status}) + "\n").encode("utf-8")
        lines = [f"{self.server.protocol} {status}", f"Content-Length: {len(body)}",
                 "Content-Type: application/json"]
        if status[:3] in {"400", "408", "413", "414"}:
            self.close_connection = True
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ISO-8859-1")
        try:
            self.conn.wfile.write(head + body)
        except OSError as exc:
            if exc.args[0] not in cheroot.errors.socket_errors_to_ignore:
                raise


class _HTTPConnection(cheroot.server.HTTPConnection):
    RequestHandlerClass = _HTTPRequest

    def __init__(self, server: Any, sock: socket.socket, makefile: Any = None):
        super().__init__(server, sock, makefile or cheroot.makefile.MakeFile)
        self.rfile = _Reader(sock, self.rbufsize, server.timeout)
        self.refused: str | None = None  # the address, when over its cap
        self.selected = False  # readable once already (WSGIServer.process_conn)
        self._counted: str | None = None
        try:
            address = sock.getpeername()[0]
        except (OSError, IndexError, TypeError):
            return
        if not server.clients.admit(address):
            self.refused = address
            if not isinstance(sock, ssl.SSLSocket):
                self._refuse()  # at once; a TLS client needs the handshake first (``communicate``)
            return
        self._counted = address

    def _refuse(self) -> None:
        body = (json.dumps({"message": f"Too many connections from {self.refused}: at most "
                                       f"{LIMITS.per_client} are served at once "
                                       "(pvc.api.max_connections_per_client); retry when one is closed"})
                + "\n").encode()
        head = (f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            self.socket.settimeout(0.5)
            self.socket.sendall(head + body)
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def communicate(self) -> bool:
        if isinstance(self.socket, ssl.SSLSocket) and not self.ssl_env:
            if not self._handshake():
                return False
            if self.refused:
                self._refuse()
        if self.refused:
            return False
        return super().communicate()

    def _handshake(self) -> bool:
        """The TLS handshake, bounded by the header timeout; plain HTTP gets a plain 400."""
        self.socket.settimeout(min(self.server.timeout, LIMITS.header_timeout))
        try:
            self.socket.do_handshake()
        except ssl.SSLError as exc:
            if "http request" in str(exc).lower():
                self._plain_http_answer()
            return False
        except OSError:
            return False
        finally:
            try:
                self.socket.settimeout(self.server.timeout)
            except OSError:
                pass
        self.ssl_env = self.server.ssl_adapter.get_environ(self.socket)
        return True

    def _plain_http_answer(self) -> None:
        port = self.server.bind_addr[1] if isinstance(self.server.bind_addr, tuple) else ""
        body = (json.dumps({"message": f"This port speaks HTTPS only: use https://<host>:{port}/ "
                                       "(the request was sent as plain HTTP)"}) + "\n").encode()
        head = (f"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            # The TLS layer failed; the answer goes straight onto the TCP connection.
            socket.socket.sendall(self.socket, head + body)
        except OSError:
            pass

    def close(self) -> None:
        address, self._counted = self._counted, None
        if address is not None:
            self.server.clients.release(address)
        super().close()


class LazyTLSAdapter(BuiltinSSLAdapter):
    """cheroot's builtin TLS, with the handshake left to the connection's worker (``_handshake``)."""

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict]:
        try:
            return self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True), {}
        except (ssl.SSLError, OSError) as exc:
            raise cheroot.errors.FatalSSLAlert(*exc.args) from exc


cheroot.server.ssl_adapters["pvc"] = f"{__name__}.LazyTLSAdapter"


class _Clients:
    """Open connections per client address."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        with self._lock:
            count = self._open.get(address, 0)
            if LIMITS.per_client and count >= LIMITS.per_client:
                return False
            self._open[address] = count + 1
            return True

    def release(self, address: str) -> None:
        with self._lock:
            count = self._open.get(address, 0) - 1
            if count > 0:
                self._open[address] = count
            else:
                self._open.pop(address, None)

    def count(self, address: str) -> int:
        with self._lock:
            return self._open.get(address, 0)


class GrowingPool(ThreadPool):
    """cheroot's pool, grown by one thread whenever a connection finds none idle (up to ``max``),
    and shrunk back towards ``min`` when threads have been idle for ``LIMITS.retire_after``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._busy_since = time.monotonic()
        self._growth = threading.Lock()

    def put(self, obj: Any) -> None:
        if len(self._threads) < self.max and self.idle <= self._queue.qsize():
            with self._growth:
                if len(self._threads) < self.max and self.idle <= self._queue.qsize():
                    # cheroot's grow() sleeps until the thread is ready; the acceptor must not.
                    self._threads.append(self._spawn_worker())
            self._busy_since = time.monotonic()
        super().put(obj)

    def retire_idle(self) -> None:
        spare = self.idle - self.min
        if spare > 0 and time.monotonic() - self._busy_since >= LIMITS.retire_after:
            self.shrink(spare)
            self._busy_since = time.monotonic()


class WSGIServer(CPWSGIServer):
    """CherryPy's WSGI server with the connection bounds above (``server.instance`` names it, for
    the main server and every plugin listener)."""

    # cheroot answers "Connection: close" to everyone once this many connections wait in its
    # selector (its default is 10); new connections wait there too now, so 64 silent ones from one
    # address ended keep-alive for every client. Idle connections are bounded per address and
    # closed after socket_timeout; this bounds them all.
    keep_alive_conn_limit = 4096

    def __init__(self, server_adapter: Any = cherrypy.server):
        super().__init__(server_adapter)
        self.ConnectionClass = _HTTPConnection
        self.clients = _Clients()
        self.requests = GrowingPool(self, min=self.requests.min, max=self.requests.max,
                                    accepted_queue_size=server_adapter.accepted_queue_size,
                                    accepted_queue_timeout=server_adapter.accepted_queue_timeout)
        self._retiring = threading.Event()

    def prepare(self) -> None:
        super().prepare()
        self._retiring.clear()
        threading.Thread(target=self._retire, name="pvc-pool-retire", daemon=True).start()

    def _retire(self) -> None:
        while not self._retiring.wait(min(5.0, LIMITS.retire_after)):
            try:
                self.requests.retire_idle()
            except Exception:  # noqa: BLE001 - the pool is being stopped
                return

    def process_conn(self, conn: Any) -> None:
        """A new connection waits in the selector, holding no thread, until its first bytes arrive
        (cheroot hands it straight to a worker, where one that sends nothing held the thread for
        ``socket_timeout``); one that stays silent is closed after ``socket_timeout``."""
        if not getattr(conn, "selected", True):
            conn.selected = True
            self._connections.put(conn)
            return
        super().process_conn(conn)

    def stop(self) -> None:
        self._retiring.set()
        super().stop()


def close_connection() -> None:
    """Close this request's connection once its answer is sent."""
    request = getattr(_serving, "request", None)
    if request is not None:
        request.close_connection = True

"""Connections under hostile clients (pvc_core/connections.py): header and body deadlines, the growing
worker pool, the per-address cap, the listen backlog, and cheroot's own answers as JSON.

Every client here is a raw socket against a real daemon; the deadlines are
short so that the tests are quick, and each check of a bound allows it 10 %
plus the answer slack of a loaded machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest

from conftest import ANSWER_SLACK, wait_until

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0


def connect(daemon, source: str = "127.0.0.1", timeout: float = 30.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", daemon.port))
    return sock


def read_answer(sock: socket.socket, daemon=None, method: str = "GET", path: str = "/api/v1/"
                ) -> tuple[int, dict, dict]:
    """Status, headers and JSON body of one answer (read to the end of its Content-Length); checked
    against ``daemon``'s OpenAPI document when one is given."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        rest += chunk
    if daemon is not None:
        daemon.contract().check(method, path, status, headers.get("content-type"), rest[:length])
    try:
        return status, headers, json.loads(rest[:length]) if length else {}
    except ValueError:
        raise AssertionError(f"not JSON: {lines[0]} {headers} {rest[:300]!r}") from None


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


@pytest.fixture(scope="module")
def guarded(daemon_factory):
    return daemon_factory({"api": {"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT,
                                   "socket_timeout": 30, "threads": 2, "threads_max": 64,
                                   "max_connections_per_client": 40, "backlog": 777}})


def trickle(sock: socket.socket, data: bytes, stop: threading.Event, pause: float = 0.2) -> None:
    for byte in data:
        if stop.is_set():
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        stop.wait(pause)


def test_headers_trickled_past_the_header_timeout_get_408(guarded):
    sock = connect(guarded)
    stop = threading.Event()
    started = time.monotonic()
    sender = threading.Thread(target=trickle, args=(sock, b"GET /api/v1/ HTTP/1.1\r\n" + b"X-Slow: y\r\n" * 50,
                                                    stop), daemon=True)
    sender.start()
    try:
        status, headers, body = read_answer(sock)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
    assert status == 408 and headers["content-type"] == "application/json", (status, headers)
    assert "pvc.api.header_timeout" in body["message"] and headers["connection"] == "close"
    assert HEADER_TIMEOUT * 0.9 <= elapsed <= HEADER_TIMEOUT * 1.1 + ANSWER_SLACK, elapsed
    assert closed(sock)
    sock.close()


def test_a_body_trickled_past_the_body_timeout_gets_408(guarded):
    sock = connect(guarded)
    sock.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: 400\r\n\r\ntoken=")
    stop = threading.Event()
    started = time.monotonic()
    threading.Thread(target=trickle, args=(sock, b"a" * 300, stop), daemon=True).start()
    try:
        status, headers, body = read_answer(sock, guarded, "POST", "/api/v1/login")
        elapsed = time.monotonic() - started
    finally:
        stop.set()
    assert status == 408 and "pvc.api.body_timeout" in body["message"], (status, body)
    assert BODY_TIMEOUT * 0.9 <= elapsed <= BODY_TIMEOUT * 1.1 + ANSWER_SLACK, elapsed
    assert closed(sock)
    sock.close()


def test_a_slow_but_timely_request_is_served(guarded):
    """A request whose headers take a while but arrive within the bound is answered normally."""
    sock = connect(guarded)
    stop = threading.Event()
    trickle(sock, b"GET /api/v1/ HTTP/1.1\r\nHost: x\r\n\r\n", stop, pause=HEADER_TIMEOUT / 100)
    status, _, body = read_answer(sock)
    assert status == 200 and body == {"message": "PVC API version 1.0"}
    sock.close()


def test_the_pool_grows_past_busy_threads_and_answers_normal_requests(guarded):
    """30 connections each hold a worker while they trickle headers (2 threads at start): a normal
    request is still answered at once, because the pool grew."""
    stop = threading.Event()
    holders = [connect(guarded, source="127.0.0.3") for _ in range(30)]
    for sock in holders:
        threading.Thread(target=trickle, args=(sock, b"GET /api/v1/ HTTP/1.1\r\n" + b"X: y\r\n" * 100, stop),
                         kwargs={"pause": 0.05}, daemon=True).start()
    try:
        time.sleep(0.3)  # let every holder's first byte reach a worker (not a bound: they only get stronger)
        started = time.monotonic()
        response = guarded.get("/")
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert elapsed < HEADER_TIMEOUT, f"a normal request waited {elapsed:.2f} s behind the slow ones"
    finally:
        stop.set()
        for sock in holders:
            sock.close()


def test_one_address_holds_at_most_its_cap_and_others_are_unaffected(guarded):
    cap = 40
    held = [connect(guarded, source="127.0.0.4") for _ in range(cap)]
    try:
        refused = connect(guarded, source="127.0.0.4")
        status, headers, body = read_answer(refused, guarded)
        assert status == 429 and headers["connection"] == "close" and headers["retry-after"] == "1"
        assert "127.0.0.4" in body["message"] and "pvc.api.max_connections_per_client" in body["message"]
        assert closed(refused)
        refused.close()
        # another address is served meanwhile
        other = connect(guarded, source="127.0.0.5")
        other.sendall(b"GET /api/v1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(other)[0] == 200
        other.close()
    finally:
        for sock in held:
            sock.close()

    def served_again() -> bool:
        sock = connect(guarded, source="127.0.0.4")
        try:
            sock.sendall(b"GET /api/v1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return read_answer(sock)[0] == 200
        finally:
            sock.close()
    wait_until(served_again, message="the address to be served again once its connections closed")


def test_the_listen_backlog_is_the_configured_one(guarded):
    with open("/proc/sys/net/core/somaxconn") as handle:
        somaxconn = int(handle.read())
    listing = subprocess.run(["ss", "-Hltn", f"sport = :{guarded.port}"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert int(listing[2]) == min(777, somaxconn), listing  # Send-Q of a listening socket: its backlog


def test_a_burst_of_300_connections_is_answered(guarded):
    results: list[int | str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            sock = connect(guarded, source=f"127.0.1.{index % 16 + 1}", timeout=60)
            sock.sendall(b"GET /api/v1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            outcome: int | str = read_answer(sock)[0]
            sock.close()
        except OSError as exc:
            outcome = type(exc).__name__
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(200) == 300, sorted(set(map(str, results)))


@pytest.mark.parametrize("request_line, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /api/v1/ HTTP/7.0\r\n\r\n", 505),
    (b"GET /" + b"a" * 600 * 1024 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /api/v1/ HTTP/1.1\r\n\r\n", 400),  # no Host: CherryPy's HTML page with a traceback before
])
def test_cheroots_own_answers_are_json(guarded, request_line, status):
    sock = connect(guarded)
    sock.sendall(request_line)
    got, headers, body = read_answer(sock)
    assert got == status and headers["content-type"] == "application/json", (got, headers)
    assert isinstance(body["message"], str) and body["message"] and "Traceback" not in body["message"]
    sock.close()


def test_silent_connections_hold_no_thread(daemon_factory):
    """Connections that send nothing wait in the selector: with 4 threads at most, 20 of them do not
    delay a normal request (each used to hold a worker for the header or socket timeout)."""
    daemon = daemon_factory({"api": {"threads": 2, "threads_max": 4, "header_timeout": 20, "socket_timeout": 20}})
    silent = [connect(daemon, source="127.0.0.6") for _ in range(20)]
    try:
        time.sleep(0.3)  # let the daemon accept them all (not a bound: they only get stronger)
        started = time.monotonic()
        response = daemon.get("/")
        assert response.status_code == 200
        assert time.monotonic() - started < 10, "a normal request waited behind silent connections"
        # and the waiting connections do not end keep-alive for others (cheroot's limit was 10)
        assert response.headers.get("Connection", "").lower() != "close", response.headers
    finally:
        for sock in silent:
            sock.close()

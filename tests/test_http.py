"""HTTP behaviour of the core: JSON everywhere, parameters from every source, limits."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from conftest import REQUEST_TIMEOUT, SLOWDOWN, wait_until


def assert_json(response: requests.Response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    assert "<html" not in response.text.lower()
    assert "Traceback" not in response.text
    return response.json()


def test_root(daemon):
    response = daemon.get("/")
    assert response.status_code == 200
    assert response.content == b'{"message": "PVC API version 1.0"}\n'
    assert response.headers["Content-Type"] == "application/json"
    assert len(response.headers["X-Request-Id"]) == 16


def test_root_without_slash_redirects(daemon):
    response = daemon.get("", allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["Location"] == "/api/v1/"


@pytest.mark.parametrize("path", ["/nope", "/example/hello/", "/Example/hello", "/example/hello/x"])
def test_unknown_path_404_json(daemon, path):
    response = daemon.get(path)
    assert response.status_code == 404
    assert assert_json(response)["message"].startswith("The requested URL was not found")


def test_wrong_method_405_json(daemon):
    response = daemon.request("DELETE", "/example/hello")
    assert response.status_code == 405
    assert assert_json(response) == {"message": "The method is not allowed for the requested URL."}
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_head_and_options(daemon):
    head = daemon.request("HEAD", "/example/hello")
    assert head.status_code == 200 and head.content == b""
    options = daemon.request("OPTIONS", "/example/counter")
    assert options.status_code == 200 and options.content == b""
    assert options.headers["Allow"] == "GET, HEAD, OPTIONS, POST"


def test_query_parameters(daemon):
    body = assert_json(daemon.get("/example/hello", params=[("name", "pvc"), ("times", "3"), ("loud", ""),
                                                             ("tag", "a"), ("tag", "b"), ("color", "red")]))
    assert body["message"] == "HELLO, PVC"
    assert body["times"] == 3 and body["tags"] == ["a", "b"] and body["color"] == "red"


def test_defaults_and_alias_and_path_alias(daemon):
    body = assert_json(daemon.get("/example/hello"))
    assert body == {"message": "Hello, world", "times": 1, "tags": [], "color": None, "started": ["example"]}
    assert assert_json(daemon.get("/example/greet", params={"who": "seed"}))["message"] == "Hello, seed"


def test_form_body_on_get_and_last_value_wins(daemon):
    body = assert_json(daemon.request("GET", "/example/hello?name=query", data={"name": "form"}))
    assert body["message"] == "Hello, form"


def test_json_body(daemon):
    body = assert_json(daemon.request("GET", "/example/hello", json={"name": "json", "times": 2, "loud": True,
                                                                       "tag": ["x", "y"]}))
    assert body["message"] == "HELLO, JSON" and body["times"] == 2 and body["tags"] == ["x", "y"]


def test_malformed_json_body(daemon):
    response = daemon.request("GET", "/example/hello", data=b"{not json",
                              headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "JSON body: could not parse it" in assert_json(response)["message"]


@pytest.mark.parametrize("params, message", [
    ({"times": "many"}, "Parameter 'times': expected an integer, got 'many'"),
    ({"loud": "perhaps"}, "Parameter 'loud': expected a boolean (true/false, yes/no, on/off, 1/0), got 'perhaps'"),
    ({"color": "blue"}, "Parameter 'color': expected one of red, green, got 'blue'"),
])
def test_bad_parameters(daemon, params, message):
    response = daemon.get("/example/hello", params=params)
    assert response.status_code == 400
    assert assert_json(response) == {"message": message}


def test_missing_required_parameter(daemon):
    response = daemon.post("/example/counter")
    assert response.status_code == 400
    assert assert_json(response) == {"message": "Parameter 'value': required, expected an integer"}


def test_write_and_read_zookeeper(daemon, zk_client):
    assert assert_json(daemon.post("/example/counter", params={"value": "41"})) == {"message": "Counter set to 41"}
    assert zk_client.get("/example_counter")[0] == b"41"
    assert assert_json(daemon.get("/example/counter")) == {"counter": 41}


def test_unhandled_error_is_json_500_with_request_id(daemon):
    response = daemon.get("/example/crash")
    assert response.status_code == 500
    body = assert_json(response)
    request_id = response.headers["X-Request-Id"]
    assert body["request_id"] == request_id and request_id in body["message"]
    assert "deliberate bug" not in response.text
    log = wait_until(lambda: (lambda text: text if f"request {request_id}: unhandled error" in text else "")(
        daemon.log()), message="the error was not logged")
    assert "deliberate bug" in log


def test_access_log_has_request_id_and_no_query(daemon):
    response = daemon.post("/login?token=should-not-be-logged", allow_redirects=False)
    assert response.status_code == 302  # authentication is off on this daemon
    line = wait_until(lambda: next((line for line in daemon.log().splitlines()
                                    if response.headers["X-Request-Id"] in line), None),
                      message="the request was not logged")
    assert '"POST /api/v1/login"' in line and "should-not-be-logged" not in daemon.log()


def raw_request(port: int, data: bytes, timeout: float = REQUEST_TIMEOUT) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_odd_requests_never_get_html(daemon):
    cases = [
        b"GET /api/v1/example/hello?name=%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/v1/example/hello?name=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /api/v1/example/counter HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n"
        b"Content-Type: application/x-www-form-urlencoded; charset=bogus\r\nConnection: close\r\n\r\nvalue=1",
        b"POST /api/v1/example/counter HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n"
        b"Content-Type: multipart/form-data; boundary=zz\r\nConnection: close\r\n\r\n--zz\r\nbroken\r\n\r\n\r\n",
        b"GET /api/v1/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
    for data in cases:
        answer = raw_request(daemon.port, data)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"Content-Type: application/json" in head, answer
        assert b"<html" not in body.lower() and b"Traceback" not in body, answer
        json.loads(body)


def test_form_and_multipart_bodies(daemon):
    assert daemon.post("/example/counter", data={"value": "7"}).json() == {"message": "Counter set to 7"}
    assert daemon.post("/example/counter", files={"value": (None, "8")}).json() == {"message": "Counter set to 8"}


@pytest.fixture(scope="module")
def small_daemon(daemon_factory):
    return daemon_factory({"api": {"max_body_size": "1024", "socket_timeout": "1", "threads": "2"}})


def test_oversized_body_413_json(small_daemon):
    response = small_daemon.post("/example/counter", data={"value": "1" * 4096})
    assert response.status_code == 413
    assert "exceeds the limit of 1024 bytes" in assert_json(response)["message"]


def test_oversized_chunked_body_413_json(small_daemon):
    def chunks():
        yield b"value="
        for _ in range(10):
            yield b"1" * 512
    response = small_daemon.post("/example/counter", data=chunks(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert "exceeds the limit" in assert_json(response)["message"]


def test_stalled_clients_are_dropped(small_daemon):
    """Two stalled clients on a two-thread server: both dropped after the 1 s socket timeout."""
    stalled = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", small_daemon.port), timeout=10)
        sock.sendall(b"GET /api/v1/ HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        stalled.append(sock)
    started = time.monotonic()
    for sock in stalled:
        try:
            data = sock.recv(65536)
            while data and time.monotonic() - started < 8:
                data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            pass
        sock.close()
    assert time.monotonic() - started < SLOWDOWN * 6 * float(small_daemon.config["api"]["socket_timeout"])
    # and the workers are free again
    assert small_daemon.get("/").status_code == 200


def exchange(port: int, data: bytes, timeout: float = REQUEST_TIMEOUT) -> tuple[bytes, bool]:
    """Send raw bytes; everything answered, and whether the server closed the connection (not our timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            return b"".join(chunks), False
        except ConnectionResetError:
            pass
    return b"".join(chunks), True


def one_answer(answer: bytes) -> tuple[int, bytes, dict]:
    """The status, head and JSON body of the one and only response in ``answer``."""
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head and b"Traceback" not in body, answer
    return int(head.split(b" ", 2)[1]), head, json.loads(body)


@pytest.mark.parametrize("media, chunks", [
    ("application/x-www-form-urlencoded", b"zz\r\nvalue=1\r\n0\r\n\r\n"),  # not a chunk size
    ("application/json", b'5\r\n{"value": 1}\r\n0\r\n\r\n'),          # data longer than its size: was a 500
    ("multipart/form-data; boundary=zz", b"4\r\n--zzXX\r\n0\r\n\r\n"),   # no CRLF after the chunk
])
def test_malformed_chunked_body_is_one_400_then_close(daemon, media, chunks):
    """One 400 naming the framing, ``Connection: close``, and the connection closed: the rest of the body is
    never parsed as a second request (which answered an unrequested "400 Malformed Request-Line")."""
    request = (f"POST /api/v1/example/counter HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               f"Content-Type: {media}\r\n\r\n").encode() + chunks
    answer, closed = exchange(daemon.port, request)
    status, head, body = one_answer(answer)
    assert status == 400 and b"Connection: close" in head and closed, answer
    assert body["message"].startswith("Request body: expected valid chunked transfer coding, got: Bad chunked"), body
    assert daemon.get("/").status_code == 200  # and the server is fine


def test_unread_chunked_body_closes_the_connection(daemon):
    """An answer given before a chunked body is read (here a 404) closes the connection: cheroot does not
    skip such a body, and its chunks would be parsed as the next request."""
    request = (b"POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"12\r\nGET / HTTP/1.1\r\n\r\n\r\n0\r\n\r\n")
    answer, closed = exchange(daemon.port, request)
    status, head, _ = one_answer(answer)
    assert status == 404 and b"Connection: close" in head and closed, answer


@pytest.mark.parametrize("content_type", [b"application/x-www-form-urlencoded", b"text/plain",
                                          b"application/octet-stream"])
def test_body_shorter_than_its_content_length(small_daemon, content_type):
    """The body stops before its Content-Length: after the socket timeout one 400 (not a 500 with a
    traceback, and not nothing: a type no processor reads was drained by cheroot after the answer, and the
    answer lost), the connection closed, and one line in the log."""
    timeout = float(small_daemon.config["api"]["socket_timeout"])
    logged = len(small_daemon.log())
    request = (b"POST /api/v1/example/counter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
               b"Content-Type: " + content_type + b"\r\n\r\nvalue=1")
    started = time.monotonic()
    answer, closed = exchange(small_daemon.port, request, timeout=REQUEST_TIMEOUT + timeout)
    status, head, body = one_answer(answer)
    assert status == 400 and b"Connection: close" in head and closed, answer
    assert body == {"message": "Request body: expected the 100 bytes of its Content-Length, but it stopped "
                               "arriving (socket timeout)"}
    assert time.monotonic() - started >= timeout  # it was the timeout, not the parse of 7 bytes
    request_id = head.split(b"X-Request-Id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    new = wait_until(lambda: (lambda text: text if request_id in text and "pvc.access" in text else "")(
        small_daemon.log()[logged:]), message="the request was not logged")
    assert (f"WARNING pvc.api: request_id={request_id} request {request_id}: POST /api/v1/example/counter: "
            "Request body: expected") in new
    assert "Traceback" not in new and "timed out object" not in new


def test_chunked_body_that_stops_arriving(small_daemon):
    """A chunked body stops before its last chunk: the 400 says what was expected of it (it said "the None
    bytes of its Content-Length")."""
    timeout = float(small_daemon.config["api"]["socket_timeout"])
    request = (b"POST /api/v1/example/counter HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n\r\n7\r\nvalue=1\r\n")
    answer, closed = exchange(small_daemon.port, request, timeout=REQUEST_TIMEOUT + timeout)
    status, head, body = one_answer(answer)
    assert status == 400 and b"Connection: close" in head and closed, answer
    assert body == {"message": "Request body: expected the rest of its chunked transfer coding, but it stopped "
                               "arriving (socket timeout)"}


def test_json_body_nested_too_deep_is_400(daemon):
    """json.loads raises RecursionError (not ValueError) past Python's recursion limit: it was a 500."""
    body = "[" * 100_000 + "]" * 100_000
    response = daemon.post("/vm/ghost/meta", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("JSON body: nested too deeply")
    shallow = daemon.post("/status", json={"state": {"a": [1]}})  # parsed; then the value is wrong
    assert shallow.status_code == 400
    assert shallow.json()["message"].startswith("Parameter 'state': expected")


def test_access_log_lines_cannot_be_forged(daemon):
    """The logged path is the decoded one: %0a would start a forged line, NUL would make the log binary."""
    response = daemon.get("/network/x%0a2026-12-02 00:00:00,000 INFO pvc.access: FORGED%00%01%22")
    assert response.status_code == 400  # control characters in a path segment
    request_id = response.headers["X-Request-Id"]
    line = wait_until(lambda: next((line for line in daemon.log().splitlines() if request_id in line), None),
                      message="the request was not logged")
    assert line.endswith('"GET /api/v1/network/x\\n2026-12-02 00:00:00,000 INFO pvc.access: FORGED\\x00\\x01\\"" '
                         + line.rsplit('" ', 1)[1])
    assert not any(text.startswith("2026-12-02 00:00:00,000 INFO pvc.access: FORGED")
                   for text in daemon.log().splitlines())
    assert "\x00" not in daemon.log()


@pytest.mark.parametrize("body", ['{"profile": "\\ud800"}', '{"\\udfff": "x", "profile": "a"}',
                                  '{"profile": ["ok", "\\ud83d"]}'])
def test_json_lone_surrogates_are_400(daemon, body):
    """json.loads turns "\\ud800" into text that no UTF-8 store can hold: it reached ZooKeeper and was a 500."""
    response = daemon.post("/vm/ghost/meta", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("JSON body: expected text without lone UTF-16 surrogates")
    pair = daemon.post("/status", json={"state": "\ud83d\ude00"})  # a proper pair (an emoji) is text
    assert pair.status_code == 400 and pair.json()["message"].startswith("Parameter 'state': expected")

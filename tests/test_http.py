"""HTTP behaviour of the core: JSON everywhere, parameters from every source, limits."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests


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
    time.sleep(0.2)
    log = daemon.log()
    assert f"request {request_id}: unhandled error" in log and "deliberate bug" in log


def test_access_log_has_request_id_and_no_query(daemon):
    response = daemon.post("/login?token=should-not-be-logged", allow_redirects=False)
    assert response.status_code == 302  # authentication is off on this daemon
    time.sleep(0.2)
    line = [line for line in daemon.log().splitlines() if response.headers["X-Request-Id"] in line][0]
    assert '"POST /api/v1/login"' in line and "should-not-be-logged" not in daemon.log()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
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
    assert time.monotonic() - started < 6
    # and the workers are free again
    assert small_daemon.get("/", timeout=5).status_code == 200

"""Server features: SSL, secure cookies, extra listeners, debug output."""

from __future__ import annotations

import socket
import subprocess
import time

import requests

from conftest import AUTH_ON, REQUEST_TIMEOUT, START_TIMEOUT, TOKEN, deep_merge, wait_until
from pvc_core.zkserver import free_port


def make_certificate(directory) -> tuple[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


def test_ssl_and_secure_cookie(daemon_factory, tmp_path):
    cert, key = make_certificate(tmp_path)
    daemon = daemon_factory(deep_merge(AUTH_ON, {"api": {"ssl": {"enabled": "True", "cert_file": cert,
                                                                 "key_file": key},
                                                         "socket_timeout": 60, "header_timeout": 60}}),
                            scheme="https", verify=cert)
    response = daemon.get("/")
    assert response.status_code == 200 and response.json() == {"message": "PVC API version 1.0"}
    login = daemon.post("/login", data={"token": TOKEN})
    assert login.status_code == 200 and "; Secure" in login.headers["Set-Cookie"]
    assert daemon.get("/status", headers={"X-Api-Key": TOKEN}).status_code == 200
    # plain HTTP sent to the TLS port: a plain-HTTP 400 that says to use https
    plain = requests.get(f"http://127.0.0.1:{daemon.port}/api/v1/", timeout=REQUEST_TIMEOUT)
    assert plain.status_code == 400 and plain.headers["Content-Type"] == "application/json"
    assert f"https://<host>:{daemon.port}/" in plain.json()["message"]
    # clients that connect and send nothing (no TLS handshake) do not stop others from being served:
    # the handshake is not done by the thread that accepts connections
    idle = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(3)]
    try:
        started = time.monotonic()
        assert daemon.get("/").status_code == 200
        assert time.monotonic() - started < 20, "a TLS request waited behind clients that sent nothing"
    finally:
        for sock in idle:
            sock.close()


def test_plugin_listener_is_separate(daemon_factory):
    port = free_port()
    daemon = daemon_factory({"example": {"listen_port": str(port)}})
    # the extra server may start just after the main one
    [own] = wait_until(lambda: [requests.get(f"http://127.0.0.1:{port}/whoami", timeout=REQUEST_TIMEOUT)],
                       ignoring=(requests.RequestException,), message="the plugin's listener did not answer")
    assert own.status_code == 200 and own.json() == {"listener": "example", "remote": "127.0.0.1"}
    assert daemon.get("/whoami").status_code == 404
    assert requests.get(f"http://127.0.0.1:{port}/api/v1/", timeout=REQUEST_TIMEOUT).status_code == 404
    assert "/whoami" not in str(daemon.get("/openapi.json").json()["paths"])


def test_debug_mode_indents_json(daemon_factory):
    daemon = daemon_factory({"debug": "True"})
    assert daemon.get("/").text == '{\n    "message": "PVC API version 1.0"\n}\n'


def test_a_taken_port_is_said_and_exits_cleanly(daemon_factory):
    """Another server listens on the API's port: pvcapid says so and exits 1 through its own shutdown. CherryPy
    answered the failed bind with os._exit(70), which skipped every cleanup: pvcapid-embedded's ZooKeeper,
    Ceph and worker were left running (seen once in test_embedded)."""
    daemon = daemon_factory(start=False)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", daemon.port))
        holder.listen()
        ended = subprocess.run([*daemon.command, "--config", str(daemon.config_path)], capture_output=True,
                               text=True, stdin=subprocess.DEVNULL, timeout=START_TIMEOUT)
    assert ended.returncode == 1, (ended.returncode, ended.stdout, ended.stderr)
    assert ended.stderr.strip() == (f"pvcapid: cannot listen at 127.0.0.1:{daemon.port} (Address already in use); "
                                    "is another server using that port? (pvc.api.listen_port)")
    assert f"ERROR pvc.api: - cannot listen at 127.0.0.1:{daemon.port}" in ended.stdout
    assert "Traceback" not in ended.stdout + ended.stderr

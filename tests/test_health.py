"""``GET /api/v1/health`` (pvc_core/health.py) against real dependencies that are up, stopped and
frozen (SIGSTOP), and systemd's readiness and watchdog notifications from a real pvcapid."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from conftest import ANSWER_SLACK, AUTH_ON, START_TIMEOUT, wait_until
from pvc_core.zkserver import ZooKeeperServer

CORE_CHECKS = {"zookeeper", "database", "queue"}
REQUEST_TIMEOUT_S = 2.0


def health(daemon) -> tuple[int, dict, float]:
    started = time.monotonic()
    response = daemon.get("/health")  # no token: the route is open, and checked against the contract
    return response.status_code, response.json(), time.monotonic() - started


CORE_ONLY = {"plugins": {"enabled": []}}


def test_health_is_open_and_says_only_which_dependency_answers(daemon_factory):
    daemon = daemon_factory({**AUTH_ON, **CORE_ONLY})
    assert daemon.get("/status").status_code == 401
    status, body, _ = health(daemon)
    assert status == 200, body
    assert body == {"status": "ok", "checks": {name: {"status": "ok", "message": "reachable"}
                                               for name in CORE_CHECKS}}
    assert daemon.get("/health").headers["Cache-Control"] == "no-store"


@pytest.fixture
def own_zookeeper(tmp_path):
    server = ZooKeeperServer(str(tmp_path / "zk"))
    server.start(timeout=START_TIMEOUT)
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def test_zookeeper_stopped_and_frozen_is_503_within_its_timeout(daemon_factory, own_zookeeper):
    daemon = daemon_factory({"zookeeper": {"request_timeout": REQUEST_TIMEOUT_S}, **CORE_ONLY},
                            coordinator=own_zookeeper.address)
    assert health(daemon)[0] == 200
    # frozen: the connection stays open and nothing answers
    os.kill(own_zookeeper.process.pid, signal.SIGSTOP)
    try:
        time.sleep(1.0)  # the answers of the last second are cached (HEALTH_CACHE); not a bound
        status, body, elapsed = health(daemon)
        assert status == 503 and body["status"] == "unavailable", body
        assert body["checks"]["zookeeper"]["status"] == "unavailable"
        assert body["checks"]["database"]["status"] == body["checks"]["queue"]["status"] == "ok"
        assert elapsed <= REQUEST_TIMEOUT_S * 1.1 + ANSWER_SLACK, elapsed
    finally:
        os.kill(own_zookeeper.process.pid, signal.SIGCONT)
    wait_until(lambda: health(daemon)[0] == 200, message="health to recover after ZooKeeper thawed")
    own_zookeeper.stop()
    status, body, elapsed = wait_until(lambda: (lambda got: got if got[0] == 503 else None)(health(daemon)),
                                       message="health to report the stopped ZooKeeper")
    assert body["checks"]["zookeeper"]["message"].startswith(("unreachable", "no answer")), body
    own_zookeeper.start(timeout=START_TIMEOUT)
    wait_until(lambda: health(daemon)[0] == 200, message="health to recover after ZooKeeper returned")


def test_a_frozen_queue_is_503_within_its_timeout(daemon_factory, own_redis):
    from pvc_core.queue import SOCKET_TIMEOUT
    port, process = own_redis
    daemon = daemon_factory({"provisioner": {"queue": {"host": "127.0.0.1", "port": port, "path": "/0"}},
                             **CORE_ONLY})
    assert health(daemon)[0] == 200
    os.kill(process.pid, signal.SIGSTOP)
    try:
        time.sleep(1.0)  # past the cached answer (HEALTH_CACHE); not a bound
        status, body, elapsed = health(daemon)
        assert status == 503 and body["checks"]["queue"] == {
            "status": "unavailable", "message": f"no answer within {SOCKET_TIMEOUT:g} s (the queue timeout)"}, body
        assert body["checks"]["zookeeper"]["status"] == "ok"
        assert elapsed <= SOCKET_TIMEOUT * 1.1 + ANSWER_SLACK, elapsed
    finally:
        os.kill(process.pid, signal.SIGCONT)
    wait_until(lambda: health(daemon)[0] == 200, message="health to recover after Redis thawed")


def test_systemd_hears_ready_and_the_watchdog(daemon_factory, tmp_path):
    """pvcapid under ``Type=notify`` and ``WatchdogSec=``: READY=1 once it serves, then WATCHDOG=1
    every half interval while its own listener answers /health."""
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(START_TIMEOUT)
    daemon = daemon_factory(CORE_ONLY, start=False)
    daemon.env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    try:
        daemon.start()
        messages = []
        while messages.count("WATCHDOG=1") < 2:
            messages.append(listener.recv(4096).decode())
        assert messages[0] == "READY=1", messages
        # a frozen daemon stops pinging: systemd would restart it
        os.kill(daemon.process.pid, signal.SIGSTOP)
        listener.settimeout(1.5)
        drained = []
        try:
            while True:
                drained.append(listener.recv(4096).decode())
        except TimeoutError:
            pass
        assert drained.count("WATCHDOG=1") <= 1, drained  # at most one sent just before the freeze
        os.kill(daemon.process.pid, signal.SIGCONT)
    finally:
        listener.close()
        daemon.stop()

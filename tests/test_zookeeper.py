"""The ZooKeeper helpers (v0.6 value format, one-transaction writes) and outage behaviour."""

from __future__ import annotations

import time

import pytest

from conftest import ANSWER_SLACK, START_TIMEOUT, ZK_REQUEST_TIMEOUT, settle_timeout, wait_until
from pvc_core.zk import TransactionFailed, ZooKeeper, encode
from pvc_core.zkserver import ZooKeeperServer, free_port


@pytest.fixture
def zk(zk_server, clean_zk):
    client = ZooKeeper([zk_server.address], request_timeout=ZK_REQUEST_TIMEOUT)
    client.start()
    yield client
    client.stop()


def test_value_format():
    assert encode(True) == b"True" and encode(False) == b"False" and encode(None) == b"None"
    assert encode(256) == b"256" and encode("x") == b"x" and encode(b"\x00raw") == b"\x00raw"
    assert encode(["a", "b"]) == b"['a', 'b']"


def test_write_creates_then_sets_in_one_transaction(zk, clean_zk):
    zk.write({"/domains": ""})
    zk.write({"/domains/u1": "test1", "/domains/u1/state": "start", "/domains/u1/autostart": False,
              "/domains/u1/profile": None})
    assert clean_zk.get("/domains/u1/autostart")[0] == b"False"
    assert clean_zk.get("/domains/u1/profile")[0] == b"None"
    version = clean_zk.get("/domains/u1/state")[1].version
    zk.write({"/domains/u1/state": "stop", "/domains/u1/node": "hv1"})
    assert clean_zk.get("/domains/u1/state") [0] == b"stop"
    assert clean_zk.get("/domains/u1/state")[1].version == version + 1
    assert zk.get_many(["/domains/u1", "/domains/u1/node", "/nope"]) == {
        "/domains/u1": "test1", "/domains/u1/node": "hv1", "/nope": None}
    assert zk.children("/domains/u1") == ["autostart", "node", "profile", "state"]
    assert zk.children("/nope") is None


def test_failed_transaction_writes_nothing(zk, clean_zk):
    zk.write({"/a": "1"})
    with pytest.raises(TransactionFailed) as info:
        zk.write({"/a": "2", "/missing/parent/child": "x"})
    assert info.value.status == 409 and "nothing was changed" in info.value.message
    assert clean_zk.get("/a")[0] == b"1"
    with pytest.raises(TransactionFailed):
        zk.create({"/b": "1", "/a": "again"})
    assert clean_zk.exists("/b") is None


def test_recursive_delete_is_atomic(zk, clean_zk):
    zk.write({"/t": "", "/t/a": "", "/t/a/b": "1", "/t/c": "2", "/u": ""})
    assert zk.subtree("/t") == ["/t", "/t/a", "/t/c", "/t/a/b"]
    zk.delete(["/t", "/u"])
    assert clean_zk.exists("/t") is None and clean_zk.exists("/u") is None
    zk.delete(["/never-there"])


def test_daemon_answers_503_while_zookeeper_is_down(daemon_factory, tmp_path):
    server = ZooKeeperServer(str(tmp_path / "zk"))
    server.start(timeout=START_TIMEOUT)
    try:
        daemon = daemon_factory(coordinator=server.address)
        assert daemon.get("/status").status_code == 200
        server.stop()
        request_timeout = float(daemon.config["zookeeper"]["request_timeout"])

        def bounded_status():
            started = time.monotonic()
            response = daemon.get("/status")
            assert time.monotonic() - started < request_timeout + ANSWER_SLACK, \
                "a request waited too long on a dead ZooKeeper"
            return [response] if response.status_code == 503 else None  # (a 503 Response is false)

        [response] = wait_until(bounded_status, timeout=settle_timeout(daemon.config), interval=0.2,
                                message="never answered 503")
        assert "ZooKeeper is unreachable" in response.json()["message"]
        assert daemon.get("/").status_code == 200  # routes that need no ZooKeeper still work
        server.start(timeout=START_TIMEOUT)
        wait_until(lambda: daemon.get("/status").status_code == 200, timeout=settle_timeout(daemon.config),
                   interval=0.2, message="did not recover after ZooKeeper came back")
        assert daemon.post("/example/counter", params={"value": "5"}).status_code == 200
    finally:
        server.stop()


def test_daemon_starts_before_zookeeper(daemon_factory, tmp_path):
    port = free_port()
    daemon = daemon_factory(coordinator=f"127.0.0.1:{port}")
    response = daemon.get("/status")
    assert response.status_code == 503
    assert response.json()["message"].startswith(f"ZooKeeper is unreachable at 127.0.0.1:{port}")
    server = ZooKeeperServer(str(tmp_path / "zk"), port=port)
    server.start(timeout=START_TIMEOUT)
    try:
        wait_until(lambda: daemon.get("/status").status_code == 200, timeout=settle_timeout(daemon.config),
                   interval=0.2, message="did not connect once ZooKeeper was there")
    finally:
        server.stop()

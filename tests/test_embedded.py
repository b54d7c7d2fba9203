"""The embedded run (`make run`): local ZooKeeper, bluestore Ceph, consumer and API from one data directory."""

from __future__ import annotations

import os
import signal
import subprocess

import requests

from conftest import BIN, REQUEST_TIMEOUT, START_TIMEOUT, wait_until
from pvc_core.zkserver import four_letter_word, free_port


def start(data_dir, port: int, zk_port: int) -> subprocess.Popen:
    log = open(data_dir.parent / "embedded.log", "ab")
    process = subprocess.Popen([str(BIN / "pvcapid-embedded"), "--data-dir", str(data_dir), "--port", str(port),
                                "--zk-port", str(zk_port)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    log.close()

    def answers() -> bool:
        assert process.poll() is None, (data_dir.parent / "embedded.log").read_text()
        return requests.get(f"http://127.0.0.1:{port}/api/v1/", timeout=REQUEST_TIMEOUT).status_code == 200

    try:  # it starts ZooKeeper and a bluestore Ceph first
        wait_until(answers, timeout=2 * START_TIMEOUT, interval=0.2, ignoring=(requests.RequestException,),
                   message="the embedded daemon did not answer")
    except AssertionError:
        process.kill()
        raise
    return process


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=START_TIMEOUT)


def test_embedded_run_twice_keeps_state(tmp_path):
    data_dir = tmp_path / "data"
    port, zk_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    process = start(data_dir, port, zk_port)
    try:
        assert requests.get(base + "/").json() == {"message": "PVC API version 1.0"}
        names = {plugin["name"] for plugin in requests.get(base + "/plugins").json()}
        assert {"node", "vm", "network", "ceph", "provisioner", "metadata"} <= names
        assert requests.get(base + "/status").json()["primary_node"] == "none"  # initialized by the run
        created = requests.post(base + "/network/100", params={"description": "uplink", "nettype": "bridged"})
        assert created.status_code == 200
        wait_until(lambda: "HEALTH_OK" in requests.get(base + "/storage/ceph/status").json().get("ceph_data", ""),
                   timeout=2 * START_TIMEOUT, interval=0.5, message="the embedded Ceph was not reported healthy")
        # its consumer runs provisioner tasks (this one stops at verification: no node daemon runs here)
        for path, params in (("/provisioner/template/system/s", {"vcpus": "1", "vram": "512", "serial": "yes",
                                                                 "vnc": "no"}),
                             ("/provisioner/template/network/n", {}), ("/provisioner/template/storage/t", {}),
                             ("/provisioner/profile/p", {"system_template": "s", "network_template": "n",
                                                         "storage_template": "t", "userdata": "empty",
                                                         "script": "empty"})):
            assert requests.post(base + path, params=params).status_code == 200, path
        task = requests.post(base + "/provisioner/create", params={"name": "vm1", "profile": "p"}).json()["task_id"]
        status = wait_until(lambda: (lambda body: body if body["state"] not in ("PENDING", "RUNNING") else None)(
            requests.get(base + f"/provisioner/status/{task}").json()), timeout=START_TIMEOUT, interval=0.1,
            message="the creation did not end")
        assert status["status"].endswith("No ready cluster node contains at least 512+512 MB of free RAM"), status
    finally:
        assert stop(process) == 0
    assert "metadata:\n        enabled: False" in (data_dir / "pvcapid.yaml").read_text()  # no well-known address
    assert four_letter_word(zk_port, "ruok") == ""  # its ZooKeeper stopped with it
    assert not [pid for pid in _ceph_pids(data_dir) if _alive(pid)]  # and its Ceph
    assert (data_dir / "pvcapid.yaml").exists() and (data_dir / "pvc.db").exists()

    process = start(data_dir, port, zk_port)  # `make run` again: same data, same cluster
    try:
        assert requests.get(base + "/network/100").json()["description"] == "uplink"
        assert requests.get(base + "/provisioner/profile/p").json()[0]["system_template"] == "s"
    finally:
        assert stop(process) == 0


def _ceph_pids(data_dir) -> list[int]:
    run = data_dir / "ceph" / "run"
    return [int(path.read_text().strip()) for path in run.glob("*.pid")] if run.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False

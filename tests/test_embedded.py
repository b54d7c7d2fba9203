"""The embedded run (`make run`): local ZooKeeper, bluestore Ceph, consumer and API from one data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import requests

from conftest import BIN
from pvc_core.zkserver import four_letter_word, free_port


def start(data_dir, port: int, zk_port: int) -> subprocess.Popen:
    log = open(data_dir.parent / "embedded.log", "ab")
    process = subprocess.Popen([str(BIN / "pvcapid-embedded"), "--data-dir", str(data_dir), "--port", str(port),
                                "--zk-port", str(zk_port)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, (data_dir.parent / "embedded.log").read_text()
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/v1/", timeout=1).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the embedded daemon did not answer")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


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
        deadline = time.monotonic() + 60
        while "HEALTH_OK" not in requests.get(base + "/storage/ceph/status").json().get("ceph_data", ""):
            assert time.monotonic() < deadline, "the embedded Ceph was not reported healthy"
            time.sleep(0.5)
        # its consumer runs provisioner tasks (this one stops at verification: no node daemon runs here)
        for path, params in (("/provisioner/template/system/s", {"vcpus": "1", "vram": "512", "serial": "yes",
                                                                 "vnc": "no"}),
                             ("/provisioner/template/network/n", {}), ("/provisioner/template/storage/t", {}),
                             ("/provisioner/profile/p", {"system_template": "s", "network_template": "n",
                                                         "storage_template": "t", "userdata": "empty",
                                                         "script": "empty"})):
            assert requests.post(base + path, params=params).status_code == 200, path
        task = requests.post(base + "/provisioner/create", params={"name": "vm1", "profile": "p"}).json()["task_id"]
        while (status := requests.get(base + f"/provisioner/status/{task}").json())["state"] in ("PENDING",
                                                                                               "RUNNING"):
            assert time.monotonic() < deadline + 30, status
            time.sleep(0.1)
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

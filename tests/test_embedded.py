"""The embedded run (`make run`) and the README's walkthrough, pasted block by block against it.

The walkthrough is read from README.md ("Trying it out"), so the README cannot
drift from what works: each ``sh`` block runs in bash, in order, in one
directory, and the check of the same index looks at what it did, through the
API and straight from the local Ceph.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import requests

from conftest import BIN, REQUEST_TIMEOUT, START_TIMEOUT, settle_timeout, wait_until
from pvc_core.zkserver import four_letter_word, free_port

README = Path(__file__).resolve().parent.parent / "README.md"
UUID = "0f8c5d2e-6a1b-4c3d-9e8f-7a6b5c4d3e2f"


def walkthrough() -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## Trying it out\n"):text.index("\n### The simulated nodes\n")]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


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


class Api:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def get(self, path: str, **params: str) -> object:
        return requests.get(self.base + path, params=params, timeout=REQUEST_TIMEOUT).json()

    def listed(self, path: str) -> list:
        """A v0.6 list answer (one match collapses to the object itself); [] on a 404 message."""
        found = self.get(path)
        return found if isinstance(found, list) else [] if "message" in found else [found]

    def nodes(self) -> dict[str, dict]:
        return {node["name"]: node for node in self.listed("/node")}

    def vm(self, name: str) -> dict:
        return self.get(f"/vm/{name}")

    def running_on(self, uuid: str) -> list[str]:
        return sorted(name for name, node in self.nodes().items() if uuid in node["running_domains"])


def ceph_osd_ids(data_dir: Path) -> list[int]:
    tree = subprocess.run(["ceph", "-c", str(data_dir / "ceph" / "ceph.conf"), "osd", "tree", "-f", "json"],
                          capture_output=True, text=True, timeout=60, check=True, stdin=subprocess.DEVNULL)
    return sorted(node["id"] for node in json.loads(tree.stdout)["nodes"] if node["type"] == "osd")


def checks(api: Api, data_dir: Path) -> list:
    """One check per walkthrough block, in order: what that block must have done."""
    wait = settle_timeout()

    def nodes_and_osd(output: str) -> None:
        osds = wait_until(lambda: api.listed("/storage/ceph/osd"), timeout=wait,
                          message="the local OSD was not recorded")
        assert [osd["id"] for osd in osds] == ["0"]
        assert '"name": "pvchv1"' in output and '"daemon_state": "run"' in output

    def network(output: str) -> None:
        assert api.get("/network/100")["description"] == "demo"

    def defined(output: str) -> None:
        vm = api.vm("demo")
        assert (vm["uuid"], vm["state"], vm["node"], vm["last_node"]) == (UUID, "stop", "pvchv1", "")

    def started(output: str) -> None:
        node = api.nodes()["pvchv1"]
        assert api.vm("demo")["state"] == "start"
        assert (node["running_domains"], node["domains_count"]) == ([UUID], 1)
        assert (node["memory"]["allocated"], node["vcpu"]["allocated"]) == (1024, 2)
        assert output.startswith('{"message": "Starting VM \'demo\'."}')

    def console(output: str) -> None:
        assert json.loads(output)["data"].endswith("demo login: \n")

    def placed(node: str, last: str) -> object:
        def check(output: str) -> None:
            vm = api.vm("demo")
            assert (vm["state"], vm["node"], vm["last_node"]) == ("start", node, last), vm
            assert api.running_on(UUID) == [node]
        return check

    def flushed(output: str) -> None:
        vm = api.vm("demo")
        assert api.nodes()["pvchv3"]["domain_state"] == "flushed"
        assert (vm["state"], vm["last_node"]) == ("start", "pvchv3") and vm["node"] in ("pvchv1", "pvchv2")
        assert api.running_on(UUID) == [vm["node"]]

    def readied(output: str) -> None:
        assert api.nodes()["pvchv3"]["domain_state"] == "ready"
        placed("pvchv3", "")(output)

    def primary(output: str) -> None:
        wait_until(lambda: {name: node["coordinator_state"] for name, node in api.nodes().items()} == {
            "pvchv1": "secondary", "pvchv2": "primary", "pvchv3": "secondary"} and
            api.get("/status")["primary_node"] == "pvchv2", timeout=wait, message="pvchv2 did not become primary")

    def shut_down(output: str) -> None:
        assert api.vm("demo")["state"] == "stop" and api.running_on(UUID) == []

    def pool(output: str) -> None:
        wait_until(lambda: [item["name"] for item in api.listed("/storage/ceph/pool")] == ["vms"], timeout=wait,
                   message="the pool was not listed")

    def volume(output: str) -> None:
        wait_until(lambda: [item["name"] for item in api.listed("/storage/ceph/volume/vms/demo_sda")] == ["demo_sda"],
                   timeout=wait, message="the volume was not listed")

    def osd_added(output: str) -> None:
        assert json.loads(output) == {"message": "Created new OSD with block device '/dev/sdb' on node 'pvchv2'."}
        assert ceph_osd_ids(data_dir) == [0, 1]
        assert sorted(osd["id"] for osd in api.listed("/storage/ceph/osd")) == ["0", "1"]

    def osd_removed(output: str) -> None:
        assert json.loads(output) == {"message": "Removed OSD '1' from the cluster."}
        assert ceph_osd_ids(data_dir) == [0]
        assert [osd["id"] for osd in api.listed("/storage/ceph/osd")] == ["0"]

    def submitted(output: str) -> None:
        assert '"task_id"' in output

    def provisioned(output: str) -> None:
        vm = wait_until(lambda: (lambda found: found if found.get("state") == "start" else None)(api.vm("web1")),
                        timeout=START_TIMEOUT, message="web1 was not provisioned and started")
        wait_until(lambda: api.running_on(vm["uuid"]) == [vm["node"]], timeout=wait,
                   message="web1 is not running on its node")

    return [nodes_and_osd, network, defined, started, console, placed("pvchv2", "pvchv1"), placed("pvchv1", ""),
            placed("pvchv3", ""), flushed, readied, primary, shut_down, pool, volume, osd_added, osd_removed,
            submitted, provisioned]


def test_readme_walkthrough_and_a_second_run(tmp_path):
    data_dir = tmp_path / "data"
    port, zk_port = free_port(), free_port()
    api = Api(port)
    blocks = walkthrough()
    expected = checks(api, data_dir)
    assert len(blocks) == len(expected), "README's walkthrough and this test's checks differ in length"
    process = start(data_dir, port, zk_port)
    try:
        wait_until(lambda: sorted((name, node["daemon_state"], node["domain_state"])
                                  for name, node in api.nodes().items()) == [
            (name, "run", "ready") for name in ("pvchv1", "pvchv2", "pvchv3")] and
            [node["coordinator_state"] for node in api.nodes().values()].count("primary") == 1,
            timeout=START_TIMEOUT, message="make run did not bring up three nodes, run/ready, one primary")
        wait_until(lambda: "HEALTH_OK" in api.get("/storage/ceph/status").get("ceph_data", ""),
                   timeout=2 * START_TIMEOUT, interval=0.5, message="the embedded Ceph was not reported healthy")
        workdir = tmp_path / "newcomer"
        workdir.mkdir()
        env = {**os.environ, "PVC": api.base}
        for index, (block, check) in enumerate(zip(blocks, expected, strict=True)):
            script = block.replace("127.0.0.1:7370", f"127.0.0.1:{port}")
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=env,
                                    capture_output=True, text=True, timeout=START_TIMEOUT, stdin=subprocess.DEVNULL)
            assert result.returncode == 0, (index, script, result.stderr)
            try:
                check(result.stdout)
            except AssertionError as exc:
                raise AssertionError(f"walkthrough block {index}:\n{script}\nanswered:\n{result.stdout}") from exc
    finally:
        assert stop(process) == 0
    assert "metadata:\n        enabled: False" in (data_dir / "pvcapid.yaml").read_text()  # no well-known address
    assert four_letter_word(zk_port, "ruok") == ""  # its ZooKeeper stopped with it
    assert not [pid for pid in _ceph_pids(data_dir) if _alive(pid)]  # and its Ceph
    assert (data_dir / "pvcapid.yaml").exists() and (data_dir / "pvc.db").exists()

    process = start(data_dir, port, zk_port)  # `make run` again: same data, same cluster, the same nodes back
    try:
        assert api.get("/network/100")["description"] == "demo"
        assert api.get("/provisioner/profile/web")[0]["system_template"] == "small"
        wait_until(lambda: sorted(api.nodes()) == ["pvchv1", "pvchv2", "pvchv3"] and all(
            node["daemon_state"] == "run" for node in api.nodes().values()), timeout=START_TIMEOUT,
            message="the simulated nodes did not come back")
        web1 = api.vm("web1")  # it was running when the run stopped: its node starts it again
        wait_until(lambda: api.running_on(web1["uuid"]) == [web1["node"]], timeout=settle_timeout(),
                   message="web1 was not started again on its node")
        assert api.vm("demo")["state"] == "stop"
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

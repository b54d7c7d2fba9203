"""The embedded run (`make run`) and the README's walkthrough, pasted block by block against it.

The walkthrough is read from README.md ("Trying it out"), so the README cannot
drift from what works: each ``sh`` block runs in bash, in order, in one
directory, and the check of the same index looks at what it did, through the
API and straight from the local Ceph. Then the same run gets the requests of
the v0.6 CLI commands of "With the v0.6 CLI" (the helpers of
test_cli_requests.py; the CLI itself is not run), each checked in what
``pvc vm list`` and ``pvc node list`` request and print.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from contract import Contract
from test_cli_requests import node_domain_state, node_list, vm_list, vm_node, vm_start

from conftest import BIN, REQUEST_TIMEOUT, START_TIMEOUT, http_session, settle_timeout, wait_until
from pvc_core.zkserver import ephemeral_range, four_letter_word, quiet_port

README = Path(__file__).resolve().parent.parent / "README.md"
UUID = "0f8c5d2e-6a1b-4c3d-9e8f-7a6b5c4d3e2f"


def walkthrough() -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## Trying it out\n"):text.index("\n### With the v0.6 CLI\n")]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def readme_cli_commands() -> list[str]:
    """The ``pvc`` commands of the README's "With the v0.6 CLI", comments dropped."""
    text = README.read_text()
    section = text[text.index("\n### With the v0.6 CLI\n"):text.index("\n### The simulated nodes\n")]
    lines = "".join(re.findall(r"```sh\n(.*?)```", section, re.DOTALL)).splitlines()
    return [line.split("#")[0].strip() for line in lines if line.startswith("pvc ")]


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


class Client:
    """What the CLI helpers of test_cli_requests.py send through (they take a conftest.Daemon): GET and POST
    under the embedded run's /api/v1, each answer held to the daemon's own OpenAPI document as Daemon does."""

    def __init__(self, base: str):
        self.base = base
        self.http = http_session()
        self._contract: Contract | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.http.request(method, self.base + path, timeout=REQUEST_TIMEOUT, **kwargs)
        if self._contract is None:
            self._contract = Contract(requests.get(self.base + "/openapi.json", timeout=REQUEST_TIMEOUT).json())
        for answer in (*response.history, response):
            self._contract.check(answer.request.method, urlsplit(answer.request.url).path, answer.status_code,
                                 answer.headers.get("Content-Type"), answer.content)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)


def ceph_osd_tree(data_dir: Path) -> list[dict]:
    """The items of `ceph osd tree -f json` against the embedded Ceph (OSDs and CRUSH buckets)."""
    tree = subprocess.run(["ceph", "-c", str(data_dir / "ceph" / "ceph.conf"), "osd", "tree", "-f", "json"],
                          capture_output=True, text=True, timeout=60, check=True, stdin=subprocess.DEVNULL)
    return json.loads(tree.stdout)["nodes"]


def ceph_osd_ids(data_dir: Path) -> list[int]:
    return sorted(node["id"] for node in ceph_osd_tree(data_dir) if node["type"] == "osd")


def ceph_osd_hosts(data_dir: Path) -> dict[int, str]:
    """OSD id -> the name of the CRUSH host it is placed under."""
    return {osd: bucket["name"] for bucket in ceph_osd_tree(data_dir) if bucket["type"] == "host"
            for osd in bucket.get("children", [])}


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

    def primaries() -> list[str]:
        return sorted(name for name, node in api.nodes().items() if node["coordinator_state"] == "primary")

    def primary_before() -> None:
        """The block must switch the primary: pvchv2 is not primary before it. The nodes' start-up election
        may have made it primary; then pvchv1 takes the role first, so that the switch is still one."""
        if primaries() == ["pvchv2"]:
            requests.post(f"{api.base}/node/pvchv1/coordinator-state", data={"state": "primary"},
                          timeout=REQUEST_TIMEOUT).raise_for_status()
        before = wait_until(lambda: (lambda now: now if len(now) == 1 and now == [api.get("/status")["primary_node"]]
                                     else None)(primaries()), timeout=wait, message="not exactly one primary")
        assert before != ["pvchv2"], before

    def primary(output: str) -> None:
        assert json.loads(output) == {"message": "Setting node pvchv2 in primary router mode."}
        wait_until(lambda: {name: node["coordinator_state"] for name, node in api.nodes().items()} == {
            "pvchv1": "secondary", "pvchv2": "primary", "pvchv3": "secondary"} and
            api.get("/status")["primary_node"] == "pvchv2", timeout=wait, message="pvchv2 did not become primary")

    primary.before = primary_before  # type: ignore[attr-defined]

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
        # `ceph osd tree` shows the new OSD under host pvchv2, the first under this machine's host name
        assert ceph_osd_hosts(data_dir) == {0: socket.gethostname().split(".")[0], 1: "pvchv2"}
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


CLI_COMMANDS = ["pvc vm start demo", "pvc vm migrate demo -t pvchv1", "pvc vm unmigrate demo",
                "pvc node flush --wait pvchv3", "pvc node ready --wait pvchv3"]


def cli_commands(cli: Client) -> None:
    """After the walkthrough (demo stopped on pvchv3, web1 running, pvchv2 primary): the requests of the
    README's v0.6 CLI commands, in its order, each waited for in what `pvc vm list` and `pvc node list` show."""
    assert readme_cli_commands() == ["pvc cluster add -a 127.0.0.1 -p 7370 embedded", *CLI_COMMANDS,
                                     "pvc vm list", "pvc node list"]
    web1 = vm_list(cli)["web1"]
    assert (web1["state"], web1["migrated"]) == ("start", "no"), web1
    home = web1["node"]

    def tables_show(demo_on: tuple[str, ...], migrated: str, pvchv3: str, message: str) -> str:
        """vm list: demo running on one of ``demo_on``, its Migrated column ``migrated``, web1 running at home
        (elsewhere, from pvchv3, while a flush keeps it away); node list: pvchv3 ``pvchv3``, the others ready,
        each node's VMs, vCPUs and RAM those of the VMs vm list shows running on it. Returns demo's node."""
        def shown() -> str | None:
            vms, nodes = vm_list(cli), node_list(cli)
            demo, web = vms["demo"], vms["web1"]
            away = pvchv3 == "flushed" and home == "pvchv3"
            if (demo["state"], demo["migrated"]) != ("start", migrated) or demo["node"] not in demo_on or \
                    (web["state"], web["node"] == home, web["migrated"]) != ("start", not away,
                                                                           "from pvchv3" if away else "no"):
                return None
            for name, (daemon, domain, count, vcpus, memory) in nodes.items():
                running = [vm for vm in vms.values() if vm["state"] == "start" and vm["node"] == name]
                if (daemon, domain, count, vcpus, memory) != (
                        "run", pvchv3 if name == "pvchv3" else "ready", len(running),
                        sum(vm["vcpu"] for vm in running), sum(vm["memory"] for vm in running)):
                    return None
            return demo["node"]
        return wait_until(shown, message=message)

    assert vm_start(cli, "demo").json() == {"message": "Starting VM 'demo'."}
    tables_show(("pvchv3",), "no", "ready", "pvc vm start: demo running on pvchv3")
    assert vm_node(cli, "demo", "migrate", "pvchv1").json() == {"message": "Migrating VM 'demo' to node 'pvchv1'."}
    tables_show(("pvchv1",), "from pvchv3", "ready", "pvc vm migrate: demo on pvchv1, from pvchv3")
    assert vm_node(cli, "demo", "unmigrate").json() == {"message": "Unmigrating VM 'demo' back to node 'pvchv3'."}
    tables_show(("pvchv3",), "no", "ready", "pvc vm unmigrate: demo back on pvchv3")
    assert node_domain_state(cli, "pvchv3", "flush", wait=True).json() == {
        "message": "Flushed hypervisor pvchv3 of running VMs."}
    tables_show(("pvchv1", "pvchv2"), "from pvchv3", "flushed", "pvc node flush: pvchv3 flushed, demo elsewhere")
    assert node_domain_state(cli, "pvchv3", "ready", wait=True).json() == {
        "message": "Restored hypervisor pvchv3 to active service."}
    tables_show(("pvchv3",), "no", "ready", "pvc node ready: pvchv3 ready, demo back on it")


def test_readme_walkthrough_and_a_second_run(tmp_path):
    data_dir = tmp_path / "data"
    port, zk_port = quiet_port(), quiet_port()  # both taken again by the second run
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
            before = getattr(check, "before", None)
            if before is not None:
                before()
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=env,
                                    capture_output=True, text=True, timeout=START_TIMEOUT, stdin=subprocess.DEVNULL)
            assert result.returncode == 0, (index, script, result.stderr)
            try:
                check(result.stdout)
            except AssertionError as exc:
                raise AssertionError(f"walkthrough block {index}:\n{script}\nanswered:\n{result.stdout}") from exc
        cli_commands(Client(api.base))
    finally:
        assert stop(process) == 0
    assert "metadata:\n        enabled: False" in (data_dir / "pvcapid.yaml").read_text()  # no well-known address
    assert four_letter_word(zk_port, "ruok") == ""  # its ZooKeeper stopped with it
    assert not [pid for pid in _ceph_pids(data_dir) if alive(pid)]  # and its Ceph
    from pvc_ceph.localceph import LocalCeph
    low, _high = ephemeral_range()  # the mon's ports, fixed in its monmap, are none an outgoing connection takes
    assert all(port < low for port in LocalCeph(str(data_dir / "ceph")).mon_ports())
    assert (data_dir / "pvcapid.yaml").exists() and (data_dir / "pvc.db").exists()

    process = start(data_dir, port, zk_port)  # `make run` again: same data, same cluster, the same nodes back
    try:
        assert api.get("/network/100")["description"] == "demo"
        assert api.get("/provisioner/profile/web")[0]["system_template"] == "small"
        wait_until(lambda: sorted(api.nodes()) == ["pvchv1", "pvchv2", "pvchv3"] and all(
            node["daemon_state"] == "run" for node in api.nodes().values()), timeout=START_TIMEOUT,
            message="the simulated nodes did not come back")
        web1 = api.vm("web1")  # both were running when the run stopped: their nodes start them again
        wait_until(lambda: api.running_on(web1["uuid"]) == [web1["node"]] and api.running_on(UUID) == ["pvchv3"],
                   timeout=settle_timeout(), message="web1 and demo were not started again on their nodes")
        assert (api.vm("demo")["state"], api.vm("demo")["node"]) == ("start", "pvchv3")
    finally:
        assert stop(process) == 0


def _ceph_pids(data_dir) -> list[int]:
    run = data_dir / "ceph" / "run"
    return [int(path.read_text().strip()) for path in run.glob("*.pid")] if run.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False

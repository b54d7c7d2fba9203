"""Simulated node daemons (plugins/simnode) against a real ZooKeeper and libvirt's test driver.

Every test acts through the API of a daemon that runs three simulated nodes.
A ``wait=true`` request returns once the node daemons' answer is complete in
ZooKeeper, so the raw keys are checked right then (``final``); the API's GETs
read a watched view that follows a moment later (one key at a time), so what
they show is waited for (``expect``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kazoo.exceptions import NoNodeError
from test_node import seed_node
from test_vm import UUID, XML, uuid_for, vm_xml

from conftest import SIM_NODES, SLOWDOWN, Daemon, node_map, settle_timeout, sim_config, sim_ready, wait_until

NO_CEPH = {"plugins": {"disabled": ["ceph"]}}
IDLE = ([], 0, 0, 0)
TEST1 = ([UUID], 1, 2048, 2)  # test_vm.XML: 2048 MiB, 2 vCPUs


# -- helpers --------------------------------------------------------------------------------

def define(sim: Daemon, xml: str = XML, node: str = "pvchv1", **params: str) -> None:
    answer = sim.post("/vm", params={"xml": xml, "node": node, **params})
    assert answer.status_code == 200, answer.text


def other_vm(name: str, index: int, memory: int = 2048) -> str:
    """Another VM (own name, UUID ``uuid_for(index)`` and MAC) with ``memory`` MiB and 2 vCPUs."""
    return vm_xml(name, uuid_for(index)).replace("<memory unit='MiB'>2048</memory>",
                                                 f"<memory unit='MiB'>{memory}</memory>") \
        .replace("52:54:00:ab:cd:ef", f"52:54:00:ab:cd:{index:02x}")


def set_state(sim: Daemon, state: str, wait: bool = True, vm: str = "test1") -> Any:
    return sim.post(f"/vm/{vm}/state", params={"state": state, "wait": str(wait).lower()})


def set_node(sim: Daemon, action: str, node: str | None = None, wait: bool = True, vm: str = "test1") -> Any:
    params = {"action": action, "wait": str(wait).lower(), **({"node": node} if node else {})}
    return sim.post(f"/vm/{vm}/node", params=params)


def domain_state(sim: Daemon, node: str, state: str, wait: bool = True) -> Any:
    return sim.post(f"/node/{node}/domain-state", params={"state": state, "wait": str(wait).lower()})


def simulated(sim: Daemon, node: str) -> tuple:
    """(daemon, host, domains) of a node as GET /simnode shows it."""
    found = {entry["name"]: entry for entry in sim.get("/simnode").json()}[node]
    return found["daemon"], found["host"], found["domains"]


def zk_value(zk: Any, path: str) -> str:
    return zk.get(path)[0].decode()


def zk_vm(zk: Any, key: str, uuid: str = UUID) -> str:
    return zk_value(zk, f"/domains/{uuid}/{key}")


def load(node: dict) -> tuple:
    """What GET /node says a node runs: (running_domains, domains_count, memory and vCPUs allocated)."""
    return sorted(node["running_domains"]), node["domains_count"], node["memory"]["allocated"], \
        node["vcpu"]["allocated"]


def zk_load(zk: Any, node: str) -> tuple:
    """The same from the node's keys."""
    values = {key: zk_value(zk, f"/nodes/{node}/{key}")
              for key in ("runningdomains", "domainscount", "memalloc", "vcpualloc")}
    return sorted(values["runningdomains"].split()), int(values["domainscount"]), int(values["memalloc"]), \
        int(values["vcpualloc"])


def placement(sim: Daemon, vm: str) -> tuple:
    """(state, node, last_node) as GET /vm/<vm> shows it."""
    found = sim.get(f"/vm/{vm}").json()
    return found["state"], found["node"], found["last_node"]


def zk_placement(zk: Any, uuid: str) -> tuple:
    return zk_vm(zk, "state", uuid), zk_vm(zk, "node", uuid), zk_vm(zk, "lastnode", uuid)


def shows(predicate: Any, message: str, timeout: float | None = None) -> Any:
    return wait_until(predicate, timeout=timeout, ignoring=(KeyError, NoNodeError), message=message)


def expect(sim: Daemon, nodes: dict[str, tuple] | None = None, **vms: tuple) -> None:
    """Wait until GET /node shows these loads and GET /vm these (state, node, last_node)."""
    def shown() -> bool:
        found = {name: load(node) for name, node in node_map(sim).items() if name in (nodes or {})}
        return found == (nodes or {}) and all(placement(sim, vm) == where for vm, where in vms.items())
    shows(shown, f"the API showing {nodes or ''} {vms}")


def final(sim: Daemon, zk: Any, nodes: dict[str, tuple] | None = None, **vms: tuple) -> None:
    """What a wait=true request guarantees when it returns: the answer is complete in ZooKeeper. The API
    shows it a moment later."""
    assert {name: zk_load(zk, name) for name in nodes or {}} == (nodes or {})
    for vm, where in vms.items():
        assert zk_placement(zk, sim.get(f"/vm/{vm}").json()["uuid"]) == where, vm
    expect(sim, nodes, **vms)


def primaries(sim: Daemon) -> list[str]:
    return sorted(name for name, node in node_map(sim).items() if node["coordinator_state"] == "primary")


def fence_limit(sim: Daemon) -> float:
    """keepalive_interval x fence_intervals: how old a keepalive is when its node is declared dead."""
    simnode = sim.config["simnode"]
    return float(simnode["keepalive_interval"]) * int(simnode["fence_intervals"])


def fence_time(sim: Daemon) -> float:
    """The fencing limit plus the time a change takes to show."""
    return fence_limit(sim) + settle_timeout(sim.config)


def error_lines(daemon: Daemon) -> list[str]:
    return [line for line in daemon.log().splitlines() if "ERROR" in line]


# -- the nodes ------------------------------------------------------------------------------

def test_nodes_come_up(sim):
    nodes = node_map(sim)
    for node in nodes.values():
        assert node["kernel"] == "pvc-simnode" and node["cpu_count"] == 8
        assert node["memory"]["total"] == 16384 and node["domains_count"] == 0
    assert sorted(node["coordinator_state"] for node in nodes.values()) == ["primary", "secondary", "secondary"]
    assert [simulated(sim, name) for name in SIM_NODES] == [("run", "on", [])] * 3


# -- VM states ------------------------------------------------------------------------------

def test_start_a_vm(sim, clean_zk):
    define(sim)
    assert set_state(sim, "start").status_code == 200
    final(sim, clean_zk, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))
    console = sim.get("/vm/test1/console", params={"lines": "3"}).json()["data"]
    assert console == "\ntest1 login: \n"


def test_vm_states_with_wait(sim, clean_zk):
    define(sim)
    assert set_state(sim, "start").json() == {"message": "Starting VM 'test1'."}
    final(sim, clean_zk, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))

    assert set_state(sim, "restart").json() == {"message": "Restarting VM 'test1'."}
    final(sim, clean_zk, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))
    assert zk_vm(clean_zk, "consolelog").count("test1 login:") == 2  # it really booted again

    assert set_state(sim, "shutdown").json() == {"message": "Shutting down VM 'test1'."}
    final(sim, clean_zk, {"pvchv1": IDLE}, test1=("stop", "pvchv1", ""))

    assert set_state(sim, "start").status_code == 200
    assert set_state(sim, "stop").json() == {"message": "Forcibly stopping VM 'test1'."}
    final(sim, clean_zk, {"pvchv1": IDLE}, test1=("stop", "pvchv1", ""))

    assert set_state(sim, "disable").json() == {"message": "Marked VM 'test1' as disable."}
    final(sim, clean_zk, {"pvchv1": IDLE}, test1=("disable", "pvchv1", ""))
    assert set_state(sim, "start").status_code == 200  # a disabled VM starts directly
    final(sim, clean_zk, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))


def test_vm_states_without_wait(sim):
    define(sim)
    assert set_state(sim, "start", wait=False).json() == {"message": "Starting VM 'test1'."}
    expect(sim, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))

    assert set_state(sim, "restart", wait=False).status_code == 200
    shows(lambda: sim.get("/vm/test1/console", params={"lines": "0"}).json()["data"].count("test1 login:") == 2,
          "a second boot on the console")
    expect(sim, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))

    assert set_state(sim, "shutdown", wait=False).status_code == 200
    expect(sim, {"pvchv1": IDLE}, test1=("stop", "pvchv1", ""))

    assert set_state(sim, "start", wait=False).status_code == 200
    expect(sim, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))
    assert set_state(sim, "stop", wait=False).status_code == 200
    expect(sim, {"pvchv1": IDLE}, test1=("stop", "pvchv1", ""))


def test_a_failed_start_records_why_and_a_good_start_clears_it(sim, clean_zk):
    """The API validates XML with libvirt's test driver, which then refuses nothing at start that it accepted
    at definition; so the broken XML is written straight into ZooKeeper (as a buggy client could)."""
    define(sim)
    clean_zk.set(f"/domains/{UUID}/xml", XML.replace("<vcpu>2</vcpu>", "<vcpu current='3'>2</vcpu>").encode())
    answer = set_state(sim, "start")
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("ERROR: VM 'test1' failed: unsupported configuration: maximum vCPU")
    reason = zk_vm(clean_zk, "failedreason")
    assert "maximum vCPU count must not be less than current vCPU count" in reason
    final(sim, clean_zk, {"pvchv1": IDLE}, test1=("fail", "pvchv1", ""))
    assert sim.get("/vm/test1").json()["failed_reason"] == reason

    assert sim.put("/vm/test1", params={"xml": XML}).status_code == 200
    assert set_state(sim, "start").status_code == 200
    assert zk_vm(clean_zk, "failedreason") == ""
    final(sim, clean_zk, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))
    shows(lambda: sim.get("/vm/test1").json()["failed_reason"] == "", "the failed reason emptied")


# -- placement ------------------------------------------------------------------------------

def test_migrate_and_unmigrate(sim, clean_zk):
    define(sim)
    assert set_state(sim, "start").status_code == 200
    assert set_node(sim, "migrate", "pvchv2").json() == {"message": "Migrating VM 'test1' to node 'pvchv2'."}
    final(sim, clean_zk, {"pvchv1": IDLE, "pvchv2": TEST1, "pvchv3": IDLE}, test1=("start", "pvchv2", "pvchv1"))
    assert sim.get("/vm/test1").json()["migrated"] == "from pvchv1"

    assert set_node(sim, "unmigrate").json() == {"message": "Unmigrating VM 'test1' back to node 'pvchv1'."}
    final(sim, clean_zk, {"pvchv1": TEST1, "pvchv2": IDLE, "pvchv3": IDLE}, test1=("start", "pvchv1", ""))


def test_move_with_wait(sim, clean_zk):
    define(sim)
    assert set_state(sim, "start").status_code == 200
    assert set_node(sim, "move", "pvchv3").json() == {"message": "Permanently migrating VM 'test1' to node 'pvchv3'."}
    final(sim, clean_zk, {"pvchv1": IDLE, "pvchv2": IDLE, "pvchv3": TEST1}, test1=("start", "pvchv3", ""))


def test_migrate_and_move_without_wait(sim):
    define(sim)
    assert set_state(sim, "start").status_code == 200
    assert set_node(sim, "migrate", "pvchv3", wait=False).status_code == 200
    expect(sim, {"pvchv1": IDLE, "pvchv2": IDLE, "pvchv3": TEST1}, test1=("start", "pvchv3", "pvchv1"))

    # a move is permanent: no last node, so nothing to unmigrate to
    assert set_node(sim, "move", "pvchv2", wait=False).status_code == 200
    expect(sim, {"pvchv1": IDLE, "pvchv2": TEST1, "pvchv3": IDLE}, test1=("start", "pvchv2", ""))
    assert set_node(sim, "unmigrate").status_code == 400


def test_migrating_a_stopped_vm_starts_it_on_the_target(sim, clean_zk):
    define(sim)
    assert set_node(sim, "migrate", "pvchv2").status_code == 200
    final(sim, clean_zk, {"pvchv1": IDLE, "pvchv2": TEST1}, test1=("start", "pvchv2", "pvchv1"))


# -- flush and unflush ----------------------------------------------------------------------

def test_flush_honours_selector_and_limit_and_ready_brings_the_vms_back(sim, clean_zk):
    """pvchv2 runs two small VMs, pvchv3 one big one: selector mem prefers pvchv2, vms pvchv3."""
    define(sim, other_vm("small1", 1, 512), node="pvchv2")
    define(sim, other_vm("small2", 2, 512), node="pvchv2")
    define(sim, other_vm("big", 3, 8192), node="pvchv3")
    define(sim, other_vm("byvms", 4), selector="vms")
    define(sim, other_vm("bymem", 5), selector="mem")
    define(sim, XML, selector="mem", limit="pvchv1,pvchv3")  # test1: mem alone would pick pvchv2
    for vm in ("small1", "small2", "big", "byvms", "bymem", "test1"):
        assert set_state(sim, "start", vm=vm).status_code == 200

    assert domain_state(sim, "pvchv1", "flush").json() == {"message": "Flushed hypervisor pvchv1 of running VMs."}
    assert zk_value(clean_zk, "/nodes/pvchv1/domainstate") == "flushed"
    final(sim, clean_zk, {"pvchv1": IDLE, "pvchv2": (sorted([uuid_for(1), uuid_for(2), uuid_for(5)]), 3, 3072, 6),
                          "pvchv3": (sorted([uuid_for(3), uuid_for(4), UUID]), 3, 12288, 6)},
          byvms=("start", "pvchv3", "pvchv1"), bymem=("start", "pvchv2", "pvchv1"),
          test1=("start", "pvchv3", "pvchv1"))
    shows(lambda: node_map(sim)["pvchv1"]["domain_state"] == "flushed", "pvchv1 flushed")

    assert domain_state(sim, "pvchv1", "ready").json() == {"message": "Restored hypervisor pvchv1 to active service."}
    assert zk_value(clean_zk, "/nodes/pvchv1/domainstate") == "ready"
    final(sim, clean_zk, {"pvchv1": (sorted([uuid_for(4), uuid_for(5), UUID]), 3, 6144, 6),
                          "pvchv2": (sorted([uuid_for(1), uuid_for(2)]), 2, 1024, 4),
                          "pvchv3": ([uuid_for(3)], 1, 8192, 2)},
          byvms=("start", "pvchv1", ""), bymem=("start", "pvchv1", ""), test1=("start", "pvchv1", ""))
    shows(lambda: node_map(sim)["pvchv1"]["domain_state"] == "ready", "pvchv1 ready")


def test_flush_without_a_target_shuts_the_vm_down_and_ready_starts_it(sim, clean_zk):
    define(sim, limit="pvchv1")
    assert set_state(sim, "start").status_code == 200
    assert domain_state(sim, "pvchv1", "flush", wait=False).json() == \
        {"message": "Flushing hypervisor pvchv1 of running VMs."}
    shows(lambda: node_map(sim)["pvchv1"]["domain_state"] == "flushed", "pvchv1 flushed")
    expect(sim, {"pvchv1": IDLE}, test1=("stop", "pvchv1", ""))
    assert zk_vm(clean_zk, "node_autostart") == "True"
    shows(lambda: sim.get("/vm/test1").json()["node_autostart"] is True, "node_autostart shown")

    assert domain_state(sim, "pvchv1", "ready", wait=False).json() == \
        {"message": "Restoring hypervisor pvchv1 to active service."}
    shows(lambda: node_map(sim)["pvchv1"]["domain_state"] == "ready", "pvchv1 ready")
    expect(sim, {"pvchv1": TEST1}, test1=("start", "pvchv1", ""))
    assert zk_vm(clean_zk, "node_autostart") == "False"


# -- coordinators ---------------------------------------------------------------------------

def test_primary_coordinator_switch(sim, clean_zk):
    before = primaries(sim)[0]
    target = "pvchv2" if before != "pvchv2" else "pvchv3"
    answer = sim.post(f"/node/{target}/coordinator-state", params={"state": "primary"})
    assert answer.json() == {"message": f"Setting node {target} in primary router mode."}
    shows(lambda: primaries(sim) == [target] and zk_value(clean_zk, "/primary_node") == target, f"{target} primary")
    assert sorted(node["coordinator_state"] for node in node_map(sim).values()) == \
        ["primary", "secondary", "secondary"]
    assert sim.get("/status").json()["primary_node"] == target

    answer = sim.post(f"/node/{target}/coordinator-state", params={"state": "secondary"})
    assert answer.json() == {"message": f"Setting node {target} in secondary router mode."}
    def another_primary() -> bool:
        now = primaries(sim)  # read once: the switch may be under way between two reads
        return len(now) == 1 and now != [target] and zk_value(clean_zk, "/primary_node") == now[0]
    shows(another_primary, "another primary")
    assert node_map(sim)[target]["coordinator_state"] == "secondary"


def test_hypervisor_only_nodes_are_clients(sim_factory):
    sim = sim_factory(NO_CEPH, coordinators="2")
    assert node_map(sim)["pvchv3"]["coordinator_state"] == "client"
    assert {entry["name"]: entry["mode"] for entry in sim.get("/simnode").json()} == \
        {"pvchv1": "coordinator", "pvchv2": "coordinator", "pvchv3": "hypervisor"}
    answer = sim.post("/node/pvchv3/coordinator-state", params={"state": "primary"})
    assert answer.status_code == 400
    assert answer.json() == {"message": "ERROR: Cannot change router mode on non-coordinator node 'pvchv3'"}

    victim = primaries(sim)[0]
    survivor = "pvchv2" if victim == "pvchv1" else "pvchv1"
    assert sim.post(f"/simnode/{victim}", params={"action": "kill"}).status_code == 200
    shows(lambda: primaries(sim) == [survivor], f"{survivor} primary", timeout=fence_time(sim))
    assert node_map(sim)["pvchv3"]["coordinator_state"] == "client"


# -- node daemons stopping, dying and coming back ---------------------------------------------

def test_a_killed_primary_is_marked_dead_and_another_takes_over(sim, clean_zk):
    victim = primaries(sim)[0]
    assert sim.post(f"/simnode/{victim}", params={"action": "kill"}).json() == \
        {"message": f"Killed simulated node '{victim}'."}
    last = zk_value(clean_zk, f"/nodes/{victim}/keepalive")
    shows(lambda: node_map(sim)[victim]["daemon_state"] == "dead", f"{victim} dead", timeout=fence_time(sim))
    # its keepalives stopped, and it was declared dead only once the last one was older than the limit
    assert zk_value(clean_zk, f"/nodes/{victim}/keepalive") == last
    assert time.time() - int(last) > fence_limit(sim)
    shows(lambda: len(primaries(sim)) == 1 and primaries(sim) != [victim], "a new primary")
    assert node_map(sim)[victim]["coordinator_state"] == "secondary"  # forced, as v0.6's fencing does
    assert zk_value(clean_zk, "/primary_node") == primaries(sim)[0]

    assert sim.post(f"/simnode/{victim}", params={"action": "start"}).json() == \
        {"message": f"Started simulated node '{victim}'."}
    shows(lambda: sim_ready(sim), "all nodes run/ready again, one primary")
    assert primaries(sim) != [victim]

    assert sim.post(f"/simnode/{victim}", params={"action": "stop"}).json() == \
        {"message": f"Stopped simulated node '{victim}'."}
    shows(lambda: node_map(sim)[victim]["daemon_state"] == "stop", f"{victim} stopped")
    assert simulated(sim, victim) == ("stopped", "on", [])


def test_a_restarted_node_runs_its_vms_again(sim, clean_zk):
    """A killed host loses its VMs; its daemon, back, starts those that should run there, and acts on
    later changes (it watches the VMs anew)."""
    define(sim, node="pvchv3")
    assert set_state(sim, "start").status_code == 200
    assert sim.post("/simnode/pvchv3", params={"action": "kill"}).status_code == 200
    assert simulated(sim, "pvchv3") == ("stopped", "off", [])
    shows(lambda: node_map(sim)["pvchv3"]["daemon_state"] == "dead", "pvchv3 dead", timeout=fence_time(sim))
    assert placement(sim, "test1") == ("start", "pvchv3", "")  # no IPMI to fence with: the VM stays

    assert sim.post("/simnode/pvchv3", params={"action": "start"}).status_code == 200
    shows(lambda: node_map(sim)["pvchv3"]["daemon_state"] == "run", "pvchv3 running")
    expect(sim, {"pvchv3": TEST1}, test1=("start", "pvchv3", ""))
    assert simulated(sim, "pvchv3") == ("run", "on", [UUID])
    assert set_state(sim, "stop").status_code == 200
    final(sim, clean_zk, {"pvchv3": IDLE}, test1=("stop", "pvchv3", ""))
    assert set_node(sim, "migrate", "pvchv1").status_code == 200
    final(sim, clean_zk, {"pvchv1": TEST1, "pvchv2": IDLE, "pvchv3": IDLE}, test1=("start", "pvchv1", "pvchv3"))


def test_a_cleanly_stopped_node_keeps_its_vms_running(sim, clean_zk):
    define(sim, node="pvchv2")
    assert set_state(sim, "start").status_code == 200
    assert sim.post("/simnode/pvchv2", params={"action": "stop"}).status_code == 200
    assert simulated(sim, "pvchv2") == ("stopped", "on", [UUID])
    shows(lambda: node_map(sim)["pvchv2"]["daemon_state"] == "stop", "pvchv2 stopped")
    assert sim.post("/simnode/pvchv2", params={"action": "start"}).status_code == 200
    shows(lambda: sim_ready(sim), "pvchv2 back")
    assert set_state(sim, "shutdown").status_code == 200  # the restarted daemon acts on its VM
    final(sim, clean_zk, {"pvchv2": IDLE}, test1=("stop", "pvchv2", ""))


def test_unknown_simulated_node(sim):
    answer = sim.post("/simnode/pvchv9", params={"action": "kill"})
    assert answer.status_code == 400 and answer.json() == {"message": "ERROR: No simulated node named 'pvchv9'."}


# -- safety ---------------------------------------------------------------------------------

def test_without_the_plugin_there_is_no_simulator(daemon, clean_zk):
    assert daemon.post("/initialize").status_code == 200
    assert daemon.get("/simnode").status_code == 404
    assert not [path for path in daemon.contract().document["paths"] if "simnode" in path]
    assert clean_zk.get_children("/nodes") == []
    assert "simulated node" not in daemon.log()


def assert_refused(daemon: Daemon, why: str) -> None:
    """The daemon exits non-zero before serving, with one ERROR line saying it refuses, and why."""
    with pytest.raises(RuntimeError, match="pvcapid exited with"):
        daemon.start()
    assert daemon.process.returncode != 0
    errors = error_lines(daemon)
    assert len(errors) == 1, errors
    assert "refusing to start" in errors[0] and why in errors[0]


def test_a_simulator_refuses_a_cluster_with_real_nodes(daemon, daemon_factory, clean_zk):
    assert daemon.post("/initialize").status_code == 200
    seed_node(clean_zk, "hv1")
    assert_refused(daemon_factory(sim_config(NO_CEPH), start=False), "hv1")
    assert clean_zk.get_children("/nodes") == ["hv1"]


def test_a_second_simulator_on_the_same_cluster_refuses(sim, daemon_factory, clean_zk):
    # The lock wait (for a crashed predecessor's session to expire) scales with the session timeout.
    assert_refused(daemon_factory(sim_config({**NO_CEPH, "zookeeper": {"session_timeout": "4"}}), start=False),
                   "another simulator")
    assert sorted(clean_zk.get_children("/nodes")) == list(SIM_NODES)
    assert sim_ready(sim)


def test_a_simulator_started_before_the_tree_refuses_real_nodes_once_it_appears(daemon_factory, clean_zk):
    """No /nodes at start: the check waits for the tree while the API serves; a refusal then still stops the
    daemon, as one at start does (one ERROR line, exit status 1), and the simulator has written nothing."""
    sim = daemon_factory(sim_config(NO_CEPH))
    assert [node["daemon"] for node in sim.get("/simnode").json()] == ["stopped"] * 3  # waiting for the tree
    # the tree appears with a real node daemon's registration in it (one transaction, so that the check,
    # which runs when /nodes appears, sees the node)
    transaction = clean_zk.transaction()
    transaction.create("/nodes")
    transaction.create("/nodes/hv1", b"coordinator")
    transaction.create("/nodes/hv1/staticdata", b"16 4.19.0-6-amd64 GNU/Linux x86_64")
    assert not [result for result in transaction.commit() if isinstance(result, Exception)]
    process = sim.process
    wait_until(lambda: process.poll() is not None, timeout=settle_timeout(sim.config),
               message="the daemon did not stop on the refusal")
    assert process.returncode == 1
    errors = error_lines(sim)
    assert len(errors) == 1, errors
    assert "refusing to start" in errors[0] and "hv1" in errors[0] and "the daemon stops" in errors[0]
    assert clean_zk.get_children("/nodes") == ["hv1"] and clean_zk.get_children("/nodes/hv1") == ["staticdata"]
    assert not clean_zk.exists("/locks/simnode")


# -- Ceph OSDs ------------------------------------------------------------------------------

def ceph_osds(ceph_cluster: Any) -> list[str]:
    """The OSDs of `ceph osd tree`."""
    tree = json.loads(ceph_cluster.ceph("osd", "tree", "-f", "json"))
    return sorted(str(node["id"]) for node in tree["nodes"] if node["type"] == "osd")


def listed_osds(sim: Daemon) -> list[str]:
    return sorted(entry["id"] for entry in sim.get("/storage/ceph/osd").json())


def test_osds_are_added_and_removed_by_the_simulated_nodes(sim_factory, ceph_config, ceph_cluster, clean_zk):
    """The session's Ceph is shared: whatever happens, it is left with exactly the OSDs it had."""
    original = ceph_osds(ceph_cluster)
    try:
        sim = sim_factory(ceph_config)
        # the local Ceph's own (first) OSD is recorded as the first node's, as if that node had made it
        shows(lambda: zk_value(clean_zk, f"/ceph/osds/{original[0]}/node") == "pvchv1", "the adopted OSD")
        shows(lambda: listed_osds(sim) == original, "the adopted OSD listed")

        # a pool whose placement groups the new OSD (v0.6's usual weight 1.0) takes, so removing it drains them
        assert sim.post("/storage/ceph/pool", params={"pool": "drain", "pgs": "16",
                                                      "replcfg": "copies=1,mincopies=1"}).status_code == 200
        answer = sim.post("/storage/ceph/osd", params={"node": "pvchv2", "device": "/dev/sdb", "weight": "1.0"})
        assert answer.json() == {"message": "Created new OSD with block device '/dev/sdb' on node 'pvchv2'."}
        added = [osd for osd in ceph_osds(ceph_cluster) if osd not in original]
        assert len(added) == 1
        osd = added[0]
        assert (zk_value(clean_zk, f"/ceph/osds/{osd}/node"), zk_value(clean_zk, f"/ceph/osds/{osd}/device")) == \
            ("pvchv2", "/dev/sdb")
        shows(lambda: listed_osds(sim) == sorted(original + [osd]), "the new OSD listed")
        # Ceph itself places and reports it on the node's host, as on a real node
        tree = json.loads(ceph_cluster.ceph("osd", "tree", "-f", "json"))
        assert [bucket["name"] for bucket in tree["nodes"] if bucket["type"] == "host"
                and int(osd) in bucket.get("children", [])] == ["pvchv2"]
        shows(lambda: sim.get(f"/storage/ceph/osd/{osd}").json()[0]["stats"].get("node") == "pvchv2",
              "the OSD's statistics naming its node")

        answer = sim.delete(f"/storage/ceph/osd/{osd}", params={"yes-i-really-mean-it": "yes"})
        assert answer.json() == {"message": f"Removed OSD '{osd}' from the cluster."}
        assert ceph_osds(ceph_cluster) == original
        assert not clean_zk.exists(f"/ceph/osds/{osd}")
        shows(lambda: listed_osds(sim) == original, "the OSD gone from the list")
    finally:
        for leftover in set(ceph_osds(ceph_cluster)) - set(original):
            ceph_cluster.remove_osd(leftover)
        ceph_cluster.ceph("osd", "pool", "rm", "drain", "drain", "--yes-i-really-really-mean-it", check=False)


# -- guest filesystem freeze (/cmd/domains: domain_fsfreeze, domain_fsthaw) -------------------

def freeze_log(zk: Any, node: str) -> list[dict]:
    """The node's record of freezes and thaws, oldest first; each entry with its znode's creation zxid."""
    base = f"/nodes/{node}/simnode/fsfreeze"
    entries = []
    for child in sorted(zk.get_children(base)) if zk.exists(base) else []:
        data, stat = zk.get(f"{base}/{child}")
        entries.append({**json.loads(data), "czxid": stat.czxid})
    return entries


def events(entries: list[dict]) -> list[tuple[str, str, str]]:
    return [(entry["event"], entry["uuid"], entry["result"]) for entry in entries]


def frozen_domains(sim: Daemon) -> dict[str, list[str]]:
    """What GET /simnode says each node's host holds frozen."""
    return {entry["name"]: entry["frozen"] for entry in sim.get("/simnode").json()}


def domains_command(zk: Any, command: str) -> str:
    """Put a command into /cmd/domains as the API does and wait for a node's answer: its first token."""
    zk.set("/cmd/domains", command.encode())
    answered = (f"success-{command}", f"failure-{command}")
    return shows(lambda: zk_value(zk, "/cmd/domains") in answered and zk_value(zk, "/cmd/domains"),
                 f"an answer to {command}").split()[0]


NONE_FROZEN = {name: [] for name in SIM_NODES}


def test_a_guest_is_frozen_and_thawed_by_its_node_and_thawed_by_itself_after_the_limit(sim_factory, clean_zk):
    limit = 8.0 * SLOWDOWN  # long enough to look at the frozen guest first
    sim = sim_factory(NO_CEPH, fsfreeze_limit=str(limit))
    define(sim)
    define(sim, other_vm("small1", 1, 512), node="pvchv2")  # stays stopped
    assert set_state(sim, "start").status_code == 200

    # the node that runs the VM freezes and thaws it; the other nodes leave the command alone
    assert domains_command(clean_zk, f"domain_fsfreeze {UUID}") == "success-domain_fsfreeze"
    assert frozen_domains(sim) == {**NONE_FROZEN, "pvchv1": [UUID]}
    assert domains_command(clean_zk, f"domain_fsthaw {UUID}") == "success-domain_fsthaw"
    assert frozen_domains(sim) == NONE_FROZEN
    # a VM its node does not run: failure, nothing frozen
    assert domains_command(clean_zk, f"domain_fsfreeze {uuid_for(1)}") == "failure-domain_fsfreeze"
    assert frozen_domains(sim) == NONE_FROZEN

    # frozen and never thawed (an API that died): the node thaws it by itself once the limit has passed
    assert domains_command(clean_zk, f"domain_fsfreeze {UUID}") == "success-domain_fsfreeze"
    shows(lambda: events(freeze_log(clean_zk, "pvchv1"))[-1][0] == "auto-thaw", "the thaw after the limit",
          timeout=limit + settle_timeout())
    assert frozen_domains(sim) == NONE_FROZEN
    log = freeze_log(clean_zk, "pvchv1")
    assert events(log) == [("freeze", UUID, "success"), ("thaw", UUID, "success"), ("freeze", UUID, "success"),
                           ("auto-thaw", UUID, "success")]
    assert limit - 1 <= log[3]["time"] - log[2]["time"] < limit + settle_timeout()
    assert [(entry["event"], entry["result"], entry["reason"]) for entry in freeze_log(clean_zk, "pvchv2")] == \
        [("freeze", "failure", "the domain is not running on this host")]
    assert freeze_log(clean_zk, "pvchv3") == []

    # a guest stopped while frozen is not frozen when it starts again
    assert domains_command(clean_zk, f"domain_fsfreeze {UUID}") == "success-domain_fsfreeze"
    assert set_state(sim, "stop").status_code == 200
    assert frozen_domains(sim) == NONE_FROZEN
    assert set_state(sim, "start").status_code == 200
    assert frozen_domains(sim) == NONE_FROZEN

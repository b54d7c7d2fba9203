"""Simulated node daemons (plugins/simnode) against a real ZooKeeper and libvirt's test driver."""

from __future__ import annotations

import pytest
from test_vm import UUID, XML

from conftest import settle_timeout, wait_until

NODES = ("pvchv1", "pvchv2", "pvchv3")


def sim_config(**simnode: str) -> dict:
    wait = str(settle_timeout())
    return {"plugins": {"include": ["simnode"], "disabled": ["ceph"]},
            "simnode": {"keepalive_interval": "0.5", "fence_intervals": "6", "migrate_timeout": wait, **simnode},
            "vm": {"delete_grace": "0.05", "wait_timeout": wait}, "node": {"wait_timeout": wait}}


def nodes_by_name(daemon) -> dict[str, dict]:
    answer = daemon.get("/node")
    if answer.status_code != 200:
        return {}
    found = answer.json()
    return {node["name"]: node for node in (found if isinstance(found, list) else [found])}


@pytest.fixture
def sim(daemon_factory, clean_zk):
    daemon = daemon_factory(sim_config())
    assert daemon.post("/initialize").status_code == 200

    def ready() -> bool:
        nodes = nodes_by_name(daemon)
        return sorted(nodes) == list(NODES) and all(
            (node["daemon_state"], node["domain_state"]) == ("run", "ready") for node in nodes.values()) and \
            sorted(node["coordinator_state"] for node in nodes.values()) == ["primary", "secondary", "secondary"]
    wait_until(ready, message="the simulated nodes did not come up run/ready with one primary")
    yield daemon
    daemon.stop()


def test_nodes_come_up(sim):
    nodes = nodes_by_name(sim)
    for node in nodes.values():
        assert node["kernel"] == "pvc-simnode" and node["cpu_count"] == 8
        assert node["memory"]["total"] == 16384 and node["domains_count"] == 0


def test_start_a_vm(sim):
    assert sim.post("/vm", params={"xml": XML, "node": "pvchv1"}).status_code == 200
    assert sim.post("/vm/test1/state", params={"state": "start", "wait": "true"}).status_code == 200
    node = nodes_by_name(sim)["pvchv1"]
    assert node["running_domains"] == [UUID] and node["domains_count"] == 1
    assert node["memory"]["allocated"] == 2048 and node["vcpu"]["allocated"] == 2
    console = sim.get("/vm/test1/console", params={"lines": "3"}).json()["data"]
    assert console == "\ntest1 login: \n"

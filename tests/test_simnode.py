"""Simulated node daemons (plugins/simnode) against a real ZooKeeper and libvirt's test driver."""

from __future__ import annotations

from test_vm import UUID, XML

from conftest import node_map


def test_nodes_come_up(sim):
    nodes = node_map(sim)
    for node in nodes.values():
        assert node["kernel"] == "pvc-simnode" and node["cpu_count"] == 8
        assert node["memory"]["total"] == 16384 and node["domains_count"] == 0


def test_start_a_vm(sim):
    assert sim.post("/vm", params={"xml": XML, "node": "pvchv1"}).status_code == 200
    assert sim.post("/vm/test1/state", params={"state": "start", "wait": "true"}).status_code == 200
    node = node_map(sim)["pvchv1"]
    assert node["running_domains"] == [UUID] and node["domains_count"] == 1
    assert node["memory"]["allocated"] == 2048 and node["vcpu"]["allocated"] == 2
    console = sim.get("/vm/test1/console", params={"lines": "3"}).json()["data"]
    assert console == "\ntest1 login: \n"

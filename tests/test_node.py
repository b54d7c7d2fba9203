"""The node plugin against a real ZooKeeper; node daemons written by the test, or simulated (plugins/simnode)."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from kazoo.client import KazooClient

from conftest import ANSWER_SLACK, START_TIMEOUT, settle_timeout, wait_until
from pvc_core.zkserver import ZooKeeperServer


def seed_node(zk, name: str, daemon: str = "run", router: str = "secondary", domain: str = "ready",
              mode: str = "coordinator", **overrides) -> None:
    """What a v0.6 node daemon writes when it registers (one transaction)."""
    values = {"": mode, "daemonmode": mode, "daemonstate": daemon, "routerstate": router,
              "domainstate": domain, "staticdata": "16 4.19.0-6-amd64 GNU/Linux x86_64", "memtotal": "64415",
              "memused": "9213", "memfree": "51012", "memalloc": "6144", "vcpualloc": "6", "cpuload": "0.52",
              "networkscount": "0", "domainscount": "2",
              "runningdomains": "8f7c5a0e-3b1d-4c6e-9a2f-1d2e3f4a5b6c 0b1e2f3a-4c5d-4e6f-8a9b-0c1d2e3f4a5b",
              "keepalive": "1581206400", "ipmihostname": "", "ipmiusername": "", "ipmipassword": ""}
    values.update(overrides)
    transaction = zk.transaction()
    transaction.create(f"/nodes/{name}", values.pop("").encode())
    for key, value in values.items():
        transaction.create(f"/nodes/{name}/{key}", value.encode())
    results = transaction.commit()
    assert not [r for r in results if isinstance(r, Exception)], results


NODE1 = {
    "name": "pvchv1", "daemon_state": "run", "coordinator_state": "primary", "domain_state": "ready",
    "cpu_count": 16, "kernel": "4.19.0-6-amd64", "os": "GNU/Linux", "arch": "x86_64", "load": 0.52,
    "domains_count": 2,
    "running_domains": ["8f7c5a0e-3b1d-4c6e-9a2f-1d2e3f4a5b6c", "0b1e2f3a-4c5d-4e6f-8a9b-0c1d2e3f4a5b"],
    "vcpu": {"total": 16, "allocated": 6}, "memory": {"total": 64415, "allocated": 6144, "used": 9213, "free": 51012},
}


# the name the other test modules import: a wait on an event, bounded by the configured timeouts
eventually = wait_until


@pytest.fixture
def cluster(daemon, clean_zk):
    assert daemon.post("/initialize").status_code == 200
    return clean_zk


def test_empty_cluster(daemon, cluster):
    response = daemon.get("/node")
    assert response.status_code == 404 and response.json() == {"message": "Node not found."}


def test_node_objects(daemon, cluster):
    seed_node(cluster, "pvchv1", router="primary")
    assert eventually(lambda: daemon.get("/node").status_code == 200)
    assert daemon.get("/node").json() == NODE1  # one node: the object
    assert daemon.get("/node/pvchv1").json() == NODE1
    seed_node(cluster, "pvchv2", domain="flushed", runningdomains="", domainscount="0")
    both = eventually(lambda: (lambda r: r if isinstance(r, list) else None)(daemon.get("/node").json()))
    assert [node["name"] for node in both] == ["pvchv1", "pvchv2"]
    assert both[1]["running_domains"] == [] and both[1]["domain_state"] == "flushed"
    assert daemon.get("/node/pvchv").status_code == 404  # exact for one node
    assert daemon.get("/node", params={"limit": "hv2"}).json()["name"] == "pvchv2"  # fuzzy for the list
    assert daemon.get("/node", params={"limit": "^pvc"}).json().__len__() == 2
    bad = daemon.get("/node", params={"limit": "[oops"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("Regex Error: ")


def test_view_follows_node_daemon_writes(daemon, cluster):
    seed_node(cluster, "pvchv1")
    eventually(lambda: daemon.get("/node/pvchv1").status_code == 200)
    cluster.set("/nodes/pvchv1/memfree", b"1000")
    cluster.set("/nodes/pvchv1/cpuload", b"3.25")
    assert eventually(lambda: daemon.get("/node/pvchv1").json()["memory"]["free"] == 1000)
    assert eventually(lambda: daemon.get("/node/pvchv1").json()["load"] == 3.25)  # its own watch event
    cluster.delete("/nodes/pvchv1", recursive=True)
    assert eventually(lambda: daemon.get("/node/pvchv1").status_code == 404)


@pytest.mark.parametrize("field, path", [("daemon_state", "daemon-state"),
                                         ("coordinator_state", "coordinator-state"),
                                         ("domain_state", "domain-state")])
def test_state_getters(daemon, cluster, field, path):
    seed_node(cluster, "pvchv1", router="primary")
    eventually(lambda: daemon.get("/node/pvchv1").status_code == 200)
    assert daemon.get(f"/node/pvchv1/{path}").json() == {"name": "pvchv1", field: NODE1[field]}
    assert daemon.get(f"/node/nope/{path}").json() == {"message": "Node not found."}


def test_broken_node_keys_do_not_break_the_list(daemon, cluster):
    seed_node(cluster, "pvchv1", staticdata="", cpuload="n/a", memfree="")
    body = eventually(lambda: (lambda r: r.json() if r.status_code == 200 else None)(daemon.get("/node")))
    assert body["cpu_count"] == 0 and body["load"] == 0.0 and body["memory"]["free"] == 0 and body["kernel"] == ""


def test_coordinator_state(daemon, cluster):
    seed_node(cluster, "pvchv1", router="primary")
    seed_node(cluster, "pvchv2", router="secondary")
    seed_node(cluster, "pvchv3", mode="hypervisor", router="client")
    seed_node(cluster, "pvchv4", daemon="dead")
    eventually(lambda: daemon.get("/node/pvchv4").status_code == 200)
    ok = daemon.post("/node/pvchv2/coordinator-state", params={"state": "primary"})
    assert ok.status_code == 200 and ok.json() == {"message": "Setting node pvchv2 in primary router mode."}
    assert cluster.get("/primary_node")[0] == b"pvchv2"
    assert cluster.get("/nodes/pvchv2/routerstate")[0] == b"secondary"  # the node daemons do the rest
    down = daemon.post("/node/pvchv1/coordinator-state", params={"coordinator-state": "secondary"})
    assert down.json() == {"message": "Setting node pvchv1 in secondary router mode."}
    assert cluster.get("/primary_node")[0] == b"none"
    cases = [
        ("pvchv1", "primary", 400, "Node 'pvchv1' is already in primary router mode."),
        ("pvchv2", "secondary", 400, "Node 'pvchv2' is already in secondary router mode."),
        ("pvchv3", "primary", 400, "ERROR: Cannot change router mode on non-coordinator node 'pvchv3'"),
        ("pvchv4", "primary", 400, "ERROR: Node 'pvchv4' is not active"),
        ("pvchv9", "primary", 404, "ERROR: No node named 'pvchv9' is present in the cluster."),
    ]
    for node, state, code, message in cases:
        response = daemon.post(f"/node/{node}/coordinator-state", params={"state": state})
        assert (response.status_code, response.json()) == (code, {"message": message}), node
    bad = daemon.post("/node/pvchv1/coordinator-state", params={"state": "boss"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("Parameter 'state'")


def test_domain_state_flush_and_ready(sim, zk_client):
    assert sim.post("/simnode/pvchv1", params={"action": "stop"}).status_code == 200  # nobody answers for now
    flush = sim.post("/node/pvchv1/domain-state", params={"state": "flush"})
    assert flush.json() == {"message": "Flushing hypervisor pvchv1 of running VMs."}
    assert zk_client.get("/nodes/pvchv1/domainstate")[0] == b"flush"
    ready = sim.post("/node/pvchv1/domain-state", params={"domain-state": "ready", "wait": "false"})
    assert ready.json() == {"message": "Restoring hypervisor pvchv1 to active service."}
    assert zk_client.get("/nodes/pvchv1/domainstate")[0] == b"unflush"

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waited = pool.submit(sim.post, "/node/pvchv1/domain-state", params={"state": "flush", "wait": "true"})
        eventually(lambda: zk_client.get("/nodes/pvchv1/domainstate")[0] == b"flush")
        assert not waited.done()  # the API waits for the node daemon, which is not running
        assert sim.post("/simnode/pvchv1", params={"action": "start"}).status_code == 200
        assert waited.result().json() == {"message": "Flushed hypervisor pvchv1 of running VMs."}
    assert zk_client.get("/nodes/pvchv1/domainstate")[0] == b"flushed"  # answered before the API did
    waited = sim.post("/node/pvchv1/domain-state", params={"state": "ready", "wait": ""})
    assert waited.json() == {"message": "Restored hypervisor pvchv1 to active service."}
    assert zk_client.get("/nodes/pvchv1/domainstate")[0] == b"ready"
    missing = sim.post("/node/nope/domain-state", params={"state": "flush"})
    assert missing.status_code == 404
    assert missing.json() == {"message": "ERROR: No node named 'nope' is present in the cluster."}
    assert sim.post("/node/pvchv1/domain-state", params={"state": "flushed"}).status_code == 400


def test_domain_state_wait_is_bounded(daemon_factory, clean_zk):
    quick = daemon_factory({"node": {"wait_timeout": "1"}})
    quick.post("/initialize")
    seed_node(clean_zk, "pvchv1")
    eventually(lambda: quick.get("/node/pvchv1").status_code == 200)
    started = time.monotonic()
    response = quick.post("/node/pvchv1/domain-state", params={"state": "flush", "wait": "yes"})
    assert 1 <= time.monotonic() - started < 1 + ANSWER_SLACK
    assert response.status_code == 409
    assert response.json()["message"].startswith("Node 'pvchv1' is still in state 'flush' after 1 s")


def test_status_counts(daemon, cluster):
    seed_node(cluster, "a")
    seed_node(cluster, "b", domain="flushed")
    seed_node(cluster, "c", daemon="dead", domain="flushed")
    status = eventually(lambda: (lambda s: s if s["nodes"]["total"] == 3 else None)(daemon.get("/status").json()))
    assert status["nodes"] == {"total": 3, "run,ready": 1, "run,flushed": 1}
    assert status["health"] == "Degraded"  # dead and not ready
    cluster.set("/nodes/c/domainstate", b"ready")
    assert eventually(lambda: daemon.get("/status").json()["health"] == "Optimal")  # v0.6: both must be bad


def test_unwatched_mode_reads_directly(daemon_factory, clean_zk):
    direct = daemon_factory({"node": {"watch": "False"}})
    direct.post("/initialize")
    seed_node(clean_zk, "pvchv1", router="primary")
    assert direct.get("/node/pvchv1").json() == NODE1  # no watch latency: read on request


def test_view_rewarms_after_zookeeper_restart(daemon_factory, tmp_path):
    server = ZooKeeperServer(str(tmp_path / "zk"))
    server.start(timeout=START_TIMEOUT)
    client = KazooClient(hosts=server.address)
    try:
        daemon = daemon_factory({"zookeeper": {"session_timeout": "4"}}, coordinator=server.address)
        daemon.post("/initialize")
        client.start(timeout=START_TIMEOUT)
        seed_node(client, "pvchv1")
        eventually(lambda: daemon.get("/node/pvchv1").status_code == 200, timeout=settle_timeout(daemon.config))
        client.stop()
        server.stop()
        # not a wait for an event: ZooKeeper must stay away longer than the session lasts
        time.sleep(1.5 * float(daemon.config["zookeeper"]["session_timeout"]))
        server.start(timeout=START_TIMEOUT)
        eventually(lambda: daemon.get("/node/pvchv1").status_code == 200, timeout=settle_timeout(daemon.config))
        client.start(timeout=START_TIMEOUT)
        client.set("/nodes/pvchv1/memfree", b"7")
        assert eventually(lambda: daemon.get("/node/pvchv1").json()["memory"]["free"] == 7,
                          timeout=settle_timeout(daemon.config))
    finally:
        client.stop()
        server.stop()

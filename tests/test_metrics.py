"""GET /api/v1/metrics (pvc_core/metrics.py): off by default, a read token when configured so, and every
figure checked against what the test did or what the API's own lists say.

Each scrape is parsed with prometheus_client's own parser; its content type is checked by the suite's
contract check (the route declares ``text/plain; version=0.0.4``).
"""

from __future__ import annotations

import json
import secrets
import socket
from collections import Counter

import pytest
from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families
from test_logs import TEXT_LINE
from test_node import seed_node
from test_tasks import start_consumer, stop_consumer, wait_task
from test_vm import uuid_for, vm_xml

from conftest import AUTH_ON, REQUEST_TIMEOUT, START_TIMEOUT, TOKEN, deep_merge, settle_timeout, wait_until
from pvc_core.metrics import CONTENT_TYPE, MEDIA_TYPE, TASK_BUCKETS
from pvc_core.zkserver import ZooKeeperServer

READ_TOKEN = "metrics-read-" + secrets.token_hex(8)
ADMIN = {"X-Api-Key": TOKEN}
METERED = deep_merge(AUTH_ON, {
    "metrics": {"enabled": "true", "auth": "read"},
    "api": {"authentication": {"tokens": [{"description": "test", "token": TOKEN},
                                          {"description": "monitoring", "token": READ_TOKEN, "scope": "read"}]}},
    # pool statistics are written by the test, as v0.6 node daemons write them
    "ceph": {"collector": "false"},
})


def samples(daemon, headers: dict | None = None) -> dict[tuple[str, frozenset], float]:
    """One scrape as ``{(sample name, labels): value}``, parsed by prometheus_client."""
    answer = daemon.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == CONTENT_TYPE
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def value(scrape: dict, metric: str, /, **labels: str) -> float | None:
    return scrape.get((metric, frozenset(labels.items())))


def labelled(scrape: dict, name: str) -> dict[frozenset, float]:
    return {labels: number for (sample, labels), number in scrape.items() if sample == name}


@pytest.fixture(scope="module")
def metered(daemon_factory):
    """Metrics for a read token; the test's requests send that token unless they say otherwise."""
    daemon = daemon_factory(METERED)
    daemon.http.headers["X-Api-Key"] = READ_TOKEN
    return daemon


def test_metrics_are_off_by_default(daemon):
    answer = daemon.get("/metrics")
    assert answer.status_code == 404 and answer.json()["message"].startswith("The requested URL was not found")
    assert "/api/v1/metrics" not in daemon.get("/openapi.json").json()["paths"]


def test_a_read_token_is_needed_when_configured(metered):
    refused = metered.get("/metrics", headers={"X-Api-Key": None})
    assert refused.status_code == 401 and refused.json() == {"message": "Authentication required"}
    assert metered.get("/metrics", headers={"X-Api-Key": "wrong"}).status_code == 401
    assert metered.get("/metrics").status_code == 200
    operation = metered.get("/openapi.json").json()["paths"]["/api/v1/metrics"]["get"]
    assert operation["x-pvc-scope"] == "read" and list(operation["responses"]["200"]["content"]) == [MEDIA_TYPE]
    assert {"401", "403"} <= set(operation["responses"])


def test_requests_by_route_template_and_in_flight(metered):
    """N requests to a route move its template's count by N (per status); a request whose body has not
    arrived is in flight; a made-up method is counted as "other", an unknown path as "unmatched"."""
    def count(scrape: dict, method: str, route: str, status: str) -> float:
        return value(scrape, "pvc_http_request_duration_seconds_count", method=method, route=route,
                     status=status) or 0.0

    ended = metered.get("/status")  # every series below exists from here on
    before = samples(metered)
    for _ in range(5):
        assert metered.get("/status").status_code == 200
    for name in ("ghost1", "ghost2", "ghost3"):
        assert metered.get(f"/vm/{name}").status_code == 404
    assert metered.get("/no/such/path").status_code == 404
    assert metered.request("BREW", "/status").status_code == 405
    assert ended.status_code == 200

    def moved() -> dict | None:
        scrape = samples(metered)
        got = {"status": count(scrape, "GET", "/api/v1/status", "200") - count(before, "GET", "/api/v1/status", "200"),
               "vm": count(scrape, "GET", "/api/v1/vm/<vm>", "404") - count(before, "GET", "/api/v1/vm/<vm>", "404"),
               "unmatched": count(scrape, "GET", "unmatched", "404") - count(before, "GET", "unmatched", "404"),
               "other": count(scrape, "other", "unmatched", "405") - count(before, "other", "unmatched", "405")}
        return scrape if got == {"status": 5, "vm": 3, "unmatched": 1, "other": 1} else None
    scrape = wait_until(moved, timeout=settle_timeout(), message="the request counts did not move as the requests did")
    # the histogram is whole: cumulative buckets up to +Inf == count, and the seconds were summed
    labels = {"method": "GET", "route": "/api/v1/status", "status": "200"}
    buckets = sorted((float(dict(key)["le"]), number) for key, number in
                     labelled(scrape, "pvc_http_request_duration_seconds_bucket").items()
                     if {k: v for k, v in key if k != "le"} == labels)
    assert [number for _, number in buckets] == sorted(number for _, number in buckets)
    assert buckets[-1] == (float("inf"), count(scrape, "GET", "/api/v1/status", "200"))
    assert value(scrape, "pvc_http_request_duration_seconds_sum", **labels) > 0

    # in flight: the scrape itself; then also a login whose body has not arrived yet
    assert value(samples(metered), "pvc_http_requests_in_flight") == 1
    with socket.create_connection(("127.0.0.1", metered.port), timeout=REQUEST_TIMEOUT) as sock:
        body = f"token={TOKEN}".encode()
        sock.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:3])
        wait_until(lambda: value(samples(metered), "pvc_http_requests_in_flight") == 2,
                   timeout=settle_timeout(), message="the waiting request was not in flight")
        sock.sendall(body[3:])
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    wait_until(lambda: value(samples(metered), "pvc_http_requests_in_flight") == 1,
               timeout=settle_timeout(), message="the answered request stayed in flight")


def test_cluster_gauges_match_the_apis_lists(metered, clean_zk):
    """Nodes by daemon/domain state and VMs by state equal what GET /node and GET /vm list; the views hold
    that many objects and are current; ZooKeeper is connected; a pool's usage is its statistics key's."""
    assert metered.post("/initialize", headers=ADMIN).status_code == 200
    seed_node(clean_zk, "pvchv1")
    seed_node(clean_zk, "pvchv2", domain="flushed")
    seed_node(clean_zk, "pvchv3", daemon="stop", domain="flushed")
    seed_node(clean_zk, "pvchv4", daemon="dead", domain="ready")
    wait_until(lambda: len(metered.get("/node").json()) == 4, message="the nodes did not show")
    for index, state in enumerate(("stop", "start", "start", "disable")):
        name = f"metered{index}"
        assert metered.post("/vm", params={"node": "pvchv1"}, data={"xml": vm_xml(name, uuid_for(index))},
                            headers=ADMIN).status_code == 200
        if state != "stop":
            assert metered.post(f"/vm/{name}/state", params={"state": state}, headers=ADMIN).status_code == 200
    stats = {"id": 1, "free_bytes": 1000000, "used_bytes": 4096, "used_percent": 0.004, "num_objects": 3}
    clean_zk.create("/ceph/pools/metered", b"", makepath=True)
    clean_zk.create("/ceph/pools/metered/pgs", b"32")
    clean_zk.create("/ceph/pools/metered/stats", json.dumps(stats).encode())

    nodes = metered.get("/node").json()
    vms = metered.get("/vm").json()
    expected_nodes = Counter((node["daemon_state"], node["domain_state"]) for node in nodes)
    expected_vms = Counter(vm["state"] for vm in vms)
    assert expected_nodes == {("run", "ready"): 1, ("run", "flushed"): 1, ("stop", "flushed"): 1,
                              ("dead", "ready"): 1}
    assert expected_vms == {"stop": 1, "start": 2, "disable": 1}

    def agrees() -> dict | None:
        scrape = samples(metered)
        got_nodes = {(dict(key)["daemon_state"], dict(key)["domain_state"]): number
                     for key, number in labelled(scrape, "pvc_nodes").items()}
        got_vms = {dict(key)["state"]: number for key, number in labelled(scrape, "pvc_vms").items() if number}
        pool = [value(scrape, name, pool="metered") for name in
                ("pvc_ceph_pool_used_bytes", "pvc_ceph_pool_free_bytes", "pvc_ceph_pool_objects")]
        return scrape if (got_nodes, got_vms, pool) == (expected_nodes, expected_vms, [4096, 1000000, 3]) else None
    scrape = wait_until(agrees, message="the gauges did not match the lists")
    assert value(scrape, "pvc_vms", state="fail") == 0  # every v0.6 state is there, 0 when none
    assert value(scrape, "pvc_zookeeper_connected") == 1
    for view, size in (("/nodes", len(nodes)), ("/domains", len(vms)), ("/ceph/pools", 1)):
        assert (value(scrape, "pvc_view_objects", view=view), value(scrape, "pvc_view_ready", view=view),
                value(scrape, "pvc_view_staleness_seconds", view=view)) == (size, 1, 0), view
    up = {dict(key)["collector"]: number for key, number in labelled(scrape, "pvc_metrics_collector_up").items()}
    assert up == {name: 1 for name in ("zookeeper", "views", "queue", "tasks", "node", "vm", "ceph", "example")}


def test_queue_depth_task_durations_and_the_workers_text_log(metered):
    """Tasks queued without a worker are the queue's depth and PENDING records; once a worker ran them, the
    records by name and state and the duration histogram are exactly those of GET /tasks. The worker logs
    in the daemon's text format: a task failure warning with its time, level and task id."""
    def scrape() -> dict:
        return samples(metered)
    before = scrape()
    assert value(before, "pvc_queue_pending_tasks") == 0
    jobs = [metered.post("/example/job", params=params, headers=ADMIN).json()["task_id"]
            for params in ({"steps": "2"}, {"steps": "1"}, {"fail": "yes"})]
    queued = scrape()
    assert value(queued, "pvc_queue_pending_tasks") == 3
    assert value(queued, "pvc_tasks", name="example.count", state="PENDING") == 3 + (
        value(before, "pvc_tasks", name="example.count", state="PENDING") or 0)

    consumer = start_consumer(metered, workers=1)
    try:
        records = [wait_task(metered, task_id) for task_id in jobs]
    finally:
        assert stop_consumer(consumer) == 0, (metered.workdir / "consumer.log").read_text()
    assert [record["state"] for record in records] == ["SUCCESS", "SUCCESS", "FAILURE"]

    every = metered.get("/tasks", params={"limit": "10000"}).json()
    after = scrape()
    assert value(after, "pvc_queue_pending_tasks") == 0
    kept = Counter((record["name"], record["state"]) for record in every)
    assert labelled(after, "pvc_tasks") == {frozenset({"name": name, "state": state}.items()): number
                                            for (name, state), number in kept.items()}
    finished = [r for r in every if r["state"] in ("SUCCESS", "FAILURE") and r["started"] is not None]
    for state in ("SUCCESS", "FAILURE"):
        seconds = [r["updated"] - r["started"] for r in finished if r["state"] == state]
        labels = {"name": "example.count", "state": state}
        assert value(after, "pvc_task_duration_seconds_count", **labels) == len(seconds)
        assert value(after, "pvc_task_duration_seconds_sum", **labels) == pytest.approx(sum(seconds), abs=1e-6)
        for bound in TASK_BUCKETS:
            assert value(after, "pvc_task_duration_seconds_bucket", le=str(bound), **labels) == sum(
                1 for elapsed in seconds if elapsed <= bound), (state, bound)

    lines = (metered.workdir / "consumer.log").read_text().splitlines()
    parsed = [TEXT_LINE.match(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match][:3]
    warning = [match for match in parsed if match["level"] == "WARNING" and match["logger"] == "pvc.example"]
    assert [(match["key"], match["id"], match["message"]) for match in warning] == [
        ("task_id", jobs[2], f"example job {jobs[2]} failed: asked to fail")]
    executing = {match["id"] for match in parsed if match["message"].startswith("Executing ")}
    assert executing == set(jobs)


def test_zookeeper_lost_and_back(daemon_factory, tmp_path):
    """ZooKeeper stopped: the daemon says it is not connected, its views are not ready and their staleness
    grows; started again: connected, ready, current."""
    zookeeper = ZooKeeperServer(str(tmp_path / "zk")).start(timeout=START_TIMEOUT)
    try:
        daemon = daemon_factory({"metrics": {"enabled": "true"}}, coordinator=zookeeper.address)
        assert daemon.post("/initialize").status_code == 200
        client = KazooClient(hosts=zookeeper.address)
        client.start(timeout=START_TIMEOUT)
        seed_node(client, "pvchv1")
        client.stop()

        def state() -> tuple:
            """Connected, the view of /nodes ready, its size, its staleness, and whether the node plugin's
            gauges (read from that view) answered."""
            scrape = samples(daemon)
            return (value(scrape, "pvc_zookeeper_connected"), value(scrape, "pvc_view_ready", view="/nodes"),
                    value(scrape, "pvc_view_objects", view="/nodes"),
                    value(scrape, "pvc_view_staleness_seconds", view="/nodes"),
                    value(scrape, "pvc_metrics_collector_up", collector="node"))
        wait_until(lambda: state() == (1, 1, 1, 0, 1), message="the view of /nodes was not ready")
        zookeeper.stop()
        lost = wait_until(lambda: (lambda now: now if now[:2] == (0, 0) and now[3] > 0 else None)(state()),
                          message="the daemon did not report ZooKeeper lost")
        later = wait_until(lambda: (lambda now: now if now[3] > lost[3] else None)(state()),
                           message="the staleness did not grow")
        assert (later[0], later[1], later[4]) == (0, 0, 0)  # the scrape answers; the node gauges are left out
        zookeeper.start(timeout=START_TIMEOUT)
        wait_until(lambda: state() == (1, 1, 1, 0, 1), message="the daemon did not come back to ZooKeeper")
    finally:
        zookeeper.stop()

"""POST /initialize, GET /status and maintenance mode against a real ZooKeeper."""

from __future__ import annotations

import pytest

from pvc_core import schema

V06_BASE_TREE = {
    "/primary_node": b"none", "/upstream_ip": b"none", "/maintenance": b"False", "/nodes": b"",
    "/domains": b"", "/networks": b"", "/ceph": b"", "/ceph/osds": b"", "/ceph/pools": b"",
    "/ceph/volumes": b"", "/ceph/snapshots": b"", "/cmd": b"", "/cmd/domains": b"", "/cmd/ceph": b"",
    "/locks": b"", "/locks/flush_lock": b"", "/locks/primary_node": b"",
}


def tree(client, root="/"):
    out = {}
    for child in client.get_children(root):
        path = root.rstrip("/") + "/" + child
        if path == "/zookeeper":
            continue
        out[path] = client.get(path)[0]
        out.update(tree(client, path))
    return out


def test_initialize_creates_the_v06_tree(daemon, clean_zk):
    response = daemon.post("/initialize")
    assert response.status_code == 200
    assert response.json() == {"message": "Successfully initialized a new PVC cluster"}
    expected = dict(V06_BASE_TREE, **{"/example_counter": b"0"})  # plus the plugin's key
    assert tree(clean_zk) == expected
    again = daemon.post("/initialize")
    assert again.status_code == 400 and again.json() == {"message": "PVC cluster already initialized"}


def test_initialize_refuses_partial_tree_and_writes_nothing(daemon, clean_zk):
    clean_zk.create("/nodes")
    clean_zk.create("/nodes/hv1", b"x")
    response = daemon.post("/initialize")
    assert response.status_code == 400
    assert response.json()["message"] == (
        "Cannot initialize the PVC cluster: these keys already exist without /primary_node: /nodes; "
        "remove them or check the coordinators")
    assert tree(clean_zk) == {"/nodes": b"", "/nodes/hv1": b"x"}


def test_initialize_needs_post(daemon):
    assert daemon.get("/initialize").status_code == 405


def test_status_of_fresh_cluster(daemon, clean_zk):
    daemon.post("/initialize")
    body = daemon.get("/status").json()
    assert list(body) == ["health", "primary_node", "upstream_ip", "nodes", "vms", "networks", "osds",
                          "pools", "volumes", "snapshots", "example_counter"]
    assert body == {"health": "Optimal", "primary_node": "none", "upstream_ip": "none",
                    "nodes": {"total": 0}, "vms": {"total": 0}, "networks": 0, "osds": {"total": 0},
                    "pools": 0, "volumes": 0, "snapshots": 0, "example_counter": 0}


def test_status_without_initialize(daemon, clean_zk):
    body = daemon.get("/status").json()
    assert body["primary_node"] == "none" and body["health"] == "Optimal"


def test_status_reads_keys_and_plugin_health(daemon, clean_zk):
    daemon.post("/initialize")
    clean_zk.set("/primary_node", b"hv1")
    clean_zk.set("/upstream_ip", b"10.0.0.254/24")
    clean_zk.set("/example_counter", b"13")  # the example plugin reports degraded at 13
    body = daemon.get("/status").json()
    assert body["primary_node"] == "hv1" and body["upstream_ip"] == "10.0.0.254/24"
    assert body["health"] == "Degraded" and body["example_counter"] == 13


@pytest.mark.parametrize("value, stored, message", [
    ("true", b"true", "Successfully set cluster in maintenance mode"),
    ("on", b"true", "Successfully set cluster in maintenance mode"),
    ("False", b"false", "Successfully set cluster in normal mode"),
    ("0", b"false", "Successfully set cluster in normal mode"),
])
def test_maintenance(daemon, clean_zk, value, stored, message):
    daemon.post("/initialize")
    response = daemon.post("/status", params={"state": value})
    assert response.status_code == 200 and response.json() == {"message": message}
    assert clean_zk.get("/maintenance")[0] == stored
    assert daemon.get("/status").json()["health"] == ("Maintenance" if stored == b"true" else "Optimal")


def test_maintenance_bad_state(daemon, clean_zk):
    daemon.post("/initialize")
    missing = daemon.post("/status")
    assert missing.status_code == 400 and "Parameter 'state': required" in missing.json()["message"]
    bad = daemon.post("/status", params={"state": "maybe"})
    assert bad.status_code == 400 and "Parameter 'state'" in bad.json()["message"]
    # api-general.md §3.3: `state` stays a required choice; an empty value (or a bare ?state) is no "true"
    for query in ("state=", "state"):
        empty = daemon.post(f"/status?{query}")
        assert empty.status_code == 400, empty.text
        assert empty.json() == {"message": "Parameter 'state': expected true or false (or yes/no, on/off, 1/0), "
                                           "got ''"}
    assert clean_zk.get("/maintenance")[0] == b"False"


def test_schema_module_is_the_source(daemon, clean_zk):
    daemon.post("/initialize")
    for key, value in schema.BASE_TREE.items():
        assert clean_zk.get(key)[0] == value.encode()

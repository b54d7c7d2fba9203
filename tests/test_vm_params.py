"""Every documented argument of the VM routes does what it says, and unknown ones are named.

The seeds document ``no-autostart`` (meta), ``permanent`` and ``selector``
(node change); v0.6 ignored them silently. Each test reads the whole VM back
afterwards, from the daemon and from ZooKeeper, not only the field it changed.
"""

from __future__ import annotations

import pytest
from test_cluster import tree
from test_node import eventually, seed_node
from test_vm import UUID, XML, uuid_for, vm_xml


@pytest.fixture(scope="module")
def vmd(daemon_factory):
    return daemon_factory({"vm": {"delete_grace": "0.01"}, "plugins": {"disabled": ["ceph"]}})


@pytest.fixture
def cluster(vmd, clean_zk):
    assert vmd.post("/initialize").status_code == 200
    # pvchv3 has the most free memory, pvchv2 the fewest VMs (both keep ties from deciding).
    seed_node(clean_zk, "pvchv1", memfree="1000", memalloc="60000", domainscount="9")
    seed_node(clean_zk, "pvchv2", memfree="20000", memalloc="40000", domainscount="0")
    seed_node(clean_zk, "pvchv3", memfree="60000", memalloc="1000", domainscount="5")
    eventually(lambda: len(vmd.get("/node", validate=False).json()) == 3)  # the daemon's view has seen them
    defined = vmd.post("/vm", params={"node": "pvchv1", "limit": "", "selector": "mem", "autostart": "true"},
                       data={"xml": XML})
    assert defined.status_code == 200, defined.text
    return clean_zk


def keys(zk) -> dict:
    base = f"/domains/{UUID}"
    return {key: zk.get(f"{base}/{key}")[0].decode() for key in zk.get_children(base)}


def test_no_autostart_flag(vmd, cluster):
    before = vmd.get("/vm/test1").json()
    stored = keys(cluster)
    assert before["node_autostart"] is True
    response = vmd.post("/vm/test1/meta?no-autostart")  # a bare flag, as seed B sends it
    assert response.status_code == 200, response.text
    assert vmd.get("/vm/test1").json() == {**before, "node_autostart": False}
    assert keys(cluster) == {**stored, "node_autostart": "False"}
    both = vmd.post("/vm/test1/meta", params={"autostart": "true", "no-autostart": ""})
    assert both.status_code == 400 and "contradict" in both.json()["message"]
    assert keys(cluster) == {**stored, "node_autostart": "False"}


def test_meta_without_arguments_is_refused(vmd, cluster):
    stored = keys(cluster)
    response = vmd.post("/vm/test1/meta")
    assert response.status_code == 400
    assert "at least one of 'limit', 'selector'" in response.json()["message"]
    misspelt = vmd.post("/vm/test1/meta", params={"autostrat": "true"})
    assert misspelt.status_code == 400
    assert misspelt.headers["X-Pvc-Ignored-Parameters"] == "autostrat"
    assert keys(cluster) == stored


def test_permanent_migrate_is_a_move(vmd, cluster):
    cluster.set(f"/domains/{UUID}/state", b"start")
    stored = keys(cluster)
    before = vmd.get("/vm/test1").json()
    response = vmd.post("/vm/test1/node", params={"action": "migrate", "node": "pvchv2", "permanent": "true"})
    assert response.json() == {"message": "Permanently migrating VM 'test1' to node 'pvchv2'."}
    # a move: no lastnode to return to, unlike a migrate
    assert keys(cluster) == {**stored, "node": "pvchv2", "lastnode": "", "state": "migrate"}
    assert vmd.get("/vm/test1").json() == {**before, "node": "pvchv2", "state": "migrate"}
    assert vmd.post("/vm/test1/node", params={"action": "unmigrate"}).json() == {
        "message": "ERROR: VM 'test1' has not been previously migrated."}
    refused = vmd.post("/vm/test1/node", params={"action": "unmigrate", "permanent": "true"})
    assert refused.status_code == 400 and "only with action 'migrate'" in refused.json()["message"]


def test_selector_picks_the_target_this_time_only(vmd, cluster):
    stored = keys(cluster)
    assert stored["node_selector"] == "mem"
    by_vms = vmd.post("/vm/test1/node", params={"action": "migrate", "selector": "vms"})
    assert by_vms.json() == {"message": "Migrating VM 'test1' to node 'pvchv2'."}
    assert keys(cluster) == {**stored, "node": "pvchv2", "lastnode": "pvchv1", "state": "start"}
    # the stored selector (mem) picks another node when none is given
    assert vmd.post("/vm/test1/node", params={"action": "unmigrate"}).status_code == 200
    by_mem = vmd.post("/vm/test1/node", params={"action": "move"})
    assert by_mem.json() == {"message": "Permanently migrating VM 'test1' to node 'pvchv3'."}
    assert keys(cluster)["node_selector"] == "mem"
    wrong = vmd.post("/vm/test1/node", params={"action": "move", "selector": "fastest"})
    assert wrong.status_code == 400 and "one of mem" in wrong.json()["message"]


def test_unknown_parameters_are_named(vmd, cluster):
    response = vmd.get("/vm/test1", params={"verbose": "1", "name": "x"})
    assert response.status_code == 200
    assert response.headers["X-Pvc-Ignored-Parameters"] == "name, verbose"
    assert "X-Pvc-Ignored-Parameters" not in vmd.get("/vm", params={"limit": "test"}).headers


def test_form_body_keeps_semicolons(vmd, cluster):
    """CherryPy split form bodies at ';' too: a cloud-config's Content-Type line was cut in two."""
    value = 'Content-Type: text/cloud-config; charset="us-ascii"; a=b&c'
    stored = keys(cluster)
    response = vmd.post("/vm/test1/meta", data={"profile": value})  # application/x-www-form-urlencoded
    assert response.status_code == 200, response.text
    assert keys(cluster) == {**stored, "profile": value}
    assert vmd.get("/vm/test1").json()["profile"] == value
    as_json = vmd.post("/vm/test1/meta", json={"profile": value + "!"})
    assert as_json.status_code == 200 and keys(cluster)["profile"] == value + "!"
    undecodable = vmd.post("/vm/test1/meta", data=b"profile=%ff%fe",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert undecodable.status_code == 400 and "UTF-8" in undecodable.json()["message"]


def test_json_body_values_that_are_no_string_are_refused(vmd, cluster):
    """v0.6 flattened a JSON body's values to Python's text: a VM renamed ``True``, a tag ``{'a': 1}``, a
    snapshot ``False``. A boolean, an object or an array inside an array is a 400 for a string parameter,
    and nothing changes: the VM read back whole, its list, and every key under /domains."""
    before, listing, stored = vmd.get("/vm/test1").json(), vmd.get("/vm").json(), tree(cluster, "/domains")
    expected = "expected a name without '/' or control characters, not '.' or '..'"
    for path, body, message in [
        ("/vm/test1/rename", {"new_name": True}, f"Parameter 'new_name': {expected} of at most 255 characters, "
                                                 "got a JSON boolean"),
        ("/vm/test1/tags", {"action": "add", "tag": {"a": 1}}, f"Parameter 'tag': {expected} of at most 255 "
                                                                "characters, got a JSON object"),
        ("/vm/test1/tags", {"action": "add", "tag": [["a"]]}, f"Parameter 'tag': {expected} of at most 255 "
                                                              "characters, got a JSON array inside an array"),
        ("/vm/test1/snapshot", {"snapshot_name": False}, "Parameter 'snapshot_name': expected letters, digits, "
                                                         "'_', '.', '+', '-' (not '.' or '..') of at most 255 "
                                                         "characters, got a JSON boolean"),
        ("/vm/test1/meta", {"profile": {"a": 1}}, "Parameter 'profile': expected a string, got a JSON object"),
    ]:
        response = vmd.post(path, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {"message": message}
    assert vmd.get("/vm/test1").json() == before
    assert vmd.get("/vm").json() == listing
    assert tree(cluster, "/domains") == stored


def test_json_body_booleans_numbers_and_lists_still_work(vmd, cluster):
    """A JSON boolean for a boolean parameter, a JSON number for a string one ("42") and a list of strings
    for a repeated one mean what they did in v0.6."""
    protected = vmd.post("/vm/test1/tags", json={"action": "add", "tag": "keep", "protected": True})
    assert protected.status_code == 200, protected.text
    numbered = vmd.post("/vm/test1/tags", json={"action": "add", "tag": 42, "protected": False})
    assert numbered.status_code == 200, numbered.text
    tags = {tag["name"]: tag for tag in vmd.get("/vm/test1").json()["tags"]}
    assert tags["keep"]["protected"] is True and tags["42"]["protected"] is False
    limited = vmd.post("/vm/test1/meta", json={"profile": 7, "limit": "pvchv1,pvchv2"})
    assert limited.status_code == 200, limited.text
    assert keys(cluster)["profile"] == "7" and vmd.get("/vm/test1").json()["node_limit"] == ["pvchv1", "pvchv2"]
    second = uuid_for(2)
    defined = vmd.post("/vm", json={"xml": vm_xml("json2", second), "node": "pvchv2", "autostart": True,
                                    "user_tags": ["web", "prod"], "protected_tags": ["db"]})
    assert defined.status_code == 200, defined.text
    vm = vmd.get("/vm/json2").json()
    assert vm["node_autostart"] is True
    assert sorted((tag["name"], tag["protected"]) for tag in vm["tags"]) == [
        ("db", True), ("prod", False), ("web", False)]

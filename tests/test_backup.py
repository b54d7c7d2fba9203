"""GET /backup and POST /restore (PVC 1.x): a cluster backed up, restored onto a fresh ZooKeeper, answers alike.

One seeded source daemon serves the whole module (the first test only reads it; the second
restores onto it and leaves it as seeded). Backup and restore never call Ceph: the storage GET
routes read what a v0.6 node daemon records in ZooKeeper, which ``seed`` writes, so the ceph
plugin is loaded (its routes are compared) without a Ceph cluster behind it.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from test_cluster import tree
from test_network import add_acl, add_managed, seed_lease
from test_node import eventually, seed_node
from test_task_kinds import ended
from test_vm import vm_xml

from conftest import REQUEST_TIMEOUT, START_TIMEOUT, empty_tree, wait_until
from pvc_core.zkserver import ZooKeeperServer

VM_UUID = "00000000-0000-4000-8000-000000000b01"
LEASE_MAC = "52:54:00:3a:9f:01"
# What the GET routes' path variables stand for here: the seeded objects, and one that does not exist.
SEEDED = {"vm": ["web1", VM_UUID, "nosuch"], "node": ["pvchv1", "nosuch"], "vni": ["1001", "cust-a", "7"],
          "network": ["1001"], "mac": [LEASE_MAC, "52:54:00:3a:9f:02", "52:54:00:00:00:99"],
          "description": ["allow-ssh", "nosuch"], "pool": ["vms", "nosuch"], "volume": ["web1_sda", "nosuch"],
          "snapshot": ["s1", "nosuch"], "osdid": ["0", "9"]}


def config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The ceph plugin loaded on a ceph.conf that does not exist (nothing here calls Ceph; /health's probe then
    fails at once on both sides), without its collector (/ceph would follow a live Ceph on one side only)."""
    conf = tmp_path_factory.mktemp("no-ceph") / "ceph.conf"
    return {"ceph": {"conf": str(conf), "collector": "False"}, "metadata": {"enabled": "False"}}


@pytest.fixture(scope="module")
def cluster(daemon_factory, zk_server, tmp_path_factory) -> Iterator[tuple]:
    """(source daemon, its ZooKeeper client, the configuration): seeded once for the module."""
    client = KazooClient(hosts=zk_server.address)
    client.start(timeout=START_TIMEOUT)
    empty_tree(client)
    settings = config(tmp_path_factory)
    source = daemon_factory(settings)
    try:
        seed(source, client)
        yield source, client, settings
    finally:
        source.stop()
        client.stop()
        client.close()


def seed(daemon, zk) -> None:
    assert daemon.post("/initialize").status_code == 200
    seed_node(zk, "pvchv1")
    seed_node(zk, "pvchv2", router="primary")
    eventually(lambda: isinstance(daemon.get("/node").json(), list))
    assert daemon.post("/vm", params={"node": "pvchv1", "user_tags": "web", "protected_tags": "keep"},
                       data={"xml": vm_xml("web1", VM_UUID)}).status_code == 200
    assert daemon.post("/vm/web1/meta", params={"limit": "pvchv1,pvchv2", "profile": "std"}).status_code == 200
    assert add_managed(daemon).status_code == 200
    seed_lease(zk, LEASE_MAC, "10.10.1.150")
    assert daemon.post("/network/1001/lease", params={"macaddress": "52:54:00:3A:9F:02", "ipaddress": "10.10.1.10",
                                                      "hostname": "db1"}).status_code == 200
    assert add_acl(daemon, "allow-ssh", direction="in").status_code == 200
    assert add_acl(daemon, "allow-web", direction="in", rule="tcp dport 80 accept").status_code == 200
    # Ceph as a v0.6 node daemon records it (GET routes read ZooKeeper only)
    for path, value in {"/ceph/pools/vms": "", "/ceph/pools/vms/stats": json.dumps({"id": 1, "stored_bytes": 4096}),
                        "/ceph/volumes/vms": "", "/ceph/volumes/vms/web1_sda": "",
                        "/ceph/volumes/vms/web1_sda/stats": json.dumps({"name": "web1_sda", "size": 8388608}),
                        "/ceph/snapshots/vms": "", "/ceph/snapshots/vms/web1_sda": "",
                        "/ceph/snapshots/vms/web1_sda/s1": "", "/ceph/snapshots/vms/web1_sda/s1/stats": "{}",
                        "/ceph/osds/0": "pvchv1", "/ceph/osds/0/node": "pvchv1",
                        "/ceph/osds/0/stats": json.dumps({"id": 0, "up": 1, "in": 1}),
                        "/ceph": "HEALTH_OK status text\n", "/ceph/radosdf": "rados df text\n"}.items():
        if zk.exists(path):
            zk.set(path, value.encode())
        else:
            zk.create(path, value.encode())


# Answers from the daemon's own database, not from the cluster's tree: each daemon here has its own.
OWN_DATABASE = ("/api/v1/audit", "/api/v1/tasks")


def read_routes(daemon) -> list[str]:
    """Every GET path of the daemon's own document, its variables filled with every seeded value."""
    document = daemon.get("/openapi.json").json()
    out = []
    for path, operations in sorted(document["paths"].items()):
        if "get" not in operations or operations["get"].get("x-plugin") == "example":
            continue  # the suite's example plugin is no part of the cluster (its /example/crash is a 500)
        if any(path == own or path.startswith(f"{own}/") for own in OWN_DATABASE):
            continue
        names = re.findall(r"{([^}]+)}", path)
        unknown = [name for name in names if name not in SEEDED]
        values = [SEEDED.get(name, ["nosuch"]) for name in names]
        assert not unknown or path.startswith("/api/v1/provisioner") or path.startswith("/api/v1/tasks"), \
            f"{path}: no seeded value for {unknown}"
        for combination in itertools.product(*values):
            filled = path
            for name, value in zip(names, combination, strict=True):
                filled = filled.replace("{" + name + "}", value, 1)
            out.append(filled[len("/api/v1"):])
    return out


def configuration(client) -> dict[str, str]:
    """The tree as a backup holds it: every key but the API daemons' own state (``/pvcapid``)."""
    return {path: value.decode() for path, value in tree(client).items()
            if path != "/pvcapid" and not path.startswith("/pvcapid/")}


def answer(response):
    return response.json() if "json" in response.headers.get("Content-Type", "") else response.text


def test_backup_restored_on_a_fresh_zookeeper_answers_alike(daemon_factory, cluster, tmp_path):
    source, clean_zk, settings = cluster
    clean_zk.ensure_path("/pvcapid/vm-rollbacks")  # as a rollback leaves it: the daemons' own state
    backup = source.get("/backup")
    assert backup.status_code == 200
    document = backup.json()
    assert "/pvcapid/vm-rollbacks" in tree(clean_zk)
    assert document == configuration(clean_zk)  # the whole tree but that
    assert json.loads(document[f"/domains/{VM_UUID}/tags"]) == source.get("/vm/web1").json()["tags"]

    zookeeper = ZooKeeperServer(str(tmp_path / "zk")).start(timeout=START_TIMEOUT)
    fresh = KazooClient(hosts=zookeeper.address)
    try:
        fresh.start(timeout=START_TIMEOUT)
        target = daemon_factory(settings, coordinator=zookeeper.address)
        # refusals first: nothing is written
        assert target.post("/restore", json=document).status_code == 400  # no confirmation
        bad = [("not json", False, "expected a JSON cluster backup"), ("[]", True, "expected a JSON object"),
               ("{}", True, "Cluster backup: the JSON object is empty"),
               ("{}", False, "Cluster backup: the JSON object is empty"),
               ('{"/a/b": "x"}', True, "expected every key's parent"),
               ('{"/nodes": 1}', True, "expected a string or null"),
               ('{"relative": ""}', True, "expected an absolute ZooKeeper path"),
               ('{"/zookeeper/quota": ""}', True, "expected no key of ZooKeeper's own"),
               ('{"/nodes": ""}', True, "expected a PVC cluster's base keys"),
               # one value ZooKeeper cannot take (a request above ~1 MB drops the connection): refused before
               # anything is written, not half-restored with ZooKeeper unreachable
               (json.dumps({**document, "/zz": "", "/zz/big": "x" * (600 * 1024)}), True,
                "Cluster backup: key '/zz/big' with its value is 614407 bytes; expected at most 524288")]
        for text, as_body, fragment in bad:
            confirmed = {"yes-i-really-mean-it": "yes"}
            refused = target.post("/restore", params=confirmed, data=text,
                                  headers={"Content-Type": "application/json"}) if as_body else \
                target.post("/restore", params={**confirmed, "cluster_data": text})
            assert refused.status_code == 400, (text, refused.text)
            assert fragment in refused.json()["message"], (text, refused.json())
        declined = target.post("/restore", params={"yes_i_really_mean_it": "no"}, json=document)
        assert declined.status_code == 400 and declined.json()["message"].startswith(
            "Parameter 'yes-i-really-mean-it': expected any value (even empty) but a negative one"), declined.text
        assert tree(fresh) == {}

        restored = target.post("/restore", params={"yes-i-really-mean-it": "yes"}, json=document)
        assert restored.status_code == 200, restored.text
        assert restored.json()["message"].startswith("Restore completed successfully")
        record = target.get(f"/tasks/{restored.headers['X-Task-Id']}").json()  # a task, ended with the answer
        assert (record["kind"], record["plugin"], record["state"], record["status"]) == (
            "core.restore", "core", "SUCCESS", restored.json()["message"])
        assert record["current"] == record["total"] >= 1
        assert configuration(fresh) == document
        assert target.get("/backup").json() == document
        again = target.post("/restore", params={"yes-i-really-mean-it": "yes", "cluster_data": json.dumps(document)})
        assert again.json() == {"message": "Restore completed successfully: the cluster already held this "
                                           "configuration."}

        paths = read_routes(source)
        assert len(paths) > 60
        compared = 0
        for path in paths:
            def alike(path: str = path) -> bool:
                one, other = source.get(path, allow_redirects=False), target.get(path, allow_redirects=False)
                return (one.status_code, answer(one)) == (other.status_code, answer(other))
            wait_until(alike, message=f"GET {path} alike on both clusters")
            compared += 1
        assert compared == len(paths)
        assert source.get("/vm/web1").status_code == 200 and target.get("/vm/web1").json()["tags"] == [
            {"name": "keep", "type": "user", "protected": True}, {"name": "web", "type": "user", "protected": False}]
    finally:
        fresh.stop()
        zookeeper.stop()


def test_restore_replaces_and_a_failed_restore_writes_the_previous_tree_back(cluster, zk_server):
    """Keys the document lacks go, others' trees stay; a transaction refused half-way (a key under an
    ephemeral one, after more than one transaction of changes) leaves the tree as it was."""
    daemon, clean_zk, _ = cluster
    document = daemon.get("/backup").json()
    clean_zk.create("/other-software", b"kept")
    assert daemon.post("/vm/web1/tags", params={"action": "add", "tag": "later"}).status_code == 200
    restored = daemon.post("/restore", params={"yes-i-really-mean-it": "yes"}, json=document)
    assert restored.status_code == 200, restored.text
    assert configuration(clean_zk) == {**document, "/other-software": "kept"}
    wait_until(lambda: [tag["name"] for tag in daemon.get("/vm/web1").json()["tags"]] == ["keep", "web"])

    holder = KazooClient(hosts=zk_server.address)
    holder.start(timeout=START_TIMEOUT)
    try:
        holder.create("/holder", b"", ephemeral=True)
        before = tree(clean_zk)
        broken = {**document, **{f"/domains/{VM_UUID}/extra{index}": "x" * 300_000 for index in range(3)},
                  "/holder": "", "/holder/child": "refused"}
        failed = daemon.post("/restore", params={"yes-i-really-mean-it": "yes"}, json=broken)
        assert failed.status_code == 409, failed.text
        assert failed.json()["message"].endswith("the previous tree was written back, nothing was changed")
        assert tree(clean_zk) == before
        assert daemon.get("/backup").status_code == 200  # no restore record left
    finally:
        holder.stop()
        clean_zk.delete("/other-software")


def test_the_daemons_own_state_is_neither_backed_up_nor_restored(cluster):
    """/pvcapid (sessions logged out, rollbacks and restores under way, command locks) is no configuration. A
    document without it (any PVC 1.x backup, or this daemon's) restores whatever the daemons keep there now: a
    rollback made after the backup left /pvcapid/vm-rollbacks, and deleting /pvcapid failed every such restore
    (409, its own record being a child). The /pvcapid keys of an older backup are ignored."""
    daemon, clean_zk, _ = cluster
    document = daemon.get("/backup").json()
    assert not [path for path in document if path.startswith("/pvcapid")]
    clean_zk.ensure_path("/pvcapid/vm-rollbacks")  # as a rollback leaves it
    own = {path: value for path, value in tree(clean_zk).items() if path.startswith("/pvcapid")}
    assert daemon.post("/vm/web1/tags", params={"action": "add", "tag": "later"}).status_code == 200
    restored = daemon.post("/restore", params={"yes-i-really-mean-it": "yes"}, json=document)
    assert restored.status_code == 200, restored.text
    assert configuration(clean_zk) == document
    assert {path: value for path, value in tree(clean_zk).items() if path.startswith("/pvcapid")} == own
    older = {**document, "/pvcapid": "", "/pvcapid/vm-rollbacks": "", "/pvcapid/vm-rollbacks/pvc-rollback-x": "{}",
             "/pvcapid/revoked_sessions": "", "/pvcapid/revoked_sessions/s1": "1"}
    again = daemon.post("/restore", params={"yes-i-really-mean-it": "yes"}, json=older)
    assert again.json() == {"message": "Restore completed successfully: the cluster already held this "
                                       "configuration."}, again.text
    assert {path: value for path, value in tree(clean_zk).items() if path.startswith("/pvcapid")} == own
    wait_until(lambda: [tag["name"] for tag in daemon.get("/vm/web1").json()["tags"]] == ["keep", "web"])


def test_a_cancelled_restore_writes_the_previous_tree_back(cluster):
    """A restore of 30,000 more keys takes 60 transactions: cancelled once the first is committed, it stops
    before the next, writes the previous tree back (409), and its record ends cancelled."""
    daemon, clean_zk, _ = cluster
    document = daemon.get("/backup").json()
    # half under a key of the tree, half under a top-level key it lacks: the undo removes both
    bulk, extra = f"/domains/{VM_UUID}/bulk", "/restored-extra"
    large = {**document, bulk: "", extra: "", **{f"{bulk}/key{index:05}": "value" for index in range(15_000)},
             **{f"{extra}/key{index:05}": "value" for index in range(15_000)}}
    before = tree(clean_zk)
    answers: list = []
    restoring = threading.Thread(target=lambda: answers.append(
        daemon.post("/restore", params={"yes-i-really-mean-it": "yes"}, json=large)))
    restoring.start()
    try:
        (record,) = wait_until(lambda: [task for task in daemon.get("/tasks", params={
            "kind": "core.restore", "state": "RUNNING"}).json() if task["current"] >= 1],
            message="the restore's first transaction committed")
        assert daemon.delete(f"/tasks/{record['id']}").status_code == 202
    finally:
        restoring.join(timeout=REQUEST_TIMEOUT)
    (answer,) = answers
    assert answer.status_code == 409 and answer.headers["X-Task-Id"] == record["id"], answer.text
    message = answer.json()["message"]
    assert message.startswith("ERROR: Cancelled the restore after ") and message.endswith(
        "transactions (DELETE /tasks/" + record["id"] + "); the previous tree was written back, nothing was changed")
    done = ended(daemon, record["id"])
    assert (done["state"], done["status"]) == ("FAILURE", f"Cancelled: {message}") and done["total"] >= 60
    assert 1 <= done["current"] < done["total"] and done["cancelled"] is not None
    assert tree(clean_zk) == before
    assert daemon.get("/backup").json() == document  # no restore record left

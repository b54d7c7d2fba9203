"""VM tags (PVC 1.x): define with tags, add/remove, the tag and negate filters, through two daemons."""

from __future__ import annotations

import json

import pytest
from test_cluster import tree
from test_node import eventually, seed_node
from test_vm import define, uuid_for, vm_xml

from conftest import settle_timeout, wait_until

NAMES = ("alpha", "beta", "gamma")
UUIDS = {name: uuid_for(index + 1) for index, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def pair(daemon_factory):
    config = {"vm": {"delete_grace": "0.05", "wait_timeout": str(settle_timeout())}, "plugins": {"disabled": ["ceph"]}}
    return daemon_factory(config), daemon_factory(config)


@pytest.fixture
def tagged(pair, clean_zk):
    first, _ = pair
    assert first.post("/initialize").status_code == 200
    for name in ("pvchv1", "pvchv2"):
        seed_node(clean_zk, name)
    eventually(lambda: isinstance(first.get("/node").json(), list))
    response = first.post("/vm", params={"node": "pvchv1", "user_tags": ["web", "prod"], "protected_tags": "keep"},
                          data={"xml": vm_xml("alpha", UUIDS["alpha"])})
    assert response.status_code == 200, response.text
    assert define(first, vm_xml("beta", UUIDS["beta"]), node="pvchv1", user_tags="web").status_code == 200
    assert define(first, vm_xml("gamma", UUIDS["gamma"]), node="pvchv2").status_code == 200
    return clean_zk


def zk_tags(zk, uuid: str) -> list[dict]:
    """The tags as PVC 1.x reads them: the children of the VM's tags key."""
    base = f"/domains/{uuid}/tags"
    if zk.exists(base) is None:
        return []
    out = []
    for name in sorted(zk.get_children(base)):
        assert zk.get(f"{base}/{name}")[0] == name.encode()
        out.append({"name": name, "type": zk.get(f"{base}/{name}/type")[0].decode(),
                    "protected": zk.get(f"{base}/{name}/protected")[0] == b"True"})
    return out


def names(answer) -> list[str]:
    if isinstance(answer, dict) and "message" in answer:  # 404: none matched
        return []
    return sorted(vm["name"] for vm in (answer if isinstance(answer, list) else [answer]))


def agree(pair, zk) -> None:
    """Every VM object, whole, the same through both daemons (one answer, a list, by name and UUID); its
    tags as ZooKeeper's children say, and as the tags key's stored list says."""
    first, second = pair
    listed = {}
    for name, uuid in UUIDS.items():
        truth = zk_tags(zk, uuid)
        stored = zk.get(f"/domains/{uuid}/tags")[0] if zk.exists(f"/domains/{uuid}/tags") else b"[]"
        assert json.loads(stored) == truth
        for daemon in pair:
            wait_until(lambda daemon=daemon, name=name, truth=truth: daemon.get(f"/vm/{name}").json()["tags"]
                       == truth, message=f"{name}'s tags through {daemon.base}")
        expected = first.get(f"/vm/{name}").json()
        assert second.get(f"/vm/{name}").json() == expected
        for daemon in pair:
            assert daemon.get(f"/vm/{name}/tags").json() == {"name": name, "tags": truth}
            assert daemon.get(f"/vm/{uuid}").json() == expected
        listed[name] = expected
    for daemon in pair:
        assert {vm["name"]: vm for vm in daemon.get("/vm").json()} == listed


def test_tags_filters_and_protection(pair, tagged):
    first, second = pair
    zk = tagged
    alpha = first.get("/vm/alpha").json()
    assert alpha["tags"] == [{"name": "keep", "type": "user", "protected": True},
                             {"name": "prod", "type": "user", "protected": False},
                             {"name": "web", "type": "user", "protected": False}]
    assert first.get("/vm/gamma").json()["tags"] == []
    assert not zk.exists(f"/domains/{UUIDS['gamma']}/tags")  # a VM without tags gets no key
    agree(pair, zk)

    # the filters, with and without negate, on both daemons
    for daemon in pair:
        assert names(daemon.get("/vm", params={"tag": "web"}).json()) == ["alpha", "beta"]
        assert names(daemon.get("/vm", params={"tag": "web", "negate": "true"}).json()) == ["gamma"]
        assert daemon.get("/vm", params={"tag": "keep"}).json()["name"] == "alpha"  # one: the object
        assert names(daemon.get("/vm", params={"tag": "keep", "negate": "true"}).json()) == ["beta", "gamma"]
        assert names(daemon.get("/vm", params={"node": "pvchv1", "negate": "true"}).json()) == ["gamma"]
        assert names(daemon.get("/vm", params={"tag": "web", "node": "pvchv1"}).json()) == ["alpha", "beta"]
        missing = daemon.get("/vm", params={"tag": "nothing"})
        assert missing.status_code == 404 and missing.json() == {"message": "VM not found."}
        assert names(daemon.get("/vm", params={"tag": "nothing", "negate": "true"}).json()) == list(NAMES)
        assert daemon.get("/vm", params={"tag": "a/b"}).status_code == 400

    # a change through the second daemon: visible there at once, through the first by its watches
    before = tree(zk, "/domains")
    response = second.post("/vm/beta/tags", params={"action": "add", "tag": "db", "protected": "true"})
    assert response.json() == {"message": "Successfully added tag 'db' to VM 'beta'."}
    assert second.get("/vm/beta").json()["tags"] == [{"name": "db", "type": "user", "protected": True},
                                                     {"name": "web", "type": "user", "protected": False}]
    wait_until(lambda: names(first.get("/vm", params={"tag": "db"}).json()) == ["beta"])
    after = tree(zk, "/domains")
    tags_root = f"/domains/{UUIDS['beta']}/tags"
    assert {path: value for path, value in after.items() if not path.startswith(tags_root)} == \
        {path: value for path, value in before.items() if not path.startswith(tags_root)}
    assert sorted(path for path in after if path.startswith(tags_root)) == sorted(
        [path for path in before if path.startswith(tags_root)]
        + [f"{tags_root}/db", f"{tags_root}/db/protected", f"{tags_root}/db/type"])
    agree(pair, zk)

    # a protected tag stays without protected=true; nothing changes
    before = tree(zk, "/domains")
    refused = first.post("/vm/alpha/tags", params={"action": "remove", "tag": "keep"})
    assert refused.status_code == 400
    assert refused.json() == {"message": "The tag 'keep' is protected; expected protected=true to remove it."}
    for flag in ({}, {"protected": "false"}):  # nor is it unprotected by adding it again
        readded = first.post("/vm/alpha/tags", params={"action": "add", "tag": "keep", **flag})
        assert readded.status_code == 400 and readded.json() == {
            "message": "The tag 'keep' is protected; expected protected=true to add it again (it stays protected), "
                       "or to remove it with protected=true first."}
    assert tree(zk, "/domains") == before
    absent = first.post("/vm/alpha/tags", params={"action": "remove", "tag": "nope"})
    assert absent.status_code == 400 and "does not exist" in absent.json()["message"]
    assert first.post("/vm/alpha/tags", params={"action": "swap", "tag": "x"}).status_code == 400
    assert first.post("/vm/alpha/tags", params={"action": "add"}).status_code == 400
    unknown = first.post("/vm/nosuch/tags", params={"action": "add", "tag": "x"})
    assert unknown.status_code == 404 and unknown.json() == {"message": "VM not found."}
    assert first.get("/vm/nosuch/tags").status_code == 404
    assert tree(zk, "/domains") == before

    # with protected=true it goes; a re-add changes the flag in place
    removed = first.post("/vm/alpha/tags", params={"action": "remove", "tag": "keep", "protected": "true"})
    assert removed.json() == {"message": "Successfully removed tag 'keep' from VM 'alpha'."}
    assert not zk.exists(f"/domains/{UUIDS['alpha']}/tags/keep")
    assert first.post("/vm/alpha/tags", params={"action": "add", "tag": "web", "protected": "yes"}).status_code == 200
    assert first.post("/vm/alpha/tags", params={"action": "remove", "tag": "prod"}).status_code == 200
    assert first.get("/vm/alpha/tags").json() == {"name": "alpha", "tags": [
        {"name": "web", "type": "user", "protected": True}]}
    agree(pair, zk)
    for daemon in pair:
        wait_until(lambda daemon=daemon: names(daemon.get("/vm", params={"tag": "keep", "negate": "1"}).json())
                   == list(NAMES))


def test_tags_written_by_other_tooling_are_repaired_by_the_next_change(pair, tagged):
    """A tag written as PVC 1.x writes it (children only, the tags key's value empty) is counted again
    by the next change: the list is rebuilt from the children, not from the stored list."""
    first, second = pair
    zk = tagged
    base = f"/domains/{UUIDS['gamma']}/tags"
    transaction = zk.transaction()
    transaction.create(base, b"")
    transaction.create(f"{base}/legacy", b"legacy")
    transaction.create(f"{base}/legacy/type", b"user")
    transaction.create(f"{base}/legacy/protected", b"False")
    transaction.commit()
    assert second.post("/vm/gamma/tags", params={"action": "add", "tag": "new"}).status_code == 200
    agree(pair, zk)
    assert [tag["name"] for tag in first.get("/vm/gamma").json()["tags"]] == ["legacy", "new"]


def test_tags_that_json_escapes_are_filtered_like_any_other(pair, tagged):
    """A tag with a non-ASCII letter, a quote or a backslash is stored escaped in the VM's JSON list; the
    filters still find it (they looked for the raw text and never matched)."""
    first, second = pair
    odd = ["café", "héllo☃", 'q"t', "b\\s"]
    for tag in odd:
        added = first.post("/vm/gamma/tags", json={"action": "add", "tag": tag})
        assert added.status_code == 200, added.text
    agree(pair, tagged)
    for daemon in pair:
        for tag in odd:
            found = wait_until(lambda daemon=daemon, tag=tag: names(daemon.get("/vm", params={"tag": tag}).json()),
                               message=f"the filter tag={tag!r} on {daemon.base}")
            assert found == ["gamma"], found
            assert names(daemon.get("/vm", params={"tag": tag, "negate": "true"}).json()) == ["alpha", "beta"]



def test_concurrent_tag_changes_all_apply(pair, tagged):
    """Sixty adds, then sixty removes of different tags of one VM, all at once through one daemon: every one
    answers 200 and applies, as both daemons and ZooKeeper then show. A daemon's tag changes wait for each other
    (ZooKeeper.in_turn); at once they ran out of optimistic attempts (409 'changed by a concurrent request': 20
    removes in a new user's trial, 60 here without the wait). Changes through several daemons still meet in the
    transactions' version guards, retried a few times: many at once through each can end 409 for some."""
    from concurrent.futures import ThreadPoolExecutor
    first, _ = pair
    wanted = [f"t{index:02}" for index in range(60)]

    def change(action: str) -> set[int]:
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            return {answer.status_code for answer in pool.map(
                lambda tag: first.post("/vm/gamma/tags", params={"action": action, "tag": tag}), wanted)}

    assert change("add") == {200}
    assert [tag["name"] for tag in zk_tags(tagged, UUIDS["gamma"])] == wanted
    agree(pair, tagged)
    assert change("remove") == {200}
    assert zk_tags(tagged, UUIDS["gamma"]) == []
    agree(pair, tagged)

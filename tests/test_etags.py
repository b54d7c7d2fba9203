"""Safe concurrent edits (issue 15): object GETs answer an ETag, changes take If-Match, 412 when it no longer holds.

Two daemons (``pair``) share one ZooKeeper and one PostgreSQL database; the session's default
daemon has an SQLite database of its own. Two clients read the same object (through the two
daemons where they share it), both write with the ETag they read: the second is refused with 412,
and the first write is whole when the object is read back through both daemons and straight from
ZooKeeper or the database (every field compared). Races of threads released together show that the
check is part of the write: exactly one of them wins each round, whatever the interleaving.

All waits are events awaited with ``wait_until`` (a daemon's watched view catching up with a write
made through the other), bounded by ``settle_timeout()``; no fixed sleeps.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from test_cluster import tree
from test_multi_daemon import NODES, connected, emptied, on_one_cluster
from test_network import MANAGED, MANAGED_KEYS, MANAGED_OBJECT
from test_vm import OBJECT, PRETTY, UUID, XML, define, uuid_for, vm_xml

from conftest import START_TIMEOUT, Daemon, wait_until
from pvc_core import etags

# The znodes the answers are built from, in order (the VM's view keys; a network's scalars; an ACL's two
# keys): the ETag must be what ZooKeeper's own stats of exactly these give.
VM_KEYS = ("state", "node", "lastnode", "failedreason", "node_limit", "node_selector", "node_autostart", "profile",
           "xml", "tags", "snapshots")
NETWORK_KEYS = ("nettype", "domain", "name_servers", "ip6_network", "ip6_gateway", "dhcp6_flag", "ip4_network",
                "ip4_gateway", "dhcp4_flag", "dhcp4_start", "dhcp4_end")


# -- the cluster --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zk(zk_server: Any) -> Iterator[KazooClient]:
    with emptied(zk_server) as client:
        yield client


@pytest.fixture(scope="module")
def pair(daemon_factory: Callable[..., Daemon], zk: KazooClient, postgres: dict) -> Iterator[list[Daemon]]:
    """Two daemons on one ZooKeeper and one PostgreSQL database, three registered nodes."""
    shared = {"ceph": {"collector": "False"}, "provisioner": {"database": postgres},
              "vm": {"delete_grace": "0.05"}}
    with on_one_cluster(daemon_factory, zk, shared, 2) as started:
        yield started
        for daemon in started:
            unchecked(daemon)


def unchecked(daemon: Daemon) -> None:
    """No change of a route that declares an ETag was made without checking its If-Match (the dispatcher
    logs one as a bug)."""
    assert "never checked If-Match" not in daemon.log()


@pytest.fixture(scope="module")
def pg(postgres: dict) -> Iterator[Any]:
    with connected(postgres) as connection:
        yield connection


# -- helpers ------------------------------------------------------------------------------------

def zk_etag(zk: KazooClient, paths: list[str]) -> str:
    """The ETag from ZooKeeper's own stats of these znodes, read here (mzxid; 0 for an absent one)."""
    stats = [zk.exists(path) for path in paths]
    assert stats[0] is not None, f"{paths[0]} does not exist"
    return etags.of_zxids(stat.mzxid if stat is not None else 0 for stat in stats)


def vm_paths(uuid: str) -> list[str]:
    return [f"/domains/{uuid}", *(f"/domains/{uuid}/{key}" for key in VM_KEYS)]


def etag(daemon: Daemon, path: str) -> str | None:
    answer = daemon.get(path)
    assert answer.status_code == 200, answer.text
    return answer.headers.get("ETag")


def settled(daemons: list[Daemon], path: str, expected: str) -> None:
    """Every daemon answers ``path`` with the ETag ``expected`` (the writer at once, the other once its
    watches delivered the write)."""
    for number, daemon in enumerate(daemons):
        wait_until(lambda daemon=daemon: etag(daemon, path) == expected,
                   message=f"daemon {number} did not answer GET {path} with ETag {expected}")


def conditional(daemon: Daemon, method: str, path: str, tag: str, **kwargs: Any) -> Any:
    return daemon.request(method, path, headers={"If-Match": tag}, **kwargs)


def ok(response: Any) -> None:
    assert response.status_code == 200, response.text


def refused(response: Any, now: str | None, what: str) -> None:
    """A 412 that says what changed, the current ETag (header and message) and how to re-read."""
    assert response.status_code == 412, response.text
    message = response.json()["message"]
    assert message.startswith("Precondition failed (If-Match: ") and what in message, message
    if now is None:
        assert "does not exist" in message and "ETag" not in response.headers, message
    else:
        assert "changed since it was read" in message and f"Its current ETag is {now}: GET /api/v1/" in message
        assert response.headers["ETag"] == now


def race(daemons: list[Daemon], threads: int, write: Callable[[Daemon, int], Any]) -> list[tuple[int, int]]:
    """``threads`` writers per daemon released together; (writer, status) of each."""
    barrier = threading.Barrier(len(daemons) * threads)

    def run(number: int) -> tuple[int, int]:
        daemon = daemons[number % len(daemons)]
        barrier.wait(timeout=START_TIMEOUT)
        return number, write(daemon, number).status_code

    with concurrent.futures.ThreadPoolExecutor(len(daemons) * threads) as pool:
        return list(pool.map(run, range(len(daemons) * threads)))


def one_winner(outcomes: list[tuple[int, int]]) -> int:
    codes = Counter(status for _, status in outcomes)
    assert codes == {200: 1, 412: len(outcomes) - 1}, codes
    return next(number for number, status in outcomes if status == 200)


# -- VMs: two daemons on one ZooKeeper -----------------------------------------------------------

def vm_keys(uuid: str, name: str, **changed: bytes) -> dict[str, bytes]:
    """Every key of the VM defined by ``define(node=pvchv1, limit=pvchv1,pvchv2)`` as ZooKeeper holds it."""
    base = f"/domains/{uuid}"
    keys = {"state": b"stop", "node": b"pvchv1", "lastnode": b"", "node_limit": b"pvchv1,pvchv2",
            "node_selector": b"mem", "node_autostart": b"False", "failedreason": b"", "consolelog": b"",
            "rbdlist": f"vms/{name}_sda".encode(), "profile": b"None",
            "xml": PRETTY.replace("test1", name).replace(UUID, uuid).encode()}
    keys.update(changed)
    return {base: name.encode(), **{f"{base}/{key}": value for key, value in keys.items()}}


def test_vm_two_writers_through_two_daemons(pair: list[Daemon], zk: KazooClient) -> None:
    a, b = pair
    ok(define(a, node="pvchv1", limit="pvchv1,pvchv2", selector="mem", autostart="false"))
    paths = vm_paths(UUID)
    first = zk_etag(zk, paths)
    settled(pair, "/vm/test1", first)  # the same ETag from both daemons: ZooKeeper's stats, not a counter
    assert etag(b, f"/vm/{UUID}") == first
    cached = a.get("/vm/test1", headers={"If-None-Match": first})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["ETag"] == first
    assert b.get("/vm/test1", headers={"If-None-Match": '"other"'}).json() == OBJECT

    # both clients read `first`; the one through A writes first, the one through B is refused
    ok(conditional(a, "POST", "/vm/test1/meta", first, params={"limit": "pvchv2,pvchv3", "selector": "load",
                                                               "autostart": "true", "profile": "web"}))
    second = zk_etag(zk, paths)
    assert second != first
    refused(conditional(b, "POST", "/vm/test1/meta", first, params={"limit": "pvchv1", "selector": "vms",
                                                                    "autostart": "false", "profile": "db"}),
            second, "VM 'test1'")
    # nothing lost: A's write whole, B's nowhere, through both daemons and straight from ZooKeeper
    assert tree(zk, "/domains") == vm_keys(UUID, "test1", node_limit=b"pvchv2,pvchv3", node_selector=b"load",
                                           node_autostart=b"True", profile=b"web")
    whole = {**OBJECT, "node_limit": ["pvchv2", "pvchv3"], "node_selector": "load", "node_autostart": True,
             "profile": "web"}
    settled(pair, "/vm/test1", second)
    assert a.get("/vm/test1").json() == b.get("/vm/test1").json() == b.get(f"/vm/{UUID}").json() == whole

    # every change of a VM takes the ETag of GET /vm/<vm>: a stale one is refused and changes nothing
    new_xml = XML.replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>")
    for method, path, params in (("PUT", "/vm/test1", {"xml": new_xml}),
                                 ("POST", "/vm/test1/state", {"state": "start"}),
                                 ("POST", "/vm/test1/node", {"action": "migrate", "node": "pvchv3"}),
                                 ("DELETE", "/vm/test1", {})):
        refused(conditional(b, method, path, first, data=params), second, "VM 'test1'")
        # a weak tag never matches (strong comparison), even the current one: the 412 says so, not "changed"
        weak = conditional(a, method, path, f"W/{second}", data=params)
        assert weak.status_code == 412 and weak.headers["ETag"] == second, weak.text
        assert weak.json() == {"message": f"Precondition failed (If-Match: W/{second}): W/{second} is a weak "
                                          "entity tag, and If-Match compares entity tags strongly (RFC 9110 "
                                          "§13.1.1), so a weak one never matches; nothing was changed. Send the "
                                          f"ETag as GET /api/v1/vm/test1 gives it: If-Match: {second}"}
    assert zk_etag(zk, paths) == second
    assert a.get("/vm/test1").json() == b.get("/vm/test1").json() == whole

    # the current ETag (one of a list) or * lets each change through; each re-read whole through both
    ok(conditional(b, "PUT", "/vm/test1", f'"stale", {second}', data={"xml": new_xml}))
    third = zk_etag(zk, paths)
    whole = {**whole, "vcpu": 4, "xml": new_xml}
    settled(pair, "/vm/test1", third)
    assert a.get("/vm/test1").json() == b.get("/vm/test1").json() == whole
    ok(conditional(a, "POST", "/vm/test1/state", third, data={"state": "start"}))
    ok(conditional(b, "POST", "/vm/test1/node", "*", data={"action": "migrate", "node": "pvchv3"}))
    assert tree(zk, "/domains") == vm_keys(
        UUID, "test1", node_limit=b"pvchv2,pvchv3", node_selector=b"load", node_autostart=b"True", profile=b"web",
        xml=PRETTY.replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>").encode(), state=b"migrate", node=b"pvchv3",
        lastnode=b"pvchv1")
    fourth = zk_etag(zk, paths)
    whole = {**whole, "state": "migrate", "node": "pvchv3", "last_node": "pvchv1", "migrated": "from pvchv1"}
    settled(pair, "/vm/test1", fourth)
    assert a.get("/vm/test1").json() == b.get("/vm/test1").json() == whole

    # malformed or misplaced If-Match: 400, nothing changed; without it, v0.6's answer
    bad = conditional(a, "POST", "/vm/test1/meta", fourth.strip('"'), params={"profile": "x"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("Header If-Match: expected * or"), bad.text
    misplaced = conditional(a, "POST", "/vm/test1/locks", fourth)
    assert misplaced.status_code == 400 and "keeps no ETag" in misplaced.json()["message"], misplaced.text
    assert conditional(a, "POST", "/vm", fourth, data={"xml": XML}).status_code == 400
    assert zk_etag(zk, paths) == fourth
    ok(b.post("/vm/test1/meta", params={"profile": "unconditional"}))
    fifth = zk_etag(zk, paths)

    # POST /vm/<vm> (a define; v0.6 ignores its path): If-Match is on the path's VM, so it holds only while
    # that VM exists, and then a definition of that VM is the usual duplicate
    assert conditional(a, "POST", "/vm/test1", fifth, data={"xml": XML}).status_code == 400
    refused(conditional(a, "POST", "/vm/other", "*", data={"xml": vm_xml("other", uuid_for(9))}), None,
            "VM 'other'")
    assert zk.exists(f"/domains/{uuid_for(9)}") is None

    # removal: the stale ETag keeps the VM; the current one removes it, as both daemons then see
    refused(conditional(a, "DELETE", "/vm/test1", fourth), fifth, "VM 'test1'")
    assert zk.exists(f"/domains/{UUID}") is not None
    ok(conditional(a, "DELETE", "/vm/test1", fifth))
    assert zk.exists(f"/domains/{UUID}") is None
    for daemon in pair:
        wait_until(lambda daemon=daemon: daemon.get("/vm/test1").status_code == 404, message="the VM stayed")
        assert conditional(daemon, "PUT", "/vm/test1", fifth, data={"xml": XML}).status_code == 404


def test_vm_conditional_writers_racing(pair: list[Daemon], zk: KazooClient) -> None:
    """Two writers per daemon, all with the ETag they read, released together: each round exactly one
    wins, and the VM holds that one's write whole (the check is part of the transaction)."""
    name, uuid = "racer", uuid_for(1)
    ok(define(pair[0], vm_xml(name, uuid), node="pvchv1", limit="pvchv1,pvchv2"))
    paths = vm_paths(uuid)
    for round_ in range(3):
        current = zk_etag(zk, paths)
        settled(pair, f"/vm/{name}", current)
        payloads = {number: {"limit": NODES[number % 3], "selector": ("mem", "vcpus", "load", "vms")[number],
                             "autostart": str(number % 2 == 0).lower(), "profile": f"p{round_}-{number}"}
                    for number in range(4)}
        winner = one_winner(race(pair, 2, lambda daemon, number, current=current, payloads=payloads: conditional(
            daemon, "POST", f"/vm/{name}/meta", current, params=payloads[number])))
        won = payloads[winner]
        assert tree(zk, f"/domains/{uuid}") == {
            path: value for path, value in vm_keys(
                uuid, name, node_limit=won["limit"].encode(), node_selector=won["selector"].encode(),
                node_autostart=won["autostart"].capitalize().encode(), profile=won["profile"].encode()).items()
            if path != f"/domains/{uuid}"}
        settled(pair, f"/vm/{name}", zk_etag(zk, paths))
        answers = [daemon.get(f"/vm/{name}").json() for daemon in pair]
        assert answers[0] == answers[1]
        assert (answers[0]["node_limit"], answers[0]["node_selector"], answers[0]["node_autostart"],
                answers[0]["profile"]) == ([won["limit"]], won["selector"], won["autostart"] == "true", won["profile"])


def test_a_guard_refuses_a_write_between_its_read_and_its_commit(zk_server: Any, zk: KazooClient) -> None:
    """The check is part of the write: a set, or the creation of a key that was absent, made after a change
    read the object and before it commits fails the commit (which the services retry into a 412)."""
    from kazoo.exceptions import BadVersionError, NodeExistsError

    from pvc_core.zk import TransactionFailed, ZooKeeper
    client = ZooKeeper([zk_server.address], request_timeout=START_TIMEOUT)
    client.start(wait=START_TIMEOUT)
    base = "/etag-guard"
    paths = [base, f"{base}/set", f"{base}/absent"]
    try:
        zk.create(base, b"before")
        zk.create(f"{base}/set", b"1")

        def commit(guard: etags.Guard) -> None:
            transaction = client.transaction()
            guard.add_to(transaction)
            transaction.set_data(base, b"after")
            client.commit(transaction, "guarded write")

        for between, cause in ((lambda: zk.set(f"{base}/set", b"2"), BadVersionError),
                               (lambda: zk.create(f"{base}/absent", b"new"), NodeExistsError)):
            guard = etags.read(client, paths)
            assert guard.etag == zk_etag(zk, paths)
            between()
            with pytest.raises(TransactionFailed) as failed:
                commit(guard)
            assert isinstance(failed.value.cause, cause) and zk.get(base)[0] == b"before"
        assert zk.get(f"{base}/absent")[0] == b"new"  # the other writer's key stays
        zk.delete(f"{base}/absent")
        commit(etags.read(client, paths))  # nothing in between: it commits, and the absence check leaves no key
        assert zk.get(base)[0] == b"after" and zk.get_children(base) == ["set"]
    finally:
        client.stop()
        zk.delete(base, recursive=True)


def test_a_vm_with_an_absent_key(pair: list[Daemon], zk: KazooClient) -> None:
    """A key the answer is built from may be absent (an older VM): it counts as mzxid 0, a conditional change
    leaves it absent, and its creation by another writer changes the ETag."""
    name, uuid = "sparse", uuid_for(2)
    ok(define(pair[0], vm_xml(name, uuid), node="pvchv1", limit="pvchv1,pvchv2"))
    zk.delete(f"/domains/{uuid}/profile")
    paths = vm_paths(uuid)
    read = zk_etag(zk, paths)
    settled(pair, f"/vm/{name}", read)
    ok(conditional(pair[1], "POST", f"/vm/{name}/meta", read, params={"selector": "vms"}))
    keys = vm_keys(uuid, name, node_selector=b"vms")
    del keys[f"/domains/{uuid}/profile"]
    assert tree(zk, f"/domains/{uuid}") == {path: value for path, value in keys.items() if path != f"/domains/{uuid}"}
    changed = zk_etag(zk, paths)
    settled(pair, f"/vm/{name}", changed)
    whole = {**OBJECT, **{key: value for key, value in pair[0].get(f"/vm/{name}").json().items()
                          if key in ("name", "uuid", "disks", "xml")}, "node_selector": "vms", "profile": None}
    assert pair[0].get(f"/vm/{name}").json() == pair[1].get(f"/vm/{name}").json() == whole
    zk.create(f"/domains/{uuid}/profile", b"web")  # another writer (a v0.6 daemon) adds it
    refused(conditional(pair[0], "POST", f"/vm/{name}/meta", changed, params={"selector": "mem"}),
            zk_etag(zk, paths), f"VM '{name}'")
    assert zk.get(f"/domains/{uuid}/node_selector")[0] == b"vms"
    settled(pair, f"/vm/{name}", zk_etag(zk, paths))
    # a rewrite of a key with the value it holds (as node daemons do) is a write: both daemons' ETags follow
    zk.set(f"/domains/{uuid}/state", b"stop")
    settled(pair, f"/vm/{name}", zk_etag(zk, paths))


# -- networks and ACLs ----------------------------------------------------------------------------

def test_network_and_acl_two_writers_through_two_daemons(pair: list[Daemon], zk: KazooClient) -> None:
    a, b = pair
    ok(a.post("/network", params=MANAGED))
    paths = ["/networks/1001", *(f"/networks/1001/{key}" for key in NETWORK_KEYS)]
    first = zk_etag(zk, paths)
    settled(pair, "/network/1001", first)
    settled(pair, "/network/cust-a", first)

    ok(conditional(a, "PUT", "/network/1001", first, params={"domain": "one.example"}))
    second = zk_etag(zk, paths)
    refused(conditional(b, "PUT", "/network/cust-a", first, params={"domain": "two.example"}), second,
            'Network "cust-a"')
    assert tree(zk, "/networks") == {**MANAGED_KEYS, "/networks/1001/domain": b"one.example"}
    settled(pair, "/network/1001", second)
    whole = {**MANAGED_OBJECT, "domain": "one.example"}
    assert a.get("/network/1001").json() == b.get("/network/1001").json() == whole
    # creation with the VNI in the path: If-Match holds only while it exists, and then it is a duplicate
    assert conditional(a, "POST", "/network/1001", second,
                       params={"description": "again", "nettype": "bridged"}).status_code == 400
    refused(conditional(b, "POST", "/network/1002", "*", params={"description": "new", "nettype": "bridged"}),
            None, 'Network "1002"')
    assert zk.exists("/networks/1002") is None

    # ACLs: an insertion before a rule renumbers it, so its ETag changes and a removal with the old one is refused
    ok(a.post("/network/1001/acl/web", params={"rule": "tcp dport 80 accept"}))
    rule = lambda description, direction="in": [  # noqa: E731
        f"/networks/1001/firewall_rules/{direction}/{description}",
        *(f"/networks/1001/firewall_rules/{direction}/{description}/{key}" for key in ("order", "rule"))]
    read = zk_etag(zk, rule("web"))
    settled(pair, "/network/1001/acl/web", read)
    ok(b.post("/network/1001/acl", params={"description": "ssh", "rule": "tcp dport 22 accept", "order": "0"}))
    moved = zk_etag(zk, rule("web"))
    assert moved != read
    refused(conditional(a, "DELETE", "/network/1001/acl/web", read), moved, 'Firewall rule "web" of network "1001"')
    web = {"direction": "in", "order": 1, "description": "web", "rule": "tcp dport 80 accept"}
    ssh = {"direction": "in", "order": 0, "description": "ssh", "rule": "tcp dport 22 accept"}
    acls = {path: value for path, value in tree(zk, "/networks/1001/firewall_rules").items()}
    assert acls == {"/networks/1001/firewall_rules/in": b"", "/networks/1001/firewall_rules/out": b"",
                    **dict(zip(rule("ssh"), (b"", b"0", b"tcp dport 22 accept"), strict=True)),
                    **dict(zip(rule("web"), (b"", b"1", b"tcp dport 80 accept"), strict=True))}
    settled(pair, "/network/1001/acl/web", moved)
    assert a.get("/network/1001/acl/web").json() == b.get("/network/1001/acl/web").json() == web
    assert a.get("/network/1001/acl").json() == b.get("/network/1001/acl").json() == [ssh, web]
    assert conditional(b, "POST", "/network/1001/acl/web", moved, params={"rule": "drop"}).status_code == 400
    refused(conditional(b, "POST", "/network/1001/acl/ghost", "*", params={"rule": "drop"}), None,
            'Firewall rule "ghost"')
    ok(conditional(b, "DELETE", "/network/1001/acl/web", moved))
    assert zk.exists(rule("web")[0]) is None and zk.get(rule("ssh")[1])[0] == b"0"
    for daemon in pair:
        wait_until(lambda daemon=daemon: daemon.get("/network/1001/acl").json() == ssh, message="the ACL stayed")
        assert daemon.get("/network/1001/acl/web").status_code == 404
        # a change of what does not exist answers as without If-Match: 404
        assert conditional(daemon, "DELETE", "/network/1001/acl/web", moved).status_code == 404

    # removal of the network: the first ETag is long stale
    refused(conditional(b, "DELETE", "/network/1001", first), second, 'Network "1001"')
    assert zk.exists("/networks/1001") is not None
    ok(conditional(b, "DELETE", "/network/1001", second))
    assert zk.exists("/networks/1001") is None
    for daemon in pair:
        wait_until(lambda daemon=daemon: daemon.get("/network/1001").status_code == 404, message="it stayed")
        assert conditional(daemon, "PUT", "/network/1001", second, params={"domain": "x.example"}).status_code == 404


# -- provisioner rows: PostgreSQL through two daemons, SQLite through one ---------------------------

class Rows:
    """The provisioner's rows read straight from the database, as the API's objects (every column)."""

    def __init__(self, connection: Any, placeholder: str):
        self.connection = connection
        self.mark = placeholder

    def query(self, sql: str, *args: Any) -> list[tuple]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql.replace("%s", self.mark), args)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def one(self, kind: str, name: str) -> dict | None:
        if kind == "system":
            found = self.query("SELECT id, name, vcpu_count, vram_mb, serial, vnc, vnc_bind, node_limit, "
                               "node_selector, node_autostart FROM system_template WHERE name = %s", name)
            return None if not found else dict(zip(
                ("id", "name", "vcpu_count", "vram_mb", "serial", "vnc", "vnc_bind", "node_limit", "node_selector",
                 "node_autostart"), (*found[0][:4], bool(found[0][4]), bool(found[0][5]), *found[0][6:9],
                                     bool(found[0][9])), strict=True))
        if kind in ("userdata", "script"):
            found = self.query(f"SELECT id, name, {kind} FROM {kind} WHERE name = %s", name)
            return None if not found else dict(zip(("id", "name", kind), found[0], strict=True))
        if kind == "network":
            found = self.query("SELECT id, name, mac_template FROM network_template WHERE name = %s", name)
            if not found:
                return None
            nets = self.query("SELECT id, network_template, vni FROM network WHERE network_template = %s "
                              "ORDER BY id", found[0][0])
            return {**dict(zip(("id", "name", "mac_template"), found[0], strict=True)),
                    "networks": [dict(zip(("id", "network_template", "vni"), net, strict=True)) for net in nets]}
        if kind == "storage":
            found = self.query("SELECT id, name FROM storage_template WHERE name = %s", name)
            if not found:
                return None
            columns = ("id", "storage_template", "pool", "disk_id", "source_volume", "disk_size_gb", "mountpoint",
                       "filesystem", "filesystem_args")
            disks = self.query(f"SELECT {', '.join(columns)} FROM storage WHERE storage_template = %s ORDER BY id",
                               found[0][0])
            return {"id": found[0][0], "name": found[0][1],
                    "disks": [{**dict(zip(columns, disk, strict=True)), "filesystem_args": disk[8] or ""}
                              for disk in disks]}
        found = self.query(
            "SELECT p.id, p.name, s.name, n.name, t.name, u.name, c.name, p.arguments FROM profile p "
            "LEFT JOIN system_template s ON s.id = p.system_template "
            "LEFT JOIN network_template n ON n.id = p.network_template "
            "LEFT JOIN storage_template t ON t.id = p.storage_template "
            "LEFT JOIN userdata u ON u.id = p.userdata LEFT JOIN script c ON c.id = p.script WHERE p.name = %s", name)
        if not found:
            return None
        return {**dict(zip(("id", "name", "system_template", "network_template", "storage_template", "userdata",
                            "script"), found[0][:7], strict=True)), "arguments": (found[0][7] or "").split("|")}


# kind: (element path, creation, the two clients' changes (method, path below the element, params), what the first
# change shows in the row)
P = "/provisioner"
SYSTEM = {"vcpus": "2", "vram": "1024", "serial": "true", "vnc": "false"}
KINDS = {
    "system": (f"{P}/template/system/{{}}", ("POST", "", SYSTEM),
               [("PUT", "", {"vcpus": "4"}), ("PUT", "", {"vcpus": "8", "vram": "512"})], {"vcpu_count": 4}),
    "network": (f"{P}/template/network/{{}}", ("POST", "", {"mac_template": "{prefix}:2f:1f:{vmid}{netid}"}),
                [("POST", "/net", {"vni": "100"}), ("POST", "/net/200", {})], None),
    "storage": (f"{P}/template/storage/{{}}", ("POST", "", {}),
                [("POST", "/disk/sda", {"pool": "vms", "disk_size": "10", "filesystem": "ext4",
                                        "filesystem_arg": ["-L=root"], "mountpoint": "/"}),
                 ("POST", "/disk/sdb", {"pool": "vms", "disk_size": "20"})], None),
    "userdata": (f"{P}/userdata/{{}}", ("POST", "", {"data": "#cloud-config\n"}),
                 [("PUT", "", {"data": "#cloud-config\nhostname: one\n"}),
                  ("PUT", "", {"data": "#cloud-config\nhostname: two\n"})],
                 {"userdata": "#cloud-config\nhostname: one\n"}),
    "script": (f"{P}/script/{{}}", ("POST", "", {"data": "def install(**kwargs):\n    pass\n"}),
               [("PUT", "", {"data": "# one\n"}), ("PUT", "", {"data": "# two\n"})], {"script": "# one\n"}),
    "profile": (f"{P}/profile/{{}}", ("POST", "", {"system_template": "base", "network_template": "base",
                                                   "storage_template": "base", "userdata": "empty", "script": "empty",
                                                   "arg": ["a=1"]}),
                [("PUT", "", {"arg": ["a=2", "b=3"]}), ("PUT", "", {"arg": ["c=4"]})], {"arguments": ["a=2", "b=3"]}),
}


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: Any, daemon: Daemon) -> Iterator[tuple[list[Daemon], Rows, str]]:
    """(two clients' daemons, the database, a name prefix): both daemons of ``pair`` on PostgreSQL, or
    the session's daemon twice on its own SQLite file."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pair"), Rows(request.getfixturevalue("pg"), "%s"), "pg"
        return
    connection = sqlite3.connect(str(Path(daemon.config["data_dir"]) / "pvc.db"), timeout=START_TIMEOUT)
    try:
        yield [daemon, daemon], Rows(connection, "?"), "lite"
    finally:
        connection.close()
    unchecked(daemon)


def base_templates(daemon: Daemon, prefix: str) -> None:
    """The templates a profile names (``base``, with the run's prefix)."""
    for kind, params in (("system", SYSTEM), ("network", {}), ("storage", {})):
        answer = daemon.post(f"{P}/template/{kind}/{prefix}-base", params=params)
        assert answer.status_code in (200, 400), answer.text  # 400: made by an earlier test of this backend


def send(daemon: Daemon, method: str, path: str, params: dict, tag: str | None = None) -> Any:
    headers = {} if tag is None else {"If-Match": tag}
    return daemon.request(method, path, params=params, headers=headers)


@pytest.mark.parametrize("kind", list(KINDS))
def test_provisioner_two_writers(backend: tuple[list[Daemon], Rows, str], kind: str) -> None:
    (a, b), rows, prefix = backend
    name = f"{prefix}-{kind}"
    element, (method, below, params), (change, other), shows = KINDS[kind]
    path = element.format(name)
    if kind == "profile":
        base_templates(a, prefix)
        params = {key: f"{prefix}-{value}" if value == "base" else value for key, value in params.items()}
    ok(send(a, method, path + below, params))
    first = etag(a, path)
    assert first is not None and etag(b, path) == first
    assert a.get(path).json() == [rows.one(kind, name)]
    assert a.get(path, headers={"If-None-Match": first}).status_code == 304

    ok(send(a, change[0], path + change[1], change[2], first))
    second = etag(a, path)
    assert second != first and etag(b, path) == second  # by content: the same from every daemon
    refused(send(b, other[0], path + other[1], other[2], first), second, f'"{name}"')
    # A's change whole, B's nowhere: through both daemons and straight from the database, every column
    row = rows.one(kind, name)
    assert a.get(path).json() == b.get(path).json() == [row]
    stale = first
    if shows is not None:
        assert {key: row[key] for key in shows} == shows
    elif kind == "network":
        assert [net["vni"] for net in row["networks"]] == [100]
        # the template's other changes take its ETag too
        refused(send(b, "DELETE", f"{path}/net/100", {}, first), second, f'"{name}"')
        ok(send(b, "DELETE", f"{path}/net/100", {}, second))
        # of the content: back as it was first, it has its first ETag again (nothing unseen is overwritten)
        stale, second = second, etag(a, path)
        assert second == first
        row = rows.one(kind, name)
        assert row["networks"] == [] and a.get(path).json() == b.get(path).json() == [row]
    else:
        assert [(disk["disk_id"], disk["pool"], disk["disk_size_gb"], disk["filesystem"], disk["filesystem_args"],
                 disk["mountpoint"]) for disk in row["disks"]] == [("sda", "vms", 10, "ext4", "-L=root", "/")]
        refused(send(b, "POST", f"{path}/disk", {"disk_id": "sdc", "pool": "vms"}, first), second, f'"{name}"')
        refused(send(b, "DELETE", f"{path}/disk/sda", {}, first), second, f'"{name}"')
        ok(send(b, "POST", f"{path}/disk", {"disk_id": "sdc", "pool": "vms"}, second))
        ok(send(a, "DELETE", f"{path}/disk/sda", {}, etag(b, path)))
        stale, second = second, etag(a, path)
        row = rows.one(kind, name)
        assert [(disk["disk_id"], disk["pool"]) for disk in row["disks"]] == [("sdc", "vms")]
        assert a.get(path).json() == b.get(path).json() == [row]

    # creation with the name in the path: If-Match holds only while it exists (then a duplicate), * on an
    # absent name is refused
    assert send(b, method, path, params, second).status_code == 400
    refused(send(b, method, element.format(f"{name}-absent"), params, "*"), None, f'"{name}-absent"')
    assert rows.one(kind, f"{name}-absent") is None
    # removal: the stale ETag keeps the row, the current one removes it
    refused(send(b, "DELETE", path, {}, stale), second, f'"{name}"')
    assert rows.one(kind, name) == row
    ok(send(b, "DELETE", path, {}, second))
    assert rows.one(kind, name) is None
    assert a.get(path).status_code == b.get(path).status_code == 404
    # a change of what does not exist answers as without If-Match: 404
    for method, below, params in ((change[0], change[1], change[2]), ("DELETE", "", {})):
        gone = send(a, method, path + below, params, second)
        assert gone.status_code == 404 and gone.json()["message"].endswith(f'"{name}" does not exist'), gone.text


def test_provisioner_conditional_writers_racing(backend: tuple[list[Daemon], Rows, str]) -> None:
    """Two threads per client daemon PUT one userdata document with the ETag they read, released together:
    the row lock makes the compare and the write one step, so each round exactly one wins."""
    daemons, rows, prefix = backend
    path = f"{P}/userdata/{prefix}-race"
    ok(daemons[0].post(path, params={"data": "start"}))
    for round_ in range(3):
        current = etag(daemons[0], path)
        datas = [f"#cloud-config\n# round {round_}, writer {number}\n" for number in range(4)]
        winner = one_winner(race(daemons, 2, lambda daemon, number, datas=datas, current=current: send(
            daemon, "PUT", path, {"data": datas[number]}, current)))
        row = rows.one("userdata", f"{prefix}-race")
        assert row["userdata"] == datas[winner]
        assert [daemon.get(path).json() for daemon in daemons] == [[row], [row]]
    ok(daemons[1].delete(path))


# -- the document -----------------------------------------------------------------------------------

def test_the_document_declares_etags_and_preconditions(daemon: Daemon) -> None:
    paths = daemon.get("/openapi.json").json()["paths"]
    readers = {path for path, operations in paths.items()
               if "ETag" in operations.get("get", {}).get("responses", {}).get("200", {}).get("headers", {})}
    assert readers == {"/api/v1/vm/{vm}", "/api/v1/network/{vni}", "/api/v1/network/{vni}/acl/{description}",
                       *(f"/api/v1/provisioner/{kind}" for kind in (
                           "template/system/{template}", "template/network/{template}", "template/storage/{template}",
                           "userdata/{userdata}", "template/userdata/{userdata}", "script/{script}",
                           "profile/{profile}"))}
    for path in readers:
        get = paths[path]["get"]
        assert "304" in get["responses"] and [p["name"] for p in get["parameters"] if p["in"] == "header"] == \
            ["If-None-Match"], path
    sources = {}
    for path, operations in paths.items():
        for method, operation in operations.items():
            headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
            if method == "get" or not headers:
                assert "412" not in operation["responses"], (method, path)
                continue
            assert [p["name"] for p in headers] == ["If-Match"] and "412" in operation["responses"], (method, path)
            assert operation["responses"]["412"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Message"}
            sources[(method, path)] = headers[0]["description"].split("(the ETag header of ")[1].split(")")[0]
    expected = {("put", "/api/v1/vm/{vm}"): "GET /api/v1/vm/{vm}",
                ("post", "/api/v1/vm/{vm}/state"): "GET /api/v1/vm/{vm}",
                ("delete", "/api/v1/network/{vni}/acl/{description}"): "GET /api/v1/network/{vni}/acl/{description}",
                ("post", "/api/v1/provisioner/template/network/{template}/net/{vni}"):
                    "GET /api/v1/provisioner/template/network/{template}",
                ("put", "/api/v1/provisioner/template/userdata/{userdata}"):
                    "GET /api/v1/provisioner/template/userdata/{userdata}"}
    assert {key: sources.get(key) for key in expected} == expected
    # every change of an object whose GET has an ETag takes If-Match, and no other
    assert {path for _, path in sources} == readers | {
        "/api/v1/vm/{vm}/meta", "/api/v1/vm/{vm}/state", "/api/v1/vm/{vm}/node",
        *(f"/api/v1/provisioner/template/{kind}" for kind in (
            "network/{template}/net", "network/{template}/net/{vni}", "storage/{template}/disk",
            "storage/{template}/disk/{disk_id}"))}
    assert all(source.startswith("GET ") and source[4:] in readers for source in sources.values())

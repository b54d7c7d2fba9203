"""Three daemons on one cluster, all serving writes to the same objects at once.

A PVC cluster runs an API daemon on each coordinator, and nothing routes a
client to one of them: two administrators (or a script with a thread pool)
may change the same VM, network or template through different daemons in the
same instant. Each daemon guards its read-modify-write changes with versioned
ZooKeeper transactions (or the database's own transactions), and serves reads
from watched in-memory views; neither a lock inside one process nor a cache
that only knows its own writes is enough here. So:

* three daemons share one ZooKeeper, one PostgreSQL database (the
  provisioner's templates; by default each daemon would have its own embedded
  SQLite file) and one Redis queue;
* for each shared object, 3 daemons x 4 threads x 5 writes with distinct
  payloads start together (a barrier) and hit the same key, list or table:
  a VM's metadata, a network's ACL list, its static DHCP reservations, and a
  provisioner network template's nets;
* every answer is a 2xx or a 409 (a conflict that persisted through the
  daemon's retries), nothing else; at least one write of each kind succeeds;
* afterwards the whole object is read back through each of the three daemons
  (waiting, bounded by ``settle_timeout()``, for the other daemons' watches)
  and straight from ZooKeeper or the database, and they agree: every 2xx write
  is there exactly once, no refused write is, ACL orders of each direction are
  dense and unique (0..n-1, network.md §6.1), and the VM's metadata is one
  write's values as a whole, never a mix of two writes' fields.

Two more races, each of which lost or doubled writes before it was fixed:

* a VM defined through one daemon and changed at once through the two others:
  a change must find it (it answered 404 while the other daemons' watches had
  not delivered it yet);
* one VNI (one disk ID) added to one template by every thread of every daemon
  in the same instant, five rounds: exactly one 2xx and one row per element,
  the rest 400 "already exists" (the check and the insert were two steps, and
  up to 12 rows of one VNI were stored).

All deadlines are events awaited with ``wait_until``; no fixed sleeps. The
module takes about 15 s (20 s on a loaded machine).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from kazoo.client import KazooClient
from test_cluster import tree
from test_node import seed_node
from test_vm import OBJECT, PRETTY, UUID, define, uuid_for, vm_xml

from conftest import START_TIMEOUT, Daemon, empty_tree, wait_until

DAEMONS = 3
THREADS = 4   # per daemon
WRITES = 5    # per thread
NODES = ("pvchv1", "pvchv2", "pvchv3")
SELECTORS = ("mem", "vcpus", "load", "vms")
DIRECTIONS = ("in", "out")

Key = tuple[int, int, int]  # (daemon, thread, write)
Outcome = tuple[Any, int, str]  # (payload, status, body)


# -- the cluster ------------------------------------------------------------------------------

@contextlib.contextmanager
def emptied(zk_server: Any) -> Iterator[KazooClient]:
    """A client of a module's own on an emptied tree (for daemons that live for the whole module)."""
    client = KazooClient(hosts=zk_server.address)
    client.start(timeout=START_TIMEOUT)
    empty_tree(client)
    try:
        yield client
    finally:
        client.stop()
        client.close()


@pytest.fixture(scope="module")
def zk(zk_server: Any) -> Iterator[KazooClient]:
    with emptied(zk_server) as client:
        yield client


@contextlib.contextmanager
def on_one_cluster(daemon_factory: Callable[..., Daemon], zk: KazooClient, extra: dict,
                   count: int) -> Iterator[list[Daemon]]:
    """``count`` daemons configured with ``extra`` on one initialized cluster whose NODES have registered
    (each daemon sees them); stopped at the end. Also tests/test_etags.py's."""
    started = [daemon_factory(extra) for _ in range(count)]
    try:
        assert started[0].post("/initialize").status_code == 200
        for name in NODES:
            seed_node(zk, name)
        for daemon in started:
            wait_until(lambda daemon=daemon: sorted(node["name"] for node in daemon.get("/node").json()) ==
                       list(NODES), ignoring=(TypeError, KeyError), message="the nodes did not show")
        yield started
    finally:
        for daemon in started:
            daemon.stop()


@contextlib.contextmanager
def connected(postgres: dict) -> Iterator[Any]:
    """A connection of the test's own (autocommit) to the suite's PostgreSQL database."""
    connection = psycopg2.connect(host=postgres["host"], port=int(postgres["port"]), user=postgres["user"],
                                  password=postgres["pass"], dbname=postgres["name"])
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(scope="module")
def daemons(daemon_factory: Callable[..., Daemon], zk: KazooClient, postgres: dict,
            redis_server: dict) -> Iterator[list[Daemon]]:
    """Three daemons on one ZooKeeper, one PostgreSQL database and one Redis queue; auth off."""
    shared = {"ceph": {"collector": "False"}, "provisioner": {"database": postgres, "queue": redis_server}}
    with on_one_cluster(daemon_factory, zk, shared, DAEMONS) as started:
        yield started


@pytest.fixture(scope="module")
def database(postgres: dict) -> Iterator[Any]:
    with connected(postgres) as connection:
        yield connection


# -- concurrent writers -----------------------------------------------------------------------

def index(key: Key) -> int:
    """0 .. DAEMONS*THREADS*WRITES-1, distinct per write."""
    daemon, thread, write = key
    return (daemon * THREADS + thread) * WRITES + write


def hammer(daemons: list[Daemon], write: Callable[[Daemon, Key], tuple[Any, Any]]) -> list[Outcome]:
    """Every (daemon, thread) writes WRITES times, all threads released together.

    ``write(daemon, key)`` returns (payload, response); the outcomes keep all
    three, in no particular order.
    """
    barrier = threading.Barrier(len(daemons) * THREADS)

    def worker(daemon_index: int, thread: int) -> list[Outcome]:
        daemon = daemons[daemon_index]
        barrier.wait(timeout=START_TIMEOUT)
        outcomes = []
        for step in range(WRITES):
            payload, response = write(daemon, (daemon_index, thread, step))
            outcomes.append((payload, response.status_code, response.text))
        return outcomes

    with concurrent.futures.ThreadPoolExecutor(len(daemons) * THREADS) as pool:
        futures = [pool.submit(worker, d, t) for d in range(len(daemons)) for t in range(THREADS)]
        return [outcome for future in futures for outcome in future.result()]


def accepted(outcomes: list[Outcome], what: str) -> list[Any]:
    """The payloads answered 2xx, after checking that every other answer was a 409."""
    codes = Counter(status for _, status, _ in outcomes)
    print(f"{what}: {len(outcomes)} writes, answers {dict(sorted(codes.items()))}")
    others = [(status, body) for _, status, body in outcomes if not (200 <= status < 300 or status == 409)]
    assert not others, f"{what}: answers other than 2xx and 409: {others[:5]}"
    ok = [payload for payload, status, _ in outcomes if 200 <= status < 300]
    assert ok, f"{what}: no write succeeded: {outcomes[:3]}"
    return ok


def as_list(response: Any) -> list:
    """A list answer, whether collapsed to its one element (v0.6) or empty (404)."""
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    body = response.json()
    return body if isinstance(body, list) else [body]


def agree(daemons: list[Daemon], read: Callable[[Daemon], Any], expected: Any, what: str) -> None:
    """Each daemon answers ``expected``: at once the writers' own views, within a watch's latency the others."""
    for number, daemon in enumerate(daemons):
        wait_until(lambda daemon=daemon: read(daemon) == expected,
                   message=f"daemon {number} did not answer {what} as ZooKeeper/the database holds it "
                           f"(expected {expected!r:.300})")


# -- VM metadata --------------------------------------------------------------------------------

LIMITS = ("", "pvchv1", "pvchv2", "pvchv3", "pvchv1,pvchv2", "pvchv1,pvchv3", "pvchv2,pvchv3",
          "pvchv1,pvchv2,pvchv3")


def test_vm_metadata(daemons: list[Daemon], zk: KazooClient) -> None:
    """Each write sets all four metadata keys (profile unique per write); the VM ends as one write's whole."""
    assert define(daemons[0], node="pvchv1").status_code == 200

    def write(daemon: Daemon, key: Key) -> tuple[Any, Any]:
        number = index(key)
        payload = (LIMITS[number % len(LIMITS)], SELECTORS[number % len(SELECTORS)], number % 3 == 0,
                   f"profile-{key[0]}-{key[1]}-{key[2]}")
        limit, selector, autostart, profile = payload
        return payload, daemon.post("/vm/test1/meta", params={"limit": limit, "selector": selector,
                                                              "autostart": str(autostart).lower(),
                                                              "profile": profile})

    written = accepted(hammer(daemons, write), "VM metadata")

    base = f"/domains/{UUID}"
    keys = {name: zk.get(f"{base}/{name}") for name in ("node_limit", "node_selector", "node_autostart", "profile")}
    final = (keys["node_limit"][0].decode(), keys["node_selector"][0].decode(),
             keys["node_autostart"][0] == b"True", keys["profile"][0].decode())
    assert final in written, f"ZooKeeper holds {final}, which no 2xx write sent"
    assert len({stat.mzxid for _, stat in keys.values()}) == 1, "the four keys were last written by different " \
                                                                "transactions"
    assert keys["node_autostart"][0] in (b"True", b"False")
    limit, selector, autostart, profile = final
    # the whole VM in ZooKeeper: what define wrote, with the four keys of that one write
    assert {base: zk.get(base)[0], **tree(zk, base)} == {
        base: b"test1", f"{base}/state": b"stop", f"{base}/node": b"pvchv1", f"{base}/lastnode": b"",
        f"{base}/node_limit": limit.encode(), f"{base}/node_selector": selector.encode(),
        f"{base}/node_autostart": str(autostart).encode(), f"{base}/failedreason": b"", f"{base}/consolelog": b"",
        f"{base}/rbdlist": b"vms/test1_sda", f"{base}/profile": profile.encode(), f"{base}/xml": PRETTY.encode(),
    }
    node_limit = limit.split(",") if limit else None
    meta = {"name": "test1", "node_limit": node_limit, "node_selector": selector, "node_autostart": autostart}
    whole = {**OBJECT, "node_limit": node_limit, "node_selector": selector, "node_autostart": autostart,
             "profile": profile}
    agree(daemons, lambda daemon: daemon.get("/vm/test1/meta").json(), meta, "the metadata")
    agree(daemons, lambda daemon: (daemon.get("/vm/test1").json(), daemon.get(f"/vm/{UUID}").json(),
                                   daemon.get("/vm").json()), (whole, whole, whole), "the VM")


def test_a_vm_defined_through_one_daemon_is_changed_through_the_others_at_once(daemons: list[Daemon],
                                                                               zk: KazooClient) -> None:
    """A change's check must see what another daemon committed a moment ago, not only what its watches
    have delivered so far (as the network plugin's changes do): define through one daemon, then at once
    change the VM through the two others, without waiting for anything."""
    answers = []
    for number in range(12):
        name, uuid = f"fresh{number}", uuid_for(number + 100)
        writer, *others = daemons[number % DAEMONS:] + daemons[:number % DAEMONS]
        assert define(writer, vm_xml(name, uuid), node="pvchv1").status_code == 200
        with concurrent.futures.ThreadPoolExecutor(len(others)) as pool:
            answers += pool.map(lambda daemon, name=name: daemon.post(f"/vm/{name}/meta", params={
                "selector": "load", "profile": f"p-{daemon.port}"}), others)
    codes = Counter(answer.status_code for answer in answers)
    print(f"changes right after a define elsewhere: answers {dict(sorted(codes.items()))}")
    assert set(codes) <= {200, 409} and codes[200], [answer.text for answer in answers if answer.status_code != 200]
    for number in range(12):
        assert zk.get(f"/domains/{uuid_for(number + 100)}/node_selector")[0] == b"load"


# -- network ACLs -------------------------------------------------------------------------------

def add_network(daemon: Daemon, vni: int, description: str, prefix: str) -> None:
    response = daemon.post("/network", params={
        "vni": str(vni), "description": description, "nettype": "managed", "domain": f"{description}.local",
        "ip4_network": f"{prefix}.0/24", "ip4_gateway": f"{prefix}.1", "dhcp4": "True",
        "dhcp4_start": f"{prefix}.100", "dhcp4_end": f"{prefix}.199"})
    assert response.status_code == 200, response.text


def rules_in_zk(zk: KazooClient, vni: int) -> dict[str, list[dict]]:
    """Each direction's rules as ACL objects, in stored order (ties, which must not exist, by description)."""
    out = {}
    for direction in DIRECTIONS:
        base = f"/networks/{vni}/firewall_rules/{direction}"
        rules = [{"direction": direction, "order": int(zk.get(f"{base}/{name}/order")[0]), "description": name,
                  "rule": zk.get(f"{base}/{name}/rule")[0].decode()} for name in zk.get_children(base)]
        out[direction] = sorted(rules, key=lambda rule: (rule["order"], rule["description"]))
    return out


def test_network_acls(daemons: list[Daemon], zk: KazooClient) -> None:
    """Appends and inserts (explicit orders, network.md §6.1) in both directions of one network."""
    vni = 2001
    add_network(daemons[0], vni, "multi-acl", "10.20.1")

    def write(daemon: Daemon, key: Key) -> tuple[Any, Any]:
        number = index(key)
        description = f"acl-{key[0]}-{key[1]}-{key[2]}"
        direction = DIRECTIONS[number % 2]
        order = (None, "0", str(key[1]), "99")[key[2] % 4]  # append, insert first, insert inside, beyond the end
        params = {"description": description, "rule": f"tcp dport {1000 + number} accept", "direction": direction}
        if order is not None:
            params["order"] = order
        return (description, direction, params["rule"]), daemon.post(f"/network/{vni}/acl", params=params)

    written = accepted(hammer(daemons, write), "ACLs")

    stored = rules_in_zk(zk, vni)
    for direction in DIRECTIONS:
        orders = [rule["order"] for rule in stored[direction]]
        assert orders == list(range(len(orders))), f"{direction}: orders not dense and unique: {orders}"
    found = Counter((rule["description"], rule["direction"], rule["rule"])
                    for direction in DIRECTIONS for rule in stored[direction])
    assert found == Counter(written), "the stored rules are not exactly the 2xx ones, once each"
    expected = stored["in"] + stored["out"]
    agree(daemons, lambda daemon: as_list(daemon.get(f"/network/{vni}/acl")), expected, "the ACL list")
    agree(daemons, lambda daemon: [as_list(daemon.get(f"/network/{vni}/acl", params={"direction": direction}))
                                   for direction in DIRECTIONS], [stored["in"], stored["out"]],
          "the ACL list per direction")
    for daemon in daemons:  # element reads come from the same views, now warm
        for rule in expected[:: max(1, len(expected) // 6)]:
            assert daemon.get(f"/network/{vni}/acl/{rule['description']}").json() == rule


# -- DHCP reservations --------------------------------------------------------------------------

def test_dhcp_reservations(daemons: list[Daemon], zk: KazooClient) -> None:
    vni, prefix = 2002, "10.20.2"
    add_network(daemons[0], vni, "multi-lease", prefix)

    def write(daemon: Daemon, key: Key) -> tuple[Any, Any]:
        number = index(key)
        reservation = {"hostname": f"host-{key[0]}-{key[1]}-{key[2]}", "ip4_address": f"{prefix}.{10 + number}",
                       "mac_address": f"52:54:00:{key[0]:02x}:{key[1]:02x}:{key[2]:02x}", "timestamp": "static"}
        return (tuple(sorted(reservation.items())),
                daemon.post(f"/network/{vni}/lease", params={"macaddress": reservation["mac_address"],
                                                             "ipaddress": reservation["ip4_address"],
                                                             "hostname": reservation["hostname"]}))

    written = [dict(items) for items in accepted(hammer(daemons, write), "DHCP reservations")]

    expected = sorted(written, key=lambda reservation: reservation["mac_address"])
    assert len({reservation["mac_address"] for reservation in expected}) == len(expected)
    for container in ("dhcp4_reservations", "dhcp_reservations"):  # both, as a v0.6 node daemon reads either
        base = f"/networks/{vni}/{container}"
        stored = [{"hostname": zk.get(f"{base}/{mac}/hostname")[0].decode(),
                   "ip4_address": zk.get(f"{base}/{mac}/ipaddr")[0].decode(), "mac_address": mac,
                   "timestamp": zk.get(f"{base}/{mac}")[0].decode()} for mac in sorted(zk.get_children(base))]
        assert stored == expected, f"{container} does not hold exactly the 2xx reservations"
        assert all(set(zk.get_children(f"{base}/{mac}")) == {"hostname", "ipaddr"} for mac in zk.get_children(base))
    assert zk.get_children(f"/networks/{vni}/dhcp4_leases") == []
    agree(daemons, lambda daemon: as_list(daemon.get(f"/network/{vni}/lease", params={"static": "true"})), expected,
          "the reservations")
    for daemon in daemons:
        assert daemon.get(f"/network/{vni}/lease").json() == {"message": "Lease not found."}  # no dynamic lease
        for reservation in expected[:: max(1, len(expected) // 6)]:
            assert daemon.get(f"/network/{vni}/lease/{reservation['mac_address']}").json() == [reservation]


# -- a provisioner network template -------------------------------------------------------------

def template_nets(database: Any, name: str) -> tuple[int, list[dict]]:
    with database.cursor() as cursor:
        cursor.execute("SELECT id FROM network_template WHERE name = %s", (name,))
        (template,) = cursor.fetchone()
        cursor.execute("SELECT id, network_template, vni FROM network WHERE network_template = %s ORDER BY id",
                       (template,))
        return template, [{"id": row[0], "network_template": row[1], "vni": row[2]} for row in cursor.fetchall()]


def test_provisioner_template_nets(daemons: list[Daemon], database: Any) -> None:
    name = "multi-" + secrets.token_hex(4)
    mac_template = "{prefix}:2f:1f:{vmid}{netid}"
    created = daemons[0].post("/provisioner/template/network", params={"name": name, "mac_template": mac_template})
    assert created.status_code == 200, created.text

    def write(daemon: Daemon, key: Key) -> tuple[Any, Any]:
        vni = 100 + index(key)
        if key[2] % 2:  # both forms of the route
            return vni, daemon.post(f"/provisioner/template/network/{name}/net/{vni}")
        return vni, daemon.post(f"/provisioner/template/network/{name}/net", params={"vni": str(vni)})

    written = accepted(hammer(daemons, write), "template nets")

    template, nets = template_nets(database, name)
    assert Counter(net["vni"] for net in nets) == Counter(written), "the rows are not exactly the 2xx VNIs, once each"
    whole = [{"id": template, "name": name, "mac_template": mac_template, "networks": nets}]
    for daemon in daemons:  # no cache: the database answers every daemon the same at once
        assert daemon.get(f"/provisioner/template/network/{name}/net").json() == nets
        assert daemon.get(f"/provisioner/template/network/{name}").json() == whole
        assert daemon.get("/provisioner/template/network", params={"limit": f"^{name}$"}).json() == whole
        for net in nets[:: max(1, len(nets) // 6)]:
            assert daemon.get(f"/provisioner/template/network/{name}/net/{net['vni']}").json() == net


@pytest.mark.parametrize("kind", ["network", "storage"])
def test_one_element_raced_into_one_template_is_stored_once(daemons: list[Daemon], database: Any, kind: str) -> None:
    """provisioner.md §2.4/§2.6: a VNI (disk) already in the template is refused with a 400. Raced from every
    thread of every daemon, still exactly one answer is a 2xx and exactly one row is stored: WRITES rounds,
    each racing its own element, all threads released together for each."""
    name = "race-" + secrets.token_hex(4)
    assert daemons[0].post(f"/provisioner/template/{kind}", params={"name": name}).status_code == 200
    rounds = [threading.Barrier(DAEMONS * THREADS) for _ in range(WRITES)]
    if kind == "network":
        table, column = "network", "vni"
        elements = [40 + step for step in range(WRITES)]
        paths = [f"/provisioner/template/network/{name}/net/{vni}" for vni in elements]
        params: dict[str, str] = {}
    else:
        table, column = "storage", "disk_id"
        elements = [f"sd{chr(ord('a') + step)}" for step in range(WRITES)]
        paths = [f"/provisioner/template/storage/{name}/disk/{disk}" for disk in elements]
        params = {"pool": "vms"}

    def write(daemon: Daemon, key: Key) -> tuple[Any, Any]:
        rounds[key[2]].wait(timeout=START_TIMEOUT)
        return elements[key[2]], daemon.post(paths[key[2]], params=params)

    outcomes = hammer(daemons, write)
    codes = Counter(status for _, status, _ in outcomes)
    print(f"{WRITES} {kind} elements raced: answers {dict(sorted(codes.items()))}")
    with database.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE {kind}_template = "
                       f"(SELECT id FROM {kind}_template WHERE name = %s) ORDER BY id", (name,))
        rows = Counter(row[0] for row in cursor.fetchall())
    assert rows == Counter(elements), f"rows stored per element: {dict(rows)}; answers {dict(codes)}"
    assert set(codes) <= {200, 400, 409}, dict(codes)
    won = Counter(element for element, status, _ in outcomes if status == 200)
    assert won == Counter(elements), f"2xx answers per element: {dict(won)}"
    refusals = {body for _, status, body in outcomes if status == 400}
    assert all("already exists" in body for body in refusals), refusals

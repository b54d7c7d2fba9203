"""The view's kept answers: a write, from this process or from outside, rebuilds exactly the objects it touched.

The view (pvc_core/view.py) keeps each VM's serialized answer with the
revision of the values it was built from; lists are joined from those bytes.
These tests watch which VMs get re-encoded after each kind of write, against a
real ZooKeeper, and check that the bytes a watched daemon sends are the bytes a
daemon reading ZooKeeper directly sends.
"""

from __future__ import annotations

import json

import pytest
from pvc_vm import schema as vm_schema
from pvc_vm.service import vm_object
from test_vm import uuid_for, vm_xml

from conftest import wait_until
from pvc_core.routes import encode_json
from pvc_core.view import SubtreeView
from pvc_core.zk import ZooKeeper

COUNT = 30


def seed(client, count: int = COUNT) -> list[str]:
    client.create("/domains", b"")
    uuids = [uuid_for(index) for index in range(count)]
    for index, uuid in enumerate(uuids):
        keys = vm_schema.new_vm_keys(uuid, f"vm{index:03d}", f"pvchv{index % 3 + 1}", "", "mem", False, "",
                                     vm_xml(f"vm{index:03d}", uuid))
        transaction = client.transaction()
        for path in sorted(keys):
            transaction.create(path, keys[path].encode())
        transaction.commit()
    return uuids


@pytest.fixture
def view(clean_zk, zk_server):
    uuids = seed(clean_zk)
    zk = ZooKeeper([zk_server.address])
    zk.start(wait=10)
    view = SubtreeView(zk, vm_schema.ROOT, vm_schema.VIEW_KEYS, index=vm_schema.INDEXED_KEYS)
    zk.observers.append(view)  # as Runtime.view does: this process's writes reach the view at once
    view.start()
    assert view.wait_ready(30)
    view.uuids = uuids
    yield view
    zk.stop()


class Encoder:
    """The vm plugin's encoding, recording which VMs it was asked to build."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, uuid: str, entry: dict) -> bytes:
        self.built.append(uuid)
        return encode_json(vm_object(uuid, entry))


def answers(view, encoder) -> dict[str, bytes]:
    order = [uuid for _, uuid in view.ordered()]
    return dict(zip(order, view.encoded(order, encoder), strict=True))


def direct(view) -> dict[str, bytes]:
    entries = view.read_direct()
    return {uuid: encode_json(vm_object(uuid, entries[uuid])) for uuid in entries}


def test_writes_rebuild_exactly_what_they_touched(view, clean_zk):
    encoder = Encoder()
    first = answers(view, encoder)
    assert sorted(encoder.built) == sorted(view.uuids) and first == direct(view)
    encoder.built.clear()
    assert answers(view, encoder) == first and encoder.built == []  # nothing changed: nothing built

    # an outside write (a node daemon's) of one VM's state
    outside = view.uuids[3]
    clean_zk.set(vm_schema.key(outside, "state"), b"start")
    wait_until(lambda: outside in view.select("state", "start"), message="the view did not follow the write")
    second = answers(view, encoder)
    assert encoder.built == [outside]
    assert {uuid for uuid in first if first[uuid] != second[uuid]} == {outside}
    assert second == direct(view)

    # this process's own write: visible (and rebuilt) on the very next read, before any watch
    encoder.built.clear()
    own = view.uuids[5]
    view.zk.write({vm_schema.key(own, "node"): "pvchv3", vm_schema.key(own, "lastnode"): "pvchv2"})
    third = answers(view, encoder)
    assert encoder.built == [own]
    assert {uuid for uuid in second if second[uuid] != third[uuid]} == {own}
    assert b'"last_node": "pvchv2"' in third[own]

    # a key the view does not follow (consolelog) changes nothing
    encoder.built.clear()
    clean_zk.set(vm_schema.key(view.uuids[7], "consolelog"), b"boot\n")
    clean_zk.set(vm_schema.key(view.uuids[8], "state"), b"fail")  # a followed write after it, to wait on
    wait_until(lambda: view.uuids[8] in view.select("state", "fail"), message="the view did not follow")
    assert answers(view, encoder) and encoder.built == [view.uuids[8]]

    # a VM removed from outside leaves the list, the indexes and the counts
    gone = view.uuids[0]
    clean_zk.delete(vm_schema.vm(gone), recursive=True)
    wait_until(lambda: gone not in dict((u, n) for n, u in view.ordered()), message="the removal was not seen")
    assert gone not in answers(view, encoder) and answers(view, encoder) == direct(view)
    assert view.counts("state") == {"stop": COUNT - 3, "start": 1, "fail": 1}
    assert view.select("node", "pvchv1") == {uuid for uuid in view.uuids[3::3]} - {gone}


@pytest.mark.parametrize("bulk", ["true", "false"])
def test_a_root_deleted_and_created_again_is_followed(clean_zk, zk_server, bulk):
    """The tree wiped and seeded again at once (a test's clean_zk, an operator's restore): the view follows
    under either warm-up (bulk multiRead/SetWatches, or one read per key)."""
    zk = ZooKeeper([zk_server.address], bulk_reads=bulk)
    zk.start(wait=10)
    try:
        view = SubtreeView(zk, vm_schema.ROOT, vm_schema.VIEW_KEYS)
        view.start()
        assert view.wait_ready(30) and view.names() == {}
        first = seed(clean_zk, 3)
        wait_until(lambda: sorted(view.names()) == sorted(first), message="the view missed the first VMs")
        clean_zk.delete(vm_schema.ROOT, recursive=True)
        again = seed(clean_zk, 2)
        wait_until(lambda: sorted(view.names()) == sorted(again) and view.snapshot() == view.read_direct(),
                   message="the view missed the root's re-creation")
        assert zk.bulk is (bulk == "true")
    finally:
        zk.stop()


def test_a_watched_daemon_sends_the_bytes_of_a_direct_reader(daemon_factory, clean_zk):
    """Byte for byte, lists and single VMs, after writes through the API and from outside."""
    watched = daemon_factory({"plugins": {"disabled": ["ceph"]}})
    direct_reader = daemon_factory({"plugins": {"disabled": ["ceph"]}, "vm": {"watch": "False"},
                                    "node": {"watch": "False"}})
    assert watched.post("/initialize").status_code == 200
    clean_zk.delete("/domains", recursive=True)
    uuids = seed(clean_zk, 12)
    wait_until(lambda: watched.get("/vm/vm011").status_code == 200, message="the watched daemon missed the VMs")
    assert watched.post("/vm/vm004/meta", params={"selector": "vcpus", "autostart": "true"}).status_code == 200
    clean_zk.set(vm_schema.key(uuids[9], "state"), b"start")

    def same() -> bool:
        return all(watched.get(path, params=params).content == direct_reader.get(path, params=params).content
                   for path, params in (("/vm", {}), ("/vm", {"state": "start"}), ("/vm", {"node": "pvchv2"}),
                                        ("/vm", {"limit": "vm00"}), ("/vm/vm004", {}), ("/vm/vm009", {})))
    wait_until(same, message="the watched daemon's bytes differ from the direct reader's")
    assert watched.get("/status").json()["vms"] == direct_reader.get("/status").json()["vms"] == {
        "total": 12, "stop": 11, "start": 1}


def test_debug_daemons_indent_kept_answers(daemon_factory, clean_zk):
    """With pvc.debug, the kept (compact) answers are sent indented like every other answer."""
    debug = daemon_factory({"plugins": {"disabled": ["ceph"]}, "debug": "True"})
    assert debug.post("/initialize").status_code == 200
    clean_zk.delete("/domains", recursive=True)
    seed(clean_zk, 3)
    wait_until(lambda: debug.get("/vm/vm002").status_code == 200, message="the daemon missed the VMs")
    for path in ("/vm", "/vm/vm001"):
        answer = debug.get(path)
        assert answer.text == json.dumps(answer.json(), indent=4) + "\n"
    assert len(debug.get("/vm").json()) == 3


def test_concurrent_writes_reach_the_view_in_commit_order(view, clean_zk):
    """Threads writing one key at once: when they are done the view holds the last value committed.

    Each thread's commit returns in its own time; were the view told in that
    order, an older value could land last, and no watch would ever repair it
    (the watch's re-read came back before it). No waiting here: a daemon's
    answer right after its own writes must already be right.
    """
    import concurrent.futures
    uuid = view.uuids[0]
    path = vm_schema.key(uuid, "node")
    zk = view.zk
    def write(round_: int, thread: int) -> None:
        for step in range(25):
            zk.write({path: f"r{round_}t{thread}s{step}"})

    for round_ in range(12):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(write, [round_] * 8, range(8)))
        stored = clean_zk.get(path)[0].decode()
        assert view.one(uuid)["node"] == stored, f"round {round_}: the view kept an older write"


def test_watch_registry_stays_compact_and_working_after_a_lost_session(view, clean_zk, zk_server):
    """The view's watches sit in kazoo's registry as one slot per path (pvc_core/zkwatchers.py);
    a lost session makes kazoo build plain ``defaultdict(set)`` registries again, which the
    client replaces, and the re-warmed view still follows outside writes."""
    from kazoo.client import KazooClient

    from pvc_core.zkwatchers import Registry, Watchers

    client = view.zk.client
    uuid = view.uuids[1]
    path = vm_schema.key(uuid, "state")
    assert isinstance(client._data_watchers, Registry)
    assert isinstance(client._data_watchers[path], Watchers) and len(client._data_watchers[path]) == 1
    session = client.client_id
    # A second connection that takes over the session and closes it makes the server expire it.
    thief = KazooClient(hosts=zk_server.address, client_id=session)
    thief.start(timeout=10)
    thief.stop()
    thief.close()
    wait_until(lambda: client.connected and client.client_id != session and view.ready,
               message="the view to re-warm on a new session")
    assert isinstance(client._data_watchers, Registry) and isinstance(client._child_watchers, Registry)
    clean_zk.set(path, b"disable")
    wait_until(lambda: view.one(uuid)["state"] == "disable", message="an outside write to show")
    assert all(isinstance(watchers, Watchers) for watchers in client._data_watchers.values())


def test_watchers_hold_one_in_a_slot_and_more_in_a_set():
    from pvc_core.zkwatchers import Watchers

    def first(event):
        return None

    def second(event):
        return None

    watchers = Watchers()
    assert len(watchers) == 0 and list(watchers) == []
    watchers.add(first)
    watchers.add(first)
    assert list(watchers) == [first] and first in watchers and second not in watchers
    watchers.add(second)
    assert sorted(watchers, key=id) == sorted([first, second], key=id) and len(watchers) == 2
    watchers.discard(first)
    assert list(watchers) == [second] and len(watchers) == 1
    watchers.discard(second)
    watchers.discard(second)
    assert len(watchers) == 0 and list(watchers) == []


def server_watches(zk_server, session_id: int) -> set[str]:
    """The paths ZooKeeper holds a watch on for one session (``wchc``: the session's id in hex, then
    one tab-indented path per line)."""
    import socket
    with socket.create_connection(("127.0.0.1", zk_server.port), timeout=5) as sock:
        sock.sendall(b"wchc")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    paths: set[str] = set()
    current = None
    for line in answer.decode().splitlines():
        if line.startswith("0x"):
            current = int(line, 16)
        elif line.startswith("\t") and current == session_id:
            paths.add(line.strip())
    return paths


def test_deleted_children_leave_nothing_behind(view, clean_zk, zk_server):
    """VMs created and deleted, by this process and by another client: afterwards the view holds no
    trace of them (values, zxids, revisions, answers), and neither kazoo nor ZooKeeper holds a watch
    on any of their paths (a soak run found both growing with every deleted VM)."""
    base = f"{vm_schema.ROOT}/"
    zk = view.zk
    session = zk.client.client_id[0]
    assert server_watches(zk_server, session), "wchc lists this view's watches"
    for index in range(40):
        uuid = uuid_for(1000 + index)
        keys = vm_schema.new_vm_keys(uuid, f"gone{index}", "pvchv1", "", "mem", False, "", vm_xml(f"gone{index}", uuid))
        if index % 2:
            zk.create(keys)  # through the view's own client (write-through)
            wait_until(lambda uuid=uuid: view.one(uuid) is not None)
            zk.delete([vm_schema.vm(uuid)])
        else:
            transaction = clean_zk.transaction()
            for path in sorted(keys):
                transaction.create(path, keys[path].encode())
            transaction.commit()
            wait_until(lambda uuid=uuid: view.one(uuid) is not None)
            clean_zk.delete(vm_schema.vm(uuid), recursive=True)
    gone = {uuid_for(1000 + index) for index in range(40)}

    def traces() -> list[str]:
        with view._lock:
            found = [f"{name}: {path}" for name, store in (("value", view._values), ("zxid", view._mzxid))
                     for path in store if path.startswith(base) and path[len(base):].split("/")[0] in gone]
            found += [f"{name}: {child}" for name, store in (("revision", view._revisions),
                                                             ("answer", view._encoded))
                      for child in store if child in gone]
        found += [f"kazoo watch: {path}" for path in list(zk.client._data_watchers)
                  if path.startswith(base) and path[len(base):].split("/")[0] in gone]
        return found
    try:
        wait_until(lambda: not traces(), message="no trace of the deleted VMs")
    except AssertionError:
        raise AssertionError(f"left behind: {traces()[:12]}") from None
    wait_until(lambda: not {path for path in server_watches(zk_server, session)
                            if path.startswith(base) and path[len(base):].split("/")[0] in gone},
               message="ZooKeeper to hold no watch of this session on the deleted VMs' paths")

"""A running VM's guest filesystems frozen through its node while a whole-VM snapshot is taken.

Real parts throughout: simulated node daemons (simnode) that answer /cmd/domains, a memstore Ceph whose
librbd makes the snapshots, a second daemon that only reads. The node's record of freezes and thaws
(test_simnode.freeze_log) is set against the RBD snapshots: by ZooKeeper's order of writes (each
snapshot's /ceph/snapshots key is written right after librbd made it) and by librbd's own timestamps.
"""

from __future__ import annotations

import time
from datetime import UTC

import pytest
from test_ceph import play_ceph_node
from test_cluster import tree
from test_simnode import NONE_FROZEN, events, freeze_log, frozen_domains, set_state, shows
from test_vm import UUID, uuid_for
from test_vm_snapshots import snaps
from test_vm_storage import POOL, define_with_volumes, rbd_handle, same_everywhere

from conftest import ANSWER_SLACK, SIM_NODES, deep_merge, settle_timeout, sim_ready

__all__ = ["rbd_handle"]  # test_vm_storage's fixture

DISKS = ("frz1_sda", "frz1_sdb")
TIMEOUT = 3.0  # vm.fsfreeze_timeout of the daemon under test
THAW_NOTE = ("no node daemon took 'domain_fsfreeze' (node 'pvchv1' may be down, or its daemon may predate this "
             "command)")


@pytest.fixture(scope="module")
def reader(daemon_factory, ceph_config):
    """A second daemon (no simulated nodes) that reads what the first one wrote. No Ceph collector: it would
    write the cluster's status keys into the emptied tree before the next test initializes it (400)."""
    return daemon_factory(deep_merge(ceph_config, {"ceph": {"collector": "False"}}))


@pytest.fixture
def frozen_cluster(sim_factory, reader, ceph_config, rbd_handle):
    sim = sim_factory(deep_merge(ceph_config, {"vm": {"fsfreeze_timeout": str(TIMEOUT)}}))
    made = sim.post("/storage/ceph/pool", params={"pool": POOL, "pgs": "8", "replcfg": "copies=1,mincopies=1"})
    assert made.status_code == 200, made.text
    rbd_handle.wait_for_latest_osdmap()  # the pool of the same name a previous test removed is gone
    ioctx = rbd_handle.open_ioctx(POOL)
    yield sim, reader, ioctx
    ioctx.close()
    sim.delete(f"/storage/ceph/pool/{POOL}", params={"yes-i-really-mean-it": ""})


def logs(zk) -> dict[str, list[dict]]:
    return {node: freeze_log(zk, node) for node in SIM_NODES}


def new_entries(zk, before: dict[str, list[dict]]) -> dict[str, list[tuple[str, str, str]]]:
    """What each node recorded since ``before``."""
    return {node: events(entries[len(before[node]):]) for node, entries in logs(zk).items()}


def snapshot_time(ioctx, volume: str, name: str) -> float:
    """librbd's creation time of the snapshot (whole seconds, UTC)."""
    import rbd
    with rbd.Image(ioctx, volume, read_only=True) as image:
        snap_id = {snap["name"]: snap["id"] for snap in image.list_snaps()}[name]
        return image.get_snap_timestamp(snap_id).replace(tzinfo=UTC).timestamp()


def test_a_running_vm_is_snapshotted_frozen_and_thawed_also_when_a_disk_fails(frozen_cluster, clean_zk):
    import rbd
    sim, reader, ioctx = frozen_cluster
    zk = clean_zk
    define_with_volumes(sim, "frz1", UUID, DISKS)
    assert set_state(sim, "start", vm="frz1").status_code == 200
    assert zk.get(f"/domains/{UUID}/state")[0] == b"start"
    original = shows(lambda: (found := sim.get("/vm/frz1").json())["state"] == "start" and found, "frz1 running")
    xml = zk.get(f"/domains/{UUID}/xml")[0]
    before = logs(zk)

    # frozen by its node, both disks snapshotted in between, thawed
    made = sim.post("/vm/frz1/snapshot", params={"snapshot_name": "live"})
    assert made.json() == {"message": "Successfully created snapshot 'live' of VM 'frz1' (the guest filesystems "
                                      "were frozen through node 'pvchv1')."}, made.text
    assert new_entries(zk, before) == {"pvchv1": [("freeze", UUID, "success"), ("thaw", UUID, "success")],
                                       "pvchv2": [], "pvchv3": []}
    freeze, thaw = freeze_log(zk, "pvchv1")[-2:]
    made_at = [zk.exists(f"/ceph/snapshots/{POOL}/{volume}/live").czxid for volume in DISKS]
    assert freeze["czxid"] < made_at[0] < made_at[1] < thaw["czxid"]
    for volume in DISKS:
        assert int(freeze["time"]) <= snapshot_time(ioctx, volume, "live") <= thaw["time"]
    assert frozen_domains(sim) == NONE_FROZEN
    assert zk.get("/cmd/domains")[0] == b""
    # the snapshot as it is recorded once thawed: straight from ZooKeeper, through both daemons
    base = f"/domains/{UUID}/snapshots"
    stored = tree(zk, base)
    timestamp = stored[f"{base}/live/timestamp"]
    rbd_snapshots = [f"{POOL}/{volume}@live" for volume in DISKS]
    assert stored == {f"{base}/live": b"live", f"{base}/live/timestamp": timestamp, f"{base}/live/xml": xml,
                      f"{base}/live/rbdsnaplist": ",".join(rbd_snapshots).encode()}
    assert int(thaw["time"]) <= int(timestamp) <= time.time()
    same_everywhere((sim, reader), "frz1", {**original, "snapshots": [
        {"name": "live", "timestamp": timestamp.decode(), "xml_diff_lines": [], "rbd_snapshots": rbd_snapshots}]})

    # the second disk's snapshot fails in Ceph (a snapshot of that name made there only): thawed all the same
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.create_snap("second")
    before = logs(zk)
    failed = sim.post("/vm/frz1/snapshot", params={"snapshot_name": "second"})
    assert failed.status_code == 409, failed.text
    assert failed.json()["message"].endswith("; the RBD snapshots already made were removed")
    assert new_entries(zk, before)["pvchv1"] == [("freeze", UUID, "success"), ("thaw", UUID, "success")]
    assert frozen_domains(sim) == NONE_FROZEN
    assert [snaps(ioctx, volume) for volume in DISKS] == [["live"], ["live", "second"]]
    with rbd.Image(ioctx, DISKS[1]) as image:
        image.remove_snap("second")

    # a stopped VM: no command at all
    assert set_state(sim, "stop", vm="frz1").status_code == 200
    before, mailbox = logs(zk), zk.exists("/cmd/domains")
    cold = sim.post("/vm/frz1/snapshot", params={"snapshot_name": "cold"})
    assert cold.json() == {"message": "Successfully created snapshot 'cold' of VM 'frz1'."}, cold.text
    assert zk.exists("/cmd/domains").mzxid == mailbox.mzxid
    assert new_entries(zk, before) == {node: [] for node in SIM_NODES}
    assert [snaps(ioctx, volume) for volume in DISKS] == [["cold", "live"]] * 2


def test_without_an_answer_from_the_node_the_snapshot_is_taken_unfrozen_in_bounded_time(frozen_cluster, clean_zk,
                                                                                         zk_server):
    sim, reader, ioctx = frozen_cluster
    zk = clean_zk
    define_with_volumes(sim, "frz1", UUID, DISKS[:1])
    assert set_state(sim, "start", vm="frz1").status_code == 200
    original = shows(lambda: (found := sim.get("/vm/frz1").json())["state"] == "start" and found, "frz1 running")

    # the VM's node daemon is stopped (its VM keeps running): nobody takes the command, no thaw is sent
    assert sim.post("/simnode/pvchv1", params={"action": "stop"}).status_code == 200
    before, mailbox = logs(zk), zk.exists("/cmd/domains")
    begun = time.monotonic()
    unfrozen = sim.post("/vm/frz1/snapshot", params={"snapshot_name": "unfrozen"})
    assert time.monotonic() - begun < TIMEOUT + ANSWER_SLACK
    assert unfrozen.json() == {"message": "Successfully created snapshot 'unfrozen' of VM 'frz1' (the guest "
                                          f"filesystems were not frozen: {THAW_NOTE})."}, unfrozen.text
    assert zk.exists("/cmd/domains").version == mailbox.version + 2  # the command, then the reset
    assert zk.get("/cmd/domains")[0] == b""
    assert new_entries(zk, before) == {node: [] for node in SIM_NODES}
    assert snaps(ioctx, DISKS[0]) == ["unfrozen"]
    timestamp = zk.get(f"/domains/{UUID}/snapshots/unfrozen/timestamp")[0].decode()
    same_everywhere((sim, reader), "frz1", {**original, "snapshots": [
        {"name": "unfrozen", "timestamp": timestamp, "xml_diff_lines": [],
         "rbd_snapshots": [f"{POOL}/{DISKS[0]}@unfrozen"]}]})

    # a node that takes the command and never answers (it holds its lock): each wait ends after the timeout,
    # and the thaw is sent all the same (the guest may be frozen by now)
    lock = zk.WriteLock("/cmd/domains", "hung-node")
    assert lock.acquire(timeout=TIMEOUT)
    try:
        begun = time.monotonic()
        late = sim.post("/vm/frz1/snapshot", params={"snapshot_name": "late"})
        took = time.monotonic() - begun
    finally:
        lock.release()
        zk.set("/cmd/domains", b"")  # what the API would have reset, had the node answered
    assert 2 * TIMEOUT <= took < 2 * (TIMEOUT + 0.5) + ANSWER_SLACK
    assert late.json() == {"message": "Successfully created snapshot 'late' of VM 'frz1' (the guest filesystems "
                                      f"were not frozen: The node did not finish 'domain_fsfreeze' within {TIMEOUT:g} "
                                      "s; it may still be working (check its log); their thaw was not confirmed: The "
                                      f"node did not finish 'domain_fsthaw' within {TIMEOUT:g} s; it may still be "
                                      "working (check its log))."}, late.text
    assert snaps(ioctx, DISKS[0]) == ["late", "unfrozen"]

    # a node that answers failure (say, no guest agent in the VM): unfrozen, and no thaw is sent
    played, seen = play_ceph_node(zk_server.address, "pvchv1", answer="failure", mailbox="/cmd/domains"), []
    zk.DataWatch("/cmd/domains", lambda data, stat: seen.append(data))
    try:
        refused = sim.post("/vm/frz1/snapshot", params={"snapshot_name": "refused"})
    finally:
        played.stop()
    assert refused.json() == {"message": "Successfully created snapshot 'refused' of VM 'frz1' (the guest "
                                         "filesystems were not frozen: node 'pvchv1' answered "
                                         "'failure-domain_fsfreeze' (its log says why))."}, refused.text
    # (a watch may skip a value that was replaced at once, never one that stayed 0.5 s)
    assert f"failure-domain_fsfreeze {UUID}".encode() in seen and not [data for data in seen if b"thaw" in data]
    assert snaps(ioctx, DISKS[0]) == ["late", "refused", "unfrozen"]

    # its daemon back, the node freezes again
    assert sim.post("/simnode/pvchv1", params={"action": "start"}).status_code == 200
    shows(lambda: sim_ready(sim), "pvchv1 back")
    again = sim.post("/vm/frz1/snapshot", params={"snapshot_name": "again"})
    assert again.json()["message"].endswith("(the guest filesystems were frozen through node 'pvchv1').")
    assert frozen_domains(sim) == NONE_FROZEN


def test_two_daemons_snapshotting_running_vms_at_once_freeze_each_its_own(frozen_cluster, clean_zk, daemon_factory,
                                                                        ceph_config):
    """Two API daemons take snapshots of two running VMs at the same moment: each VM is frozen by its node
    before its disk's snapshot and thawed after, because every daemon sends /cmd/domains commands in turn
    (schema.command_lock). Without that lock the second command overwrote the first before the node took it,
    and the first daemon read the second's answer ('success-domain_fsfreeze') as its own: a guest reported
    frozen that nobody froze."""
    import threading
    sim, _, ioctx = frozen_cluster
    zk = clean_zk
    # the two callers wait for each other's commands (about 2 s each): a limit that is no part of this test
    patient = deep_merge(ceph_config, {"vm": {"fsfreeze_timeout": str(settle_timeout())},
                                       "ceph": {"collector": "False"}})
    callers = [daemon_factory(patient), daemon_factory(patient)]
    vms = {"frz1": (UUID, "frz1_sda"), "frz2": (uuid_for(77), "frz2_sda")}
    for name, (uuid, volume) in vms.items():
        define_with_volumes(sim, name, uuid, (volume,))
        assert set_state(sim, "start", vm=name).status_code == 200
        shows(lambda name=name: sim.get(f"/vm/{name}").json()["state"] == "start", f"{name} running")
    before = logs(zk)
    start, answers = threading.Barrier(2), {}

    def snapshot(caller, name: str) -> None:
        start.wait()
        answers[name] = caller.post(f"/vm/{name}/snapshot", params={"snapshot_name": "both"})
    threads = [threading.Thread(target=snapshot, args=pair) for pair in zip(callers, vms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, answer in answers.items():
        assert answer.json() == {"message": f"Successfully created snapshot 'both' of VM '{name}' (the guest "
                                            "filesystems were frozen through node 'pvchv1')."}, answer.text
    seen = new_entries(zk, before)
    assert seen["pvchv2"] == seen["pvchv3"] == []
    assert sorted(seen["pvchv1"]) == sorted([("freeze", uuid, "success") for uuid, _ in vms.values()]
                                            + [("thaw", uuid, "success") for uuid, _ in vms.values()])
    entries = freeze_log(zk, "pvchv1")[len(before["pvchv1"]):]
    for uuid, volume in vms.values():
        freeze, thaw = ([entry["czxid"] for entry in entries if (entry["event"], entry["uuid"]) == (event, uuid)][0]
                        for event in ("freeze", "thaw"))
        assert freeze < zk.exists(f"/ceph/snapshots/{POOL}/{volume}/both").czxid < thaw, volume
    assert frozen_domains(sim) == NONE_FROZEN
    assert zk.get("/cmd/domains")[0] == b""

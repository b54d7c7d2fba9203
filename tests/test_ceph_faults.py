"""Ceph frozen (SIGSTOP) and stopped under a bounded 8-client load of the storage routes.

The same promise as ZooKeeper's in ``test_faults``: besides success the only
answers are 503 (and 409 for a concurrent change); none comes later than
``ceph.timeout`` plus one second; full service is back within 5 s of Ceph's
return; and no volume is half-made: its keys in ZooKeeper are all there or
none, and there exactly when Ceph holds the image.

Ceph here is the test's own (bluestore on a file, so that it can be killed
and started again with its data), beside a ZooKeeper of its own.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import time

import pytest
from kazoo.client import KazooClient
from test_faults import BEYOND_BOUND, RETURN_WITHIN, Load, check_outage

from conftest import ANSWER_SLACK, START_TIMEOUT, wait_until
from pvc_core.zkserver import ZooKeeperServer

CEPH_TIMEOUT = 2.0
OUTAGE = 2 * CEPH_TIMEOUT
POOL = "faults"


class StorageLoad(Load):
    """8 clients creating, resizing, snapshotting, removing and reading volumes, each answer recorded.

    Each client works on volumes of its own, so that no answer depends on another client's
    timing; a volume whose create or removal answered 503 is left alone afterwards (that
    operation may still be completed when Ceph answers).
    """

    def __init__(self, daemon):
        super().__init__(daemon, [])
        self.created: dict[str, int] = {}  # volume -> status of its create
        self._counter = itertools.count()

    def one(self, rng: random.Random, mine: list[str]) -> None:
        kind = rng.choice(["create", "create", "resize", "snapshot", "remove", "list", "pool", "status"])
        if kind in ("resize", "snapshot", "remove") and not mine:
            kind = "create"
        volume = rng.choice(mine) if mine else None
        new = None
        started = time.monotonic()
        try:
            if kind == "create":
                new = f"v{next(self._counter)}"
                with self._lock:
                    self.created[new] = 0
                response = self.daemon.post(f"/storage/ceph/volume/{POOL}/{new}", params={"size": "4M"}, timeout=60)
            elif kind == "resize":
                size = f"{4 + next(self._counter)}M"  # always more than before
                response = self.daemon.put(f"/storage/ceph/volume/{POOL}/{volume}", params={"size": size},
                                           timeout=60)
            elif kind == "snapshot":
                response = self.daemon.post(f"/storage/ceph/snapshot/{POOL}/{volume}/s{next(self._counter)}",
                                            timeout=60)
            elif kind == "remove":
                mine.remove(volume)
                response = self.daemon.delete(f"/storage/ceph/volume/{POOL}/{volume}", timeout=60)
                if response.status_code == 409 and "snapshot" in response.text:
                    response.status_code = 200  # it has snapshots: kept on purpose, as v0.6 does
            elif kind == "list":
                response = self.daemon.get("/storage/ceph/volume", params={"pool": POOL}, timeout=60)
            elif kind == "pool":
                response = self.daemon.get(f"/storage/ceph/pool/{POOL}", timeout=60)
            else:
                response = self.daemon.get("/storage/ceph/status", timeout=60)
            status = response.status_code
            if status not in (200, 409, 503):
                kind = f"{kind} {volume or new}: {response.text.strip()[:200]}"
        except Exception as exc:  # noqa: BLE001 - a reset or a client timeout is a finding, kept as such
            status = -1
            kind = f"{kind} ({type(exc).__name__}: {exc})"
        ended = time.monotonic()
        if new is not None and status == 200:
            mine.append(new)
        with self._lock:
            self.answers.append((started, ended, kind, status))
            if new is not None:
                self.created[new] = status

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        mine: list[str] = []
        while not self.stop.is_set():
            self.one(rng, mine)


@pytest.fixture
def ceph_faulty(daemon_factory, tmp_path):
    from pvc_ceph.localceph import LocalCeph
    zookeeper = ZooKeeperServer(str(tmp_path / "zk")).start(timeout=START_TIMEOUT)
    ceph = LocalCeph(str(tmp_path / "ceph"), objectstore="bluestore", size_gb=2)
    try:
        ceph.start(timeout=2 * START_TIMEOUT)
        daemon = daemon_factory({"ceph": {"conf": ceph.conf, "keyring": ceph.keyring, "timeout": str(CEPH_TIMEOUT),
                                          "interval": "0.5", "volume_interval": "1"},
                                 "plugins": {"enabled": ["node", "ceph"]}}, coordinator=zookeeper.address)
        assert daemon.post("/initialize").status_code == 200
        assert daemon.post(f"/storage/ceph/pool/{POOL}",
                           params={"pgs": "8", "replcfg": "copies=1,mincopies=1"}).status_code == 200
        # one volume kept throughout, so that the list is never the "not found" of an empty pool
        assert daemon.post(f"/storage/ceph/volume/{POOL}/kept", params={"size": "4M"}).status_code == 200
        yield ceph, zookeeper, daemon
        daemon.stop()  # while its services are there
    finally:
        ceph.kill()  # a throwaway cluster: no orderly stop needed
        zookeeper.stop()


def freeze(ceph, sig: int) -> None:
    for pid in ceph.pids().values():
        os.kill(pid, sig)


def images(ceph) -> set[str]:
    out = subprocess.run(["rbd", "-c", ceph.conf, "ls", POOL], capture_output=True, text=True, check=True,
                         timeout=START_TIMEOUT)
    return set(out.stdout.split())


def half_made_volumes(ceph, zookeeper, load: StorageLoad) -> list[str]:
    """Every volume the load asked for whose keys are not all there or all gone, or are there when Ceph
    has no such image (or the other way round)."""
    in_ceph = images(ceph)
    client = KazooClient(hosts=zookeeper.address)
    client.start(timeout=START_TIMEOUT)
    wrong = []
    try:
        for volume, status in load.created.items():
            keys = [f"/ceph/volumes/{POOL}/{volume}", f"/ceph/volumes/{POOL}/{volume}/stats",
                    f"/ceph/snapshots/{POOL}/{volume}"]
            present = [client.exists(key) is not None for key in keys]
            if len(set(present)) != 1 or present[0] != (volume in in_ceph):
                wrong.append(f"{volume} (create answered {status}): keys {present}, in Ceph {volume in in_ceph}")
    finally:
        client.stop()
    return wrong


def no_half_made_volume(ceph, zookeeper, load: StorageLoad) -> None:
    """An operation whose answer was 503 may be applied when Ceph answers again; the daemon then makes
    the keys agree within a few ``ceph.timeout`` (it looks again every ``ceph.timeout``)."""
    wrong: list[str] = []

    def agree() -> bool:
        wrong[:] = half_made_volumes(ceph, zookeeper, load)
        return not wrong
    try:
        wait_until(agree, timeout=3 * CEPH_TIMEOUT + ANSWER_SLACK, interval=0.5)
    except AssertionError:
        raise AssertionError(f"half-made volumes: {wrong[:8]}") from None


def summary(load: StorageLoad, began: float, what: str) -> None:
    slowest = sorted(((round(ended - started, 2), kind, status, round(started - began, 2))
                      for started, ended, kind, status in load.between(began - 5, float("inf"))), reverse=True)
    print(f"{what}: slowest {slowest[:12]}")


def test_ceph_frozen_then_stopped_under_load(ceph_faulty):
    ceph, zookeeper, daemon = ceph_faulty
    with StorageLoad(daemon) as load:
        time.sleep(1.0)  # some normal traffic first (not a bound)
        freeze(ceph, signal.SIGSTOP)
        frozen = time.monotonic()
        time.sleep(OUTAGE)  # the outage lasts this long: it is what is being tested
        freeze(ceph, signal.SIGCONT)
        thawed = time.monotonic()
        wait_until(lambda: load.between(thawed + RETURN_WITHIN + 2.0, float("inf")),
                   message="requests after Ceph's return")
        summary(load, frozen, "frozen")
        check_outage(load, frozen, thawed, "frozen", bound=CEPH_TIMEOUT, service="Ceph")

        ceph.kill()  # stopped as a crash stops it (bluestore keeps the data)
        stopped = time.monotonic()
        time.sleep(OUTAGE)
        ceph.start(timeout=2 * START_TIMEOUT)
        restarted = time.monotonic()
        # a call made on the connection of the stopped Ceph may still fail one ceph.timeout after the
        # return, before the daemon's client connects anew
        back_within = RETURN_WITHIN + CEPH_TIMEOUT
        wait_until(lambda: load.between(restarted + back_within + 2.0, float("inf")),
                   message="requests after Ceph's return")
        summary(load, stopped, "stopped")
        check_outage(load, stopped, restarted, "stopped", bound=CEPH_TIMEOUT, service="Ceph",
                     return_within=back_within)
    no_half_made_volume(ceph, zookeeper, load)
    counts: dict[int, int] = {}
    for _, _, _, status in load.answers:
        counts[status] = counts.get(status, 0) + 1
    slowest = sorted(((round(ended - started, 2), kind) for started, ended, kind, _ in load.answers), reverse=True)
    print(f"storage fault load: {len(load.answers)} answers {counts}, slowest {slowest[:5]}, "
          f"allowed {CEPH_TIMEOUT:g} s + {BEYOND_BOUND:g} s")

"""Keeps the statistics keys under /ceph fresh; with several daemons, only the lock holder writes.

GET requests read ZooKeeper, never Ceph, so they stay fast when Ceph is slow
or gone; what they show is at most one interval old (or the last values
written before Ceph went away).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
import uuid
from typing import Any

from kazoo.exceptions import CancelledError, LockTimeout

from pvc_core.errors import ApiError
from pvc_core.zk import TransactionFailed

from . import schema
from .client import CephClient

log = logging.getLogger("pvc.ceph.collector")


class Collector:
    def __init__(self, runtime: Any, client: CephClient, interval: float, pools: Any = None, osds: Any = None,
                 volumes: Any = None, volume_interval: float = 60.0):
        self.runtime = runtime
        self.client = client
        self.pools = pools
        self.osds = osds
        self.volumes = volumes
        # Every volume's `rbd info` costs ~3 ms of CPU: 500 volumes every 5 s would be a quarter of a core.
        self.volume_interval = volume_interval
        self._next_volumes = 0.0
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock: Any = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pvc-ceph-collector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._lock is not None:
            self._lock.cancel()  # a follower waiting in line for the lock
        if self._thread is not None:
            self._thread.join(timeout=self.client.timeout + 5)
        if self._lock is not None and self._lock.is_acquired:
            try:
                self._lock.release()
            except Exception:  # noqa: BLE001 - ZooKeeper may be gone already
                pass

    def leader(self) -> bool:
        """Hold the kazoo lock on /locks/ceph_collector; whoever holds it collects."""
        zk = self.runtime.zk
        if not zk.connected or not zk.exists(schema.STATUS):
            # Not initialized: the lock recipe would create /locks, and POST /initialize would refuse.
            return False
        if self._lock is not None and self._lock.is_acquired:
            # kazoo does not notice when its lock node is deleted under it: check it is still ours.
            if zk.exists(f"{self._lock.path}/{self._lock.node}"):
                return True
            self._lock = None
        if self._lock is None:
            # The pid tells an operator (and a test) which process collects.
            self._lock = zk.client.Lock(schema.COLLECTOR_LOCK, f"pvcapid-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            # Wait up to an interval in line for the lock: when its holder's session ends (a killed
            # daemon), the next in line collects at once rather than at its next poll.
            return self._lock.acquire(blocking=True, timeout=self.interval)
        except (LockTimeout, CancelledError):  # not our turn within the interval; or stopping
            return False
        except Exception:  # noqa: BLE001 - e.g. the lock's parent was removed: a fresh recipe next time
            self._lock = None
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            leader = False
            try:
                with self.client.handle():  # contend for the lock only while Ceph answers
                    pass
                leader = self.leader()
                log.debug("collector: leader=%s", leader)
                if leader:
                    self.collect()
                    if self._failing:
                        log.info("Ceph statistics collection works again")
                    self._failing = False
            except ApiError as exc:
                if not self._failing:
                    log.warning("Ceph statistics not collected: %s", exc.message)
                self._failing = True
            except Exception:  # noqa: BLE001 - the collector must outlive any one failure
                log.exception("Ceph statistics collection failed")
            # A leader waits a whole interval between collections; a follower has waited in line for
            # the lock during this pass, and waits only what is left of the interval.
            self._stop.wait(self.interval if leader else max(0.0, self.interval - (time.monotonic() - started)))

    def collect(self) -> None:
        status = self.client.mon_command("status")
        utilization = self.rados_df()
        pool_stats = self.pools.statistics() if self.pools is not None else {}
        zk = self.runtime.zk
        osd_stats: dict[str, str] = {}
        osd_versions: dict[str, int] = {}
        if self.osds is not None:
            # read before Ceph is asked: an OSD state a request records meanwhile (``Osds.set_state``) is newer
            # than this pass's look, which then fails its version check and is written next pass
            paths = [schema.osd(osd_id, "stats") for osd_id in self.osds.ids()]
            osd_versions = {path: read[1] for path, read in zk.get_versioned(paths).items()} if paths else {}
            osd_stats = self.osds.statistics()
        transaction = zk.transaction()
        transaction.set_data(schema.STATUS, status.encode())  # never creates /ceph (that is /initialize's)
        present = zk.exists_many(pool_stats)
        for path, value in pool_stats.items():
            if present[path]:  # a pool removed meanwhile keeps no stray stats key
                transaction.set_data(path, value.encode())
        for path, value in osd_stats.items():
            if osd_versions.get(path, -1) >= 0:
                transaction.set_data(path, value.encode(), version=osd_versions[path])
        if zk.exists(schema.UTILIZATION):
            transaction.set_data(schema.UTILIZATION, utilization.encode())
        else:
            transaction.create(schema.UTILIZATION, utilization.encode())
        try:
            zk.commit(transaction, "Ceph statistics update")
        except TransactionFailed:
            log.debug("statistics not written: /ceph is gone (cluster being re-initialized?), or an OSD's state was "
                      "recorded meanwhile")
            return
        if self.volumes is not None and time.monotonic() >= self._next_volumes:
            self._next_volumes = time.monotonic() + self.volume_interval
            statistics = self.volumes.statistics(self._stop)
            if not self._stop.is_set():
                self.write_changed(statistics)

    def write_changed(self, values: dict[str, str], chunk: int = 200) -> None:
        """Write only what changed, in bounded transactions (one per ``chunk`` keys, far below
        ZooKeeper's 1 MB request limit whatever the number of volumes)."""
        zk = self.runtime.zk
        current = zk.get_many(values)
        changed = [path for path, value in values.items() if current[path] is not None and current[path] != value]
        for start in range(0, len(changed), chunk):
            transaction = zk.transaction()
            for path in changed[start:start + chunk]:
                transaction.set_data(path, values[path].encode())
            try:
                zk.commit(transaction, "volume statistics update")
            except TransactionFailed:
                log.debug("some volume statistics not written (volumes removed meanwhile)")

    def rados_df(self) -> str:
        """`rados df` text, as v0.6 node daemons stored it (the v0.6 CLI shows it as is)."""
        args = ["rados", "-c", self.client.conffile, "--name", self.client.name]
        if self.client.keyring:
            args += ["--keyring", self.client.keyring]
        try:
            result = subprocess.run([*args, "df"], capture_output=True, text=True, timeout=self.client.timeout + 5,
                                    stdin=subprocess.DEVNULL)
        except (subprocess.TimeoutExpired, OSError) as exc:
            raise self.client.unavailable(f"rados df: {exc}") from None
        if result.returncode != 0:
            raise self.client.unavailable(f"rados df: {result.stderr.strip()}")
        return result.stdout

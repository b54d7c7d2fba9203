"""The guest-agent commands of ``/cmd/domains``: ``domain_fsfreeze <uuid>`` and ``domain_fsthaw <uuid>``.

They are this daemon's additions to the v0.6 protocol (a v0.6 node daemon
ignores them): the node that runs the VM freezes or thaws its guest's
filesystems (libvirt's virDomainFSFreeze/Thaw) so that a whole-VM snapshot
is taken at one point in time with the guest's writes on disk.

A guest frozen for ``limit`` seconds is thawed by the node itself: the API
thaws right after the snapshot, but an API that dies in between must not
leave the guest's writes blocked for ever. Every freeze and thaw is also
written as a sequential znode under the node's own ``simnode/fsfreeze`` key
(the last ``LOG_KEEP``): that is how tests see from outside what the guest
went through, and in which order against other writes (the znodes' zxids).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError

from . import schema
from .hypervisor import Hypervisor

log = logging.getLogger("pvc.simnode")

FREEZE, THAW = "domain_fsfreeze", "domain_fsthaw"
COMMANDS = (FREEZE, THAW)
AUTO_THAW = "auto-thaw"
LOG_KEEP = 64


class GuestAgent:
    def __init__(self, name: str, hypervisor: Hypervisor, limit: float, zk: Callable[[], Any]):
        self.name = name
        self.hypervisor = hypervisor
        self.limit = limit
        self.zk = zk  # the node's current session (None while its daemon is stopped)
        self._lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}  # per frozen guest: its auto-thaw

    def run(self, command: str, uuid: str) -> bool:
        """Freeze or thaw a guest of this host; False (and why, in the log) when it cannot."""
        with self._lock:
            if command == FREEZE:
                already = uuid in self.hypervisor.frozen()  # then the bound runs from the first freeze
                failure = self.hypervisor.freeze(uuid)
                if failure is None and not already:
                    self._drop(uuid)  # of a guest stopped while frozen
                    timer = threading.Timer(self.limit, self._expire, (uuid,))
                    timer.daemon = True
                    self._timers[uuid] = timer
                    timer.start()
            else:
                failure = self.hypervisor.thaw(uuid)
                if failure is None:
                    self._drop(uuid)
        self._record("freeze" if command == FREEZE else "thaw", uuid, failure)
        return failure is None

    def _drop(self, uuid: str) -> None:
        timer = self._timers.pop(uuid, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, uuid: str) -> None:
        with self._lock:
            if self._timers.get(uuid) is not threading.current_thread():
                return  # thawed (and maybe frozen again) meanwhile
            self._timers.pop(uuid)
            if uuid not in self.hypervisor.frozen():
                return  # stopped or migrated meanwhile: nothing is frozen
            failure = self.hypervisor.thaw(uuid)
        log.warning("simulated node %s: thawed VM %s by itself after %g s frozen", self.name, uuid, self.limit)
        self._record(AUTO_THAW, uuid, failure)

    def _record(self, event: str, uuid: str, failure: str | None) -> None:
        if failure is not None:
            log.info("simulated node %s: %s of VM %s failed: %s", self.name, event, uuid, failure)
        zk = self.zk()
        if zk is None:
            return
        entry = {"event": event, "uuid": uuid, "time": time.time(), "result": "failure" if failure else "success",
                 "reason": failure or ""}
        base = schema.freeze_log(self.name)
        try:
            zk.create(f"{base}/event-", json.dumps(entry).encode(), sequence=True, makepath=True)
            for old in sorted(zk.get_children(base))[:-LOG_KEEP]:
                zk.delete(f"{base}/{old}")
        except NoNodeError:
            pass  # another thread pruned it first
        except KazooException as exc:
            log.warning("simulated node %s: could not record the %s of VM %s (%s)", self.name, event, uuid,
                        type(exc).__name__)

"""The v0.6 ``/cmd/ceph`` mailbox: how a command reaches the node that must run it (OSD add/remove).

The on-wire sequence is v0.6's (zookeeper-schema.md §8.1, ceph.md §4.2), so
v0.6 node daemons answer it: write the command, give the node 0.5 s to take
its write lock, wait on a read lock until the node has answered, read the
answer, then reset the mailbox under a write lock. Two changes, as DECISIONS
asks: one command at a time per process (v0.6 let concurrent requests
overwrite each other), and a bounded wait with a clear message.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from kazoo.exceptions import LockTimeout

from pvc_core.errors import ServiceUnavailable

IGNORED = "ignored"


def _acquire(lock: Any, timeout: float) -> bool:
    try:
        return bool(lock.acquire(timeout=timeout))
    except LockTimeout:
        lock.cancel()
        return False


class CommandChannel:
    def __init__(self, runtime: Any, path: str, pickup: float = 0.5, settle: float = 0.5):
        self.runtime = runtime
        self.path = path
        self.pickup = pickup
        self.settle = settle
        self._mutex = threading.Lock()

    def run(self, command: str, timeout: float) -> bool | str:
        """True on ``success-<command>``, False on anything else, IGNORED when the answer is unreadable."""
        zk = self.runtime.zk
        identifier = str(uuid.uuid1())
        if not self._mutex.acquire(timeout=timeout):
            raise ServiceUnavailable(f"Another command is using {self.path}; try again later")
        try:
            zk.write({self.path: command})
            time.sleep(self.pickup)
            reader = zk.client.ReadLock(self.path, identifier)
            if not _acquire(reader, timeout):
                raise ServiceUnavailable(f"The node did not finish '{command.split()[0]}' within {timeout:g} s; "
                                         "it may still be working (check its log)")
            try:
                answer = zk.get(self.path) or ""
            finally:
                reader.release()
            writer = zk.client.WriteLock(self.path, identifier)
            if _acquire(writer, timeout):  # otherwise the next command overwrites the answer anyway
                try:
                    time.sleep(self.settle)
                    zk.write({self.path: ""})
                finally:
                    writer.release()
        finally:
            self._mutex.release()
        token = answer.split()[0] if answer.split() else ""
        if not token:
            return IGNORED
        return token == f"success-{command.split()[0]}"

"""The v0.6 command mailboxes (``/cmd/ceph``, ``/cmd/domains``): how a command reaches the node that must run it.

The on-wire sequence is v0.6's (zookeeper-schema.md §8.1, ceph.md §4.2), so
v0.6 node daemons answer it: write the command, give the node 0.5 s to take
its write lock, wait on a read lock until the node has answered, read the
answer, then reset the mailbox under a write lock. Changes, as DECISIONS
asks: one command at a time per mailbox and process (v0.6 let concurrent
requests overwrite each other), a bounded wait with a clear message, and an
answer written by a node that took its lock after the 0.5 s is read before
the reset (v0.6 called such a command failed although the node ran it).

One command at a time holds across API daemons too: a command is sent only
under the mailbox's ZooKeeper lock (``schema.command_lock``). Without it, a
second daemon's command overwrote the first's before the node took it, and
the first daemon read the second's answer as its own (the answer names the
command, not its argument): a guest reported frozen that nobody froze.

The mailbox's path is the caller's (each plugin names its own keys); the
mutex belongs to the path, so every channel of one mailbox in a process
shares it.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from kazoo.exceptions import LockTimeout

from . import schema
from .errors import ServiceUnavailable

IGNORED = "ignored"

_MUTEXES: dict[str, threading.Lock] = {}
_MUTEXES_GUARD = threading.Lock()


def _mutex(path: str) -> threading.Lock:
    with _MUTEXES_GUARD:
        return _MUTEXES.setdefault(path, threading.Lock())


def _acquire(lock: Any, timeout: float) -> bool:
    try:
        return bool(lock.acquire(timeout=timeout))
    except LockTimeout:
        lock.cancel()
        return False


def _first(value: str | None) -> str:
    parts = (value or "").split()
    return parts[0] if parts else ""


class CommandChannel:
    def __init__(self, runtime: Any, path: str, pickup: float = 0.5, settle: float = 0.5):
        self.runtime = runtime
        self.path = path
        self.pickup = pickup
        self.settle = settle
        self._mutex = _mutex(path)

    def run(self, command: str, timeout: float) -> bool | str:
        """True on ``success-<command>``, False on anything else, IGNORED when the answer is unreadable."""
        token = self.ask(command, timeout)
        if not token:
            return IGNORED
        return token == f"success-{command.split()[0]}"

    def ask(self, command: str, timeout: float) -> str:
        """The first token of the mailbox once the node is done: ``success-<name>``, ``failure-<name>``,
        ``<name>`` itself when no node took the command, "" when the mailbox was emptied meanwhile.
        Each wait (this process's other command, the node's work, the reset) is bounded by ``timeout``:
        503 when one runs out."""
        zk = self.runtime.zk
        identifier = str(uuid.uuid1())
        name = command.split()[0]
        if not self._mutex.acquire(timeout=timeout):
            raise ServiceUnavailable(f"Another command is using {self.path}; try again later")
        cluster = zk.client.Lock(schema.command_lock(self.path), identifier)
        try:
            if not _acquire(cluster, timeout):
                raise ServiceUnavailable(f"Another API daemon's command is using {self.path} (its lock "
                                         f"{schema.command_lock(self.path)} was not free within {timeout:g} s); "
                                         "try again later")
            try:
                return self._exchange(zk, command, name, identifier, timeout)
            finally:
                cluster.release()
        finally:
            self._mutex.release()

    def _exchange(self, zk: Any, command: str, name: str, identifier: str, timeout: float) -> str:
        """v0.6's sequence, once this daemon holds the mailbox."""
        zk.write({self.path: command})
        time.sleep(self.pickup)
        reader = zk.client.ReadLock(self.path, identifier)
        if not _acquire(reader, timeout):
            raise ServiceUnavailable(f"The node did not finish '{name}' within {timeout:g} s; "
                                     "it may still be working (check its log)")
        try:
            token = _first(zk.get(self.path))
        finally:
            reader.release()
        writer = zk.client.WriteLock(self.path, identifier)
        if _acquire(writer, timeout):  # otherwise the next command overwrites the answer anyway
            try:
                if token == name:  # a node that took its lock late has answered by now
                    late = _first(zk.get(self.path))
                    token = late if late in (f"success-{name}", f"failure-{name}") else token
                time.sleep(self.settle)
                zk.write({self.path: ""})
            finally:
                writer.release()
        return token

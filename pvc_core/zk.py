"""The daemon's one ZooKeeper client and the v0.6 read/write conventions.

v0.6 opened a session per request; we keep one kazoo client per process and
never block a request on it for longer than ``request_timeout``: when the
ensemble is gone every call fails fast with ServiceUnavailable (503) while
kazoo keeps reconnecting in the background.

Value format (zookeeper-schema.md §1.2): text, ``str()`` of the Python value,
so ``True``/``False``/``None`` are stored capitalised and literally. A logical
update is one multi-operation, keys in sorted order, create-or-set per key.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Transaction
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.retry import KazooRetry

from . import deadlines, zkwatchers
from .config import coordinator_hosts
from .errors import ApiError, Conflict, ServiceUnavailable

log = logging.getLogger("pvc.zk")

T = TypeVar("T")

UNREACHABLE = (ConnectionLoss, SessionExpiredError, ConnectionClosedError, KazooTimeoutError)


def encode(value: Any) -> bytes:
    """v0.6 writes ``str(value)``; bytes pass through untouched."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def decode(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


class TransactionFailed(Conflict):
    """A multi-operation was rejected; nothing of it was applied."""

    def __init__(self, message: str, cause: Exception | None = None):
        super().__init__(message)
        self.cause = cause


class Outstanding:
    """A count shared by several threads (``+=`` on an attribute is not atomic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, step: int) -> None:
        with self._lock:
            self.value += step


class ZooKeeper:
    """One kazoo client with bounded waits and the v0.6 helpers."""

    def __init__(self, coordinators: list[str], session_timeout: float = 10.0,
                 request_timeout: float = 5.0, bulk_reads: str = "auto"):
        self.hosts = coordinator_hosts(coordinators)
        self.request_timeout = request_timeout
        self.bulk_reads = bulk_reads
        self._bulk: bool | None = {"true": True, "false": False}.get(bulk_reads)
        self.client = zkwatchers.Client(
            hosts=self.hosts,
            timeout=session_timeout,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0,
                                        ignore_expire=True),
            logger=logging.getLogger("pvc.zk.kazoo"),
        )
        self.client.add_listener(self._state_changed)
        self._started = False
        self._lock = threading.Lock()
        self.observers: list[Any] = []  # views to keep current with our own writes
        # Watch re-reads the views of this client have sent and not yet stored (``SubtreeView.sync``
        # waits for a chain of them: a root deleted and created again takes five round trips).
        self.view_reads = Outstanding()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, wait: float = 5.0) -> bool:
        """Connect; if the ensemble is not there yet, keep trying in the background."""
        with self._lock:
            if self._started:
                return self.client.connected
            self._started = True
            event = self.client.start_async()
        event.wait(wait)
        if not self.client.connected:
            log.warning("ZooKeeper at %s not reachable yet; requests answer 503 until it is", self.hosts)
        return self.client.connected

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
        try:
            self.client.stop()
            self.client.close()
        except KazooException:  # pragma: no cover - stopping a broken client
            log.exception("error while closing the ZooKeeper client")

    def _state_changed(self, state: str) -> None:
        if not self._started:
            return  # our own stop() closes the session; nothing to report
        if state == KazooState.LOST:
            log.warning("ZooKeeper session lost; reconnecting to %s", self.hosts)
        elif state == KazooState.SUSPENDED:
            log.warning("ZooKeeper connection suspended; reconnecting to %s", self.hosts)
        else:
            log.info("ZooKeeper connected to %s", self.hosts)

    @property
    def bulk(self) -> bool:
        """Whether views warm with multiRead and SetWatches (pvc_core/zkbulk.py); probed once on "auto"."""
        with self._lock:  # two views warming at once ask once
            if self._bulk is None:
                from . import zkbulk
                self._bulk = zkbulk.supported(self.hosts, self.request_timeout)
            return self._bulk

    @property
    def bulk_known(self) -> bool:
        """``bulk`` if already known (never probes: callable from kazoo's callback threads)."""
        return self._bulk is True

    @property
    def connected(self) -> bool:
        return self.client.connected

    def unavailable(self, detail: str = "") -> ServiceUnavailable:
        text = f"ZooKeeper is unreachable at {self.hosts}: could not connect to Zookeeper"
        return ServiceUnavailable(text + (f" ({detail})" if detail else ""))

    def require(self) -> None:
        """Fail fast (503) instead of queueing work behind a dead connection."""
        if not self.client.connected:
            raise self.unavailable("reconnecting in the background")

    def remaining(self) -> float:
        """How long the next ZooKeeper wait may last: within a request, until its start plus
        ``request_timeout`` (never below a quarter of it; see ``deadlines.remaining``)."""
        return deadlines.remaining(self.request_timeout)

    def wait(self, async_result: Any) -> Any:
        """The result of a kazoo async call, within ``remaining()``."""
        try:
            return async_result.get(timeout=self.remaining())
        except UNREACHABLE as exc:
            raise self.unavailable(type(exc).__name__) from None

    # -- reads ----------------------------------------------------------------------------

    def get(self, path: str) -> str | None:
        """A key's value, or None when the key does not exist."""
        return self.get_many([path])[path]

    def get_many(self, paths: Iterable[str]) -> dict[str, str | None]:
        """Pipelined reads: all requests sent before the first answer is awaited."""
        self.require()
        pending = [(path, self.client.get_async(path)) for path in paths]
        out: dict[str, str | None] = {}
        for path, result in pending:
            try:
                out[path] = decode(self.wait(result)[0])
            except NoNodeError:
                out[path] = None
        return out

    def get_versioned(self, paths: Iterable[str]) -> dict[str, tuple[str | None, int]]:
        """Values with their znode data versions (-1 when absent), for guarded transactions."""
        self.require()
        pending = [(path, self.client.get_async(path)) for path in paths]
        out: dict[str, tuple[str | None, int]] = {}
        for path, result in pending:
            try:
                raw, stat = self.wait(result)
                out[path] = (decode(raw), stat.version)
            except NoNodeError:
                out[path] = (None, -1)
        return out

    def get_stats(self, paths: Iterable[str]) -> dict[str, tuple[str | None, ZnodeStat | None]]:
        """Values with their whole stats (None when absent): what an ETag is made of (pvc_core.etags)."""
        self.require()
        pending = [(path, self.client.get_async(path)) for path in paths]
        out: dict[str, tuple[str | None, ZnodeStat | None]] = {}
        for path, result in pending:
            try:
                raw, stat = self.wait(result)
                out[path] = (decode(raw), stat)
            except NoNodeError:
                out[path] = (None, None)
        return out

    def children(self, path: str) -> list[str] | None:
        """Sorted child names, or None when the key does not exist."""
        return self.children_many([path])[path]

    def children_many(self, paths: Iterable[str]) -> dict[str, list[str] | None]:
        self.require()
        pending = [(path, self.client.get_children_async(path)) for path in paths]
        out: dict[str, list[str] | None] = {}
        for path, result in pending:
            try:
                out[path] = sorted(self.wait(result))
            except NoNodeError:
                out[path] = None
        return out

    def exists_many(self, paths: Iterable[str]) -> dict[str, bool]:
        self.require()
        pending = [(path, self.client.exists_async(path)) for path in paths]
        return {path: self.wait(result) is not None for path, result in pending}

    def exists(self, path: str) -> bool:
        return self.exists_many([path])[path]

    # -- writes ---------------------------------------------------------------------------

    def _commit(self, transaction: Any, what: str) -> None:
        """Commit, and tell the views in the order ZooKeeper committed.

        Two threads' commits can return in one order and reach the views in the
        other; the older write would then overwrite the newer in memory, and no
        watch would ever repair it. So the views learn of a commit in kazoo's
        completion thread, which runs reply callbacks in the order the replies
        (and the views' own re-reads) arrived: linked before the request is sent,
        the callback cannot be queued behind a later reply's.
        """
        transaction._check_tx_state()
        transaction.committed = True
        operations = transaction.operations
        reply = self.client.handler.async_result()
        applied = threading.Event()
        if self.observers:
            def notify(done: Any) -> None:
                try:
                    results = done.get_nowait()
                    if not any(isinstance(result, Exception) for result in results):
                        self._notify(operations, results)
                finally:
                    applied.set()
            reply.rawlink(notify)
        else:
            applied.set()
        self.client._call(Transaction(operations), reply)
        results = self.wait(reply)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, RolledBackError):
                raise _transaction_error(result, what)
        # Read-your-writes: the answer to this request must already show the write.
        if not applied.wait(self.request_timeout):
            log.warning("the views had not recorded the %s after %g s", what, self.request_timeout)

    def _notify(self, operations: list, results: list) -> None:
        """Tell the views what this process just committed (write-through).

        A set's reply carries the transaction's zxid (all operations of a multi
        share it), which orders the write against the views' own reads. The
        operations are taken in order: a key deleted and created again (or, as
        an If-Match guard asserts a key's absence, created and deleted) ends as
        the last operation left it.
        """
        values: dict[str, str] = {}
        deleted: dict[str, None] = {}
        fresh: set[str] = set()  # created here, absent before the transaction
        zxid = next((result.mzxid for result in results if isinstance(result, ZnodeStat)), None)
        for op in operations:
            kind = type(op).__name__
            if kind in ("Create", "SetData"):
                values[op.path] = decode(op.data) or ""
                if kind == "Create" and op.path not in deleted:
                    fresh.add(op.path)
                deleted.pop(op.path, None)
            elif kind == "Delete":
                values.pop(op.path, None)
                if op.path in fresh:  # absent before the transaction and after it: nothing to tell
                    fresh.discard(op.path)
                else:
                    deleted[op.path] = None
        for observer in self.observers:
            observer.apply(values, list(deleted), zxid)

    def write(self, values: Mapping[str, Any], guard: Any = None) -> None:
        """One transaction: create each missing key, set each existing one (sorted order). ``guard``
        (``pvc_core.etags.Guard``) adds its checks first: the transaction fails unless the znodes it
        read are still as read."""
        keys = sorted(values)
        present = self.exists_many(keys)
        transaction = self.client.transaction()
        if guard is not None:
            guard.add_to(transaction)
        for key in keys:
            if present[key]:
                transaction.set_data(key, encode(values[key]))
            else:
                transaction.create(key, encode(values[key]))
        self._commit(transaction, f"write of {len(keys)} keys under {_common_root(keys)}")

    def create(self, values: Mapping[str, Any]) -> None:
        """One transaction of creates only: fails as a whole if any key exists."""
        transaction = self.client.transaction()
        for key in sorted(values):
            transaction.create(key, encode(values[key]))
        self.require()
        self._commit(transaction, f"creation of {len(values)} keys under {_common_root(values)}")

    def create_ephemeral(self, path: str, value: Any = "") -> bool:
        """``path`` as a key of this process's ZooKeeper session (its missing parents as ordinary keys, in the
        same transaction); False, nothing made, when the key exists. It lasts until ``delete_own`` or the end of
        the session (the daemon died, or lost ZooKeeper for longer than its session timeout): what one daemon
        holds is seen by every daemon of the cluster, and nothing stays held by a daemon that is gone."""
        segments = path.strip("/").split("/")
        parents = ["/" + "/".join(segments[:index]) for index in range(1, len(segments))]

        def attempt() -> bool:
            present = self.exists_many(parents)
            transaction = self.transaction()
            for parent in parents:
                if not present[parent]:
                    transaction.create(parent, b"")
            transaction.create(path, encode(value), ephemeral=True)
            try:
                self._commit(transaction, f"creation of {path}")
            except TransactionFailed as exc:
                if isinstance(exc.cause, NodeExistsError) and self.exists(path):
                    return False
                raise  # a parent made meanwhile: tried again
            return True
        return self.optimistic(attempt)

    def owns(self, stat: ZnodeStat | None) -> bool:
        """Whether the key of ``stat`` is an ephemeral key of this process's present session."""
        session = self.client.client_id
        return stat is not None and session is not None and stat.ephemeralOwner == session[0]

    def delete_own(self, path: str) -> None:
        """Delete the ephemeral key ``path`` if this session made it (``create_ephemeral``). One of another session
        stays: this session's went with it (expired), and another daemon has made the key since."""
        def attempt() -> None:
            _, stat = self.get_stats([path])[path]
            if not self.owns(stat):
                return
            transaction = self.transaction()
            transaction.delete(path, version=stat.version)
            try:
                self._commit(transaction, f"deletion of {path}")
            except TransactionFailed as exc:
                if not isinstance(exc.cause, NoNodeError):
                    raise  # its value changed meanwhile: looked at again
        self.optimistic(attempt)

    def subtree(self, root: str) -> list[str]:
        """Every path under ``root`` (inclusive), parents first; one round trip per level."""
        found: list[str] = []
        level = [root]
        while level:
            kids = self.children_many(level)
            found.extend(path for path in level if kids[path] is not None)
            level = [f"{path.rstrip('/')}/{name}" for path in level for name in (kids[path] or [])]
        return found

    def delete(self, roots: Iterable[str], guard: Any = None) -> None:
        """Recursive delete of several subtrees as one transaction (children first); ``guard`` as in
        ``write``."""
        paths: list[str] = []
        for root in roots:
            paths.extend(self.subtree(root))
        if not paths:
            return
        transaction = self.client.transaction()
        if guard is not None:
            guard.add_to(transaction)
        for path in sorted(set(paths), key=lambda p: (-p.count("/"), p)):
            transaction.delete(path)
        self._commit(transaction, f"deletion under {_common_root(paths)}")

    def optimistic(self, attempt: Callable[[], T], attempts: int = 8) -> T:
        """Run ``attempt`` (read, build a version-guarded transaction, commit) until it
        commits; a conflict that persists ends as 409. The pause between attempts doubles
        (with jitter), so writers that collided spread out instead of colliding again."""
        for tried in range(attempts):
            try:
                return attempt()
            except TransactionFailed as exc:
                if not isinstance(exc.cause, (BadVersionError, NodeExistsError, NoNodeError)) or tried == attempts - 1:
                    raise
                time.sleep(random.uniform(0.002, min(0.25, 0.01 * 2 ** tried)))
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def in_turn(self, lock: threading.Lock, what: str) -> Iterator[None]:
        """This daemon's changes of one kind wait for each other (within the ZooKeeper bound) instead of
        retrying against each other: eight threads' optimistic transactions on one object ran out of
        attempts. Other daemons' changes are still settled by the transactions' version guards."""
        if not lock.acquire(timeout=self.remaining()):
            raise ServiceUnavailable(f"ZooKeeper did not complete the {what} ahead of this one within "
                                     f"{self.request_timeout:g} s (pvc.zookeeper.request_timeout)")
        try:
            yield
        finally:
            lock.release()

    def transaction(self) -> Any:
        """A raw kazoo transaction for changes that mix creates, sets, deletes and checks."""
        self.require()
        return self.client.transaction()

    def commit(self, transaction: Any, what: str = "transaction") -> None:
        self._commit(transaction, what)


def _common_root(keys: Iterable[str]) -> str:
    keys = list(keys)
    if not keys:
        return "/"
    parts = [key.split("/") for key in keys]
    common = []
    for group in zip(*parts, strict=False):
        if len(set(group)) != 1:
            break
        common.append(group[0])
    return "/".join(common) or "/"


def _transaction_error(exc: Exception, what: str) -> ApiError:
    if isinstance(exc, NodeExistsError):
        reason = "a key already exists (changed concurrently?)"
    elif isinstance(exc, NoNodeError):
        reason = "a key or its parent does not exist (changed concurrently?)"
    elif isinstance(exc, BadVersionError):
        reason = "the object was changed by a concurrent request"
    elif isinstance(exc, NotEmptyError):
        reason = "a key gained children meanwhile"
    elif isinstance(exc, UNREACHABLE):
        return ServiceUnavailable(f"ZooKeeper became unreachable during the {what}")
    else:
        reason = type(exc).__name__
    return TransactionFailed(f"ZooKeeper rejected the {what}: {reason}; nothing was changed", exc)

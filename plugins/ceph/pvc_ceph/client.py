"""The daemon's connection to Ceph: librados/librbd bindings with a timeout on every call.

Bindings rather than the ``ceph``/``rbd`` CLIs: a CLI call costs 140-200 ms of
Python start-up (``rbd`` 28-55 ms) against milliseconds for the same call in
process (bench/bench_ceph.py measures both). Every call is bounded; a cluster
that does not answer is a 503, never a hung request.

librados bounds each operation by the handle's ``rados_*_op_timeout`` (the
``timeout`` argument of ``mon_command`` and ``connect`` is ignored by the
bindings), so a request that made two calls against a frozen cluster answered
after twice ``ceph.timeout``, and nothing can cut a call short in the calling
thread. A request's storage operation therefore runs in a worker thread
(``bounded``) while the request waits at most ``ceph.timeout`` for it; a call
that is long on purpose (a volume's full copy or removal, operation by
operation still bounded by librados) holds that wait open (``long``). An
operation the request stops waiting for goes on in its worker and finishes
wholly: Ceph and ZooKeeper are not left disagreeing.
"""

from __future__ import annotations

import contextvars
import errno
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from pvc_core import deadlines
from pvc_core.errors import ApiError, Conflict, ServiceUnavailable

log = logging.getLogger("pvc.ceph")

T = TypeVar("T")
DIAGNOSIS = 0.08  # of ceph.timeout: how long an operation that ran out of time may take to say why
SETTLE_WITHIN = 600.0  # how long an unknown outcome is looked at again until Ceph answers, seconds
WORKERS = 64  # storage operations in flight at once; more wait their turn, within their own bound
LONG_POLL = 0.2  # how often a request waiting on a long call looks whether it has ended
_inside = threading.local()  # the operation a worker thread is running (CephClient.bounded)


class _Operation:
    """Where one bounded operation stands: its wait restarts after each long call ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since = time.monotonic()
        self.long = 0
        self.answered = False  # the request has been answered 503 while the operation went on
        self.failed = False  # the operation failed before that: its own error is the answer

    def deadline(self, timeout: float) -> float:
        with self.lock:
            return float("inf") if self.long else self.since + timeout


class _Handle:
    """A connected ``rados.Rados`` and how many threads are using it."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self.users = 0
        self.retired = False

    def close(self) -> None:
        try:
            self.cluster.shutdown()
        except Exception:  # noqa: BLE001 - closing a broken handle
            log.debug("error closing the Ceph handle", exc_info=True)


class CephClient:
    """One lazily opened cluster handle, reopened after a failure."""

    def __init__(self, conffile: str, name: str, keyring: str | None, timeout: float,
                 mon_host: str | None = None):
        self.conffile = conffile
        self.name = name
        self.keyring = keyring
        self.timeout = timeout
        self.mon_host = mon_host
        self._handle: _Handle | None = None
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ceph-call")
        self._closing = threading.Event()

    def unavailable(self, detail: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"Ceph is unreachable (conf {self.conffile}, {self.name}): {detail}")

    # -- the cluster handle, shared by every thread ------------------------------------------

    def _connect(self) -> _Handle:
        import rados
        seconds = str(int(math.ceil(self.timeout)))  # librados wants whole seconds here
        conf = {"client_mount_timeout": seconds, "rados_mon_op_timeout": seconds,
                "rados_osd_op_timeout": seconds}
        if self.keyring:
            conf["keyring"] = self.keyring
        if self.mon_host:
            conf["mon_host"] = self.mon_host
        try:
            cluster = rados.Rados(conffile=self.conffile, name=self.name, conf=conf)
            cluster.connect(timeout=int(max(1, self.timeout)))
        except (rados.Error, OSError) as exc:
            raise self.unavailable(str(exc) or type(exc).__name__) from None
        return _Handle(cluster)

    @contextmanager
    def handle(self) -> Iterator[Any]:
        """The connected cluster (``rados.Rados``), for the calls made inside.

        A handle that fails is replaced (``reset``), but it is shut down only
        when the last thread using it is done: librados frees it on shutdown,
        and a call still running on it then corrupted the heap (seen with a
        frozen cluster and requests abandoned by ``bounded``).
        """
        with self._lock:
            if self._handle is None:
                self._handle = self._connect()
            handle = self._handle
            handle.users += 1
        try:
            yield handle.cluster
        finally:
            with self._lock:
                handle.users -= 1
                close = handle.retired and handle.users == 0
            if close:
                handle.close()

    def reset(self) -> None:
        """The handle failed: the next call connects anew; the old one closes once unused."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            handle.retired = True
            close = handle.users == 0
        if close:
            handle.close()

    @contextmanager
    def ioctx(self, pool: str, missing: Exception | None = None) -> Iterator[Any]:
        """An I/O context on ``pool``, on the newest OSD map (a pool made or re-made by another request
        or daemon has a new id that a stale map does not know). A pool Ceph does not have raises
        ``missing``, or gives None when that is None."""
        import rados
        with self.handle() as cluster:
            try:
                cluster.wait_for_latest_osdmap()
                ioctx = cluster.open_ioctx(pool)
            except rados.ObjectNotFound:
                if missing is not None:
                    raise missing from None
                ioctx = None
            except rados.Error as exc:
                self.reset()
                raise self.unavailable(f"open pool {pool}: {exc}") from None
            try:
                yield ioctx
            finally:
                if ioctx is not None:
                    ioctx.close()

    def run(self, prefix: str, **args: Any) -> tuple[int, str, str]:
        """A monitor command: (return code, output, Ceph's own message). Unreachable is 503."""
        import rados
        command = {"prefix": prefix, **args}
        try:
            with self.handle() as cluster:
                ret, out, err = cluster.mon_command(json.dumps(command), b"", timeout=int(max(1, self.timeout)))
        except rados.Error as exc:
            self.reset()
            raise self.unavailable(f"{prefix}: {exc}") from None
        if ret in (-errno.ETIMEDOUT, -errno.ENOTCONN, -errno.ESHUTDOWN):
            self.reset()  # the monitors did not answer: reconnect next time
            raise self.unavailable(f"{prefix}: {err.strip() or errno.errorcode.get(-ret, ret)}")
        return ret, out.decode("utf-8", errors="replace"), err.strip()

    def mon_command(self, prefix: str, **args: Any) -> str:
        """A monitor command that must succeed (statistics); text output unless ``format`` is given."""
        ret, out, err = self.run(prefix, **args)
        if ret != 0:
            raise self.unavailable(f"{prefix} failed ({ret}): {err}")
        return out

    # -- one request's storage operation, bounded as a whole ----------------------------------

    def bounded(self, what: str, pool: str | None, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)``, answered within ``ceph.timeout`` of its start or a 503.

        An operation on ``pool`` that runs out of time while Ceph answers is a 409
        naming the pool's inactive placement groups (Ceph waits for them without
        end), asked in the last ``DIAGNOSIS`` × ``ceph.timeout`` of the bound. Outside a request
        (the collector, a provisioner task) and inside an operation already
        bounded, ``function`` is simply called: librados bounds each call.
        """
        started = deadlines.started()
        if started is None or getattr(_inside, "operation", None) is not None:
            return function(*args, **kwargs)
        operation = _Operation()
        # in a copy of the request's context: the operation's log lines carry the request id
        future = self._workers.submit(contextvars.copy_context().run, self._work, operation, started, function,
                                      args, kwargs)
        window = self.timeout * (1 - DIAGNOSIS) if pool is not None else self.timeout  # the answer within the bound
        while True:
            wait = operation.deadline(window) - time.monotonic()
            if wait <= 0 or future.done():
                break
            try:
                return future.result(timeout=min(wait, LONG_POLL))
            except TimeoutError:
                if future.done():  # the function's own TimeoutError, not the wait's
                    break
        with operation.lock:
            operation.answered = not operation.failed
        if future.done() or not operation.answered:  # a failure on its way out is its own answer
            return future.result()
        future.add_done_callback(lambda done: self._finished_late(what, done))
        stalled = self._diagnose(what, pool) if pool is not None else None
        if stalled is not None:
            raise stalled
        raise self.unavailable(f"{what}: no answer within ceph.timeout ({self.timeout:g} s); if Ceph answers "
                               "later, the operation is completed and recorded then")

    @staticmethod
    def answered_early() -> bool:
        """Called where an operation fails: True when its request has been answered 503 already, so that
        nobody learns of this failure and what it left half-done must be looked at again; from then on the
        request waits for this failure as its answer instead."""
        operation = getattr(_inside, "operation", None)
        if operation is None:
            return False
        with operation.lock:
            operation.failed = True
            return operation.answered

    def _diagnose(self, what: str, pool: str) -> ApiError | None:
        """``stalled``, within a short wait of its own (a frozen Ceph does not answer it either)."""
        future = self._workers.submit(self.stalled, what, pool)
        try:
            return future.result(timeout=DIAGNOSIS * self.timeout)
        except TimeoutError:
            return None

    def stalled(self, what: str, pool: str) -> ApiError | None:
        """A 409 for ``what`` when ``pool`` has placement groups that are not active: Ceph holds every
        operation on such a pool until they are, which is not Ceph being unreachable."""
        try:
            ret, out, _ = self.run("pg ls-by-pool", poolstr=pool, format="json")
            data = json.loads(out or "{}") if ret == 0 else {}
        except (ApiError, ValueError):
            return None
        stats = data.get("pg_stats", []) if isinstance(data, dict) else data
        states = [str(pg.get("state", "")) for pg in stats if isinstance(pg, dict)]
        inactive = [state for state in states if "active" not in state.split("+")]
        if not inactive:
            return None
        return Conflict(f"ERROR: Failed to {what}: the placement groups of pool \"{pool}\" are not active "
                        f"({len(inactive)} of {len(states)} are {', '.join(sorted(set(inactive)))}); Ceph stores "
                        "nothing in the pool until they are (are enough OSDs up and in for its copies?)")

    @contextmanager
    def long(self) -> Iterator[None]:
        """A call that may take long on a healthy cluster and reports no progress (a volume's full copy):
        the operation's wait stays open while it runs, bounded operation by operation by librados, and
        starts again after it."""
        operation = getattr(_inside, "operation", None)
        if operation is None:
            yield
            return
        with operation.lock:
            operation.long += 1
        try:
            yield
        finally:
            with operation.lock:
                operation.long -= 1
                operation.since = time.monotonic()

    def progress(self) -> Callable[[int, int], int]:
        """An ``on_progress`` callback for librbd: a report is Ceph answering, so an operation that has
        used half its wait starts it again (a large volume's removal takes as long as it needs while Ceph
        works; a small one stays within ``ceph.timeout`` of its start)."""
        operation = getattr(_inside, "operation", None)
        half = self.timeout / 2

        def report(_done: int, _total: int) -> int:
            if operation is not None:
                with operation.lock:
                    now = time.monotonic()
                    if now - operation.since > half:
                        operation.since = now
            return 0
        return report

    @staticmethod
    def _work(operation: _Operation, started: float, function: Callable[..., T], args: tuple, kwargs: dict) -> T:
        _inside.operation = operation
        try:
            with deadlines.request(started):  # its ZooKeeper calls keep the request's bound
                return function(*args, **kwargs)
        finally:
            _inside.operation = None

    @staticmethod
    def _finished_late(what: str, future: Future) -> None:
        error = future.exception()
        if error is None:
            log.warning("%s: Ceph answered after its request was answered 503; the operation is done", what)
        else:
            log.warning("%s: Ceph answered after its request was answered 503; the operation failed: %s",
                        what, getattr(error, "message", None) or error)

    def later(self, what: str, function: Callable[..., Any], *args: Any,
              then: Callable[[], None] | None = None) -> None:
        """``function(*args)`` in the background once Ceph (or ZooKeeper: any 503) answers: tried again every
        ``ceph.timeout`` while it is unreachable, for up to ``SETTLE_WITHIN`` seconds; ``then()`` after the
        last try, whatever its outcome (an upload's hold, kept until its rollback is done or given up)."""
        def attempt() -> None:
            give_up = time.monotonic() + SETTLE_WITHIN
            while not self._closing.is_set():
                try:
                    function(*args)
                    log.info("%s: done once it could be", what)
                    return
                except ServiceUnavailable as exc:
                    if time.monotonic() > give_up:
                        log.error("%s: no answer for %.0f s; given up: %s", what, SETTLE_WITHIN, exc.message)
                        return
                except Exception:  # noqa: BLE001 - a background repair must not die silently
                    log.exception("%s failed", what)
                    return
                self._closing.wait(self.timeout)

        def run() -> None:
            try:
                attempt()
            finally:
                if then is not None:
                    then()
        threading.Thread(target=run, name="ceph-settle", daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        self._workers.shutdown(wait=False, cancel_futures=True)
        self.reset()

"""The extent of one API request, which every service's bound is measured against.

A request makes several calls to ZooKeeper or Ceph. Bounding each call alone
let a request that made two of them against a frozen service answer after
twice the configured timeout. Each service's wait therefore ends at a point
of the request: its start plus that service's timeout, for ZooKeeper; the
start of its storage operation plus ``ceph.timeout``, for Ceph. The start is
kept per thread, and handed to the threads that do the request's work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_scope = threading.local()


@contextmanager
def request(started: float | None = None) -> Iterator[None]:
    """The calls made inside belong to one request that began at ``started`` (now by default)."""
    previous = getattr(_scope, "started", None)
    _scope.started = time.monotonic() if started is None else started
    try:
        yield
    finally:
        _scope.started = previous


def started() -> float | None:
    """When the current request began; None outside one (background work: the collector, tasks)."""
    return getattr(_scope, "started", None)


def remaining(bound: float, floor: float = 0.25) -> float:
    """How long the next wait of a service bounded by ``bound`` may last within this request.

    Never below ``floor`` × ``bound``: a request that is long on purpose
    (``wait=true``, Ceph work first) still gets a fair wait for each call, and a
    working service answers in milliseconds. Outside a request, ``bound``.
    """
    begun = started()
    if begun is None:
        return bound
    return max(floor * bound, min(bound, begun + bound - time.monotonic()))

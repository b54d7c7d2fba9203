"""What the pool, volume, snapshot and OSD modules share: the runtime, the Ceph client, stats reading."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def bounded(what: str, pool: int | None = None) -> Callable[[F], F]:
    """A storage operation of a request: answered within ``ceph.timeout`` or 503 (``CephClient.bounded``).

    ``what`` is formatted with the method's arguments (``'create RBD volume "{1}"'``); ``pool``
    is the position of the argument naming the pool the operation works in, if any.
    """
    def wrap(method: F) -> F:
        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            return self.client.bounded(what.format(*args), args[pool] if pool is not None else None,
                                       method, self, *args, **kwargs)
        return run  # type: ignore[return-value]
    return wrap


class CephArea:
    def __init__(self, runtime: Any, client: Any):
        self.runtime = runtime
        self.client = client

    @property
    def zk(self) -> Any:
        return self.runtime.zk

    def read_stats(self, paths: Iterable[str]) -> dict[str, dict]:
        """Parsed JSON of several ``.../stats`` keys (pipelined); unreadable or missing reads as ``{}``."""
        paths = list(paths)
        values = self.zk.get_many(paths)
        out = {}
        for path in paths:
            try:
                data = json.loads(values[path] or "{}")
            except ValueError:
                data = {}
            out[path] = data if isinstance(data, dict) else {}
        return out

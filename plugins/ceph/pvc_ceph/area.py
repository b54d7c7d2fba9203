"""What the pool, volume, snapshot and OSD modules share: the runtime, the Ceph client, stats reading."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


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

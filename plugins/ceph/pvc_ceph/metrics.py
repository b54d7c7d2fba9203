"""The ceph plugin's part of ``GET /metrics``: each pool's usage as last collected.

The statistics collector (this daemon's, another daemon's, or v0.6 node
daemons') writes ``/ceph/pools/<pool>/stats``; a watched view of those keys,
started by the first scrape, answers every later scrape from memory: a scrape
never waits for Ceph.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from . import schema

# Metric name, help text, key of the pool's stats document (ceph.md §2.3).
POOL_GAUGES = (
    ("pvc_ceph_pool_used_bytes", "Bytes stored in the pool (Ceph's bytes_used)", "used_bytes"),
    ("pvc_ceph_pool_free_bytes", "Bytes the pool may still store (Ceph's max_avail)", "free_bytes"),
    ("pvc_ceph_pool_objects", "Objects in the pool", "num_objects"),
)


class CephMetrics:
    def __init__(self, runtime: Any):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        pools = self.runtime.view(schema.POOLS, ("stats",)).snapshot()
        families = [GaugeMetricFamily(name, text, labels=["pool"]) for name, text, _key in POOL_GAUGES]
        for pool, entry in sorted(pools.items()):
            try:
                stats = json.loads(entry.get("stats") or "{}")
            except ValueError:
                continue
            if not isinstance(stats, dict):
                continue
            for family, (_name, _text, key) in zip(families, POOL_GAUGES, strict=True):
                value = stats.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    family.add_metric([pool], value)
        yield from families

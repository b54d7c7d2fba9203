"""The vm plugin's part of ``GET /metrics``: VMs by state, from the watched view's state index."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from . import schema


class VMMetrics:
    def __init__(self, runtime: Any):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        counts = self.runtime.service("vm").view.counts("state")
        vms = GaugeMetricFamily("pvc_vms", "VMs by state (every v0.6 state, 0 when none; an absent key reads \"\")",
                                labels=["state"])
        for state in sorted(set(schema.STATES) | set(counts)):
            vms.add_metric([state], counts.get(state, 0))
        yield vms

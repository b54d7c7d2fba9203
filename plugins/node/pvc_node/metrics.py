"""The node plugin's part of ``GET /metrics``: nodes by daemon and domain state, from the watched view."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric


class NodeMetrics:
    def __init__(self, runtime: Any):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        entries = self.runtime.service("node").entries()
        pairs = Counter((entry.get("daemonstate") or "", entry.get("domainstate") or "") for entry in entries.values())
        nodes = GaugeMetricFamily("pvc_nodes", "Nodes by daemon state and domain state (an absent key reads \"\")",
                                  labels=["daemon_state", "domain_state"])
        for (daemon, domain), count in sorted(pairs.items()):
            nodes.add_metric([daemon, domain], count)
        yield nodes

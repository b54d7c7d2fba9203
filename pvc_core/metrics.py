"""Prometheus metrics of one daemon: ``GET /api/v1/metrics`` (off unless ``pvc.metrics.enabled``).

What an operator watches a daemon by: its requests (count and latency per
route template, method and status, and how many are in flight), whether it
holds its ZooKeeper session, how big and how current its watched views are,
the queue's depth, how long tasks took, and the cluster as this daemon sees it
(each plugin contributes its gauges through the ``pvc_metrics`` hook: nodes by
state, VMs by state, Ceph pools' usage). Cluster gauges come from the views
the daemon keeps anyway; the queue depth and the task figures are one bounded
call each (Huey's pending count; one grouped statement over the task records,
so the worker's durations are seen without the worker serving anything).

Each daemon has its own ``CollectorRegistry`` (the test suite runs several
daemons, and nothing here may outlive its runtime). A collector that fails (a
database that does not answer) leaves its metrics out of that scrape and says
so in ``pvc_metrics_collector_up{collector=...}``; the scrape itself answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.metrics import disable_created_metrics
from prometheus_client.utils import floatToGoString

from .routes import Response, Route
from .shapes import TEXT

log = logging.getLogger("pvc.metrics")

# The text exposition format 0.0.4, which every Prometheus server reads.
MEDIA_TYPE = "text/plain; version=0.0.4"
CONTENT_TYPE = MEDIA_TYPE + "; charset=utf-8"
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TASK_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# A method a client made up is "other": label values must not be the client's to multiply.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
UNMATCHED = "unmatched"  # the route label of a request that matched no route (unknown path, 405, OPTIONS)


class Metrics:
    """The registry of one runtime and the request instruments the dispatcher feeds."""

    def __init__(self, runtime: Any):
        disable_created_metrics()  # the *_created series double the output and say nothing here
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "pvc_http_request_duration_seconds",
            "Requests by method, route template and status: count and seconds from dispatch to the last byte sent",
            ("method", "route", "status"), buckets=REQUEST_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("pvc_http_requests_in_flight", "Requests dispatched and not yet answered",
                               registry=self.registry)
        ProcessCollector(registry=self.registry)
        self._children: dict[tuple[str, int, str], Any] = {}
        self._templates: dict[int, str] = {}
        self._results: dict[str, bool] = {}
        self._scrape = threading.Lock()
        collectors: list[tuple[str, Any]] = [
            ("zookeeper", ZooKeeperCollector(runtime)), ("views", ViewCollector(runtime)),
            ("queue", QueueCollector(runtime)), ("tasks", TaskCollector(runtime))]
        for name, contributed in runtime.host.call_each("pvc_metrics", runtime=runtime):
            collectors.extend((name, collector) for collector in contributed or ())
        for name, collector in collectors:
            self.registry.register(_Guarded(name, collector, self._results))
        self.registry.register(_Outcomes(self._results))

    def request_ended(self, method: str, route: Route | None, status: Any, seconds: float) -> None:
        """One answered request (CherryPy's ``on_end_request``): cheap, it runs on every request."""
        code = str(status).split(" ", 1)[0]
        key = (method, id(route), code)
        child = self._children.get(key)
        if child is None:
            template = UNMATCHED if route is None else route.full_paths()[0]
            child = self.requests.labels(method if method in METHODS else "other", template, code)
            self._children[key] = child
        child.observe(seconds)
        self.in_flight.dec()

    def exposition(self) -> bytes:
        """The whole text exposition; one scrape at a time, so each reports its own collectors' outcomes."""
        with self._scrape:
            self._results.clear()
            return generate_latest(self.registry)


class _Guarded:
    """A collector whose failure costs its own metrics only, recorded for ``pvc_metrics_collector_up``."""

    def __init__(self, name: str, collector: Any, results: dict[str, bool]):
        self.name = name
        self.collector = collector
        self.results = results
        self.failing = False  # logged when it starts failing and when it answers again, not every scrape

    def collect(self) -> Iterable[Metric]:
        try:
            families = list(self.collector.collect())
        except Exception as exc:  # noqa: BLE001 - one unreachable service must not fail the scrape
            if not self.failing:
                log.warning("metrics: collector %s failed, its metrics are left out until it answers: %s",
                            self.name, getattr(exc, "message", None) or exc)
            self.failing = True
            self.results[self.name] = False
            return []
        if self.failing:
            log.info("metrics: collector %s answers again", self.name)
            self.failing = False
        self.results.setdefault(self.name, True)
        return families


class _Outcomes:
    """Registered last: whether each collector answered in this scrape."""

    def __init__(self, results: dict[str, bool]):
        self.results = results

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pvc_metrics_collector_up",
                               "1 when the collector answered in this scrape, 0 when it failed (its metrics "
                               "are missing)", labels=["collector"])
        for name, ok in sorted(self.results.items()):
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up


class ZooKeeperCollector:
    def __init__(self, runtime: Any):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("pvc_zookeeper_connected", "1 while the daemon's ZooKeeper session is connected",
                                value=1.0 if self.runtime.zk.connected else 0.0)


class ViewCollector:
    """Every watched view of this process (``Runtime.view``), from memory."""

    def __init__(self, runtime: Any):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        objects = GaugeMetricFamily("pvc_view_objects", "Children the watched view holds (VMs, nodes, networks...)",
                                    labels=["view"])
        ready = GaugeMetricFamily("pvc_view_ready", "1 while the view is warm and follows its watches",
                                  labels=["view"])
        stale = GaugeMetricFamily("pvc_view_staleness_seconds",
                                  "Seconds since the view last held everything ZooKeeper committed (0 while ready)",
                                  labels=["view"])
        for root, view in sorted(dict(self.runtime.views).items()):
            objects.add_metric([root], view.size())
            ready.add_metric([root], 1.0 if view.ready else 0.0)
            stale.add_metric([root], view.staleness())
        yield from (objects, ready, stale)


class QueueCollector:
    def __init__(self, runtime: Any):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        huey = self.runtime.huey
        yield GaugeMetricFamily("pvc_queue_pending_tasks", "Tasks in the queue waiting for a worker",
                                value=huey.pending_count())
        yield GaugeMetricFamily("pvc_queue_scheduled_tasks", "Tasks scheduled for later (retries, delays)",
                                value=huey.scheduled_count())


class TaskCollector:
    """Task records (``pvc_core.taskrecords``): what the workers did, read from the database."""

    def __init__(self, runtime: Any):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        self.runtime.ensure_schema()
        tasks = self.runtime.tasks
        counts = tasks.counts()
        durations = tasks.durations(TASK_BUCKETS)
        records = GaugeMetricFamily("pvc_tasks", "Task records kept, by task name and state",
                                    labels=["name", "state"])
        for (name, state), count in sorted(counts.items()):
            records.add_metric([name, state], count)
        yield records
        histogram = HistogramMetricFamily(
            "pvc_task_duration_seconds",
            "Seconds from start to end of the finished task records kept, by task name and outcome",
            labels=["name", "state"])
        for (name, state), (cumulative, total, count) in sorted(durations.items()):
            buckets = [(floatToGoString(bound), value) for bound, value in zip(TASK_BUCKETS, cumulative, strict=True)]
            histogram.add_metric([name, state], buckets + [("+Inf", count)], sum_value=total)
        yield histogram


def build(runtime: Any) -> Metrics | None:
    """The runtime's metrics, or None when ``pvc.metrics.enabled`` is off (nothing is measured then)."""
    return Metrics(runtime) if runtime.config["metrics.enabled"] else None


def scrape(ctx: Any, params: dict) -> Response:
    return Response(raw=ctx.runtime.metrics.exposition(), content_type=CONTENT_TYPE)


def routes(runtime: Any) -> list[Route]:
    """``GET /metrics`` when enabled (else the path is unknown: 404); a token of scope read or above is
    needed when ``pvc.metrics.auth`` is ``read``."""
    config = runtime.config
    if not config["metrics.enabled"]:
        return []
    return [Route("GET", "/metrics", scrape, summary="Prometheus metrics of this daemon (text format 0.0.4)",
                  auth=config["metrics.auth"] == "read", tags=("core",), media_type=MEDIA_TYPE, returns=TEXT)]

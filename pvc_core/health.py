"""Whether this daemon can serve: ``GET /api/v1/health`` for load balancers, and systemd's readiness
and watchdog notifications.

``GET /api/v1/`` answers 200 while ZooKeeper is down and ``/status`` needs a
token, so neither tells a load balancer whether to send requests here. The
health answer is unauthenticated and says only which dependency is reachable:
no names, addresses, counts or anything else of the cluster.

Each dependency is probed with a real round trip (ZooKeeper ``exists /``,
``SELECT 1``, the queue's length, Ceph's ``health``), in a thread of its own,
and the answer waits for each at most its own configured timeout; a probe
that is still hanging from an earlier request is reported as such instead of
being started again. Answers are reused for ``HEALTH_CACHE`` seconds so that
a probe every 100 ms from several balancers costs the dependencies nothing.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import db
from . import queue as queue_module

HEALTH_CACHE = 1.0


@dataclass
class Probe:
    """One dependency: ``check`` raises when it cannot be used; ``timeout`` is its configured bound,
    and ``setting`` names it in the answer."""

    name: str
    check: Callable[[], Any]
    timeout: float
    setting: str


class Health:
    def __init__(self, probes: list[Probe]):
        self.probes = probes
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._cached: tuple[float, bool, dict] | None = None

    def report(self) -> tuple[bool, dict]:
        """``(healthy, {"status": ..., "checks": {name: {"status", "message"}}})``."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < HEALTH_CACHE:
                return self._cached[1], self._cached[2]
            results: dict[str, dict] = {}
            started: list[tuple[Probe, threading.Thread | None]] = []
            for probe in self.probes:
                if probe.name in self._running and self._running[probe.name].is_alive():
                    started.append((probe, None))
                    continue
                thread = threading.Thread(target=self._probe, args=(probe, results),
                                          name=f"pvc-health-{probe.name}", daemon=True)
                self._running[probe.name] = thread
                thread.start()
                started.append((probe, thread))
            deadline = time.monotonic() + max((probe.timeout for probe in self.probes), default=0)
            for probe, thread in started:
                if thread is None:
                    results[probe.name] = _down(f"an earlier probe is still waiting for an answer ({probe.setting} "
                                                f"is {probe.timeout:g} s)")
                    continue
                thread.join(max(0.0, min(probe.timeout, deadline - time.monotonic())))
                if probe.name not in results:
                    results[probe.name] = _down(f"no answer within {probe.timeout:g} s ({probe.setting})")
            checks = {probe.name: results[probe.name] for probe in self.probes}
            healthy = all(check["status"] == "ok" for check in checks.values())
            body = {"status": "ok" if healthy else "unavailable", "checks": checks}
            self._cached = (time.monotonic(), healthy, body)
            return healthy, body

    @staticmethod
    def _probe(probe: Probe, results: dict) -> None:
        try:
            probe.check()
        except Exception as exc:  # noqa: BLE001 - any failure is "unavailable"; its type says which
            results[probe.name] = _down(f"unreachable ({type(exc).__name__})")
        else:
            results[probe.name] = {"status": "ok", "message": "reachable"}


def _down(message: str) -> dict:
    return {"status": "unavailable", "message": message}


def core_probes(runtime: Any) -> list[Probe]:
    """ZooKeeper, the database and the queue: what the core itself needs."""
    config = runtime.config

    def zookeeper() -> None:
        runtime.zk.exists("/")

    def database() -> None:
        with runtime.database.connection_context():
            runtime.database.execute_sql("SELECT 1")

    def queue() -> None:
        runtime.huey.pending_count()

    request_timeout = config.get("zookeeper.request_timeout", 5.0)
    return [Probe("zookeeper", zookeeper, request_timeout, "zookeeper.request_timeout"),
            Probe("database", database, db.TIMEOUT, "provisioner.database.timeout"),
            Probe("queue", queue, queue_module.SOCKET_TIMEOUT, "the queue timeout")]


# -- systemd ------------------------------------------------------------------------------------


def notify(message: str) -> bool:
    """Send one sd_notify message (``READY=1``, ``WATCHDOG=1``...) when systemd asked for them."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's ``WatchdogSec`` for this process, or None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


class Watchdog:
    """Pings systemd's watchdog while this daemon's own listener answers ``GET /api/v1/health``.

    The ping proves the whole HTTP path (acceptor, a worker, the dispatcher),
    not only that a thread is alive; a 503 (a dependency down) still counts as
    an answer, since restarting the daemon would not bring ZooKeeper back.
    """

    def __init__(self, host: str, port: int, tls: bool, interval: float):
        self.host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        self.port = port
        self.tls = tls
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pvc-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def answered(self) -> bool:
        import http.client
        import ssl
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # our own listener on this host
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.interval, context=context)
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.interval)
        try:
            connection.request("GET", "/api/v1/health")
            return connection.getresponse().status in (200, 503)
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.answered():
                notify("WATCHDOG=1")

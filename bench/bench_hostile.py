"""Benchmark how the real daemon serves a normal client while hostile connections come in.

Run as ``.venv/bin/python bench/bench_hostile.py [--rounds 3] [--requests 300] [--set threads_max=64] ...``
(``--set key=value`` is repeatable and writes the key into the daemon's ``pvc.api`` section, e.g.
``threads``, ``threads_max``, ``backlog``, ``header_timeout``, ``body_timeout``,
``max_connections_per_client``, ``socket_timeout``; without it the daemon's defaults are measured).
The first lines show each key's effective value: the --set one, the daemon's default, or that the
daemon does not know the key (a daemon from before these keys ignores them, as v0.6 does).

It starts a throwaway ZooKeeper and the real ``pvcapid`` (the core only,
authentication on with a random token, as bench_root.py does), then measures

1. baseline latency: a normal client from 127.0.0.1 sending sequential
   ``GET /api/v1/plugins`` with the ``X-Api-Key`` header, once over one
   keep-alive connection (http.client) and once with a fresh connection per
   request: p50, p99, max and errors (a non-200 answer, a timeout, a reset);
2. the same under a slow/idle attack: 200 connections from 127.0.0.2 (one
   selector thread), half "trickle" (the request line and then header bytes,
   one byte every 0.5-1 s, the headers never finished), half "idle" (connected,
   nothing sent); each reconnects 0.5-1 s after the server closes it, and
   the attack is held for ``--attack-seconds`` (15) at least, longer than the
   daemon's default header and idle timeouts. Printed: the figures with and
   without the attack, p99(attack)/p99(baseline), how many attacker
   connections the server closed, what it answered them before closing and
   after how long (medians), and how many the attacker still had open at the
   end. All attackers share one address, so a per-address cap meets them
   first; ``--set max_connections_per_client=0`` shows the other defences;
3. bursts: 1,000 simultaneous connections (asyncio), each one
   ``GET /api/v1/plugins`` with the key and ``Connection: close`` and a 30 s
   timeout, first spread over 127.0.1.1-127.0.1.16 (a crowd of clients), then
   all from 127.0.0.1 (one client): outcomes (status codes, timeouts,
   resets, refusals) and the per-connection wall time p50/p99/max.

``--rounds`` repeats 1 and 2; the tables show the medians of the rounds. A
pass of sequential requests stops after ``--requests`` requests or once it has
run ``--budget`` seconds, whichever comes first (a starved daemon would
otherwise take ``--requests`` x ``--timeout``; with the defaults, 10 s and
10 s, such a pass sends one request and the whole run stays under ~3
minutes); every request sent counts in
the latencies, a failed one at the time it failed, so a p99 is a lower bound
when there were timeouts. The daemon's threads, open descriptors and RSS are
sampled after each phase.

It prints figures and never asserts on speed; it exits 0 when it measured and
1 (with the log tails) when the setup failed. Everything it starts is stopped
in ``finally`` blocks (process groups), and everything binds or connects to
127.0.0.x only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import errno
import http.client
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import resource
import secrets
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from pvc_core.zkserver import ZooKeeperServer, free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_root import (  # noqa: E402 - a sibling script, not a package
    AUTH_PATH,
    CONFIG_TEMPLATE,
    CORE_ONLY,
    HOST,
    ROOT_PATH,
    THREADS,
    get,
    keep_or_remove,
    median,
    start_process,
    stop_process,
    tail,
    wait_ready,
)
from bench_vm import ms, revision, rss_mib, table  # noqa: E402

ATTACK_SOURCE = "127.0.0.2"
CROWD_SOURCES = [f"127.0.1.{index}" for index in range(1, 17)]
KINDS = ("trickle", "idle")
# What a trickle connection sends, one byte at a time: a request line, then header lines that never end.
TRICKLE_BYTES = (f"GET {AUTH_PATH} HTTP/1.1\r\n".encode()
                 + b"".join(b"X-Slow-%d: x\r\n" % index for index in range(10000)))
TRICKLE_GAP = (0.5, 1.0)     # seconds between two bytes of a trickle connection, and before reconnecting
ATTACK_CONNECT_TIMEOUT = 10.0  # seconds an attacker waits for its connect before it tries again
ATTACK_RAMP = 5.0            # seconds at most for the attacker connections to be open before measuring
ATTACK_SETTLE = 2.0          # then seconds more, so every trickle connection has sent bytes
RECOVERY_TIMEOUT = 120.0     # seconds at most for the daemon to answer again after an attack or a burst
SETTING_KEY = re.compile(r"[a-z][a-z0-9_]*")
# The pvc.api keys that bear on hostile connections, shown with their effective values.
CONNECTION_KEYS = ("threads", "threads_max", "backlog", "header_timeout", "body_timeout",
                   "max_connections_per_client", "socket_timeout")


# -- the normal client -------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(len(ordered) * fraction)) - 1)]


def failure(exc: BaseException) -> str:
    """A short name for why a request or connection failed."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed without answer"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def measure_client(port: int, token: str, requests: int, keep_alive: bool, timeout: float,
                   budget: float) -> dict:
    """Sequential authenticated GETs: latencies (s, failures included), errors by kind, server-side closes."""
    headers = {"X-Api-Key": token}
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    closes = 0
    connection: http.client.HTTPConnection | None = None
    started = time.monotonic()
    try:
        while len(latencies) < requests and time.monotonic() - started < budget:
            began = time.perf_counter()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
                connection.request("GET", AUTH_PATH, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    errors[f"HTTP {response.status}"] += 1
                if keep_alive and response.will_close:
                    closes += 1  # http.client opens a new connection for the next request
            except (OSError, http.client.HTTPException) as exc:
                errors[failure(exc)] += 1
                if connection is not None:
                    connection.close()
                connection = None
            latencies.append(time.perf_counter() - began)
            if not keep_alive and connection is not None:
                connection.close()
                connection = None
    finally:
        if connection is not None:
            connection.close()
    return {"sent": len(latencies), "p50": percentile(latencies, 0.50) * 1e3,
            "p99": percentile(latencies, 0.99) * 1e3, "max": max(latencies) * 1e3,
            "errors": sum(errors.values()), "kinds": errors, "closes": closes,
            "seconds": time.monotonic() - started}


def describe_counts(counts: collections.Counter | dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items(), key=lambda item: -item[1])) or "-"


def print_pass(label: str, result: dict, keep_alive: bool) -> None:
    closes = f", server closed the keep-alive connection {result['closes']} times" if keep_alive else ""
    print(f"  {label:<28} {result['sent']:>4} sent in {result['seconds']:5.1f} s  p50 {ms(result['p50']):>9}  "
          f"p99 {ms(result['p99']):>9}  max {ms(result['max']):>9}  errors {result['errors']}"
          f" ({describe_counts(result['kinds'])}){closes}", flush=True)


# -- the attacker ------------------------------------------------------------------------------


class Slot:
    """One attacker connection, reopened each time the server closes it."""

    def __init__(self, kind: str):
        self.kind = kind
        self.sock: socket.socket | None = None
        self.state = "waiting"  # waiting -> connecting -> open -> (closed) waiting
        self.since = 0.0        # when the current state began
        self.sent = 0
        self.next_send = 0.0
        self.answer = b""


class Attack(threading.Thread):
    """Slow and idle connections from one source address, kept up by one selector loop."""

    def __init__(self, port: int, count: int, source: str = ATTACK_SOURCE):
        super().__init__(name="attack", daemon=True)
        self.address = (HOST, port)
        self.source = source
        self.slots = [Slot(KINDS[index % 2]) for index in range(count)]
        self.selector = selectors.DefaultSelector()
        self.stopping = threading.Event()
        # kind -> the server's answer before it closed ("HTTP 408", "nothing", ...) -> lifetimes in seconds
        self.lifetimes: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
        self.connect_failures: collections.Counter = collections.Counter()
        self.connects = 0
        self.cpu = 0.0
        self.error: BaseException | None = None

    def open_count(self, kind: str | None = None) -> int:
        return sum(1 for slot in self.slots if slot.state == "open" and kind in (None, slot.kind))

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._tick()
        except BaseException as exc:  # reported by stop(); the measurement must not hang on it
            self.error = exc
        finally:
            self.cpu = time.thread_time()  # shares the GIL with the normal client: shown, so it can be judged

    def _tick(self) -> None:
        now = time.monotonic()
        wake = now + 0.1
        for slot in self.slots:
            if slot.state == "waiting" and now >= slot.since:
                self._connect(slot, now)
            elif slot.state == "connecting" and now - slot.since > ATTACK_CONNECT_TIMEOUT:
                self._drop(slot, now, failed="connect timeout")
            elif slot.state == "open" and slot.kind == "trickle" and now >= slot.next_send:
                self._trickle(slot, now)
            if slot.state == "open" and slot.kind == "trickle":
                wake = min(wake, slot.next_send)
        for key, events in self.selector.select(timeout=max(0.0, wake - time.monotonic())):
            slot = key.data
            now = time.monotonic()
            if slot.state == "connecting" and events & selectors.EVENT_WRITE:
                code = slot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    self._drop(slot, now, failed=errno.errorcode.get(code, str(code)))
                    continue
                slot.state, slot.since = "open", now
                slot.next_send = now + random.uniform(*TRICKLE_GAP)
                self.selector.modify(slot.sock, selectors.EVENT_READ, slot)
            elif slot.state == "open" and events & selectors.EVENT_READ:
                try:
                    data = slot.sock.recv(4096)
                except OSError:
                    data = b""
                if data:
                    slot.answer += data[:64 - len(slot.answer)]
                else:
                    self._drop(slot, now)

    def _connect(self, slot: Slot, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((self.source, 0))
            code = sock.connect_ex(self.address)
        except OSError as exc:
            code = exc.errno or -1
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.connect_failures[errno.errorcode.get(code, str(code))] += 1
            slot.since = now + 0.1
            return
        self.connects += 1
        slot.sock, slot.state, slot.since, slot.sent, slot.answer = sock, "connecting", now, 0, b""
        self.selector.register(sock, selectors.EVENT_WRITE, slot)

    def _trickle(self, slot: Slot, now: float) -> None:
        try:
            slot.sent += slot.sock.send(TRICKLE_BYTES[slot.sent:slot.sent + 1])
        except BlockingIOError:
            pass
        except OSError:
            self._drop(slot, now)
            return
        slot.next_send = now + random.uniform(*TRICKLE_GAP)

    def _drop(self, slot: Slot, now: float, failed: str | None = None) -> None:
        """The server closed the connection (or the connect failed): note it, reconnect at the attack's pace.

        Not at once: a hot reconnect loop would turn the attack into a connection flood whose rate is set by
        this process's CPU (which the normal client shares).
        """
        if failed:
            self.connect_failures[failed] += 1
        elif slot.state == "open":
            status = re.match(rb"HTTP/1\.[01] (\d{3})", slot.answer)
            answer = f"HTTP {status.group(1).decode()}" if status else ("other bytes" if slot.answer else "nothing")
            self.lifetimes[slot.kind].setdefault(answer, []).append(now - slot.since)
        self.selector.unregister(slot.sock)
        slot.sock.close()
        slot.sock, slot.state, slot.since = None, "waiting", now + random.uniform(*TRICKLE_GAP)

    def wait_open(self, timeout: float) -> float:
        """Seconds until every attacker connection was open at once (or timeout passed)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout and self.open_count() < len(self.slots):
            if self.error or not self.is_alive():
                break
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self) -> dict:
        """Stop the loop, close every connection; the figures of the whole attack."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=10)
        everything = {kind: [life for lives in self.lifetimes[kind].values() for life in lives] for kind in KINDS}
        summary = {"open": {kind: self.open_count(kind) for kind in KINDS},
                   "closed": {kind: len(everything[kind]) for kind in KINDS},
                   "lifetime": {kind: statistics.median(everything[kind]) if everything[kind] else None
                                for kind in KINDS},
                   "answers": {kind: {answer: (len(lives), statistics.median(lives))
                                      for answer, lives in self.lifetimes[kind].items()} for kind in KINDS},
                   "connects": self.connects, "failures": self.connect_failures,
                   "trickled": sum(slot.sent for slot in self.slots if slot.kind == "trickle"), "cpu": self.cpu}
        for slot in self.slots:
            if slot.sock is not None:
                slot.sock.close()
        self.selector.close()
        if self.error is not None:
            raise RuntimeError(f"the attacker loop failed: {self.error!r}")
        return summary


# -- bursts ------------------------------------------------------------------------------------


async def burst_one(port: int, source: str, request: bytes, timeout: float) -> tuple[str, float]:
    began = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
            writer.write(request)
            await writer.drain()
            answer = await reader.read()
        status = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
        outcome = f"HTTP {status.group(1).decode()}" if status else ("other bytes" if answer
                                                                         else "closed without answer")
    except (OSError, asyncio.IncompleteReadError) as exc:
        outcome = failure(exc)
    finally:
        if writer is not None:
            writer.close()
    return outcome, time.perf_counter() - began


async def burst_all(port: int, sources: list[str], count: int, request: bytes, timeout: float) -> list:
    return await asyncio.gather(*(burst_one(port, sources[index % len(sources)], request, timeout)
                                  for index in range(count)))


def burst(port: int, token: str, sources: list[str], count: int, timeout: float) -> dict:
    request = (f"GET {AUTH_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Api-Key: {token}\r\n"
               "Connection: close\r\n\r\n").encode()
    started = time.monotonic()
    results = asyncio.run(burst_all(port, sources, count, request, timeout))
    walls = [wall * 1e3 for _, wall in results]
    return {"outcomes": collections.Counter(outcome for outcome, _ in results), "seconds": time.monotonic() - started,
            "p50": percentile(walls, 0.50), "p99": percentile(walls, 0.99), "max": max(walls)}


# -- the daemon --------------------------------------------------------------------------------


def parse_settings(items: list[str]) -> dict[str, str]:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not SETTING_KEY.fullmatch(key) or not value.strip():
            raise ValueError(f"--set wants key=value (a pvc.api key), not {item!r}")
        settings[key] = value.strip()
    return settings


def effective_settings(settings: dict[str, str]) -> str:
    """The connection keys as the daemon will use them: --set, its default, or unknown to it (ignored).

    The defaults come from the schema of the pvc_core this interpreter imports, which is the one the daemon
    runs (same virtualenv and environment); a daemon that does not know a key keeps it unread (v0.6 rule).
    """
    try:
        from pvc_core.config import core_schema
        fields = core_schema().fields["api"].fields
    except (ImportError, AttributeError, KeyError) as exc:
        return ", ".join(f"{key}={value} (--set)" for key, value in settings.items()) + f" (schema unread: {exc})"
    shown = []
    for key in (*CONNECTION_KEYS, *(key for key in settings if key not in CONNECTION_KEYS)):
        known = key in fields
        if key in settings:
            shown.append(f"{key}={settings[key]} (--set{'' if known else '; UNKNOWN to this daemon: ignored'})")
        elif known:
            shown.append(f"{key}={getattr(fields[key], 'default', '?')}")
        else:
            shown.append(f"{key}: unknown to this daemon")
    return ", ".join(shown)


def write_config(path: str, data_dir: str, zk_port: int, port: int, token: str, settings: dict[str, str]) -> None:
    """bench_root's configuration (core only), with the --set keys added to its api section."""
    text = CONFIG_TEMPLATE.format(data_dir=data_dir, zk_port=zk_port, port=port, token=token,
                                  threads=settings.get("threads", THREADS), plugins=CORE_ONLY)
    extra = "".join(f"        {key}: {json.dumps(value)}\n" for key, value in settings.items() if key != "threads")
    if text.count("\n    api:\n") != 1:
        raise RuntimeError("bench_root.CONFIG_TEMPLATE has no single api section to add the --set keys to")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("\n    api:\n", "\n    api:\n" + extra))


def daemon_state(pid: int) -> str:
    """Threads, open descriptors and RSS of the daemon now."""
    threads = "?"
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            threads = next((line.split()[1] for line in handle if line.startswith("Threads:")), "?")
        descriptors = str(len(os.listdir(f"/proc/{pid}/fd")))
    except OSError:
        descriptors = "?"
    rss = rss_mib(pid)
    return f"{threads} threads, {descriptors} fds, RSS {'?' if rss is None else f'{rss:.0f} MiB'}"


def open_files_limit(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/limits", encoding="ascii") as handle:
            line = next((line for line in handle if line.startswith("Max open files")), "")
        return "/".join(line.split()[3:5]) or "?"
    except OSError:
        return "?"


def raise_open_files(needed: int) -> str:
    """Raise the soft open-files limit to the hard one when it is lower; describe the limit (the daemon inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    text = f"soft {soft}, hard {hard}"
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        text = f"soft {soft} raised to {hard}, hard {hard}"
    new_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if new_soft != resource.RLIM_INFINITY and new_soft < needed:
        text += f" (WARNING: below the ~{needed} this run needs)"
    return text


def recover(root_url: str, daemon: subprocess.Popen, log_path: str, what: str) -> float:
    """Seconds until the daemon answers again after an attack or a burst."""
    started = time.monotonic()
    wait_ready(root_url, daemon, f"pvcapid (after {what})", log_path, timeout=RECOVERY_TIMEOUT)
    return time.monotonic() - started


def check_alive(daemon: subprocess.Popen, log_path: str, what: str) -> None:
    if daemon.poll() is not None:
        raise RuntimeError(f"pvcapid exited with {daemon.returncode} during {what}; log {log_path}:\n"
                           f"{tail(log_path)}")


def preflight(port: int, token: str) -> None:
    url = f"http://{HOST}:{port}{AUTH_PATH}"
    with_key, _ = get(url, {"X-Api-Key": token})
    without, _ = get(url)
    print(f"Pre-flight: GET {AUTH_PATH} with the key -> {with_key}, without -> {without}")
    if (with_key, without) != (200, 401):
        raise RuntimeError(f"GET {AUTH_PATH} answered {with_key} with the key and {without} without "
                           "(expected 200 and 401)")


# -- one round ---------------------------------------------------------------------------------


def run_round(index: int, args: argparse.Namespace, port: int, token: str, daemon: subprocess.Popen,
              log_path: str) -> dict:
    root_url = f"http://{HOST}:{port}{ROOT_PATH}"
    measured: dict[str, dict] = {}
    print(f"\nround {index + 1}", flush=True)
    for mode, keep_alive in (("keep-alive", True), ("fresh", False)):
        measured[f"baseline {mode}"] = result = measure_client(port, token, args.requests, keep_alive,
                                                               args.timeout, args.budget)
        print_pass(f"baseline {mode}", result, keep_alive)
    attack = Attack(port, args.attackers)
    try:
        attack.start()
        started = time.monotonic()
        attack.wait_open(ATTACK_RAMP)
        time.sleep(ATTACK_SETTLE)
        print(f"  attack: {attack.open_count()}/{args.attackers} attacker connections open "
              f"{time.monotonic() - started:.1f} s after it began; daemon {daemon_state(daemon.pid)}", flush=True)
        for mode, keep_alive in (("keep-alive", True), ("fresh", False)):
            measured[f"attack {mode}"] = result = measure_client(port, token, args.requests, keep_alive,
                                                                 args.timeout, args.budget)
            print_pass(f"under attack {mode}", result, keep_alive)
        # Held for --attack-seconds at least, so the server's header and idle timeouts show in its figures.
        time.sleep(max(0.0, args.attack_seconds - (time.monotonic() - started)))
        under = daemon_state(daemon.pid)
        held = time.monotonic() - started
    finally:
        summary = attack.stop()
    check_alive(daemon, log_path, "the attack")
    summary["recovery"] = recover(root_url, daemon, log_path, "the attack")
    print(f"  attack stopped after {held:.1f} s: daemon {under} at its end; answers again "
          f"{summary['recovery']:.2f} s after it", flush=True)
    measured["attack"] = summary
    return measured


# -- reporting ---------------------------------------------------------------------------------


def print_latency_table(rounds: list[dict], args: argparse.Namespace) -> None:
    print(f"\nNormal client, sequential GET {AUTH_PATH} from {HOST} (medians of {len(rounds)} round(s); latencies "
          f"in ms; errors = non-200, timeouts at {args.timeout:g} s, resets)")
    rows = []
    for mode in ("keep-alive", "fresh"):
        base = [measured[f"baseline {mode}"] for measured in rounds]
        under = [measured[f"attack {mode}"] for measured in rounds]
        ratio = median(under, "p99") / median(base, "p99")
        for label, results in (("baseline", base), (f"{args.attackers} attackers", under)):
            rows.append([mode, label, f"{median(results, 'sent'):.0f}", f"{median(results, 'p50'):.2f}",
                         f"{median(results, 'p99'):.2f}", f"{median(results, 'max'):.2f}",
                         f"{median(results, 'errors'):.0f}",
                         f"{median(results, 'closes'):.0f}" if mode == "keep-alive" else "-",
                         f"{ratio:.1f}x" if label != "baseline" else ""])
    table(["client", "while", "sent", "p50", "p99", "max", "errors", "server closes", "p99 attack/baseline"], rows)


def print_attack_table(rounds: list[dict], attackers: int) -> None:
    print(f"\nAttacker connections from {ATTACK_SOURCE} ({attackers // 2} trickle + {attackers - attackers // 2} "
          "idle, each reopened when closed), per round")
    rows = []
    for number, measured in enumerate(rounds, 1):
        summary = measured["attack"]
        for kind in KINDS:
            lifetime = summary["lifetime"][kind]
            rows.append([str(number), kind, str(summary["closed"][kind]),
                         "-" if lifetime is None else f"{lifetime:.2f} s",
                         describe_answers(summary["answers"][kind]), str(summary["open"][kind])])
        rows.append([str(number), "all", f"{summary['connects']} connects, {summary['trickled']} bytes trickled",
                     f"attacker loop CPU {summary['cpu']:.1f} s", "connect failures: "
                     f"{describe_counts(summary['failures'])}", f"daemon answered {summary['recovery']:.2f} s after"])
    for kind in KINDS:
        lives = [measured["attack"]["lifetime"][kind] for measured in rounds
                 if measured["attack"]["lifetime"][kind] is not None]
        rows.append(["median", kind, f"{statistics.median(m['attack']['closed'][kind] for m in rounds):.0f}",
                     f"{statistics.median(lives):.2f} s" if lives else "-", "",
                     f"{statistics.median(m['attack']['open'][kind] for m in rounds):.0f}"])
    table(["round", "kind", "closed by the server", "median lifetime of those",
           "server's answer before closing: count (median lifetime)", "open at the end"], rows)


def describe_answers(answers: dict[str, tuple[int, float]]) -> str:
    return ", ".join(f"{answer} {count} ({lifetime:.2f} s)"
                     for answer, (count, lifetime) in sorted(answers.items(), key=lambda item: -item[1][0])) or "-"


def print_burst_table(bursts: list[tuple[str, dict]], count: int, timeout: float) -> None:
    print(f"\nBursts: {count} simultaneous connections, one GET {AUTH_PATH} each (Connection: close), "
          f"{timeout:g} s timeout; wall time per connection in ms")
    rows = [[label, describe_counts(result["outcomes"]), f"{result['p50']:.0f}", f"{result['p99']:.0f}",
             f"{result['max']:.0f}", f"{result['seconds']:.1f} s"] for label, result in bursts]
    table(["sources", "outcomes", "p50", "p99", "max", "whole burst"], rows)


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of the baseline and attack measurements")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per measured pass")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds after which a pass sends no further request (bounds a starved run)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per normal request (then: an error)")
    parser.add_argument("--attackers", type=int, default=200, help="slow/idle attacker connections (half each)")
    parser.add_argument("--attack-seconds", type=float, default=15.0,
                        help="seconds each attack is held at least (longer than the daemon's header and idle "
                             "timeouts, so their closures show)")
    parser.add_argument("--burst", type=int, default=1000, help="connections per burst (0: no bursts)")
    parser.add_argument("--burst-timeout", type=float, default=30.0, help="seconds per burst connection")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a pvc.api key for the daemon (repeatable), e.g. threads_max=16")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1 or args.attackers < 2 or args.burst < 0:
        parser.error("--rounds and --requests must be at least 1, --attackers at least 2, --burst at least 0")
    if min(args.budget, args.timeout, args.burst_timeout) <= 0 or args.attack_seconds < 0:
        parser.error("--budget, --timeout and --burst-timeout must be positive, --attack-seconds not negative")
    try:
        settings = parse_settings(args.settings)
    except ValueError as exc:
        parser.error(str(exc))
    pvcapid = os.path.join(os.path.dirname(sys.executable), "pvcapid")
    env = {key: value for key, value in os.environ.items() if key != "PVC_CONFIG_FILE"}

    # SIGTERM (a CI timeout, a ^C from a supervisor) still runs the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    limits = raise_open_files(args.burst + args.attackers + 200)
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("CherryPy", "cheroot"))
    print(f"bench_hostile: checkout {revision()}; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}; {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, {versions}")
    print(f"open files: {limits}")
    print(f"daemon pvc.api settings (--set: {len(settings) or 'none'}): {effective_settings(settings)}")
    print(f"{args.rounds} round(s): {args.requests} requests per pass (at most {args.budget:g} s of sending, "
          f"{args.timeout:g} s per request), {args.attackers} attackers held {args.attack_seconds:g} s at least; "
          f"bursts of {args.burst}", flush=True)

    tmp = tempfile.mkdtemp(prefix="pvc-bench-hostile-")
    token = secrets.token_hex(16)
    zookeeper = ZooKeeperServer(os.path.join(tmp, "zookeeper"), port=free_port())
    daemon = None
    daemon_log = os.path.join(tmp, "pvcapid.log")
    try:
        zookeeper.start()
        port = free_port()
        data_dir = os.path.join(tmp, "data")
        os.makedirs(data_dir)
        config_path = os.path.join(tmp, "pvcapid.yaml")
        write_config(config_path, data_dir, zookeeper.port, port, token, settings)
        daemon = start_process([pvcapid, "--config", config_path], daemon_log, env)
        root_url = f"http://{HOST}:{port}{ROOT_PATH}"
        wait_ready(root_url, daemon, "pvcapid", daemon_log)
        preflight(port, token)
        print(f"daemon pid {daemon.pid}: {daemon_state(daemon.pid)}, open files {open_files_limit(daemon.pid)}")

        rounds = [run_round(index, args, port, token, daemon, daemon_log) for index in range(args.rounds)]
        bursts = []
        for label, sources in ((f"{CROWD_SOURCES[0]}-{CROWD_SOURCES[-1]}", CROWD_SOURCES), (HOST, [HOST])):
            if not args.burst:
                break
            result = burst(port, token, sources, args.burst, args.burst_timeout)
            check_alive(daemon, daemon_log, "a burst")
            state = daemon_state(daemon.pid)
            recovery = recover(root_url, daemon, daemon_log, "a burst")
            print(f"\nburst from {label}: {describe_counts(result['outcomes'])} in {result['seconds']:.1f} s; "
                  f"daemon {state} after it, answers {recovery:.2f} s later", flush=True)
            bursts.append((label, result))

        print_latency_table(rounds, args)
        print_attack_table(rounds, args.attackers)
        if bursts:
            print_burst_table(bursts, args.burst, args.burst_timeout)
        print(f"\ndaemon at the end: {daemon_state(daemon.pid)}; total run time {time.monotonic() - began:.0f} s")
        return 0
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"ERROR: benchmark could not run: {exc}", file=sys.stderr)
        if daemon is not None and daemon_log not in str(exc):
            print(f"pvcapid log tail ({daemon_log}):\n{tail(daemon_log)}", file=sys.stderr)
        return 1
    finally:
        stop_process(daemon, "pvcapid")
        zookeeper.stop()
        keep_or_remove(tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())

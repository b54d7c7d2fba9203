"""Benchmark what the audit log costs a mutating request, and what a database that does not answer costs it.

Run as ``.venv/bin/python bench/bench_audit.py [--rounds 3] [--duration 3]``.

It starts a throwaway ZooKeeper and two real daemons on it (core only,
authentication on, the embedded SQLite database): one with ``audit.enabled:
false``, one with the audit log. Both are measured with ``wrk`` posting
``POST /api/v1/status state=false`` (admin; one ZooKeeper write, answered
200) and the same request without a key (401, where the audit row is a
larger part of the work), alternating targets. Then the audited daemon is
measured again while this script holds SQLite's write lock (``BEGIN
IMMEDIATE`` on its database file), so that the audit writer waits and its
backlog grows (the same rounds, with ``--backlog`` big enough to keep every
entry): requests must not notice. It prints figures (medians of the rounds)
and the audit log lines the daemon wrote; it never asserts on speed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

from pvc_core.zkserver import ZooKeeperServer, free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_root import (  # noqa: E402 - a sibling script, not a package
    CONFIG_TEMPLATE,
    CORE_ONLY,
    HOST,
    THREADS,
    WRK,
    keep_or_remove,
    median,
    run_wrk,
    start_process,
    stop_process,
    wait_ready,
)

PATH = "/api/v1/status"
POST_SCRIPT = 'wrk.method = "POST"\nwrk.body = "state=false"\n' \
              'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'


def audited_rows(data_dir: str) -> int:
    connection = sqlite3.connect(os.path.join(data_dir, "pvc.db"), timeout=30)
    try:
        return connection.execute("SELECT COUNT(*) FROM pvc_audit").fetchone()[0]
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target and connection count")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,8", help="comma-separated connection counts")
    parser.add_argument("--backlog", type=int, default=100000, help="the audited daemon's pvc.audit.backlog")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if not os.path.exists(WRK):
        print(f"ERROR: {WRK} is missing: apt-get install wrk", file=sys.stderr)
        return 1
    connections = [int(item) for item in args.connections.split(",") if item.strip()]
    pvcapid = os.path.join(os.path.dirname(sys.executable), "pvcapid")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="pvc-bench-audit-")
    token = secrets.token_hex(16)
    zookeeper = ZooKeeperServer(os.path.join(tmp, "zookeeper"), port=free_port())
    daemons: dict[str, tuple[subprocess.Popen, str, str, str]] = {}
    script = os.path.join(tmp, "post.lua")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(POST_SCRIPT)
    try:
        zookeeper.start()
        env = {key: value for key, value in os.environ.items() if key != "PVC_CONFIG_FILE"}
        for name, enabled in (("audit off", "False"), ("audit on", "True")):
            port, workdir = free_port(), os.path.join(tmp, name.replace(" ", "-"))
            data_dir = os.path.join(workdir, "data")
            os.makedirs(data_dir)
            config_path, log_path = os.path.join(workdir, "pvcapid.yaml"), os.path.join(workdir, "pvcapid.log")
            with open(config_path, "w", encoding="utf-8") as handle:
                handle.write(CONFIG_TEMPLATE.format(data_dir=data_dir, zk_port=zookeeper.port, port=port,
                                                    threads=THREADS, token=token, plugins=CORE_ONLY)
                             + f"    audit:\n        enabled: {enabled}\n        backlog: {args.backlog}\n")
            process = start_process([pvcapid, "--config", config_path], log_path, env)
            daemons[name] = (process, f"http://{HOST}:{port}{PATH}", data_dir, log_path)
            wait_ready(f"http://{HOST}:{port}/api/v1/", process, name, log_path)
        key = {"X-Api-Key": token}
        initialize = urllib.request.Request(daemons["audit off"][1].replace("/status", "/initialize"), data=b"",
                                            headers=key, method="POST")
        with urllib.request.urlopen(initialize, timeout=30):
            pass
        targets = {(name, kind): (daemons[name][1], headers) for name in daemons
                   for kind, headers in (("200", key), ("401", {}))}
        print(f"wrk -t1, {args.duration} s per run, {args.rounds} rounds, connections {connections}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; POST {PATH} state=false")
        for url, headers in targets.values():  # warm-up, not recorded
            run_wrk(url, max(connections), 1, headers, script)
        results: dict[tuple, list[dict]] = {}
        names = list(targets)
        for round_index in range(args.rounds):
            for conns in connections:
                for target in (names if round_index % 2 == 0 else names[::-1]):
                    url, headers = targets[target]
                    results.setdefault((*target, conns), []).append(
                        run_wrk(url, conns, args.duration, headers, script))
            print(f"  round {round_index + 1} done", flush=True)
        audited = daemons["audit on"]
        before = -1
        while before != audited_rows(audited[2]):  # the measured runs' entries all written
            before = audited_rows(audited[2])
            time.sleep(1.0)
        locker = sqlite3.connect(os.path.join(audited[2], "pvc.db"), timeout=30, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # the audit writer now waits (busy_timeout), then retries
        try:
            for _ in range(args.rounds):
                for conns in connections:
                    for kind, headers in (("200", key), ("401", {})):
                        results.setdefault(("audit on, database locked", kind, conns), []).append(
                            run_wrk(audited[1], conns, args.duration, headers, script))
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        locked_at = time.monotonic()
        sent = sum(result["requests"] for key_, runs in results.items() if key_[0] == "audit on, database locked"
                   for result in runs)
        while audited_rows(audited[2]) < before + sent and time.monotonic() - locked_at < 60:
            time.sleep(0.2)
        print(f"\n{'daemon':<27} {'answer':>6} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for (name, kind, conns), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][2])):
            print(f"{name:<27} {kind:>6} {conns:>5} {median(runs, 'rps'):>9.0f} {median(runs, 'p50'):>8.3f} "
                  f"{median(runs, 'p99'):>8.3f}")
        caught_up = audited_rows(audited[2]) - before
        print(f"\nwhile SQLite was write-locked: {sent} requests; the audit log had written {caught_up} of their "
              f"entries {time.monotonic() - locked_at:.1f} s after the lock was released")
        with open(audited[3], encoding="utf-8", errors="replace") as handle:
            lines = [line.rstrip() for line in handle if "pvc.audit:" in line]
        print("audit log lines:\n  " + ("\n  ".join(lines) if lines else "(none)"))
        return 0
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"ERROR: benchmark could not run: {exc}", file=sys.stderr)
        return 1
    finally:
        for process, *_ in daemons.values():
            stop_process(process, "pvcapid")
        zookeeper.stop()
        keep_or_remove(tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())

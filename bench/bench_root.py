"""Benchmark ``GET /api/v1/`` of the real daemon against a bare CherryPy app.

Run as ``.venv/bin/python bench/bench_root.py [--rounds 3] [--duration 3]``.

It starts a throwaway ZooKeeper, the real ``pvcapid`` (authentication on, a
random token) and, as the baseline, a bare CherryPy app that answers the same
bytes on the same path with the same thread pool. Both are measured with
``wrk`` over 127.0.0.1, alternating targets, and the medians are printed with
the daemon/bare ratio (the target is >= 0.8). It prints figures and never
asserts on speed; everything it starts is stopped in ``finally`` blocks, and
nothing binds anything but 127.0.0.1.

The root route is unauthenticated, as in v0.6, so the ``X-Api-Key`` header
sent to it is not checked there; the pre-flight check therefore also shows
200/401 on an authenticated route (``/api/v1/plugins``), and the second table
measures that route so the cost of the auth check is visible as well.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from pvc_core.zkserver import ZooKeeperServer, free_port

WRK = shutil.which("wrk") or "/usr/bin/wrk"
HOST = "127.0.0.1"
THREADS = 16
ROOT_PATH = "/api/v1/"
AUTH_PATH = "/api/v1/plugins"
BARE_BODY = b'{"message": "PVC API version 1.0"}\n'

CONFIG_TEMPLATE = """---
pvc:
    debug: False
    data_dir: "{data_dir}"
    coordinators:
      - "127.0.0.1:{zk_port}"
{plugins}    api:
        listen_address: "127.0.0.1"
        listen_port: "{port}"
        threads: "{threads}"
        authentication:
            enabled: True
            secret_key: "benchkey"
            tokens:
              - description: "bench"
                token: "{token}"
        ssl:
            enabled: False
"""

METRICS_ON = """    metrics:
        enabled: True
"""

BARE_APP = '''"""Bare CherryPy baseline for bench_root.py: one handler, nothing else."""
import sys

import cherrypy

BODY = {body!r}


class Api:
    @cherrypy.expose
    def index(self):
        cherrypy.response.headers["Content-Type"] = "application/json"
        return BODY


cherrypy.config.update({{
    "environment": "production",
    "engine.autoreload.on": False,
    "log.screen": False,
    "log.access_file": "",
    "log.error_file": "",
    "server.socket_host": "127.0.0.1",
    "server.socket_port": int(sys.argv[1]),
    "server.thread_pool": {threads},
}})
cherrypy.tree.mount(Api(), "/api/v1", {{"/": {{}}}})
cherrypy.engine.signals.subscribe()
cherrypy.engine.start()
print("bare app listening", flush=True)
cherrypy.engine.block()
'''

# Core only by default: what is installed in the virtualenv (the test suite
# installs an example plugin for a while) must not change the figures.
CORE_ONLY = """    plugins:
        enabled: []
"""

TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


# -- processes --------------------------------------------------------------------------------


def start_process(argv: list[str], log_path: str, env: dict | None = None) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


def stop_process(process: subprocess.Popen | None, name: str) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        print(f"{name} ignored SIGTERM for 15 s; killing it", flush=True)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def get(url: str, headers: dict | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(url: str, process: subprocess.Popen, name: str, log_path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; log {log_path}:\n{tail(log_path)}")
        try:
            status, _ = get(url, timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s; log {log_path}:\n{tail(log_path)}")


# -- wrk ---------------------------------------------------------------------------------------


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unparsed wrk time {text!r}")
    return float(match.group(1)) * TIME_UNITS[match.group(2)]


def parse_wrk(output: str) -> dict:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (rps and p50 and p99):
        raise RuntimeError(f"could not parse wrk output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:(.*)", output)
    return {"rps": float(rps.group(1)), "p50": to_ms(p50.group(1)), "p99": to_ms(p99.group(1)),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "errors": errors.group(1).strip() if errors else ""}


def run_wrk(url: str, connections: int, duration: int, headers: dict, script: str | None = None) -> dict:
    """wrk's figures for ``url`` (with ``script``, a Lua file: e.g. a POST), plus the requests it made."""
    argv = [WRK, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *(["-s", script] if script else [])]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    count = re.search(r"^\s*(\d+) requests in", done.stdout, re.MULTILINE)
    return {**parse_wrk(done.stdout), "requests": int(count.group(1)) if count else 0}


# -- reporting ---------------------------------------------------------------------------------


def median(results: list[dict], key: str) -> float:
    return statistics.median(result[key] for result in results)


def print_table(title: str, names: tuple[str, str], results: dict, connections: list[int]) -> None:
    daemon, bare = names
    print(f"\n{title}")
    header = (f"{'conns':>5}  {daemon + ' req/s':>14} {bare + ' req/s':>12}  {'ratio':>6}  "
              f"{daemon + ' p50/p99 ms':>20}  {bare + ' p50/p99 ms':>18}")
    print(header)
    print("-" * len(header))
    for conns in connections:
        ours, theirs = results[(daemon, conns)], results[(bare, conns)]
        ratio = median(ours, "rps") / median(theirs, "rps")
        print(f"{conns:>5}  {median(ours, 'rps'):>14.0f} {median(theirs, 'rps'):>12.0f}  {ratio:>6.2f}  "
              f"{median(ours, 'p50'):>9.3f}/{median(ours, 'p99'):<10.3f}  "
              f"{median(theirs, 'p50'):>8.3f}/{median(theirs, 'p99'):<9.3f}")
    print("(medians of the rounds; ratio = daemon req/s / bare req/s, target >= 0.80)")


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target and connection count")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,8", help="comma-separated connection counts")
    parser.add_argument("--no-auth-route", action="store_true",
                        help=f"skip the second table (the daemon's authenticated {AUTH_PATH})")
    parser.add_argument("--plugins", action="store_true",
                        help="load every installed plugin (default: the core only)")
    parser.add_argument("--metrics", action="store_true",
                        help="enable GET /api/v1/metrics (every request is then measured: its cost shows)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    if not os.path.exists(WRK):
        print(f"ERROR: {WRK} is missing: apt-get install wrk", file=sys.stderr)
        return 1
    connections = [int(item) for item in args.connections.split(",") if item.strip()]
    bindir = os.path.dirname(sys.executable)
    pvcapid = os.path.join(bindir, "pvcapid")

    # SIGTERM (a CI timeout, a ^C from a supervisor) still runs the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="pvc-bench-")
    token = secrets.token_hex(16)
    zookeeper = ZooKeeperServer(os.path.join(tmp, "zookeeper"), port=free_port())
    daemon = bare = None
    daemon_log, bare_log = os.path.join(tmp, "pvcapid.log"), os.path.join(tmp, "bare.log")
    try:
        zookeeper.start()
        daemon_port, bare_port = free_port(), free_port()
        while bare_port == daemon_port:
            bare_port = free_port()
        config_path = os.path.join(tmp, "pvcapid.yaml")
        data_dir = os.path.join(tmp, "data")
        os.makedirs(data_dir)
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(CONFIG_TEMPLATE.format(data_dir=data_dir, zk_port=zookeeper.port, port=daemon_port,
                                                threads=THREADS, token=token,
                                                plugins=("" if args.plugins else CORE_ONLY)
                                                + (METRICS_ON if args.metrics else "")))
        app_path = os.path.join(tmp, "bare_app.py")
        with open(app_path, "w", encoding="utf-8") as handle:
            handle.write(BARE_APP.format(body=BARE_BODY, threads=THREADS))

        env = {key: value for key, value in os.environ.items() if key != "PVC_CONFIG_FILE"}
        daemon = start_process([pvcapid, "--config", config_path], daemon_log, env)
        bare = start_process([sys.executable, app_path, str(bare_port)], bare_log, env)
        daemon_url = f"http://{HOST}:{daemon_port}{ROOT_PATH}"
        bare_url = f"http://{HOST}:{bare_port}{ROOT_PATH}"
        wait_ready(daemon_url, daemon, "pvcapid", daemon_log)
        wait_ready(bare_url, bare, "bare app", bare_log)

        key = {"X-Api-Key": token}
        auth_url = f"http://{HOST}:{daemon_port}{AUTH_PATH}"
        print("Pre-flight (authentication is on in the daemon):")
        checks = [("daemon", "GET", ROOT_PATH, daemon_url, key), ("daemon", "GET", ROOT_PATH, daemon_url, {}),
                  ("daemon", "GET", AUTH_PATH, auth_url, key), ("daemon", "GET", AUTH_PATH, auth_url, {}),
                  ("daemon", "GET", AUTH_PATH, auth_url, {"X-Api-Key": "wrong"}),
                  ("bare", "GET", ROOT_PATH, bare_url, {})]
        bodies = {}
        for who, method, path, url, headers in checks:
            status, body = get(url, headers)
            label = "with the key" if headers == key else ("with a wrong key" if headers else "without a key")
            text = body.decode(errors="replace").strip()
            text = text if len(text) <= 100 else text[:97] + "..."
            print(f"  {who:<6} {method} {path:<16} {label:<17} -> {status} {text}")
            bodies[(who, path, label)] = (status, body)
        auth_ok = (bodies[("daemon", AUTH_PATH, "with the key")][0] == 200
                   and bodies[("daemon", AUTH_PATH, "without a key")][0] == 401)
        print(f"  authenticated route: 200 with the key, 401 without: {'yes' if auth_ok else 'NO'}")
        print("  root route is unauthenticated (v0.6 behaviour): the key is sent but not checked there")
        same = bodies[("daemon", ROOT_PATH, "with the key")][1] == bodies[("bare", ROOT_PATH, "without a key")][1]
        print(f"  daemon and bare root bodies identical: {'yes' if same else 'NO'}")

        targets = {"daemon": (daemon_url, key), "bare": (bare_url, {})}
        if not args.no_auth_route:
            targets["daemon-auth"] = (auth_url, key)
        print(f"\nwrk -t1, {args.duration} s per run, {args.rounds} rounds, connections {connections}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; server thread pools {THREADS}; "
              f"daemon plugins: {'all installed' if args.plugins else 'core only'}; "
              f"metrics {'on' if args.metrics else 'off'}")
        for url, headers in targets.values():  # warm-up, not recorded
            run_wrk(url, max(connections), 1, headers)
        results: dict[tuple[str, int], list[dict]] = {}
        names = list(targets)
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for conns in connections:
                for name in order:
                    url, headers = targets[name]
                    result = run_wrk(url, conns, args.duration, headers)
                    results.setdefault((name, conns), []).append(result)
                    problems = ""
                    if result["non2xx"] or result["errors"]:
                        problems = f"  non-2xx {result['non2xx']} socket errors {result['errors'] or '-'}"
                    print(f"  round {round_index + 1} c={conns:<2} {name:<11} {result['rps']:>9.0f} req/s  "
                          f"p50 {result['p50']:.3f} ms  p99 {result['p99']:.3f} ms{problems}", flush=True)

        print_table(f"GET {ROOT_PATH}: daemon (X-Api-Key sent) vs bare CherryPy", ("daemon", "bare"),
                    results, connections)
        if "daemon-auth" in targets:
            print_table(f"GET {AUTH_PATH} (auth checked) vs bare CherryPy GET {ROOT_PATH}",
                        ("daemon-auth", "bare"), results, connections)
        return 0
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"ERROR: benchmark could not run: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_process(bare, "bare app")
        stop_process(daemon, "pvcapid")
        zookeeper.stop()
        keep_or_remove(tmp, args.keep)


def keep_or_remove(tmp: str, keep: bool) -> None:
    """A run's temporary directory: kept (and said where) with --keep, removed otherwise."""
    if keep:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

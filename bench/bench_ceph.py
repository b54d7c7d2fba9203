"""Benchmark Ceph calls through the CLIs (``ceph``/``rbd``/``rados``) against the librados/librbd bindings.

Run as ``.venv/bin/python bench/bench_ceph.py [--rounds 20] [--volumes 500] [--duration 3]``.

It starts a throwaway single-host Ceph (``LocalCeph``, memstore, 127.0.0.1
only) in a temporary directory, creates a pool ``bench`` (application rbd)
and times each operation ``--rounds`` times both ways, alternating which side
goes first from round to round:

1. cluster status: ``ceph -c CONF status`` (one subprocess) against
   ``CephClient.mon_command("status")`` on a handle opened once before the
   timing, as the daemon keeps it; and, to show what the connection costs, a
   fresh ``rados.Rados`` + ``connect`` + ``mon_command`` + ``shutdown``;
2. a 64 MiB RBD volume create + info + remove: ``rbd create``, ``rbd info
   --format json``, ``rbd rm`` (three subprocesses) against
   ``rbd.RBD().create``, ``rbd.Image(...).stat()``, ``rbd.RBD().remove`` on an
   already open ioctx;
3. ``rados df`` with the collector's argv against
   ``cluster.get_cluster_stats()`` plus ``ioctx.get_stats()`` per pool.

It prints median and p90 wall time in milliseconds and the CLI/bindings
ratio of the medians.

A second part then runs against the same Ceph, through the real daemon: a
throwaway ZooKeeper and ``pvcapid`` (plugins node, vm and ceph; the ``ceph``
section on this cluster's conf and keyring, collector on every 5 s;
authentication on as in bench_root.py), ``POST /initialize``, a pool
``benchvol`` (8 PGs, one copy) created through the API, and

4. volume create latency: ``--timed`` 4 MiB volumes created one by one with
   ``POST /storage/ceph/volume`` against as many bare ``rbd -c CONF create``
   subprocesses, alternating, each request or subprocess timed (median, p90,
   API/bare ratio);
5. the pool brought to ``--volumes`` API-created volumes (4 threads, not
   timed), then ``GET /storage/ceph/volume`` (all of them) and ``GET
   /storage/ceph/status`` with wrk (-t1, 127.0.0.1, connections 1 and 8,
   median of the rounds: req/s, p50, p99), plus single-request wall times
   and the list's body size.

It prints figures and never asserts on speed. Ceph, the daemon and ZooKeeper
are always stopped and the directory removed in ``finally`` blocks
(``--keep`` keeps the logs); the whole run is bounded by ``--budget`` seconds
(an alarm, then the clean-up). If a setup fails it exits 1 with the tail of
the relevant logs; it exits 0 when it measured.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from pvc_core.zkserver import ZooKeeperServer, free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_root import (  # noqa: E402 - a sibling script, not a package
    CONFIG_TEMPLATE,
    HOST,
    THREADS,
    WRK,
    get,
    median,
    run_wrk,
    start_process,
    stop_process,
    tail,
    wait_ready,
)

POOL = "bench"
IMAGE_SIZE = 64 * 1024 ** 2
TIMEOUT = 10  # seconds, for every Ceph call of either kind
NAME = "client.admin"

# -- the second part: through the daemon
API_POOL = "benchvol"
API_SIZE = "4M"
FILL_THREADS = 4
SINGLES = 5  # single requests per endpoint, for the wall times
REQUEST_TIMEOUT = 30.0  # seconds, for one API request
CLEANUP_RESERVE = 30  # seconds of --budget kept for stopping everything
CEPH_PLUGINS = """    plugins:
        enabled: [node, vm, ceph]
    ceph:
        conf: "{conf}"
        keyring: "{keyring}"
        timeout: "{timeout}"
        collector: "True"
        interval: "5"
"""


def clean_env() -> dict:
    """Ceph tools and librados read CEPH_ARGS/CEPH_CONF; an inherited one must not change what is measured."""
    return {key: value for key, value in os.environ.items()
            if key not in ("CEPH_ARGS", "CEPH_CONF", "CEPH_KEYRING")}


def run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT + 20, env=clean_env(),
                            stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited with {result.returncode}: "
                           f"{result.stderr.strip()[-500:]}")
    return result.stdout


def log_tail(directory: str, lines: int = 15) -> str:
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "log", "*.log"))):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = "".join(handle.readlines()[-lines:])
        except OSError:
            continue
        out.append(f"--- {path} (last {lines} lines)\n{text}")
    return "\n".join(out) or f"(no Ceph logs under {directory}/log)"


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1000.0


def p90(samples: list[float]) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


# -- the operations ----------------------------------------------------------------------------


class Operations:
    """Each operation both ways; the bindings side reuses one open cluster handle and ioctx."""

    def __init__(self, conf: str, keyring: str, client, ioctx) -> None:
        self.conf = conf
        self.keyring = keyring
        self.client = client  # pvc_ceph.client.CephClient, already connected
        self.ioctx = ioctx
        self.counter = 0

    # 1. cluster status
    def status_cli(self) -> None:
        run(["ceph", "-c", self.conf, "status"])

    def status_bindings(self) -> None:
        self.client.mon_command("status")

    def status_connect(self) -> None:
        import rados
        seconds = str(TIMEOUT)
        cluster = rados.Rados(conffile=self.conf, name=NAME,
                              conf={"keyring": self.keyring, "client_mount_timeout": seconds,
                                    "rados_mon_op_timeout": seconds, "rados_osd_op_timeout": seconds})
        try:
            cluster.connect(timeout=TIMEOUT)
            ret, _out, err = cluster.mon_command(json.dumps({"prefix": "status"}), b"", timeout=TIMEOUT)
            if ret != 0:
                raise RuntimeError(f"status failed ({ret}): {err}")
        finally:
            cluster.shutdown()

    # 2. RBD volume create + info + remove
    def _image(self, side: str) -> str:
        self.counter += 1
        return f"img{self.counter}-{side}"

    def volume_cli(self) -> None:
        image = f"{POOL}/{self._image('cli')}"
        run(["rbd", "-c", self.conf, "create", "--size", "64M", image])
        info = json.loads(run(["rbd", "-c", self.conf, "info", "--format", "json", image]))
        if info.get("size") != IMAGE_SIZE:
            raise RuntimeError(f"rbd info {image}: unexpected size {info.get('size')}")
        run(["rbd", "-c", self.conf, "rm", "--no-progress", image])

    def volume_bindings(self) -> None:
        import rbd
        image = self._image("lib")
        rbd.RBD().create(self.ioctx, image, IMAGE_SIZE)
        with rbd.Image(self.ioctx, image) as handle:
            info = handle.stat()
        if info["size"] != IMAGE_SIZE:
            raise RuntimeError(f"stat {image}: unexpected size {info['size']}")
        rbd.RBD().remove(self.ioctx, image)

    # 3. utilisation
    def df_cli(self) -> None:
        # the argv of pvc_ceph.collector.Collector.rados_df
        run(["rados", "-c", self.conf, "--name", NAME, "--keyring", self.keyring, "df"])

    def df_bindings(self) -> None:
        cluster = self.client.cluster()
        cluster.get_cluster_stats()
        for pool in cluster.list_pools():
            ioctx = cluster.open_ioctx(pool)
            try:
                ioctx.get_stats()
            finally:
                ioctx.close()


# -- reporting ---------------------------------------------------------------------------------


def print_table(rows: list[tuple[str, list[float], list[float]]]) -> None:
    header = f"{'operation':<40} {'CLI median/p90 ms':>19} {'bindings median/p90 ms':>24} {'CLI/bindings':>13}"
    print(header)
    print("-" * len(header))
    for name, cli, lib in rows:
        cli_median, lib_median = statistics.median(cli), statistics.median(lib)
        ratio = cli_median / lib_median if lib_median > 0 else float("inf")
        print(f"{name:<40} {cli_median:>9.1f}/{p90(cli):<9.1f} {lib_median:>12.2f}/{p90(lib):<11.2f} "
              f"{ratio:>12.1f}x")
    print("(ratio = CLI median / bindings median; wall time per operation, including subprocess start-up)")


# -- the second part: the same operations through the daemon -----------------------------------


class OutOfTime(RuntimeError):
    """--budget ran out: raised from the SIGALRM handler, so the finally blocks still clean up."""


def api(method: str, url: str, headers: dict, params: dict | None = None,
        timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
    """One request (a new connection, as urllib does); params in the query string, as the tests send them."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, data=b"" if method != "GET" else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def expect_ok(what: str, answer: tuple[int, bytes]) -> bytes:
    status, body = answer
    if status != 200:
        raise RuntimeError(f"{what} answered {status}: {body.decode(errors='replace').strip()[:300]}")
    return body


def fill(base: str, headers: dict, names: list[str], threads: int, deadline: float) -> float:
    """Create the volumes with a few threads pulling names from one list; seconds taken. Stops early on
    the first failure or at the deadline (the threads are joined before returning either way)."""
    pending = list(reversed(names))
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []

    def worker() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                if not pending:
                    return
                name = pending.pop()
            try:
                expect_ok(f"POST volume {name}", api("POST", f"{base}/storage/ceph/volume", headers,
                                                     {"volume": name, "pool": API_POOL, "size": API_SIZE}))
            except (RuntimeError, OSError) as exc:
                failures.append(str(exc))
                stop.set()

    started = time.monotonic()
    workers = [threading.Thread(target=worker, name=f"fill-{index}", daemon=True) for index in range(threads)]
    for thread in workers:
        thread.start()
    try:
        for thread in workers:
            thread.join()
    finally:
        stop.set()  # on an alarm, the threads finish their current request and stop
        for thread in workers:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
    if failures:
        raise RuntimeError(f"filling the pool failed: {failures[0]}")
    if pending:
        raise RuntimeError(f"filling the pool ran out of time with {len(pending)} volumes left")
    return time.monotonic() - started


def print_latency(api_samples: list[float], bare_samples: list[float]) -> None:
    header = f"{'4 MiB volume create':<44} {'median ms':>10} {'p90 ms':>9} {'min ms':>9} {'max ms':>9}"
    print(header)
    print("-" * len(header))
    for label, samples in ((f"API POST /storage/ceph/volume (n={len(api_samples)})", api_samples),
                           (f"bare rbd -c CONF create (n={len(bare_samples)})", bare_samples)):
        print(f"{label:<44} {statistics.median(samples):>10.1f} {p90(samples):>9.1f} {min(samples):>9.1f} "
              f"{max(samples):>9.1f}")
    api_median, bare_median = statistics.median(api_samples), statistics.median(bare_samples)
    print(f"ratio API/bare: median {api_median / bare_median:.2f}x, p90 {p90(api_samples) / p90(bare_samples):.2f}x "
          "(API: HTTP + auth + ZooKeeper checks + librbd create + image info + ZooKeeper transaction; "
          "bare: rbd process start-up + connect + create)")


def daemon_problems(log_path: str, limit: int = 15) -> list[str]:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    markers = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
    return [line for line in lines if any(marker in line for marker in markers)][:limit]


def bench_api(ceph, client, args: argparse.Namespace, tmp: str, deadline: float) -> int:
    """Part two: the daemon on the same Ceph. Returns the exit status."""
    import rbd
    workdir = os.path.join(tmp, "api")
    os.makedirs(os.path.join(workdir, "data"))
    zookeeper = ZooKeeperServer(os.path.join(workdir, "zookeeper"), port=free_port())
    daemon = None
    log_path = os.path.join(workdir, "pvcapid.log")
    logs = [os.path.join(zookeeper.directory, "zk.log")]
    print(f"\n=== through the daemon: pool {API_POOL!r}, {API_SIZE} volumes ===", flush=True)
    try:
        # -- setup ---------------------------------------------------------------------------
        started = time.monotonic()
        zookeeper.start()
        logs.insert(0, log_path)
        token = secrets.token_hex(16)
        headers = {"X-Api-Key": token}
        port = free_port()
        config_path = os.path.join(workdir, "pvcapid.yaml")
        plugins = CEPH_PLUGINS.format(conf=ceph.conf, keyring=ceph.keyring, timeout=TIMEOUT)
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(CONFIG_TEMPLATE.format(data_dir=os.path.join(workdir, "data"), zk_port=zookeeper.port,
                                                port=port, threads=THREADS, token=token, plugins=plugins))
        env = {key: value for key, value in clean_env().items() if key != "PVC_CONFIG_FILE"}
        base = f"http://{HOST}:{port}/api/v1"
        daemon = start_process([os.path.join(os.path.dirname(sys.executable), "pvcapid"), "--config",
                                config_path], log_path, env)
        wait_ready(f"{base}/", daemon, "pvcapid", log_path)
        expect_ok("POST /initialize", api("POST", f"{base}/initialize", headers))
        begin = time.perf_counter()
        expect_ok(f"POST pool {API_POOL}", api("POST", f"{base}/storage/ceph/pool", headers,
                                               {"pool": API_POOL, "pgs": "8", "replcfg": "copies=1,mincopies=1"}))
        pool_ms = (time.perf_counter() - begin) * 1000
        begin = time.perf_counter()
        ceph.wait_healthy(30)  # the new pool's PGs active+clean: the first create of either side does not wait
        print(f"ZooKeeper + pvcapid (plugins node, vm, ceph; collector every 5 s; auth on; {THREADS} threads) up "
              f"and initialized in {time.monotonic() - started:.1f} s; POST pool {API_POOL} took {pool_ms:.0f} ms, "
              f"its PGs active+clean {(time.perf_counter() - begin) * 1000:.0f} ms later", flush=True)

        # -- 4. create latency ---------------------------------------------------------------
        volume_url = f"{base}/storage/ceph/volume"

        def create_api(index: int) -> None:
            expect_ok(f"POST volume v{index}", api("POST", volume_url, headers,
                                                   {"volume": f"v{index}", "pool": API_POOL, "size": API_SIZE}))

        def create_bare(index: int) -> None:
            run(["rbd", "-c", ceph.conf, "create", "--size", API_SIZE, f"{API_POOL}/bare{index}"])

        api_samples: list[float] = []
        bare_samples: list[float] = []
        started = time.monotonic()
        for index in range(1, args.timed + 1):
            pair = [(create_api, api_samples), (create_bare, bare_samples)]
            for function, samples in pair if index % 2 else pair[::-1]:
                samples.append(timed(lambda function=function, index=index: function(index)))
        print(f"{args.timed} + {args.timed} creates, alternating which goes first, in "
              f"{time.monotonic() - started:.1f} s; load average {os.getloadavg()[0]:.2f}\n", flush=True)
        print_latency(api_samples, bare_samples)

        # -- 5. the pool at --volumes, and the reads -------------------------------------------
        rest = [f"v{index}" for index in range(args.timed + 1, args.volumes + 1)]
        seconds = fill(base, headers, rest, FILL_THREADS, deadline)
        print(f"\nfilled the pool to {args.volumes} API volumes: {len(rest)} more creates with {FILL_THREADS} "
              f"threads in {seconds:.1f} s ({len(rest) / seconds:.0f}/s)", flush=True)
        # the status text is "" from /initialize until the collector's first pass
        wait_until = time.monotonic() + 20
        while True:
            body = expect_ok("GET status", api("GET", f"{base}/storage/ceph/status", headers))
            if json.loads(body).get("ceph_data"):
                break
            if time.monotonic() > wait_until:
                raise RuntimeError("the collector wrote no status within 20 s")
            time.sleep(0.5)
        listing = json.loads(expect_ok("GET volume list", api("GET", volume_url, headers)))
        listing = listing if isinstance(listing, list) else [listing]
        in_ceph = client.cluster().open_ioctx(API_POOL)
        try:
            images = rbd.RBD().list(in_ceph)
        finally:
            in_ceph.close()
        print(f"GET /storage/ceph/volume lists {len(listing)} volumes (expected {args.volumes}); "
              f"rbd ls {API_POOL}: {len(images)} images ({args.timed} of them bare)")
        if len(listing) != args.volumes:
            raise RuntimeError(f"the volume list has {len(listing)} entries, expected {args.volumes}")

        targets = {"GET /storage/ceph/volume": volume_url, "GET /storage/ceph/status": f"{base}/storage/ceph/status"}
        print(f"single requests (urllib, new connection each, {SINGLES} per endpoint):")
        for label, url in targets.items():
            walls, size = [], 0
            for _ in range(SINGLES):
                begin = time.perf_counter()
                status, body = get(url, headers, timeout=REQUEST_TIMEOUT)
                walls.append((time.perf_counter() - begin) * 1000)
                expect_ok(label, (status, body))
                size = len(body)
            print(f"  {label:<26} median {statistics.median(walls):7.2f} ms  min {min(walls):7.2f} ms  "
                  f"max {max(walls):7.2f} ms  body {size} bytes ({size / 1024:.1f} KiB)", flush=True)

        print(f"wrk -t1, {args.duration} s per run, {args.wrk_rounds} rounds, connections {args.connections}, "
              f"{HOST} only, X-Api-Key sent; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
              f"(the collector runs every 5 s meanwhile)", flush=True)
        for url in targets.values():  # warm-up, not recorded
            run_wrk(url, max(args.connections), 1, headers)
        results: dict[tuple[str, int], list[dict]] = {}
        names = list(targets)
        for round_index in range(args.wrk_rounds):
            for conns in args.connections:
                for label in names if round_index % 2 == 0 else names[::-1]:
                    result = run_wrk(targets[label], conns, args.duration, headers)
                    results.setdefault((label, conns), []).append(result)
                    problems = ""
                    if result["non2xx"] or result["errors"]:
                        problems = f"  non-2xx {result['non2xx']} socket errors {result['errors'] or '-'}"
                    print(f"  round {round_index + 1} c={conns:<2} {label:<26} {result['rps']:>8.1f} req/s  "
                          f"p50 {result['p50']:8.3f} ms  p99 {result['p99']:8.3f} ms{problems}", flush=True)
        header = f"{'endpoint':<26} {'conns':>5} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}"
        print(f"\n{header}\n{'-' * len(header)}")
        for label in names:
            for conns in args.connections:
                rows = results[(label, conns)]
                print(f"{label:<26} {conns:>5} {median(rows, 'rps'):>9.1f} {median(rows, 'p50'):>9.3f} "
                      f"{median(rows, 'p99'):>9.3f}")
        print("(medians of the rounds)")
        problems = daemon_problems(log_path)
        print(f"\ndaemon log: {len(problems)} warning/error lines" + (" (first ones below)" if problems else ""))
        for line in problems:
            print(f"  {line}")
        return 0
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired, rbd.Error) as exc:
        print(f"ERROR: the daemon part failed: {exc}", file=sys.stderr)
        for path in logs:
            print(f"--- tail of {path} ---\n{tail(path, 30)}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)  # the clean-up is not interrupted
        stop_process(daemon, "pvcapid")
        zookeeper.stop()


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="measurements per operation and side")
    parser.add_argument("--timed", type=int, default=40, help="timed volume creates per side (API, bare rbd)")
    parser.add_argument("--volumes", type=int, default=500, help="API-created volumes in the pool for the reads")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--wrk-rounds", type=int, default=3, help="wrk runs per endpoint and connection count")
    parser.add_argument("--connections", default="1,8", help="comma-separated wrk connection counts")
    parser.add_argument("--budget", type=int, default=240,
                        help=f"seconds for the whole run; measuring stops {CLEANUP_RESERVE} s before, for the "
                             "clean-up")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (Ceph logs)")
    args = parser.parse_args(argv)
    args.connections = [int(item) for item in args.connections.split(",") if item.strip()]
    if min(args.rounds, args.timed, args.duration, args.wrk_rounds) < 1 or not args.connections:
        parser.error("--rounds, --timed, --duration, --wrk-rounds and the connection counts must be at least 1")
    if args.volumes < args.timed:
        parser.error("--volumes must be at least --timed")
    if args.budget <= CLEANUP_RESERVE + 30:
        parser.error(f"--budget must be more than {CLEANUP_RESERVE + 30} s")
    for binary in ("ceph", "rbd", "rados", WRK):
        if shutil.which(binary) is None:
            print(f"ERROR: {binary} is missing: apt-get install ceph-common wrk", file=sys.stderr)
            return 1
    try:
        import rados
        import rbd
        from pvc_ceph.client import CephClient
        from pvc_ceph.localceph import LocalCeph
    except ImportError as exc:
        print(f"ERROR: {exc}; run with the project's .venv/bin/python", file=sys.stderr)
        return 1
    from pvc_core.errors import ServiceUnavailable

    # SIGTERM (a CI timeout, a ^C from a supervisor) still runs the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    deadline = began + args.budget - CLEANUP_RESERVE

    def out_of_time(*_: object) -> None:
        raise OutOfTime(f"out of time: --budget {args.budget} s minus {CLEANUP_RESERVE} s for the clean-up")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.budget - CLEANUP_RESERVE)
    for key in ("CEPH_ARGS", "CEPH_CONF", "CEPH_KEYRING"):  # for librados in this process too
        os.environ.pop(key, None)
    failures = (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError, rados.Error, rbd.Error,
                ServiceUnavailable)
    tmp = tempfile.mkdtemp(prefix="pvc-bench-ceph-")
    ceph = LocalCeph(os.path.join(tmp, "ceph"), objectstore="memstore", size_gb=4)
    client = ioctx = None
    try:
        # -- setup ---------------------------------------------------------------------------
        started = time.monotonic()
        try:
            ceph.start(timeout=60)
            ceph.ceph("osd", "pool", "create", POOL, "8")
            ceph.ceph("osd", "pool", "application", "enable", POOL, "rbd")
            ceph.wait_healthy(60)
            client = CephClient(ceph.conf, NAME, ceph.keyring, timeout=TIMEOUT)
            ioctx = client.cluster().open_ioctx(POOL)
            version = run(["ceph", "--version"]).strip()
        except failures as exc:
            print(f"ERROR: Ceph setup failed: {exc}\n{log_tail(ceph.directory)}", file=sys.stderr)
            return 1
        print(f"{version}\nLocalCeph memstore up in {time.monotonic() - started:.1f} s on 127.0.0.1; "
              f"pool {POOL!r} (rbd); {args.rounds} rounds per operation and side; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)

        # -- measurement ---------------------------------------------------------------------
        ops = Operations(ceph.conf, ceph.keyring, client, ioctx)
        # one group per operation, timed back to back; the order inside a group flips every round
        groups = [
            (ops.status_cli, ops.status_bindings, ops.status_connect),
            (ops.volume_cli, ops.volume_bindings),
            (ops.df_cli, ops.df_bindings),
        ]
        samples: dict[str, list[float]] = {function.__name__: [] for group in groups for function in group}
        try:
            for group in groups:  # warm-up, not recorded
                for function in group:
                    function()
            measure_started = time.monotonic()
            for round_index in range(args.rounds):
                for group in groups:
                    for function in group if round_index % 2 == 0 else group[::-1]:
                        samples[function.__name__].append(timed(function))
            leftovers = rbd.RBD().list(ioctx)
        except failures as exc:
            print(f"ERROR: measurement failed: {exc}\n{log_tail(ceph.directory)}", file=sys.stderr)
            return 1
        print(f"measured in {time.monotonic() - measure_started:.1f} s; images left in {POOL}: "
              f"{len(leftovers)}\n")
        print_table([
            ("cluster status (handle open)", samples["status_cli"], samples["status_bindings"]),
            ("cluster status (bindings incl. connect)", samples["status_cli"], samples["status_connect"]),
            ("RBD 64 MiB create+info+remove", samples["volume_cli"], samples["volume_bindings"]),
            ("rados df / cluster+pool stats", samples["df_cli"], samples["df_bindings"]),
        ])
        ioctx.close()
        ioctx = None

        # -- the second part -----------------------------------------------------------------
        status = bench_api(ceph, client, args, tmp, deadline)
        print(f"\ntotal run time {time.monotonic() - began:.0f} s", flush=True)
        return status
    finally:
        signal.alarm(0)
        if ioctx is not None:
            ioctx.close()
        if client is not None:
            client.close()
        ceph.stop()
        if args.keep:
            print(f"logs (Ceph, pvcapid, ZooKeeper) kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

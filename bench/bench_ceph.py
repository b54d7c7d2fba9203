"""Benchmark Ceph calls through the CLIs (``ceph``/``rbd``/``rados``) against the librados/librbd bindings.

Run as ``.venv/bin/python bench/bench_ceph.py [--rounds 20]``.

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
ratio of the medians. It prints figures and never asserts on speed. Ceph is
always stopped and the directory removed in ``finally`` (``--keep`` keeps the
logs); if Ceph cannot be set up it exits 1 with the tail of the Ceph logs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

POOL = "bench"
IMAGE_SIZE = 64 * 1024 ** 2
TIMEOUT = 10  # seconds, for every Ceph call of either kind
NAME = "client.admin"


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


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="measurements per operation and side")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (Ceph logs)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for binary in ("ceph", "rbd", "rados"):
        if shutil.which(binary) is None:
            print(f"ERROR: {binary} is missing: apt-get install ceph-common", file=sys.stderr)
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
        return 0
    finally:
        if ioctx is not None:
            ioctx.close()
        if client is not None:
            client.close()
        ceph.stop()
        if args.keep:
            print(f"Ceph directory kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark disk image uploads (``POST /storage/ceph/volume/<pool>/<volume>/upload``): time and the daemon's RSS.

Run as ``.venv/bin/python bench/bench_upload.py [--size-mib 1024] [--qcow2-mib 512]``.

It starts a throwaway single-host Ceph (``LocalCeph``, memstore: the OSD holds
the data in memory, so keep the sizes within the machine's RAM), a throwaway
ZooKeeper and ``pvcapid`` (plugins node, vm, ceph; collector off), creates a
pool through the API and then

1. streams a ``--size-mib`` raw image (non-zero 1 MiB blocks, chunked
   transfer, never in the client's memory either) into a volume of that size;
2. makes a ``--qcow2-mib`` qcow2 image with qemu-img (random data) and
   uploads it as a multipart/form-data part named ``file`` (PVC 1.x's CLI),
   streamed (chunked) as well.

For each it prints the wall time, MiB/s, and the daemon's RSS (VmRSS of
``/proc/<pid>/status``, sampled every 20 ms): before, peak during, growth.
It prints figures and never asserts on speed; everything it started is
stopped and its directory removed in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import requests

from pvc_core.zkserver import ZooKeeperServer, free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ceph import CEPH_PLUGINS, clean_env  # noqa: E402 - a sibling script, not a package
from bench_root import CONFIG_TEMPLATE, HOST, THREADS, start_process, stop_process, wait_ready  # noqa: E402

MIB = 1024 * 1024
POOL = "benchup"


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measured(pid: int, send) -> tuple[float, int, int, requests.Response]:
    """(seconds, RSS before, peak RSS during, the answer) of ``send()``."""
    before, peak, running = rss(pid), [0], threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            peak[0] = max(peak[0], rss(pid))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        answer = send()
    finally:
        running.clear()
        sampler.join()
    return time.perf_counter() - started, before, peak[0], answer


def report(what: str, size: int, seconds: float, before: int, peak: int, answer: requests.Response) -> None:
    if answer.status_code != 200:
        raise SystemExit(f"{what}: {answer.status_code} {answer.text}")
    print(f"{what}: {seconds:.1f} s ({size / MIB / seconds:.0f} MiB/s); daemon RSS {before / MIB:.0f} MiB before, "
          f"peak {peak / MIB:.0f} MiB during: +{(peak - before) / MIB:.1f} MiB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="raw image size (MiB)")
    parser.add_argument("--qcow2-mib", type=int, default=512, help="qcow2 image virtual size (MiB)")
    args = parser.parse_args()
    from pvc_ceph.localceph import LocalCeph
    workdir = tempfile.mkdtemp(prefix="bench-upload-")
    ceph = LocalCeph(os.path.join(workdir, "ceph"), objectstore="memstore",
                     size_gb=max(4, 2 * (args.size_mib + args.qcow2_mib) // 1024 + 2))
    zookeeper = ZooKeeperServer(os.path.join(workdir, "zk"))
    daemon = None
    try:
        ceph.start()
        zookeeper.start()
        token, port = secrets.token_hex(16), free_port()
        config_path = os.path.join(workdir, "pvcapid.yaml")
        plugins = CEPH_PLUGINS.format(conf=ceph.conf, keyring=ceph.keyring, timeout=10).replace(
            'collector: "True"', 'collector: "False"')
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(CONFIG_TEMPLATE.format(data_dir=os.path.join(workdir, "data"), zk_port=zookeeper.port,
                                                port=port, threads=THREADS, token=token, plugins=plugins))
        log_path = os.path.join(workdir, "pvcapid.log")
        daemon = start_process([os.path.join(os.path.dirname(sys.executable), "pvcapid"), "--config", config_path],
                               log_path, clean_env())
        base = f"http://{HOST}:{port}/api/v1"
        wait_ready(f"{base}/", daemon, "pvcapid", log_path)
        http = requests.Session()
        http.headers["X-Api-Key"] = token
        for method, path, params in (("POST", "/initialize", {}),
                                     ("POST", "/storage/ceph/pool", {"pool": POOL, "pgs": "8",
                                                                     "replcfg": "copies=1,mincopies=1"}),
                                     ("POST", "/storage/ceph/volume", {"pool": POOL, "volume": "raw",
                                                                       "size": f"{args.size_mib}M"}),
                                     ("POST", "/storage/ceph/volume", {"pool": POOL, "volume": "qcow2",
                                                                       "size": f"{args.qcow2_mib}M"})):
            answer = http.request(method, base + path, params=params, timeout=120)
            if answer.status_code != 200:
                raise SystemExit(f"{method} {path}: {answer.status_code} {answer.text}")
        block = os.urandom(MIB)

        def blocks() -> Iterator[bytes]:
            for _ in range(args.size_mib):
                yield block
        seconds, before, peak, answer = measured(daemon.pid, lambda: http.post(
            f"{base}/storage/ceph/volume/{POOL}/raw/upload", params={"image_format": "raw"}, data=blocks(),
            timeout=600))
        report(f"raw, {args.size_mib} MiB, chunked", args.size_mib * MIB, seconds, before, peak, answer)

        source, image = os.path.join(workdir, "source.raw"), os.path.join(workdir, "image.qcow2")
        with open(source, "wb") as out:
            for _ in range(args.qcow2_mib):
                out.write(os.urandom(MIB))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", source, image], check=True)
        os.unlink(source)
        boundary = secrets.token_hex(16)

        def multipart() -> Iterator[bytes]:
            """The body PVC 1.x's CLI sends, made as it goes (requests' ``files=`` builds it in memory)."""
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"filename\"\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n").encode()
            with open(image, "rb") as data:
                while piece := data.read(MIB):
                    yield piece
            yield f"\r\n--{boundary}--\r\n".encode()
        seconds, before, peak, answer = measured(daemon.pid, lambda: http.post(
            f"{base}/storage/ceph/volume/{POOL}/qcow2/upload", params={"image_format": "qcow2"}, data=multipart(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=600))
        report(f"qcow2, {args.qcow2_mib} MiB, multipart", args.qcow2_mib * MIB, seconds, before, peak, answer)
        return 0
    finally:
        stop_process(daemon, "pvcapid")
        zookeeper.stop()
        ceph.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

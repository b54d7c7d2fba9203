"""Wall time of one two-disk VM creation, step by step, against the same work done by hand.

Run as ``.venv/bin/python bench/bench_provisioner.py [--rounds 5] [--size 4]`` (as root: it maps
volumes and mounts filesystems).

It starts a throwaway ZooKeeper, a single-host Ceph (``LocalCeph``, memstore,
127.0.0.1 only), ``pvcapid`` on the embedded default (SQLite database,
SQLite-backed Huey) and the stock ``huey_consumer`` with one worker, then
through the API: ``POST /initialize``, one seeded node, two bridged networks,
a pool ``bench`` (one copy) and a profile with two ``--size`` GiB ext4 disks
(``/`` and ``/var``), two networks and a script that writes one file.

Each round, alternating which goes first:

* **API**: ``POST /provisioner/create`` (``start_vm=false``) polled until
  SUCCESS; the wall time from the request to the final answer, and the task's
  own per-step timings (the worker records them in the task result);
* **bare**: the same storage work by hand, one subprocess each: ``rbd create``
  ×2, ``rbd-fuse`` + ``losetup`` ×2, ``mkfs.ext4`` ×2, ``mount`` ×2, the same
  file written, ``umount`` ×2, ``losetup -d`` + ``umount`` of the FUSE mount
  ×2 (volume removal is not timed on either side).

It prints the median of every step, each step's share of the task's total,
and the API/bare ratio of the medians. It never asserts on speed.

``--script debootstrap`` (``make provision-debootstrap``) runs the shipped
``debootstrap_script.py`` example instead, once, against ``--mirror``: a real
Debian install into the two volumes (minutes, and a reachable mirror). It
prints the step breakdown, then maps the root volume again and shows what the
install left there (``/etc/hostname``, the kernel, grub's config); there is
no hand-made baseline for that one. Everything
is stopped and removed in ``finally`` blocks; exit 1 with log tails when a
setup step fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import requests
from kazoo.client import KazooClient

from pvc_core.zkserver import ZooKeeperServer, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
POOL = "bench"
SCRIPT = '''
def install(**kwargs):
    with open(kwargs["temporary_directory"] + "/etc-hostname", "w") as out:
        out.write(kwargs["vm_name"])
'''
CONFIG = """---
pvc:
    debug: False
    data_dir: "{data_dir}"
    coordinators: ["127.0.0.1:{zk_port}"]
    api:
        listen_address: "127.0.0.1"
        listen_port: "{port}"
        authentication: {{enabled: False}}
        ssl: {{enabled: False}}
    ceph:
        conf: "{conf}"
        keyring: "{keyring}"
        collector: False
    vm:
        delete_grace: "0.05"
"""


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout.strip()


def start(argv: list[str], log_path: str, env: dict) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def stop(process: subprocess.Popen | None, signal_number: int = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal_number)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return f"(no {path})"


class Api:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.http = requests.Session()

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        response = self.http.request(method, self.base + path, timeout=60, **kwargs)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()


def seed(api: Api, zk: KazooClient, size: int, script: str, mirror: str) -> None:
    api.call("POST", "/initialize")
    values = {"daemonmode": "coordinator", "daemonstate": "run", "routerstate": "primary", "domainstate": "ready",
              "memtotal": "65536", "memused": "1024", "memfree": "64512", "memalloc": "0", "vcpualloc": "0",
              "cpuload": "0.1", "domainscount": "0", "runningdomains": "", "staticdata": "8 6.1 Linux x86_64"}
    transaction = zk.transaction()
    transaction.create("/nodes/hv1", b"coordinator")
    for key, value in values.items():
        transaction.create(f"/nodes/hv1/{key}", value.encode())
    transaction.commit()
    for vni in ("1001", "1002"):
        api.call("POST", f"/network/{vni}", params={"description": f"net{vni}", "nettype": "bridged"})
    api.call("POST", "/storage/ceph/pool", params={"pool": POOL, "pgs": "8", "replcfg": "copies=1,mincopies=1"})
    calls = [
        ("/provisioner/template/system/bench", {"vcpus": "2", "vram": "1024", "serial": "yes", "vnc": "no"}),
        ("/provisioner/template/network/bench", {"mac_template": "{prefix}:2f:1f:{vmid}{netid}"}),
        ("/provisioner/template/network/bench/net/1001", {}), ("/provisioner/template/network/bench/net/1002", {}),
        ("/provisioner/template/storage/bench", {}),
        ("/provisioner/template/storage/bench/disk/sda",
         {"pool": POOL, "disk_size": str(size), "filesystem": "ext4", "filesystem_arg": "-L=root", "mountpoint": "/"}),
        ("/provisioner/template/storage/bench/disk/sdb",
         {"pool": POOL, "disk_size": str(size), "filesystem": "ext4", "filesystem_arg": "-L=var",
          "mountpoint": "/var"}),
    ]
    for path, params in calls:
        api.call("POST", path, params=params)
    arguments: list[str] = []
    text = SCRIPT
    if script == "debootstrap":
        from importlib.resources import files
        text = (files("pvc_provisioner") / "examples" / "debootstrap_script.py").read_text()
        arguments = ["deb_release=bookworm", f"deb_mirror={mirror}",
                     "deb_packages=linux-image-amd64,grub-pc,cloud-init,python3-cffi-backend,wget"]
    api.call("POST", "/provisioner/script/bench", data={"data": text})
    api.call("POST", "/provisioner/profile/bench", params={
        "system_template": "bench", "network_template": "bench", "storage_template": "bench",
        "userdata": "empty", "script": "bench", "arg": arguments})


def api_round(api: Api, name: str, keep: bool = False) -> tuple[float, dict]:
    begun = time.perf_counter()
    task = api.call("POST", "/provisioner/create", expect=202,
                    params={"name": name, "profile": "bench", "start_vm": "false"})["task_id"]
    while True:
        status = api.call("GET", f"/provisioner/status/{task}")
        if status["state"] in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.02)
    wall = time.perf_counter() - begun
    if status["state"] != "SUCCESS":
        raise RuntimeError(f"creation of {name} failed: {status['status']}")
    if not keep:
        api.call("DELETE", f"/vm/{name}", params={"delete_disks": "true"})
    return wall, status["result"]["timings"]


def bare_round(conf: str, keyring: str, name: str, size: int) -> dict:
    ceph = ["-c", conf, "--name", "client.admin", "--keyring", keyring]
    steps: dict[str, float] = {}

    def timed(step: str, function) -> object:
        begun = time.perf_counter()
        value = function()
        steps[step] = steps.get(step, 0.0) + time.perf_counter() - begun
        return value

    disks = [f"{name}_sda", f"{name}_sdb"]
    for disk in disks:
        timed("create volumes", lambda disk=disk: run(["rbd", *ceph, "create", "--size", f"{size}G",
                                                       f"{POOL}/{disk}"]))
    fuse_dirs, loops = [], []
    root = tempfile.mkdtemp(prefix="bench-bare-")
    try:
        for disk in disks:
            fuse_dir = tempfile.mkdtemp(prefix="bench-fuse-")
            fuse_dirs.append(fuse_dir)

            def mapping(disk=disk, fuse_dir=fuse_dir) -> str:
                run(["rbd-fuse", "-p", POOL, "-r", disk, *ceph, fuse_dir])
                while not os.path.exists(os.path.join(fuse_dir, disk)):
                    time.sleep(0.01)
                return run(["losetup", "--find", "--show", os.path.join(fuse_dir, disk)])
            loops.append(timed("map", mapping))
            timed("mkfs", lambda loop=loops[-1], label=disk[-3:]: run(["mkfs.ext4", "-L", label, loop]))
        timed("mount", lambda: run(["mount", loops[0], root]))
        os.makedirs(root + "/var", exist_ok=True)
        timed("mount", lambda: run(["mount", loops[1], root + "/var"]))
        with open(root + "/etc-hostname", "w") as out:
            out.write(name)
        timed("unmount", lambda: run(["umount", root + "/var"]))
        timed("unmount", lambda: run(["umount", root]))
        loops_left = list(loops)
        for loop, fuse_dir in zip(loops_left, fuse_dirs, strict=True):
            timed("unmap", lambda loop=loop: run(["losetup", "--detach", loop]))
            timed("unmap", lambda fuse_dir=fuse_dir: run(["umount", fuse_dir]))
        loops.clear()
    finally:
        for loop in loops:
            subprocess.run(["losetup", "--detach", loop], capture_output=True)
        for fuse_dir in fuse_dirs:
            if os.path.ismount(fuse_dir):
                subprocess.run(["umount", fuse_dir], capture_output=True)
            shutil.rmtree(fuse_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        for disk in disks:
            subprocess.run(["rbd", *ceph, "rm", "--no-progress", f"{POOL}/{disk}"], capture_output=True)
    steps["total"] = sum(steps.values())
    return steps


def debootstrap_round(api: Api, ceph) -> int:
    from pvc_provisioner.hostops import Mapper
    wall, timings = api_round(api, "debian1", keep=True)
    print(f"\nDebian (bookworm) install by the shipped debootstrap example; {wall:.1f} s in all\n")
    for step, seconds in timings.items():
        print(f"{step:<62}{seconds:>9.1f}")
    mapper = Mapper(ceph.conf, "client.admin", ceph.keyring)
    mapping = mapper.map(POOL, "debian1_sda")
    target = tempfile.mkdtemp()
    try:
        run(["mount", "-o", "ro", mapping.device, target])
        try:
            hostname = open(os.path.join(target, "etc/hostname")).read()
            kernels = sorted(name for name in os.listdir(os.path.join(target, "boot")) if name.startswith("vmlinuz"))
            grub = os.path.exists(os.path.join(target, "boot/grub/grub.cfg"))
            print(f"\nroot volume: /etc/hostname={hostname!r}, kernels={kernels}, boot/grub/grub.cfg={grub}")
        finally:
            run(["umount", target])
    finally:
        mapper.unmap(mapping)
        os.rmdir(target)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=4, help="GiB per disk")
    parser.add_argument("--script", choices=("write", "debootstrap"), default="write",
                        help="write: a one-file script (timed against bare); debootstrap: the shipped example, once")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror for debootstrap")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_provisioner needs root (rbd-fuse, losetup, mount)", file=sys.stderr)
        return 1
    from pvc_ceph.localceph import LocalCeph
    tmp = tempfile.mkdtemp(prefix="bench-prov-")
    zookeeper = ceph = daemon = consumer = None
    zk = None
    daemon_log, consumer_log = os.path.join(tmp, "daemon.log"), os.path.join(tmp, "consumer.log")
    try:
        zookeeper = ZooKeeperServer(os.path.join(tmp, "zk"))
        zookeeper.start()
        ceph = LocalCeph(os.path.join(tmp, "ceph"), objectstore="memstore", size_gb=4 * args.size + 8)
        ceph.start()
        port = free_port()
        config_path = os.path.join(tmp, "pvcapid.yaml")
        with open(config_path, "w") as handle:
            handle.write(CONFIG.format(data_dir=os.path.join(tmp, "data"), zk_port=zookeeper.port, port=port,
                                       conf=ceph.conf, keyring=ceph.keyring))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CEPH_")}, "PVC_CONFIG_FILE": config_path}
        daemon = start([os.path.join(BIN, "pvcapid"), "--config", config_path], daemon_log, env)
        api = Api(port)
        deadline = time.monotonic() + 60
        while True:
            try:
                api.call("GET", "/")
                break
            except (requests.RequestException, RuntimeError):
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError(f"pvcapid did not start:\n{tail(daemon_log)}") from None
                time.sleep(0.1)
        consumer = start([os.path.join(BIN, "huey_consumer"), "pvc_core.consumer.huey", "-w", "1", "-k", "thread",
                          "-d", "0.01", "-m", "0.05"], consumer_log, env)
        zk = KazooClient(hosts=zookeeper.address)
        zk.start(timeout=15)
        seed(api, zk, args.size, args.script, args.mirror)
        if args.script == "debootstrap":
            return debootstrap_round(api, ceph)
        api_walls: list[float] = []
        api_steps: dict[str, list[float]] = {}
        bare_steps: dict[str, list[float]] = {}
        for index in range(args.rounds):
            order = ("api", "bare") if index % 2 == 0 else ("bare", "api")
            for side in order:
                if side == "api":
                    wall, timings = api_round(api, f"benchvm{index}")
                    api_walls.append(wall)
                    for step, seconds in timings.items():
                        api_steps.setdefault(step, []).append(seconds)
                else:
                    for step, seconds in bare_round(ceph.conf, ceph.keyring, f"bare{index}", args.size).items():
                        bare_steps.setdefault(step, []).append(seconds)
        median = statistics.median
        total = median(api_steps["total"])
        print(f"\nOne creation: 2 x {args.size} GiB ext4 disks, 2 networks, a one-file script; "
              f"{args.rounds} rounds, medians (this machine: {os.cpu_count()} cores, memstore Ceph, "
              f"volume mapping through rbd-fuse + loop)\n")
        print(f"{'step (task record)':<62}{'seconds':>9}{'share':>8}")
        for step, samples in api_steps.items():
            if step == "total":
                continue
            print(f"{step:<62}{median(samples):>9.3f}{median(samples) / total:>8.1%}")
        print(f"{'task total (worker)':<62}{total:>9.3f}")
        print(f"{'API wall: POST create → SUCCESS seen by polling':<62}{median(api_walls):>9.3f}")
        print(f"\n{'bare step (one subprocess each)':<62}{'seconds':>9}")
        for step, samples in bare_steps.items():
            print(f"{step:<62}{median(samples):>9.3f}")
        bare_total = median(bare_steps["total"])
        print(f"\nratio API wall / bare total: {median(api_walls) / bare_total:.2f} "
              f"(worker total / bare total: {total / bare_total:.2f})")
        return 0
    except Exception as exc:
        print(f"bench_provisioner failed: {exc}\n--- daemon log\n{tail(daemon_log)}\n--- consumer log\n"
              f"{tail(consumer_log)}", file=sys.stderr)
        return 1
    finally:
        if zk is not None:
            zk.stop()
            zk.close()
        stop(consumer, 2)
        stop(daemon)
        if ceph is not None:
            ceph.stop()
        if zookeeper is not None:
            zookeeper.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

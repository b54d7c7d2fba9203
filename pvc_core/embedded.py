"""``pvcapid-embedded``: the whole daemon on one machine with no servers to set up.

Starts a local ZooKeeper, a local single-host Ceph when the ceph plugin is
installed (bluestore on a sparse file, so volumes survive a restart),
initializes the cluster tree if it is new, starts the stock Huey consumer on
the SQLite-backed queue, and runs the API on the SQLite database; all state
lives under one data directory, and the configuration it writes there on
first start is the operator's to edit.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from . import schema
from .zkserver import ZooKeeperServer

CONFIG_TEMPLATE = """---
# Written by pvcapid-embedded on first start; edit freely.
pvc:
    debug: False
    data_dir: "{data_dir}"
    coordinators:
      - "127.0.0.1:{zk_port}"
    api:
        listen_address: "{address}"
        listen_port: "{port}"
        authentication:
            enabled: False
        ssl:
            enabled: False
    # The metadata API serves VMs at the well-known 169.254.169.254:80, which this
    # machine does not hold; enable it with a listen_address/listen_port you have.
    metadata:
        enabled: False
{ceph}"""

CEPH_SECTION = """    ceph:
        conf: "{data_dir}/ceph/ceph.conf"
        keyring: "{data_dir}/ceph/keyring"
"""


def _zk_port(config_path: str) -> int:
    import yaml
    with open(config_path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=yaml.BaseLoader)
    first = document["pvc"]["coordinators"][0]
    return int(first.rsplit(":", 1)[1]) if ":" in first else 2181


def ensure_config(data_dir: str, address: str, port: int, zk_port: int, with_ceph: bool) -> str:
    path = os.path.join(data_dir, "pvcapid.yaml")
    if not os.path.exists(path):
        ceph = CEPH_SECTION.format(data_dir=data_dir) if with_ceph else ""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(CONFIG_TEMPLATE.format(data_dir=data_dir, address=address, port=port, zk_port=zk_port,
                                                ceph=ceph))
    return path


def local_ceph(data_dir: str) -> object | None:
    """The embedded Ceph, when the ceph plugin (which carries the launcher) is installed."""
    try:
        from pvc_ceph.localceph import LocalCeph
    except ImportError:
        return None
    return LocalCeph(os.path.join(data_dir, "ceph"), objectstore="bluestore", size_gb=20)


def initialize_tree(coordinator: str) -> bool:
    """Create the v0.6 base tree on a fresh ZooKeeper; True when it was created now."""
    from .zk import ZooKeeper
    zk = ZooKeeper([coordinator])
    try:
        zk.start(wait=15)
        if zk.exists(schema.PRIMARY_NODE):
            return False
        zk.create(schema.BASE_TREE)
        return True
    finally:
        zk.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvcapid-embedded", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.path.abspath(".pvc-data"))
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7370)
    parser.add_argument("--zk-port", type=int, default=2181)
    parser.add_argument("--no-ceph", action="store_true", help="do not start a local Ceph")
    args = parser.parse_args(argv)
    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    ceph = None if args.no_ceph else local_ceph(data_dir)
    config_path = ensure_config(data_dir, args.address, args.port, args.zk_port, ceph is not None)
    zk_port = _zk_port(config_path)

    zookeeper = ZooKeeperServer(os.path.join(data_dir, "zookeeper"), port=zk_port, force_sync=True)
    print(f"Starting ZooKeeper on 127.0.0.1:{zk_port} (data in {zookeeper.directory})", flush=True)
    zookeeper.start()
    consumer = None
    try:
        if ceph is not None:
            print(f"Starting a local Ceph (bluestore, data in {ceph.directory})", flush=True)
            try:
                ceph.start()
            except RuntimeError as exc:
                print(f"WARNING: the local Ceph did not start ({exc}); storage calls will answer 503", flush=True)
        if initialize_tree(f"127.0.0.1:{zk_port}"):
            print("Initialized a new PVC cluster tree", flush=True)
        env = dict(os.environ, PVC_CONFIG_FILE=config_path)
        consumer = subprocess.Popen(
            [sys.executable, "-m", "huey.bin.huey_consumer", "pvc_core.consumer.huey", "-w", "1", "-k", "thread"],
            env=env, stdin=subprocess.DEVNULL)
        os.environ["PVC_CONFIG_FILE"] = config_path
        from .cli import main as daemon_main
        return daemon_main(["--config", config_path])
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.send_signal(signal.SIGINT)  # huey's graceful stop
            try:
                consumer.wait(timeout=15)
            except subprocess.TimeoutExpired:
                consumer.kill()
        if ceph is not None:
            ceph.stop()
        zookeeper.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``pvcapid-embedded``: the whole daemon on one machine with no servers to set up.

Starts a local ZooKeeper, then what the installed plugins ask for through
their ``pvc_embedded`` hook (the ceph plugin: a local single-host Ceph,
bluestore on a sparse file, so volumes survive a restart; the simnode
plugin: simulated node daemons), initializes the cluster tree if it is new,
starts the stock Huey consumer on the SQLite-backed queue, and runs the API
on the SQLite database; all state lives under one data directory, and the
configuration it writes there on first start is the operator's to edit. The
core names no plugin: each contributes its part through the hook.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import schema
from .config import merge_raw
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
"""


@dataclass
class Part:
    """What one plugin adds to the embedded run (returned by its ``pvc_embedded`` hook).

    ``config`` is YAML under ``pvc:`` (four-space indented) for the configuration written on first
    start; ``overrides`` are configuration values for this run only (its command-line options win
    over the file); ``start``/``stop`` run a local service before and after the daemon.
    """

    name: str
    config: str = ""
    overrides: dict = field(default_factory=dict)
    start: Callable[[], None] | None = None
    stop: Callable[[], None] | None = None


@dataclass
class Run:
    """What a plugin's ``pvc_embedded`` hook is told about this run."""

    data_dir: str
    args: argparse.Namespace
    coordinator: str = ""


def _zk_port(config_path: str) -> int:
    import yaml
    with open(config_path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=yaml.BaseLoader)
    first = document["pvc"]["coordinators"][0]
    return int(first.rsplit(":", 1)[1]) if ":" in first else 2181


def ensure_config(data_dir: str, address: str, port: int, zk_port: int, parts: list[Part]) -> str:
    path = os.path.join(data_dir, "pvcapid.yaml")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(CONFIG_TEMPLATE.format(data_dir=data_dir, address=address, port=port, zk_port=zk_port))
            handle.writelines(part.config for part in parts)
    return path


def plugin_host() -> Any:
    """Every installed plugin, off-by-default ones included (their hooks say what the run needs)."""
    from .plugins import PluginHost, installed_plugins
    names = sorted(installed_plugins())
    host = PluginHost()
    host.load(names, explicit=set(names))
    return host


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
    from .errors import PluginError
    try:
        host = plugin_host()
    except PluginError as exc:
        print(f"ERROR: Failed to load plugins: {exc}", file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(prog="pvcapid-embedded", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.path.abspath(".pvc-data"))
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7370)
    parser.add_argument("--zk-port", type=int, default=2181)
    for _name, _ in host.call_each("pvc_embedded_options", parser=parser):
        pass
    args = parser.parse_args(argv)
    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    run = Run(data_dir, args)
    parts = [part for _name, part in host.call_each("pvc_embedded", run=run) if part is not None]
    config_path = ensure_config(data_dir, args.address, args.port, args.zk_port, parts)
    zk_port = _zk_port(config_path)
    run.coordinator = f"127.0.0.1:{zk_port}"

    zookeeper = ZooKeeperServer(os.path.join(data_dir, "zookeeper"), port=zk_port, force_sync=True)
    print(f"Starting ZooKeeper on 127.0.0.1:{zk_port} (data in {zookeeper.directory})", flush=True)
    zookeeper.start()
    consumer = None
    started: list[Part] = []
    try:
        for part in parts:
            if part.start is not None:
                part.start()
            started.append(part)
        if initialize_tree(run.coordinator):
            print("Initialized a new PVC cluster tree", flush=True)
        env = dict(os.environ, PVC_CONFIG_FILE=config_path)
        consumer = subprocess.Popen(
            [sys.executable, "-m", "huey.bin.huey_consumer", "pvc_core.consumer.huey", "-w", "1", "-k", "thread"],
            env=env, stdin=subprocess.DEVNULL)
        os.environ["PVC_CONFIG_FILE"] = config_path
        overrides: dict = {}
        for part in parts:
            overrides = merge_raw(overrides, part.overrides)
        from .cli import main as daemon_main
        return daemon_main(["--config", config_path], overrides=overrides)
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.send_signal(signal.SIGINT)  # huey's graceful stop
            try:
                consumer.wait(timeout=15)
            except subprocess.TimeoutExpired:
                consumer.kill()
        for part in reversed(started):
            if part.stop is not None:
                part.stop()
        zookeeper.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

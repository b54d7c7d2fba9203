"""Hook implementations of the ceph plugin."""

from __future__ import annotations

import os
from typing import Any

from pvc_core import hookimpl
from pvc_core.config import Field, Section
from pvc_core.embedded import Part
from pvc_core.health import Probe

from . import routes, tasks
from .client import CephClient
from .collector import Collector
from .metrics import CephMetrics
from .service import CephService


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": [], "optional": ["node"],
            "description": "Ceph storage: status, statistics, OSDs, pools, volumes, snapshots, storage service"}


@hookimpl
def pvc_config_fields() -> Section:
    return Section({"ceph": Section({
        "conf": Field("str", default="/etc/ceph/ceph.conf", help="ceph.conf of the cluster"),
        "client": Field("str", default="client.admin", help="Ceph client name"),
        "keyring": Field("str", default="", help="keyring file (default: from ceph.conf)"),
        "timeout": Field("float", default=10.0,
                         help="longest wait for Ceph within one storage operation of a request before 503, seconds"),
        "collector": Field("bool", default=True, help="collect statistics into /ceph (off when v0.6 node "
                                                      "daemons already do)"),
        "interval": Field("float", default=5.0, help="seconds between statistics collections"),
        "volume_interval": Field("float", default=60.0, help="seconds between refreshes of every volume's "
                                                             "statistics (an `rbd info` per volume)"),
        "osd_add_timeout": Field("float", default=300.0, help="longest wait for a node to create an OSD, s"),
        "osd_remove_timeout": Field("float", default=7200.0,
                                    help="longest wait for a node to drain and remove an OSD, s"),
    }, optional=True)})


def _mon_host(runtime: Any) -> str | None:
    """Monitor hosts from provisioner.ceph_cluster (v0.6 config), when it names any."""
    cluster = runtime.config.get("provisioner.ceph_cluster") or {}
    hosts = cluster.get("storage_hosts") or []
    if not hosts:
        return None
    domain = cluster.get("storage_domain") or ""
    port = cluster.get("ceph_monitor_port") or "6789"
    return ",".join(f"{host}.{domain}:{port}" if domain else f"{host}:{port}" for host in hosts)


@hookimpl
def pvc_services(runtime: Any) -> dict:
    config = runtime.config
    client = CephClient(config["ceph.conf"], config["ceph.client"], config["ceph.keyring"] or None,
                        config["ceph.timeout"], _mon_host(runtime))
    return {"ceph": CephService(runtime, client)}


@hookimpl
def pvc_health(runtime: Any) -> list:
    client = runtime.service("ceph").client
    return [Probe("ceph", lambda: client.mon_command("health"), client.timeout, "ceph.timeout")]


@hookimpl
def pvc_routes(runtime: Any) -> list:
    return routes.routes()


@hookimpl
def pvc_start(runtime: Any) -> None:
    service = runtime.service("ceph")
    for kind in tasks.kinds(runtime):
        runtime.task_monitor.register(kind)
    service.uploads.clear_leftovers()
    if runtime.config["ceph.collector"]:
        service.collector = Collector(runtime, service.client, runtime.config["ceph.interval"], service.pools,
                                      service.osds, service.volumes, runtime.config["ceph.volume_interval"])
        service.collector.start()


@hookimpl
def pvc_stop(runtime: Any) -> None:
    service = runtime.service("ceph")
    if service.collector is not None:
        service.collector.stop()
        service.collector = None
    service.client.close()


@hookimpl
def pvc_status(runtime: Any) -> dict:
    return runtime.service("ceph").status()


CEPH_SECTION = """    ceph:
        conf: "{data_dir}/ceph/ceph.conf"
        keyring: "{data_dir}/ceph/keyring"
"""


@hookimpl
def pvc_embedded_options(parser: Any) -> None:
    parser.add_argument("--no-ceph", action="store_true", help="do not start a local Ceph")


@hookimpl
def pvc_embedded(run: Any) -> Part | None:
    """A local single-host Ceph, bluestore on a sparse file so that volumes survive a restart."""
    if run.args.no_ceph:
        return None
    from .localceph import LocalCeph
    ceph = LocalCeph(os.path.join(run.data_dir, "ceph"), objectstore="bluestore", size_gb=20,
                     notify=lambda message: print(message, flush=True))

    def start() -> None:
        print(f"Starting a local Ceph (bluestore, data in {ceph.directory})", flush=True)
        try:
            ceph.start()
        except RuntimeError as exc:
            print(f"WARNING: the local Ceph did not start ({exc}); storage calls will answer 503", flush=True)

    return Part("ceph", config=CEPH_SECTION.format(data_dir=run.data_dir), start=start, stop=ceph.stop)


@hookimpl
def pvc_metrics(runtime: Any) -> list:
    return [CephMetrics(runtime)]

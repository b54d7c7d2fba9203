"""Hook implementations of the node plugin."""

from __future__ import annotations

from typing import Any

from pvc_core import hookimpl
from pvc_core.config import Field, Section

from . import routes, tasks
from .metrics import NodeMetrics
from .service import NodeService


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": [], "optional": [], "description": "Hypervisor nodes: list, states, flush and ready"}


@hookimpl
def pvc_config_fields() -> Section:
    return Section({"node": Section({
        "wait_timeout": Field("float", default=600.0, help="longest wait of domain-state wait=true, seconds"),
        "watch": Field("bool", default=True, help="serve lists from a watched view of /nodes"),
    }, optional=True)})


@hookimpl
def pvc_services(runtime: Any) -> dict:
    return {"node": NodeService(runtime)}


@hookimpl
def pvc_routes(runtime: Any) -> list:
    return routes.routes()


@hookimpl
def pvc_start(runtime: Any) -> None:
    runtime.service("node").start()
    for kind in tasks.kinds(runtime):
        runtime.task_monitor.register(kind)


@hookimpl
def pvc_status(runtime: Any) -> dict:
    return runtime.service("node").status()


@hookimpl
def pvc_metrics(runtime: Any) -> list:
    return [NodeMetrics(runtime)]

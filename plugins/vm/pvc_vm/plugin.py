"""Hook implementations of the vm plugin."""

from __future__ import annotations

from typing import Any

from pvc_core import hookimpl
from pvc_core.config import Field, Section

from . import additions, routes, tasks
from .metrics import VMMetrics
from .service import VMService


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": ["node"], "optional": ["ceph"],
            "description": "Virtual machines: define, modify, state, migrate, metadata, console"}


@hookimpl
def pvc_config_fields() -> Section:
    return Section({"vm": Section({
        "wait_timeout": Field("float", default=300.0, help="longest wait of state/node wait=true, seconds"),
        "delete_grace": Field("float", default=2.0, help="pause after each state write of an undefine (v0.6: 2)"),
        "watch": Field("bool", default=True, help="serve lists from a watched view of /domains"),
        "fsfreeze_timeout": Field("float", default=30.0, check=lambda value: None if value > 0 else "more than 0",
                                  help="longest wait for a running VM's node to freeze or thaw its guest "
                                       "filesystems around a snapshot (then it is taken unfrozen), seconds"),
        "warmup_wait": Field("float", default=30.0, check=lambda value: None if value > 0 else "more than 0",
                             help="longest wait of a list for the watched view to load (then 503), seconds"),
    }, optional=True)})


@hookimpl
def pvc_services(runtime: Any) -> dict:
    return {"vm": VMService(runtime)}


@hookimpl
def pvc_routes(runtime: Any) -> list:
    return routes.routes() + additions.routes()


@hookimpl
def pvc_start(runtime: Any) -> None:
    runtime.service("vm").start()
    for kind in tasks.kinds(runtime):
        runtime.task_monitor.register(kind)


@hookimpl
def pvc_status(runtime: Any) -> dict:
    return runtime.service("vm").status()


@hookimpl
def pvc_metrics(runtime: Any) -> list:
    return [VMMetrics(runtime)]

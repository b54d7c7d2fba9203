"""Hook implementations of the provisioner plugin."""

from __future__ import annotations

from typing import Any

from pvc_core import hookimpl
from pvc_core.config import Field, Section
from pvc_core.taskmonitor import Kind

from . import routes
from .models import MODELS
from .service import KIND, TASK_NAME, ProvisionerService


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": ["vm", "ceph", "network"], "optional": [],
            "description": "Provisioner: templates, userdata, scripts, profiles and VM creation tasks"}


def _mapper_check(value: str) -> str | None:
    return None if value in ("auto", "krbd", "fuse") else "one of auto, krbd, fuse"


def _retention_check(value: float) -> str | None:
    return None if value >= 86400 else "at least 86400 seconds (v0.6 kept results for a day)"


@hookimpl
def pvc_config_fields() -> Section:
    return Section({"provisioner": Section({
        "ceph_cluster": Section({
            "storage_hosts": Field("list", default=[], help="monitor hosts for the XML; empty: the coordinators"),
            "storage_domain": Field("str", default="", help="appended as .<domain> to each storage host"),
            "ceph_monitor_port": Field("str", default="6789", help="monitor port in the XML"),
            "ceph_storage_secret_uuid": Field("str", default="",
                                              help="libvirt Ceph secret UUID; empty: no <auth> in the XML"),
        }, optional=True),
        "volume_mapper": Field("str", default="auto", check=_mapper_check,
                               help="how the worker maps volumes: kernel rbd, rbd-fuse + loop, or auto"),
        "command_timeout": Field("float", default=1800.0,
                                 help="longest run of one map/mkfs/mount command, seconds"),
        "task_retention": Field("float", default=7 * 86400.0, check=_retention_check,
                                help="finished task records older than this are purged, seconds (>= 86400)"),
    }, optional=True)})


@hookimpl
def pvc_services(runtime: Any) -> dict:
    return {"provisioner": ProvisionerService(runtime)}


@hookimpl
def pvc_routes(runtime: Any) -> list:
    return routes.routes()


@hookimpl
def pvc_db_models() -> list:
    return list(MODELS)


@hookimpl
def pvc_tasks(huey: Any, runtime: Any) -> None:
    service = runtime.service("provisioner")

    @huey.task(name=TASK_NAME)
    def create_vm(task_id: str, name: str, profile: str, define_vm: bool = True, start_vm: bool = True,
                  script_args: list[str] | None = None) -> dict:
        return service.execute(task_id, name, profile, define_vm, start_vm, script_args)

    service.create_task = create_vm


@hookimpl
def pvc_start(runtime: Any) -> None:
    # the worker runs it and looks for a cancel between steps (pvc_provisioner.service)
    runtime.task_monitor.register(Kind(KIND, "provisioner", lambda: runtime.config["provisioner.command_timeout"],
                                       "pvc.provisioner.command_timeout"))
    if runtime.role == "worker":
        runtime.service("provisioner").abandon_orphans()


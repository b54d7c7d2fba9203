"""Hook implementations of the network plugin."""

from __future__ import annotations

from typing import Any

from pvc_core import hookimpl
from pvc_core.config import Field, Section

from . import routes
from .service import NetworkService


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": [], "optional": ["vm"],
            "description": "Client networks (managed VXLAN, bridged vLAN), DHCP reservations, firewall ACLs"}


@hookimpl
def pvc_config_fields() -> Section:
    return Section({"network": Section({
        "watch": Field("bool", default=True,
                       help="serve network, lease and ACL reads from watched views of /networks"),
    }, optional=True)})


@hookimpl
def pvc_services(runtime: Any) -> dict:
    return {"network": NetworkService(runtime)}


@hookimpl
def pvc_routes(runtime: Any) -> list:
    return routes.routes()


@hookimpl
def pvc_start(runtime: Any) -> None:
    runtime.service("network").start()


@hookimpl
def pvc_status(runtime: Any) -> dict:
    return {"fields": {"networks": runtime.service("network").count()}}

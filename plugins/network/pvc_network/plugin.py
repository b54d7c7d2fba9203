"""Hook implementations of the network plugin."""

from __future__ import annotations

from typing import Any

from pvc_core import hookimpl

from . import routes
from .service import NetworkService


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": [], "optional": ["vm"],
            "description": "Client networks (managed VXLAN, bridged vLAN), DHCP reservations, firewall ACLs"}


@hookimpl
def pvc_services(runtime: Any) -> dict:
    return {"network": NetworkService(runtime)}


@hookimpl
def pvc_routes(runtime: Any) -> list:
    return routes.routes()


@hookimpl
def pvc_status(runtime: Any) -> dict:
    return {"fields": {"networks": runtime.service("network").count()}}

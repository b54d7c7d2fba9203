"""The /vm routes (nodes-vms.md §3) and their thin handlers."""

from __future__ import annotations

from typing import Any

from pvc_core.params import BOOLEAN, INTEGER, STRING, Param
from pvc_core.routes import Route, collapse

from . import schema
from .service import VMService

SELECTOR = Param("selector", STRING, choices=schema.SELECTORS, help="A valid selector must be specified")
XML = Param("xml", STRING, required=True, help="A Libvirt XML document must be specified")
DEFINE = (
    Param("limit", STRING, help="comma-separated node names the VM may run on"),
    Param("node", STRING, help="node to define the VM on (default: selected automatically)"),
    SELECTOR,
    Param("autostart", BOOLEAN, default=False, help="start on the next unflush of its node"),
    XML,
)
WAIT = Param("wait", BOOLEAN, default=False, help="wait for the node daemon (bounded by pvc.vm.wait_timeout)")


def service(ctx: Any) -> VMService:
    return ctx.service("vm")


def list_vms(ctx: Any, params: dict) -> Any:
    return collapse(service(ctx).list(params["limit"], params["node"], params["state"]))


def define_vm(ctx: Any, params: dict, vm: str | None = None) -> dict:
    return {"message": service(ctx).define(params["xml"], params["node"], params["limit"], params["selector"],
                                           params["autostart"])}


def get_vm(ctx: Any, params: dict, vm: str) -> dict:
    return service(ctx).get(vm)


def modify_vm(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).modify(vm, params["xml"], params["restart"])}


def remove_vm(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).remove(vm, params["delete_disks"])}


def get_meta(ctx: Any, params: dict, vm: str) -> dict:
    return service(ctx).meta_of(vm)


def set_meta(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).set_meta(vm, params["limit"], params["selector"], params["autostart"],
                                             params["profile"])}


def get_state(ctx: Any, params: dict, vm: str) -> dict:
    return service(ctx).state_of(vm)


def set_state(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).set_state(vm, params["state"], params["wait"])}


def get_node(ctx: Any, params: dict, vm: str) -> dict:
    return service(ctx).node_of(vm)


def set_node(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).change_node(vm, params["action"], params["node"], params["force"],
                                                params["wait"])}


def flush_locks(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).flush_locks(vm)}


def console(ctx: Any, params: dict, vm: str) -> dict:
    return service(ctx).console(vm, params["lines"])


def routes() -> list[Route]:
    tags = ("vm",)
    return [
        Route("GET", "/vm", list_vms, (
            Param("limit", STRING, help="regular expression on name or UUID"),
            Param("node", STRING, help="only VMs on this node"),
            Param("state", STRING, choices=schema.STATES, help="only VMs in this state"),
        ), summary="List VMs", tags=tags),
        Route("POST", "/vm", define_vm, DEFINE, summary="Define a VM from libvirt XML", tags=tags),
        Route("GET", "/vm/<vm>", get_vm, summary="One VM by name or UUID", tags=tags),
        Route("POST", "/vm/<vm>", define_vm, DEFINE, summary="Define a VM (the path is ignored, as in v0.6)",
              tags=tags),
        Route("PUT", "/vm/<vm>", modify_vm, (
            Param("restart", BOOLEAN, default=False, help="restart the VM to apply the new XML"), XML),
            summary="Replace a VM's libvirt XML", tags=tags),
        Route("DELETE", "/vm/<vm>", remove_vm, (
            Param("delete_disks", BOOLEAN, default=False, help="also remove its RBD volumes (needs ceph)"),),
            summary="Undefine a VM, optionally removing its disks", tags=tags),
        Route("GET", "/vm/<vm>/meta", get_meta, summary="A VM's placement metadata", tags=tags),
        Route("POST", "/vm/<vm>/meta", set_meta, (
            Param("limit", STRING, help="comma-separated node names; empty clears"),
            SELECTOR,
            Param("autostart", BOOLEAN, help="start on the next unflush of its node"),
            Param("profile", STRING, help="provisioner profile name"),
        ), summary="Change a VM's placement metadata", tags=tags),
        Route("GET", "/vm/<vm>/state", get_state, summary="A VM's state", tags=tags),
        Route("POST", "/vm/<vm>/state", set_state, (
            Param("state", STRING, required=True, choices=("start", "shutdown", "stop", "restart", "disable"),
                  help="A valid state must be specified"), WAIT),
            summary="Start, stop, shut down, restart or disable a VM", tags=tags),
        Route("GET", "/vm/<vm>/node", get_node, summary="A VM's node and previous node", tags=tags),
        Route("POST", "/vm/<vm>/node", set_node, (
            Param("action", STRING, required=True, choices=("migrate", "unmigrate", "move"),
                  help="A valid action must be specified"),
            Param("node", STRING, help="target node (default: selected automatically)"),
            Param("force", BOOLEAN, default=False, help="migrate again although already migrated"),
            WAIT,
        ), summary="Migrate, unmigrate or move a VM", tags=tags),
        Route("POST", "/vm/<vm>/locks", flush_locks, summary="Remove the RBD locks of a stopped VM (needs ceph)",
              tags=tags),
        Route("GET", "/vm/<vm>/console", console, (
            Param("lines", INTEGER, default=10, help="how many lines of the console log"),),
            summary="The tail of a VM's serial console log", tags=tags),
    ]

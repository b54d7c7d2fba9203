"""The /vm routes (nodes-vms.md §3) and their thin handlers."""

from __future__ import annotations

from typing import Any

from pvc_core import etags
from pvc_core.errors import BadRequest
from pvc_core.params import BOOLEAN, INTEGER, NAME_HELP, NAME_PATTERN, STRING, Param
from pvc_core.routes import CONFLICT, NO_MATCH, Encoded, Route
from pvc_core.schema import SELECTORS
from pvc_core.shapes import BOOL, INT, MESSAGE, STR, array, named, nullable, obj, one_or_many
from pvc_core.taskroutes import announce, task_headers

from . import schema
from .additions import SNAPSHOT, TAG, TAGS_ON_DEFINE, defined_tags
from .service import VMService

SELECTOR = Param("selector", STRING, choices=SELECTORS, help="A valid selector must be specified")
XML = Param("xml", STRING, required=True, help="A Libvirt XML document must be specified")
DEFINE = (
    Param("limit", STRING, help="comma-separated node names the VM may run on"),
    Param("node", STRING, help="node to define the VM on (default: selected automatically)"),
    SELECTOR,
    Param("autostart", BOOLEAN, default=False, help="start on the next unflush of its node"),
    XML,
    *TAGS_ON_DEFINE,
)
WAIT = Param("wait", BOOLEAN, default=False, help="wait for the node daemon (bounded by pvc.vm.wait_timeout)")

# The v0.6 VM object (nodes-vms.md §3.1); what the stored XML lacks is null.
NSTR = nullable(STR)
VM = named("VM", obj({
    "name": STR, "uuid": STR, "state": STR, "node": STR, "last_node": STR, "migrated": STR, "failed_reason": STR,
    "node_limit": nullable(array(STR)), "node_selector": NSTR, "node_autostart": BOOL, "tags": array(TAG),
    "snapshots": array(SNAPSHOT),
    "description": STR,
    "profile": NSTR, "memory": nullable(INT), "vcpu": nullable(INT), "vcpu_topology": STR,
    "networks": array(obj({"type": NSTR, "mac": NSTR, "source": NSTR, "model": NSTR})),
    "type": NSTR, "arch": NSTR, "machine": NSTR, "console": NSTR, "emulator": NSTR, "features": array(STR),
    "disks": array(obj({"type": NSTR, "name": NSTR, "dev": NSTR, "bus": NSTR},
                       optional=("type", "name", "dev", "bus"))),  # {} for a disk that is neither network nor file
    "controllers": array(obj({"type": NSTR, "model": NSTR})),
    "xml": STR}))
META = obj({"name": STR, "node_limit": nullable(array(STR)), "node_selector": NSTR, "node_autostart": BOOL})
# after its record began, a task's request may still fail: a VM that failed (400), the bounded wait (409), ZooKeeper
TASK_ERRORS_TOO = task_headers(400, 409, 503)
WAITED = {409: "The node daemon did not finish within pvc.vm.wait_timeout, or a concurrent change, or the VM would "
               "run on a volume an upload is writing now (ceph plugin)"}


def service(ctx: Any) -> VMService:
    return ctx.service("vm")


def list_vms(ctx: Any, params: dict) -> Any:
    return service(ctx).list(params["limit"], params["node"], params["state"], params["tag"], params["negate"])


def define_vm(ctx: Any, params: dict, vm: str | None = None) -> dict:
    return {"message": service(ctx).define(params["xml"], params["node"], params["limit"], params["selector"],
                                           params["autostart"], initial_tags=defined_tags(params),
                                           if_match=ctx.if_match, path_vm=vm)}


def get_vm(ctx: Any, params: dict, vm: str) -> Encoded:
    answer, etag = service(ctx).get(vm)
    ctx.response_headers[etags.HEADER] = etag
    return answer


def modify_vm(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).modify(vm, params["xml"], params["restart"], ctx.if_match)}


def remove_vm(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).remove(vm, params["delete_disks"], ctx.if_match)}


def get_meta(ctx: Any, params: dict, vm: str) -> dict:
    return service(ctx).meta_of(vm)


def set_meta(ctx: Any, params: dict, vm: str) -> dict:
    autostart = params["autostart"]
    if params["no-autostart"]:
        if autostart:
            raise BadRequest("Parameters 'autostart' and 'no-autostart' contradict each other; expected one")
        autostart = False
    return {"message": service(ctx).set_meta(vm, params["limit"], params["selector"], autostart,
                                             params["profile"], ctx.if_match)}


def get_state(ctx: Any, params: dict, vm: str) -> dict:
    return service(ctx).state_of(vm)


def set_state(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": service(ctx).set_state(vm, params["state"], params["wait"], announce(ctx), ctx.if_match)}


def get_node(ctx: Any, params: dict, vm: str) -> dict:
    return service(ctx).node_of(vm)


def set_node(ctx: Any, params: dict, vm: str) -> dict:
    action = params["action"]
    if params["permanent"]:
        # Seed B: a permanent migration is v0.6's move.
        if action not in ("migrate", "move"):
            raise BadRequest(f"Parameter 'permanent': expected only with action 'migrate', got action '{action}'")
        action = "move"
    return {"message": service(ctx).change_node(vm, action, params["node"], params["force"],
                                                params["wait"], params["selector"], announce(ctx), ctx.if_match)}


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
            Param("tag", STRING, pattern=NAME_PATTERN, pattern_help=NAME_HELP, help="only VMs with this tag"),
            Param("negate", BOOLEAN, default=False, help="only VMs that do not match node, state and tag"),
        ), summary="List VMs", tags=tags, returns=one_or_many(VM), responses=NO_MATCH),
        Route("POST", "/vm", define_vm, DEFINE, summary="Define a VM from libvirt XML", tags=tags, returns=MESSAGE,
              responses=CONFLICT),
        Route("GET", "/vm/<vm>", get_vm, summary="One VM by name or UUID", tags=tags, returns=VM, etag=True),
        Route("POST", "/vm/<vm>", define_vm, DEFINE,
              summary="Define a VM (the path is ignored, as in v0.6, except by If-Match)",
              tags=tags, returns=MESSAGE, responses=CONFLICT, etag=True),
        Route("PUT", "/vm/<vm>", modify_vm, (
            Param("restart", BOOLEAN, default=False, help="restart the VM to apply the new XML"), XML),
            summary="Replace a VM's libvirt XML", tags=tags, returns=MESSAGE, etag=True,
            responses={409: "Conflict with the object's current state or a concurrent change, or (restart) the VM "
                            "would run on a volume an upload is writing now (ceph plugin)"}),
        Route("DELETE", "/vm/<vm>", remove_vm, (
            Param("delete_disks", BOOLEAN, default=False, help="also remove its RBD volumes (needs ceph)"),),
            summary="Undefine a VM, optionally removing its disks", tags=tags, returns=MESSAGE,
            responses=CONFLICT, etag=True),
        Route("GET", "/vm/<vm>/meta", get_meta, summary="A VM's placement metadata", tags=tags, returns=META),
        Route("POST", "/vm/<vm>/meta", set_meta, (
            Param("limit", STRING, help="comma-separated node names; empty clears"),
            SELECTOR,
            Param("autostart", BOOLEAN, help="start on the next unflush of its node"),
            Param("no-autostart", BOOLEAN, default=False,
                  help="a bare flag (seed B): the same as autostart=false"),
            Param("profile", STRING, help="provisioner profile name"),
        ), summary="Change a VM's placement metadata (at least one argument)", tags=tags, returns=MESSAGE,
            responses=CONFLICT, etag=True),
        Route("GET", "/vm/<vm>/state", get_state, summary="A VM's state", tags=tags,
              returns=obj({"name": STR, "state": STR})),
        Route("POST", "/vm/<vm>/state", set_state, (
            Param("state", STRING, required=True, choices=("start", "shutdown", "stop", "restart", "disable"),
                  help="A valid state must be specified"), WAIT),
            summary="Start, stop, shut down, restart or disable a VM (shutdown, restart: a task)", tags=tags,
            returns=MESSAGE, responses=WAITED, headers=TASK_ERRORS_TOO, etag=True),
        Route("GET", "/vm/<vm>/node", get_node, summary="A VM's node and previous node", tags=tags,
              returns=obj({"name": STR, "node": STR, "last_node": STR})),
        Route("POST", "/vm/<vm>/node", set_node, (
            Param("action", STRING, required=True, choices=("migrate", "unmigrate", "move"),
                  help="A valid action must be specified"),
            Param("node", STRING, help="target node (default: selected automatically)"),
            Param("force", BOOLEAN, default=False, help="migrate again although already migrated"),
            Param("permanent", BOOLEAN, default=False,
                  help="with action=migrate (seed B): a permanent migration, i.e. action=move"),
            Param("selector", STRING, choices=SELECTORS,
                  help="selector for the automatic choice of target, this time only (default: the VM's own)"),
            WAIT,
        ), summary="Migrate, unmigrate or move a VM (migrate, move: a task)", tags=tags, returns=MESSAGE,
            responses=WAITED, headers=TASK_ERRORS_TOO, etag=True),
        Route("POST", "/vm/<vm>/locks", flush_locks, summary="Remove the RBD locks of a stopped VM (needs ceph)",
              tags=tags, returns=MESSAGE),
        Route("GET", "/vm/<vm>/console", console, (
            Param("lines", INTEGER, default=10, help="how many newline-separated pieces of the console log, from its "
                  "end (v0.6: 0 gives the whole log, a negative n all but its first n pieces)"),),
            summary="The tail of a VM's serial console log", tags=tags,
            returns=obj({"name": STR, "data": STR})),
    ]

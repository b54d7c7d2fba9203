"""The /provisioner routes (provisioner.md §2) with the seeds' names as aliases (DECISIONS)."""

from __future__ import annotations

from typing import Any

from pvc_core.errors import BadRequest, NotFound
from pvc_core.params import BOOLEAN, INTEGER, STRING, Param
from pvc_core.routes import API_PREFIX, NOT_FOUND_MESSAGE, Response, Route

from .models import Script, Userdata
from .service import ProvisionerService

P = "/provisioner"
LIMIT = Param("limit", STRING, help="name filter: contains; ^ anchors the start, $ the end; % and _ are wildcards")
NAME = Param("name", STRING, required=True, help="the object's name")
SYSTEM_FIELDS = (
    Param("vcpus", INTEGER, required=True, help="vCPU count"),
    Param("vram", INTEGER, required=True, help="memory in MiB"),
    Param("serial", BOOLEAN, required=True, help="serial console"),
    Param("vnc", BOOLEAN, required=True, help="VNC console"),
    Param("vnc_bind", STRING, help="VNC listen address (kept only with vnc)"),
    Param("node_limit", STRING, help="comma-separated node names"),
    Param("node_selector", STRING, help="mem, vcpus, vms or load"),
    Param("node_autostart", BOOLEAN, default=False, aliases=("start_with_node",), help="start with its node"),
)
SYSTEM_CHANGES = tuple(Param(param.name, param.type, aliases=param.aliases, help=param.help)
                       for param in SYSTEM_FIELDS)
DISK_FIELDS = (
    Param("pool", STRING, required=True, help="Ceph pool of the volume"),
    Param("source_volume", STRING, help="existing volume in the pool to clone"),
    Param("disk_size", INTEGER, help="size in GiB (new volumes)"),
    Param("filesystem", STRING, help="mkfs.<filesystem> name, or swap"),
    Param("filesystem_arg", STRING, repeated=True, help="one mkfs option each, -X=value or --long=value"),
    Param("mountpoint", STRING, help="in-guest mount point (needs filesystem)"),
)
DATA = Param("data", STRING, required=True, help="the whole document, form-encoded")
PROFILE_REFS = (
    Param("system_template", STRING, required=True, help="system template name"),
    Param("network_template", STRING, required=True, help="network template name"),
    Param("storage_template", STRING, required=True, aliases=("disk_template",), help="storage template name"),
    Param("userdata", STRING, required=True, aliases=("userdata_template",), help="userdata name (empty: none)"),
    Param("script", STRING, required=True, help="script name (empty: none)"),
)
ARG = Param("arg", STRING, repeated=True, help="script argument key=value; repeat for more")
PROFILE_CHANGES = tuple(Param(param.name, param.type, aliases=param.aliases, help=param.help)
                        for param in PROFILE_REFS)


def svc(ctx: Any) -> ProvisionerService:
    return ctx.service("provisioner")


def store(ctx: Any) -> Any:
    return svc(ctx).store


# -- handlers ----------------------------------------------------------------------------------

def placeholder(ctx: Any, params: dict) -> Any:
    raise NotFound(NOT_FOUND_MESSAGE)


def templates(ctx: Any, params: dict) -> dict:
    return store(ctx).templates(params["limit"])


def list_systems(ctx: Any, params: dict, template: str | None = None) -> list:
    return store(ctx).systems(params.get("limit"), exact=template)


def add_system(ctx: Any, params: dict, template: str | None = None) -> dict:
    return {"message": store(ctx).add_system(template or params["name"], params)}


def modify_system(ctx: Any, params: dict, template: str) -> dict:
    return {"message": store(ctx).modify_system(template, params)}


def remove_system(ctx: Any, params: dict, template: str) -> dict:
    return {"message": store(ctx).remove_system(template)}


def list_networks(ctx: Any, params: dict, template: str | None = None) -> list:
    return store(ctx).networks(params.get("limit"), exact=template)


def add_network(ctx: Any, params: dict, template: str | None = None) -> dict:
    return {"message": store(ctx).add_network(template or params["name"], params["mac_template"])}


def remove_network(ctx: Any, params: dict, template: str) -> dict:
    return {"message": store(ctx).remove_network(template)}


def list_nets(ctx: Any, params: dict, template: str, vni: str | None = None) -> Any:
    return store(ctx).nets(template, vni)


def add_net(ctx: Any, params: dict, template: str, vni: str | None = None) -> dict:
    return {"message": store(ctx).add_net(template, vni if vni is not None else params["vni"])}


def remove_net(ctx: Any, params: dict, template: str, vni: str) -> dict:
    return {"message": store(ctx).remove_net(template, vni)}


def list_storages(ctx: Any, params: dict, template: str | None = None) -> list:
    return store(ctx).storages(params.get("limit"), exact=template)


def add_storage(ctx: Any, params: dict, template: str | None = None) -> dict:
    return {"message": store(ctx).add_storage(template or params["name"])}


def remove_storage(ctx: Any, params: dict, template: str) -> dict:
    return {"message": store(ctx).remove_storage(template)}


def list_disks(ctx: Any, params: dict, template: str, disk_id: str | None = None) -> Any:
    return store(ctx).disks(template, disk_id)


def _check_pool(ctx: Any) -> Any:
    """Unknown pools and source volumes are refused now (naming the field), not at creation."""
    ceph = ctx.service("ceph")

    def check(pool: str, source: str | None) -> None:
        if pool not in ceph.pools.names():
            raise BadRequest(f"Parameter 'pool': expected an existing Ceph pool, got {pool!r}")
        if source and not ceph.volume_exists(pool, source):
            raise BadRequest(f"Parameter 'source_volume': expected an existing volume in pool {pool!r}, "
                             f"got {source!r}")
    return check


def add_disk(ctx: Any, params: dict, template: str, disk_id: str | None = None) -> dict:
    disk = disk_id if disk_id is not None else params["disk_id"]
    if not disk:
        raise BadRequest("Parameter 'disk_id': expected a target device name such as sda, got ''")
    return {"message": store(ctx).add_disk(template, disk, params, _check_pool(ctx))}


def remove_disk(ctx: Any, params: dict, template: str, disk_id: str) -> dict:
    return {"message": store(ctx).remove_disk(template, disk_id)}


def _documents(model: type) -> tuple:
    variable = "userdata" if model is Userdata else "script"

    def listing(ctx: Any, params: dict, **path: str) -> list:
        return store(ctx).documents(model, params.get("limit"), exact=path.get(variable))

    def add(ctx: Any, params: dict, **path: str) -> dict:
        return {"message": store(ctx).add_document(model, path.get(variable) or params["name"], params["data"])}

    def update(ctx: Any, params: dict, **path: str) -> dict:
        return {"message": store(ctx).update_document(model, path[variable], params["data"])}

    def remove(ctx: Any, params: dict, **path: str) -> dict:
        return {"message": store(ctx).remove_document(model, path[variable])}

    return listing, add, update, remove


def list_profiles(ctx: Any, params: dict, profile: str | None = None) -> list:
    return store(ctx).profiles(params.get("limit"), exact=profile)


def _refs(params: dict) -> dict:
    return {param.name: params.get(param.name) for param in PROFILE_REFS}


def add_profile(ctx: Any, params: dict, profile: str | None = None) -> dict:
    return {"message": store(ctx).add_profile(profile or params["name"], _refs(params), params["arg"])}


def modify_profile(ctx: Any, params: dict, profile: str) -> dict:
    return {"message": store(ctx).modify_profile(profile, _refs(params), params["arg"])}


def remove_profile(ctx: Any, params: dict, profile: str) -> dict:
    return {"message": store(ctx).remove_profile(profile)}


def create(ctx: Any, params: dict) -> Response:
    task_id = svc(ctx).submit(params["name"], params["profile"], params["define_vm"], params["start_vm"],
                              params["arg"])
    return Response({"task_id": task_id}, 202,
                    headers={"Location": f"{API_PREFIX}{P}/status/{task_id}"})


def status(ctx: Any, params: dict, task_id: str) -> dict:
    return svc(ctx).status(task_id)


def queue(ctx: Any, params: dict) -> dict:
    return svc(ctx).queue()


# -- the table -----------------------------------------------------------------------------------

def routes() -> list[Route]:
    tags = ("provisioner",)
    ud_list, ud_add, ud_update, ud_remove = _documents(Userdata)
    sc_list, sc_add, sc_update, sc_remove = _documents(Script)
    ud_alias = f"{P}/template/userdata"
    table = [
        Route("GET", P, placeholder, summary="Placeholder (always 404, as v0.6)"),
        Route("GET", f"{P}/template", templates, (LIMIT,), summary="All templates of the three kinds"),
        Route("GET", f"{P}/template/system", list_systems, (LIMIT,), summary="List system templates"),
        Route("POST", f"{P}/template/system", add_system, (NAME, *SYSTEM_FIELDS), summary="Add a system template"),
        Route("GET", f"{P}/template/system/<template>", list_systems, summary="One system template (a list)"),
        Route("POST", f"{P}/template/system/<template>", add_system, SYSTEM_FIELDS,
              summary="Add a system template named in the path"),
        Route("PUT", f"{P}/template/system/<template>", modify_system, SYSTEM_CHANGES,
              summary="Modify a system template (the given fields)"),
        Route("DELETE", f"{P}/template/system/<template>", remove_system, summary="Remove a system template"),
        Route("GET", f"{P}/template/network", list_networks, (LIMIT,), summary="List network templates"),
        Route("POST", f"{P}/template/network", add_network,
              (NAME, Param("mac_template", STRING, help="MAC template, e.g. {prefix}:2f:1f:{vmid}{netid}")),
              summary="Add a network template"),
        Route("GET", f"{P}/template/network/<template>", list_networks, summary="One network template (a list)"),
        Route("POST", f"{P}/template/network/<template>", add_network,
              (Param("mac_template", STRING, help="MAC template"),),
              summary="Add a network template named in the path"),
        Route("DELETE", f"{P}/template/network/<template>", remove_network,
              summary="Remove a network template and its networks"),
        Route("GET", f"{P}/template/network/<template>/net", list_nets, summary="The template's networks"),
        Route("POST", f"{P}/template/network/<template>/net", add_net,
              (Param("vni", STRING, required=True, help="VNI of a cluster network (integer)"),),
              summary="Append a network to the template"),
        Route("GET", f"{P}/template/network/<template>/net/<vni>", list_nets, summary="One network of the template"),
        Route("POST", f"{P}/template/network/<template>/net/<vni>", add_net,
              summary="Append the network in the path to the template"),
        Route("DELETE", f"{P}/template/network/<template>/net/<vni>", remove_net,
              summary="Remove a network from the template"),
        Route("GET", f"{P}/template/storage", list_storages, (LIMIT,), summary="List storage templates"),
        Route("POST", f"{P}/template/storage", add_storage, (NAME,), summary="Add a storage template"),
        Route("GET", f"{P}/template/storage/<template>", list_storages, summary="One storage template (a list)"),
        Route("POST", f"{P}/template/storage/<template>", add_storage,
              summary="Add a storage template named in the path"),
        Route("DELETE", f"{P}/template/storage/<template>", remove_storage,
              summary="Remove a storage template and its disks"),
        Route("GET", f"{P}/template/storage/<template>/disk", list_disks, (LIMIT,), summary="The template's disks"),
        Route("POST", f"{P}/template/storage/<template>/disk", add_disk,
              (Param("disk_id", STRING, required=True, help="target device, e.g. sda"), *DISK_FIELDS),
              summary="Add a disk to the template"),
        Route("GET", f"{P}/template/storage/<template>/disk/<disk_id>", list_disks,
              summary="One disk of the template"),
        Route("POST", f"{P}/template/storage/<template>/disk/<disk_id>", add_disk, DISK_FIELDS,
              summary="Add the disk in the path to the template"),
        Route("DELETE", f"{P}/template/storage/<template>/disk/<disk_id>", remove_disk,
              summary="Remove a disk from the template"),
        Route("GET", f"{P}/userdata", ud_list, (LIMIT,), summary="List userdata documents",
              aliases=(ud_alias,)),
        Route("POST", f"{P}/userdata", ud_add, (NAME, DATA), summary="Add a userdata document",
              aliases=(ud_alias,)),
        Route("GET", f"{P}/userdata/<userdata>", ud_list, summary="One userdata document (a list)",
              aliases=(f"{ud_alias}/<userdata>",)),
        Route("POST", f"{P}/userdata/<userdata>", ud_add, (DATA,), summary="Add a userdata document named in the path",
              aliases=(f"{ud_alias}/<userdata>",)),
        Route("PUT", f"{P}/userdata/<userdata>", ud_update, (DATA,), summary="Replace a userdata document",
              aliases=(f"{ud_alias}/<userdata>",)),
        Route("DELETE", f"{P}/userdata/<userdata>", ud_remove, summary="Remove a userdata document",
              aliases=(f"{ud_alias}/<userdata>",)),
        Route("GET", f"{P}/script", sc_list, (LIMIT,), summary="List provisioning scripts"),
        Route("POST", f"{P}/script", sc_add, (NAME, DATA), summary="Add a provisioning script"),
        Route("GET", f"{P}/script/<script>", sc_list, summary="One script (a list)"),
        Route("POST", f"{P}/script/<script>", sc_add, (DATA,), summary="Add a script named in the path"),
        Route("PUT", f"{P}/script/<script>", sc_update, (DATA,), summary="Replace a script"),
        Route("DELETE", f"{P}/script/<script>", sc_remove, summary="Remove a script"),
        Route("GET", f"{P}/profile", list_profiles, (LIMIT,), summary="List profiles"),
        Route("POST", f"{P}/profile", add_profile, (NAME, *PROFILE_REFS, ARG), summary="Add a profile"),
        Route("GET", f"{P}/profile/<profile>", list_profiles, summary="One profile (a list)"),
        Route("POST", f"{P}/profile/<profile>", add_profile, (*PROFILE_REFS, ARG),
              summary="Add a profile named in the path"),
        Route("PUT", f"{P}/profile/<profile>", modify_profile, (*PROFILE_CHANGES, ARG),
              summary="Modify a profile (given references; arg replaces all arguments, arg= clears)"),
        Route("DELETE", f"{P}/profile/<profile>", remove_profile, summary="Remove a profile"),
        Route("POST", f"{P}/create", create, (
            Param("name", STRING, required=True, help="the new VM's name"),
            Param("profile", STRING, required=True, help="profile name"),
            Param("define_vm", BOOLEAN, default=True, help="define the VM in the cluster"),
            Param("start_vm", BOOLEAN, default=True, help="start it when provisioned"),
            ARG), summary="Create a VM from a profile (a background task)", responses={202: "task accepted"}),
        Route("GET", f"{P}/status", queue, summary="Active and queued creation tasks (Celery inspect() shape)"),
        Route("GET", f"{P}/status/<task_id>", status, summary="State and progress of one creation task"),
    ]
    for route in table:
        route.tags = tags
    return table

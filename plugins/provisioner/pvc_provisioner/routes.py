"""The /provisioner routes (provisioner.md §2) with the seeds' names as aliases (DECISIONS)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pvc_core import etags
from pvc_core.errors import BadRequest, NotFound
from pvc_core.params import BOOLEAN, INTEGER, NAME_HELP, NAME_PATTERN, STRING, Param, is_name
from pvc_core.routes import ADMIN, API_PREFIX, NO_MATCH, NOT_FOUND_MESSAGE, Response, Route
from pvc_core.schema import SELECTORS
from pvc_core.shapes import ANY, BOOL, INT, MESSAGE, NUM, STR, array, map_of, named, nullable, obj
from pvc_core.taskrecords import STATES
from pvc_core.taskroutes import TASK_HEADERS, announce

from .models import Script, Userdata
from .service import ProvisionerService
from .store import MAX_VNI

P = "/provisioner"
LIMIT = Param("limit", STRING, help="name filter: contains; ^ anchors the start, $ the end; % and _ are wildcards")
NAME = Param("name", STRING, required=True, pattern=NAME_PATTERN, pattern_help=NAME_HELP, help="the object's name")
# the seeds' `?name=` on a list (GET /provisioner/template/userdata?name=...): one object by its exact name
NAME_FILTER = Param("name", STRING, help="only the object of exactly this name")
LISTING = (LIMIT, NAME_FILTER)
MAX_VCPUS = 4096         # KVM's largest guest (KVM_MAX_VCPUS)
MAX_VRAM_MB = 16 * 1024 ** 2   # 16 TiB
MAX_DISK_GB = 1_000_000  # Ceph's largest RBD image: 256,000,000 objects of 4 MiB
SYSTEM_FIELDS = (
    Param("vcpus", INTEGER, required=True, minimum=1, maximum=MAX_VCPUS, help="vCPU count"),
    Param("vram", INTEGER, required=True, minimum=1, maximum=MAX_VRAM_MB, help="memory in MiB"),
    Param("serial", BOOLEAN, required=True, help="serial console"),
    Param("vnc", BOOLEAN, required=True, help="VNC console"),
    Param("vnc_bind", STRING, help="VNC listen address (kept only with vnc)"),
    Param("node_limit", STRING, help="comma-separated node names"),
    # checked as a VM's meta selector is (provisioner.md stores it unchecked, but a VM defined with a selector
    # no node daemon knows cannot be migrated, and a flush shuts it down)
    Param("node_selector", STRING, choices=SELECTORS, help="target selector of the VMs defined from it "
          "(absent: mem, as a VM's define)"),
    Param("node_autostart", BOOLEAN, default=False, aliases=("start_with_node",), help="start with its node"),
)
SYSTEM_CHANGES = tuple(replace(param, required=False, default=None) for param in SYSTEM_FIELDS)
DISK_FIELDS = (
    Param("pool", STRING, required=True, pattern=NAME_PATTERN, pattern_help=NAME_HELP,
          help="Ceph pool of the volume (checked when a VM is created)"),
    Param("source_volume", STRING, pattern=NAME_PATTERN, pattern_help=NAME_HELP,
          help="volume in the pool to clone (checked when a VM is created)"),
    Param("disk_size", INTEGER, minimum=1, maximum=MAX_DISK_GB, help="size in GiB (new volumes)"),
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
PROFILE_CHANGES = tuple(replace(param, required=False, default=None) for param in PROFILE_REFS)

# provisioner.md §2.1, §2.10-2.12
NSTR = nullable(STR)
SYSTEM = named("SystemTemplate", obj({
    "id": INT, "name": STR, "vcpu_count": INT, "vram_mb": INT, "serial": BOOL, "vnc": BOOL, "vnc_bind": NSTR,
    "node_limit": NSTR, "node_selector": NSTR, "node_autostart": BOOL}))
NET = named("NetworkTemplateNet", obj({"id": INT, "network_template": INT, "vni": INT}))
NETWORK = named("NetworkTemplate", obj({"id": INT, "name": STR, "mac_template": NSTR, "networks": array(NET)}))
DISK = named("StorageTemplateDisk", obj({
    "id": INT, "storage_template": INT, "pool": STR, "disk_id": STR, "source_volume": NSTR,
    "disk_size_gb": nullable(INT), "mountpoint": NSTR, "filesystem": NSTR, "filesystem_args": STR}))
STORAGE = named("StorageTemplate", obj({"id": INT, "name": STR, "disks": array(DISK)}))
USERDATA = named("Userdata", obj({"id": INT, "name": STR, "userdata": STR}))
SCRIPT = named("Script", obj({"id": INT, "name": STR, "script": STR}))
PROFILE = named("Profile", obj({
    "id": INT, "name": STR, "system_template": NSTR, "network_template": NSTR, "storage_template": NSTR,
    "userdata": NSTR, "script": NSTR, "arguments": array(STR)}))
TEMPLATES = obj({"system_templates": array(SYSTEM), "network_templates": array(NETWORK),
                 "storage_templates": array(STORAGE)})
CREATION = named("CreationStatus", obj({
    "state": {"type": "string", "enum": list(STATES)}, "current": INT, "total": INT, "status": STR, "result": ANY},
    optional=("result",)))
QUEUED = obj({
    "id": STR, "name": STR, "args": STR, "kwargs": STR, "type": STR, "hostname": STR, "time_start": nullable(NUM),
    "acknowledged": BOOL, "delivery_info": {"type": "object"}, "worker_pid": nullable(INT)})
QUEUE = obj({kind: nullable(map_of(array(QUEUED))) for kind in ("scheduled", "active", "reserved")})
IN_USE = {409: "The row is in use by a profile, or a concurrent change"}


def svc(ctx: Any) -> ProvisionerService:
    return ctx.service("provisioner")


def store(ctx: Any) -> Any:
    return svc(ctx).store


def _new_name(in_path: str | None, params: dict) -> str:
    """The name of an object to create: ``name`` (checked by its Param) or the path's, checked here."""
    if in_path is None:
        return params["name"]
    if not is_name(in_path):
        raise BadRequest(f"Name in the path: expected {NAME_HELP}, got {in_path!r}")
    return in_path


def _exact(in_path: str | None, params: dict) -> str | None:
    """An element GET's name, else a list's ``name`` filter (None: the whole list)."""
    return in_path if in_path is not None else params.get("name")


def _element(ctx: Any, answer: list, in_path: str | None) -> list:
    """An element GET (the name in the path) answers its object's ETag: a hash of the object, as the store's
    conditional changes compute it (``Store.shape``)."""
    if in_path is not None:
        ctx.response_headers[etags.HEADER] = etags.of_content(answer[0])
    return answer


# -- handlers ----------------------------------------------------------------------------------

def placeholder(ctx: Any, params: dict) -> Any:
    raise NotFound(NOT_FOUND_MESSAGE)


def templates(ctx: Any, params: dict) -> dict:
    return store(ctx).templates(params["limit"])


def list_systems(ctx: Any, params: dict, template: str | None = None) -> list:
    return _element(ctx, store(ctx).systems(params.get("limit"), exact=_exact(template, params)), template)


def add_system(ctx: Any, params: dict, template: str | None = None) -> dict:
    return {"message": store(ctx).add_system(_new_name(template, params), params, ctx.if_match)}


def modify_system(ctx: Any, params: dict, template: str) -> dict:
    return {"message": store(ctx).modify_system(template, params, ctx.if_match)}


def remove_system(ctx: Any, params: dict, template: str) -> dict:
    return {"message": store(ctx).remove_system(template, ctx.if_match)}


def list_networks(ctx: Any, params: dict, template: str | None = None) -> list:
    return _element(ctx, store(ctx).networks(params.get("limit"), exact=_exact(template, params)), template)


def add_network(ctx: Any, params: dict, template: str | None = None) -> dict:
    return {"message": store(ctx).add_network(_new_name(template, params), params["mac_template"], ctx.if_match)}


def remove_network(ctx: Any, params: dict, template: str) -> dict:
    return {"message": store(ctx).remove_network(template, ctx.if_match)}


def list_nets(ctx: Any, params: dict, template: str, vni: str | None = None) -> Any:
    return store(ctx).nets(template, vni)


def add_net(ctx: Any, params: dict, template: str, vni: str | None = None) -> dict:
    return {"message": store(ctx).add_net(template, vni if vni is not None else params["vni"], ctx.if_match)}


def remove_net(ctx: Any, params: dict, template: str, vni: str) -> dict:
    return {"message": store(ctx).remove_net(template, vni, ctx.if_match)}


def list_storages(ctx: Any, params: dict, template: str | None = None) -> list:
    return _element(ctx, store(ctx).storages(params.get("limit"), exact=_exact(template, params)), template)


def add_storage(ctx: Any, params: dict, template: str | None = None) -> dict:
    return {"message": store(ctx).add_storage(_new_name(template, params), ctx.if_match)}


def remove_storage(ctx: Any, params: dict, template: str) -> dict:
    return {"message": store(ctx).remove_storage(template, ctx.if_match)}


def list_disks(ctx: Any, params: dict, template: str, disk_id: str | None = None) -> Any:
    return store(ctx).disks(template, disk_id)


def add_disk(ctx: Any, params: dict, template: str, disk_id: str | None = None) -> dict:
    disk = disk_id if disk_id is not None else params["disk_id"]
    if not disk:
        raise BadRequest("Parameter 'disk_id': expected a target device name such as sda, got ''")
    # provisioner.md §2.6: the pool and source volume may not exist yet; creation checks them (§3.3)
    return {"message": store(ctx).add_disk(template, disk, params, ctx.if_match)}


def remove_disk(ctx: Any, params: dict, template: str, disk_id: str) -> dict:
    return {"message": store(ctx).remove_disk(template, disk_id, ctx.if_match)}


def _documents(model: type) -> tuple:
    variable = "userdata" if model is Userdata else "script"

    def listing(ctx: Any, params: dict, **path: str) -> list:
        answer = store(ctx).documents(model, params.get("limit"), exact=_exact(path.get(variable), params))
        return _element(ctx, answer, path.get(variable))

    def add(ctx: Any, params: dict, **path: str) -> dict:
        return {"message": store(ctx).add_document(model, _new_name(path.get(variable), params), params["data"],
                                                   ctx.if_match)}

    def update(ctx: Any, params: dict, **path: str) -> dict:
        return {"message": store(ctx).update_document(model, path[variable], params["data"], ctx.if_match)}

    def remove(ctx: Any, params: dict, **path: str) -> dict:
        return {"message": store(ctx).remove_document(model, path[variable], ctx.if_match)}

    return listing, add, update, remove


def list_profiles(ctx: Any, params: dict, profile: str | None = None) -> list:
    return _element(ctx, store(ctx).profiles(params.get("limit"), exact=_exact(profile, params)), profile)


def _refs(params: dict) -> dict:
    return {param.name: params.get(param.name) for param in PROFILE_REFS}


def add_profile(ctx: Any, params: dict, profile: str | None = None) -> dict:
    return {"message": store(ctx).add_profile(_new_name(profile, params), _refs(params), params["arg"],
                                              ctx.if_match)}


def modify_profile(ctx: Any, params: dict, profile: str) -> dict:
    return {"message": store(ctx).modify_profile(profile, _refs(params), params["arg"], ctx.if_match)}


def remove_profile(ctx: Any, params: dict, profile: str) -> dict:
    return {"message": store(ctx).remove_profile(profile, ctx.if_match)}


def create(ctx: Any, params: dict) -> Response:
    task_id = svc(ctx).submit(params["name"], params["profile"], params["define_vm"], params["start_vm"],
                              params["arg"])
    announce(ctx)(task_id)
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
        Route("GET", P, placeholder, summary="Placeholder (always 404, as v0.6)", status=404, returns=MESSAGE),
        Route("GET", f"{P}/template", templates, (LIMIT,), summary="All templates of the three kinds",
              returns=TEMPLATES),
        Route("GET", f"{P}/template/system", list_systems, LISTING, summary="List system templates",
              returns=array(SYSTEM), responses=NO_MATCH),
        Route("POST", f"{P}/template/system", add_system, (NAME, *SYSTEM_FIELDS), summary="Add a system template",
              returns=MESSAGE),
        Route("GET", f"{P}/template/system/<template>", list_systems, summary="One system template (a list)",
              returns=array(SYSTEM), etag=True),
        Route("POST", f"{P}/template/system/<template>", add_system, SYSTEM_FIELDS,
              summary="Add a system template named in the path", returns=MESSAGE, etag=True),
        Route("PUT", f"{P}/template/system/<template>", modify_system, SYSTEM_CHANGES,
              summary="Modify a system template (the given fields)", returns=MESSAGE, etag=True),
        Route("DELETE", f"{P}/template/system/<template>", remove_system, summary="Remove a system template",
              returns=MESSAGE, responses=IN_USE, etag=True),
        Route("GET", f"{P}/template/network", list_networks, LISTING, summary="List network templates",
              returns=array(NETWORK), responses=NO_MATCH),
        Route("POST", f"{P}/template/network", add_network,
              (NAME, Param("mac_template", STRING, help="MAC template, e.g. {prefix}:2f:1f:{vmid}{netid}")),
              summary="Add a network template", returns=MESSAGE),
        Route("GET", f"{P}/template/network/<template>", list_networks, summary="One network template (a list)",
              returns=array(NETWORK), etag=True),
        Route("POST", f"{P}/template/network/<template>", add_network,
              (Param("mac_template", STRING, help="MAC template"),),
              summary="Add a network template named in the path", returns=MESSAGE, etag=True),
        Route("DELETE", f"{P}/template/network/<template>", remove_network,
              summary="Remove a network template and its networks", returns=MESSAGE, responses=IN_USE, etag=True),
        Route("GET", f"{P}/template/network/<template>/net", list_nets, summary="The template's networks",
              returns=array(NET)),
        Route("POST", f"{P}/template/network/<template>/net", add_net,
              (Param("vni", INTEGER, required=True, minimum=1, maximum=MAX_VNI, help="VNI of a cluster network"),),
              summary="Append a network to the template", returns=MESSAGE, etag=True),
        Route("GET", f"{P}/template/network/<template>/net/<vni>", list_nets, summary="One network of the template",
              returns=NET),
        Route("POST", f"{P}/template/network/<template>/net/<vni>", add_net,
              summary="Append the network in the path to the template", returns=MESSAGE, etag=True),
        Route("DELETE", f"{P}/template/network/<template>/net/<vni>", remove_net,
              summary="Remove a network from the template", returns=MESSAGE, etag=True),
        Route("GET", f"{P}/template/storage", list_storages, LISTING, summary="List storage templates",
              returns=array(STORAGE), responses=NO_MATCH),
        Route("POST", f"{P}/template/storage", add_storage, (NAME,), summary="Add a storage template", returns=MESSAGE),
        Route("GET", f"{P}/template/storage/<template>", list_storages, summary="One storage template (a list)",
              returns=array(STORAGE), etag=True),
        Route("POST", f"{P}/template/storage/<template>", add_storage,
              summary="Add a storage template named in the path", returns=MESSAGE, etag=True),
        Route("DELETE", f"{P}/template/storage/<template>", remove_storage,
              summary="Remove a storage template and its disks", returns=MESSAGE, responses=IN_USE, etag=True),
        Route("GET", f"{P}/template/storage/<template>/disk", list_disks, (LIMIT,), summary="The template's disks",
              returns=array(DISK)),
        Route("POST", f"{P}/template/storage/<template>/disk", add_disk,
              (Param("disk_id", STRING, required=True, pattern=NAME_PATTERN, pattern_help=NAME_HELP,
                     help="target device, e.g. sda"), *DISK_FIELDS),
              summary="Add a disk to the template", returns=MESSAGE, etag=True),
        Route("GET", f"{P}/template/storage/<template>/disk/<disk_id>", list_disks,
              summary="One disk of the template", returns=DISK),
        Route("POST", f"{P}/template/storage/<template>/disk/<disk_id>", add_disk, DISK_FIELDS,
              summary="Add the disk in the path to the template", returns=MESSAGE, etag=True),
        Route("DELETE", f"{P}/template/storage/<template>/disk/<disk_id>", remove_disk,
              summary="Remove a disk from the template", returns=MESSAGE, etag=True),
        Route("GET", f"{P}/userdata", ud_list, LISTING, summary="List userdata documents",
              aliases=(ud_alias,), returns=array(USERDATA), responses=NO_MATCH),
        Route("POST", f"{P}/userdata", ud_add, (NAME, DATA), summary="Add a userdata document",
              aliases=(ud_alias,), returns=MESSAGE),
        Route("GET", f"{P}/userdata/<userdata>", ud_list, summary="One userdata document (a list)",
              aliases=(f"{ud_alias}/<userdata>",), returns=array(USERDATA), etag=True),
        Route("POST", f"{P}/userdata/<userdata>", ud_add, (DATA,), summary="Add a userdata document named in the path",
              aliases=(f"{ud_alias}/<userdata>",), returns=MESSAGE, etag=True),
        Route("PUT", f"{P}/userdata/<userdata>", ud_update, (DATA,), summary="Replace a userdata document",
              aliases=(f"{ud_alias}/<userdata>",), returns=MESSAGE, etag=True),
        Route("DELETE", f"{P}/userdata/<userdata>", ud_remove, summary="Remove a userdata document",
              aliases=(f"{ud_alias}/<userdata>",), returns=MESSAGE, responses=IN_USE, etag=True),
        Route("GET", f"{P}/script", sc_list, LISTING, summary="List provisioning scripts", returns=array(SCRIPT),
              responses=NO_MATCH),
        # Scripts are admin's: the worker runs their install() as root on its host, so uploading one is
        # running code there (userdata runs inside the VM only, and stays write).
        Route("POST", f"{P}/script", sc_add, (NAME, DATA), summary="Add a provisioning script", returns=MESSAGE,
              scope=ADMIN),
        Route("GET", f"{P}/script/<script>", sc_list, summary="One script (a list)", returns=array(SCRIPT), etag=True),
        Route("POST", f"{P}/script/<script>", sc_add, (DATA,), summary="Add a script named in the path",
              returns=MESSAGE, scope=ADMIN, etag=True),
        Route("PUT", f"{P}/script/<script>", sc_update, (DATA,), summary="Replace a script", returns=MESSAGE,
              scope=ADMIN, etag=True),
        Route("DELETE", f"{P}/script/<script>", sc_remove, summary="Remove a script",
              returns=MESSAGE, responses=IN_USE, scope=ADMIN, etag=True),
        Route("GET", f"{P}/profile", list_profiles, LISTING, summary="List profiles", returns=array(PROFILE),
              responses=NO_MATCH),
        Route("POST", f"{P}/profile", add_profile, (NAME, *PROFILE_REFS, ARG), summary="Add a profile",
              returns=MESSAGE),
        Route("GET", f"{P}/profile/<profile>", list_profiles, summary="One profile (a list)", returns=array(PROFILE),
              etag=True),
        Route("POST", f"{P}/profile/<profile>", add_profile, (*PROFILE_REFS, ARG),
              summary="Add a profile named in the path", returns=MESSAGE, etag=True),
        Route("PUT", f"{P}/profile/<profile>", modify_profile, (*PROFILE_CHANGES, ARG),
              summary="Modify a profile (given references; arg replaces all arguments, arg= clears)", returns=MESSAGE,
              etag=True),
        Route("DELETE", f"{P}/profile/<profile>", remove_profile, summary="Remove a profile", returns=MESSAGE,
              etag=True),
        Route("POST", f"{P}/create", create, (
            Param("name", STRING, required=True, help="the new VM's name"),
            Param("profile", STRING, required=True, help="profile name"),
            Param("define_vm", BOOLEAN, default=True, help="define the VM in the cluster"),
            Param("start_vm", BOOLEAN, default=True, help="start it when provisioned"),
            ARG), summary="Create a VM from a profile (a background task)",
            status=202, returns=obj({"task_id": STR}), headers={**TASK_HEADERS, "Location": "GET …/status/<task_id>"},
            responses={409: "A VM of that name already exists in the cluster"}),
        Route("GET", f"{P}/status", queue, summary="Active and queued creation tasks (Celery inspect() shape)",
              returns=QUEUE),
        Route("GET", f"{P}/status/<task_id>", status, summary="State and progress of one creation task",
              returns=CREATION),
    ]
    for route in table:
        route.tags = tags
    return table

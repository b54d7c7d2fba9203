"""Routes PVC 1.x added to /vm after v0.6 (tags, rename, snapshots), with its paths and argument names.

Additions only: a client of v0.6 sends none of these arguments and gets the
answers it always got (the VM object gains PVC 1.x's ``tags`` and ``snapshots`` lists).
"""

from __future__ import annotations

from typing import Any

from pvc_core.params import BOOLEAN, NAME_HELP, NAME_PATTERN, STRING, Param
from pvc_core.routes import ADMIN, CONFLICT, Route
from pvc_core.shapes import BOOL, MESSAGE, STR, array, named, obj
from pvc_core.taskroutes import announce, task_headers

TAG_MAX = 255
# after its record began, a snapshot task may still fail: a file it cannot write or read (400), Ceph's refusal, a
# concurrent change or a cancel (409), Ceph not answering (503)
TASK_ERRORS_TOO = task_headers(400, 409, 503)  # a tag is a ZooKeeper path segment


def _tag_param(name: str, help: str, **extra: Any) -> Param:
    return Param(name, STRING, pattern=NAME_PATTERN, pattern_help=NAME_HELP, max_length=TAG_MAX, help=help,
                 **extra)


TAG = named("VMTag", obj({"name": STR, "type": STR, "protected": BOOL}))
SNAPSHOT = named("VMSnapshot", obj({"name": STR, "timestamp": STR, "xml_diff_lines": array(STR),
                                    "rbd_snapshots": array(STR)}))
# the RBD snapshots take the name: what librbd and the /ceph/snapshots keys accept (PVC 1.x: letters, digits, '.-_')
SNAPSHOT_PATTERN = r"(?!\.\.?$)[A-Za-z0-9_.+-]+"
SNAPSHOT_HELP = "letters, digits, '_', '.', '+', '-' (not '.' or '..')"


def _snapshot_param(help: str, **extra: Any) -> Param:
    return Param("snapshot_name", STRING, pattern=SNAPSHOT_PATTERN, pattern_help=SNAPSHOT_HELP, max_length=TAG_MAX,
                 help=help, **extra)
TAGS_ON_DEFINE = (
    _tag_param("user_tags", "a tag to give the VM (repeat for several)", repeated=True),
    _tag_param("protected_tags", "a protected tag to give the VM (repeat for several)", repeated=True),
)


def defined_tags(params: dict) -> dict:
    from .tags import requested
    return requested(params["user_tags"], params["protected_tags"])


def get_tags(ctx: Any, params: dict, vm: str) -> dict:
    return ctx.service("vm").tags_of(vm)


def set_tag(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": ctx.service("vm").set_tag(vm, params["action"], params["tag"], params["protected"])}


def rename_vm(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": ctx.service("vm").rename(vm, params["new_name"])}


def snapshot_vm(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": ctx.service("vm").snapshot(vm, params["snapshot_name"])}


def remove_snapshot(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": ctx.service("vm").remove_snapshot(vm, params["snapshot_name"])}


def rollback_snapshot(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": ctx.service("vm").rollback_snapshot(vm, params["snapshot_name"], announce(ctx))}


def export_snapshot(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": ctx.service("vm").export_snapshot(vm, params["snapshot_name"], params["export_path"],
                                                         params["incremental_parent"], announce(ctx))}


def import_snapshot(ctx: Any, params: dict, vm: str) -> dict:
    return {"message": ctx.service("vm").import_snapshot(vm, params["snapshot_name"], params["import_path"],
                                                         params["retain_snapshot"], params["new_name"],
                                                         announce(ctx))}


def routes() -> list[Route]:
    tags = ("vm",)
    return [
        Route("GET", "/vm/<vm>/tags", get_tags, summary="A VM's tags (PVC 1.x)", tags=tags,
              returns=obj({"name": STR, "tags": array(TAG)})),
        Route("POST", "/vm/<vm>/tags", set_tag, (
            Param("action", STRING, required=True, choices=("add", "remove"),
                  help="A valid action must be specified"),
            _tag_param("tag", "the tag", required=True),
            Param("protected", BOOLEAN, default=False,
                  help="add: mark the tag protected; remove: required to remove a protected tag"),
        ), summary="Add or remove a VM's tag (PVC 1.x)", tags=tags, returns=MESSAGE, responses=CONFLICT),
        Route("POST", "/vm/<vm>/rename", rename_vm, (
            Param("new_name", STRING, required=True, pattern=NAME_PATTERN, pattern_help=NAME_HELP, max_length=TAG_MAX,
                  help="A new VM name must be specified"),),
            summary="Rename a stopped VM and the RBD volumes named for it (PVC 1.x)", tags=tags, returns=MESSAGE,
            responses={409: "The VM is not stopped (stop or disable), a concurrent change, or an upload is writing "
                            "one of its volumes"}),
        Route("POST", "/vm/<vm>/snapshot", snapshot_vm, (
            _snapshot_param("the snapshot's name (default: the time, YYYYMMDDHHMMSS)"),),
            summary="Snapshot every RBD disk of a VM under one name, with its XML (PVC 1.x); a running VM's guest "
                    "filesystems frozen through its node meanwhile", tags=tags,
            returns=MESSAGE, responses={400: "Bad input, or a disk is locked by another client (the message names "
                                             "the lock and how to release it; nothing is left)",
                                        409: "Ceph refused a disk's snapshot (nothing is left), or a concurrent "
                                             "change"}),
        Route("DELETE", "/vm/<vm>/snapshot", remove_snapshot, (
            _snapshot_param("the snapshot to remove", required=True),),
            summary="Remove a VM's snapshot: its RBD snapshots and keys (PVC 1.x)", tags=tags, returns=MESSAGE,
            responses={404: "The VM or the snapshot does not exist", 409: "Ceph refused, or a concurrent change"}),
        Route("POST", "/vm/<vm>/snapshot/rollback", rollback_snapshot, (
            _snapshot_param("the snapshot to roll back to", required=True),),
            summary="Roll a stopped VM's disks and XML back to a snapshot (PVC 1.x; a task)", tags=tags,
            returns=MESSAGE, headers=TASK_ERRORS_TOO,
            responses={400: "Bad input, or a disk is locked by another client (nothing was rolled back)",
                       404: "The VM or the snapshot does not exist",
                       409: "The VM is not stopped (stop or disable), a concurrent change, an upload is writing "
                            "one of its disks, or the rollback was cancelled (DELETE /tasks/<id>; the disks were "
                            "put back)"}),
        Route("POST", "/vm/<vm>/snapshot/export", export_snapshot, (
            _snapshot_param("the snapshot to export", required=True),
            Param("export_path", STRING, required=True, max_length=4096,
                  help="absolute path of a directory on the API host; the export goes to <vm>/<snapshot> in it"),
            Param("incremental_parent", STRING, pattern=SNAPSHOT_PATTERN, pattern_help=SNAPSHOT_HELP,
                  max_length=TAG_MAX, help="an earlier snapshot of the VM, exported before: export only the changes"),
        ), summary="Export a VM's snapshot to files on the API host (PVC 1.x; a task)", tags=tags, returns=MESSAGE,
            scope=ADMIN, headers=TASK_ERRORS_TOO,  # admin: it writes files wherever the daemon may
            responses={404: "The VM or the snapshot does not exist",
                       409: "Ceph refused an export, or it was cancelled (DELETE /tasks/<id>; its files were "
                            "removed)"}),
        Route("POST", "/vm/<vm>/snapshot/import", import_snapshot, (
            _snapshot_param("the exported snapshot to import", required=True),
            Param("import_path", STRING, required=True, max_length=4096,
                  help="absolute path of a directory on the API host holding <vm>/<snapshot> exports"),
            Param("retain_snapshot", BOOLEAN, default=True,
                  help="keep the imported snapshots as the VM's snapshots"),
            Param("new_name", STRING, pattern=NAME_PATTERN, pattern_help=NAME_HELP, max_length=TAG_MAX,
                  help="import as a new VM of this name (a new UUID; each rbd disk's volume name must contain the "
                       "exported VM's name, replaced by this one), also while the exported VM exists"),
        ), summary="Recreate an exported VM from its snapshot export(s) on the API host (PVC 1.x; a task)",
            tags=tags, returns=MESSAGE, scope=ADMIN, headers=TASK_ERRORS_TOO,  # admin: it reads files anywhere
            responses={400: "Bad input, or an export's snapshot.json or files are not as an export writes them (the "
                            "message names the file and the field; nothing was made), or a file made what the "
                            "cluster cannot record (what it made was removed)",
                       409: "A volume exists already, Ceph refused an import, a concurrent change, or it was "
                            "cancelled (DELETE /tasks/<id>; what it made was removed)"}),
    ]

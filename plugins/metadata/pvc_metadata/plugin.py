"""Hook implementations of the metadata plugin: its own listener and the §5.3 paths on it."""

from __future__ import annotations

from typing import Any

from pvc_core import hookimpl
from pvc_core.config import Field, Section
from pvc_core.routes import Response, Route
from pvc_core.shapes import MESSAGE, PLAIN, STR

from .caller import Caller, identify

LISTENER = "metadata"
TEXT = "text/plain; charset=utf-8"
UNKNOWN_CALLER = {404: {"description": "The caller's address is no VM's dynamic lease (empty body)",
                        "content": {PLAIN: {"schema": {"type": "string", "maxLength": 0}}}}}


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": ["network", "vm", "provisioner"], "optional": [],
            "description": "Metadata API for cloud-init: the calling VM's identity and its profile's userdata"}


@hookimpl
def pvc_config_fields() -> Section:
    return Section({"metadata": Section({
        "enabled": Field("bool", default=True, help="serve the metadata API"),
        "listen_address": Field("str", default="169.254.169.254", help="address VMs reach it at"),
        "listen_port": Field("int", default=80, help="port VMs reach it at"),
    }, optional=True)})


@hookimpl
def pvc_listeners(runtime: Any) -> dict:
    config = runtime.config
    if not config["metadata.enabled"]:
        return {}
    return {LISTENER: (config["metadata.listen_address"], config["metadata.listen_port"])}


def text(body: str, status: int = 200) -> Response:
    return Response(raw=body.encode("utf-8"), status=status, content_type=TEXT)


def caller_or_404(ctx: Any) -> Caller | Response:
    caller = identify(ctx.runtime, ctx.remote_address)
    return caller if caller is not None else text("", 404)


def root(ctx: Any, params: dict) -> Response:
    return Response({"message": "PVC Provisioner Metadata API version 1"}, status=209)


def listing(ctx: Any, params: dict, version: str) -> Response:
    return text("instance-id\nname\nprofile")


def _field(getter: Any) -> Any:
    def handler(ctx: Any, params: dict, version: str) -> Response:
        caller = caller_or_404(ctx)
        if isinstance(caller, Response):
            return caller
        return text(getter(caller))
    return handler


def user_data(ctx: Any, params: dict, version: str) -> Response:
    caller = caller_or_404(ctx)
    if isinstance(caller, Response):
        return caller
    if caller.profile is None:
        return text("")
    document = ctx.service("provisioner").store.userdata_of_profile(caller.profile)
    return text(document or "")


@hookimpl
def pvc_routes(runtime: Any) -> list:
    if not runtime.config["metadata.enabled"]:
        return []
    paths = [
        ("/", root, "Banner (209, as v0.6)"),
        ("/<version>/meta-data/", listing, "The meta-data keys"),
        ("/<version>/meta-data/instance-id", _field(lambda caller: caller.uuid), "The calling VM's UUID"),
        ("/<version>/meta-data/name", _field(lambda caller: caller.name), "The calling VM's name"),
        ("/<version>/meta-data/profile", _field(lambda caller: caller.profile or ""),
         "The calling VM's provisioner profile"),
        ("/<version>/user-data", user_data, "The userdata of the calling VM's profile"),
    ]
    described = {"/": {"status": 209, "returns": MESSAGE},
                 "/<version>/meta-data/": {"media_type": PLAIN, "returns": STR}}
    answers = {"media_type": PLAIN, "returns": STR, "responses": UNKNOWN_CALLER}
    return [Route("GET", path, handler, summary=summary, auth=False, listener=LISTENER, tags=("metadata",),
                  **described.get(path, answers))
            for path, handler, summary in paths]

"""The core's own endpoints, registered through the same hooks as any plugin.

Root, login/logout (v0.6 and seed paths), initialize, cluster status and
maintenance, the plugin list, task records and the OpenAPI document/page.
"""

from __future__ import annotations

import copy
import html
from typing import Any

from . import API_VERSION_MESSAGE, audit, auditroute, backup, metrics, openapi, schema, taskroutes
from .auth import FAILED_MESSAGE
from .config import parse_bool
from .errors import BadRequest
from .hookspecs import hookimpl
from .params import BOOLEAN, STRING, Param, ParamType
from .routes import ADMIN, API_PREFIX, CONFLICT, Response, Route
from .shapes import HTML, INT, JSON, MESSAGE, STR, TEXT, array, map_of, named, obj
from .zk import TransactionFailed

LOGIN_FORM = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>PVC API login</title></head>
<body><h1>PVC API login</h1>
<form method="post" action="{action}">
<label>API token <input type="password" name="token" autocomplete="off"></label>
<button type="submit">Log in</button>
</form></body></html>
"""


def root(ctx: Any, params: dict) -> dict:
    return {"message": API_VERSION_MESSAGE}


def _redirect_root() -> Response:
    return Response({"message": "Authentication is disabled"}, status=302,
                    headers={"Location": API_PREFIX + "/"})  # relative: the Host header is never echoed


def login_form(ctx: Any, params: dict) -> Response:
    if not ctx.runtime.auth.enabled:
        return _redirect_root()
    action = html.escape(ctx.request.path_info, quote=True)
    return Response(raw=LOGIN_FORM.format(action=action).encode(), content_type="text/html; charset=utf-8")


def login(ctx: Any, params: dict) -> Response | dict:
    auth = ctx.runtime.auth
    if not auth.enabled:
        return _redirect_root()
    token = params["token"]
    if token is None:
        raise BadRequest("Parameter 'token': required, expected one of the configured API tokens")
    entry = auth.token_entry(token)
    if entry is None:
        return Response({"message": FAILED_MESSAGE}, status=401)
    # the session carries the token's scope: a read token's session cannot write
    ctx.response_headers["Set-Cookie"] = auth.cookie_header(auth.new_session(entry))
    return {"message": "Authentication successful"}


def logout(ctx: Any, params: dict) -> Response | dict:
    auth = ctx.runtime.auth
    if not auth.enabled:
        return _redirect_root()
    auth.revoke(ctx.cookie("session"))
    ctx.response_headers["Set-Cookie"] = auth.cookie_header("", max_age=0)
    return {"message": "Deauthentication successful"}


def initialize(ctx: Any, params: dict) -> dict:
    runtime = ctx.runtime
    zk = runtime.zk
    if zk.exists(schema.PRIMARY_NODE):
        raise BadRequest("PVC cluster already initialized")
    keys = dict(schema.BASE_TREE)
    for _name, extra in runtime.host.call_each("pvc_initialize_keys", runtime=runtime):
        keys.update(extra or {})
    present = sorted(key for key, exists in zk.exists_many(keys).items() if exists)
    if present:
        raise BadRequest("Cannot initialize the PVC cluster: these keys already exist without "
                         f"{schema.PRIMARY_NODE}: {', '.join(present)}; remove them or check the coordinators")
    try:
        zk.create(keys)
    except TransactionFailed as exc:
        raise BadRequest(f"Failed to initialize the PVC cluster: {exc.message}") from None
    return {"message": "Successfully initialized a new PVC cluster"}


def health_check(ctx: Any, params: dict) -> Response:
    """200 when every dependency answered, else 503; the same document either way."""
    healthy, body = ctx.runtime.health.report()
    return Response(body, status=200 if healthy else 503, headers={"Cache-Control": "no-store"})


def cluster_status(ctx: Any, params: dict) -> dict:
    runtime = ctx.runtime
    values = runtime.zk.get_many((schema.MAINTENANCE, schema.PRIMARY_NODE, schema.UPSTREAM_IP))
    parts = copy.deepcopy(schema.STATUS_DEFAULTS)
    degraded = False
    for _name, function, argnames in runtime.status_hooks:
        part = function(**({"runtime": runtime} if argnames else {})) or {}
        parts.update(part.get("fields", {}))
        degraded = degraded or bool(part.get("degraded"))
    maintenance = (values[schema.MAINTENANCE] or "") == "true"
    document = {
        "health": "Maintenance" if maintenance else ("Degraded" if degraded else "Optimal"),
        "primary_node": values[schema.PRIMARY_NODE] or "none",
        "upstream_ip": values[schema.UPSTREAM_IP] or "none",
    }
    document.update(parts)
    return document


def set_maintenance(ctx: Any, params: dict) -> dict:
    state = params["state"]
    ctx.runtime.zk.write({schema.MAINTENANCE: schema.maintenance_value(state)})
    if state:
        return {"message": "Successfully set cluster in maintenance mode"}
    return {"message": "Successfully set cluster in normal mode"}


def list_plugins(ctx: Any, params: dict) -> list:
    runtime = ctx.runtime
    out = []
    for name in sorted(runtime.plugins):
        plugin = runtime.plugins[name]
        routes = [f"{route.method} {path}" for route in runtime.routes.routes if route.plugin == name
                  for path in route.full_paths()]
        out.append({
            "name": name, "version": plugin.version, "distribution": plugin.distribution,
            "description": plugin.description, "requires": plugin.requires,
            "optional": plugin.optional, "services": sorted(
                service for service, owner in runtime.service_owners.items() if owner == name),
            "routes": routes,
        })
    return out


def openapi_json(ctx: Any, params: dict) -> dict:
    return ctx.runtime.openapi_document


def openapi_page(ctx: Any, params: dict) -> Response:
    return Response(raw=openapi.html_page(ctx.runtime.openapi_document).encode(),
                    content_type="text/html; charset=utf-8")


TOKEN = Param("token", STRING, help="one of the configured API tokens", secret=True)
# api-general.md §3.3: `state` stays a required choice; an empty value is not "true" here
STATE_VALUE = ParamType("boolean", "true or false (or yes/no, on/off, 1/0)", parse_bool, BOOLEAN.schema)
DISABLED = {302: "Authentication is disabled: redirect to /api/v1/"}
COUNTS = obj({"total": INT}, additionalProperties=INT)
STATUS = named("ClusterStatus", obj({
    "health": {"type": "string", "enum": ["Optimal", "Degraded", "Maintenance"]},
    "primary_node": STR, "upstream_ip": STR, "nodes": COUNTS, "vms": COUNTS, "networks": INT, "osds": COUNTS,
    "pools": INT, "volumes": INT, "snapshots": INT}))
HEALTH_CHECK = obj({"status": {"type": "string", "enum": ["ok", "unavailable"]}, "message": STR})
HEALTH = named("Health", obj({"status": {"type": "string", "enum": ["ok", "unavailable"]},
                              "checks": map_of(HEALTH_CHECK)}))
PLUGIN = named("Plugin", obj({
    "name": STR, "version": STR, "distribution": STR, "description": STR, "requires": array(STR),
    "optional": array(STR), "services": array(STR), "routes": array(STR)}))
OPENAPI = obj({"openapi": STR, "info": obj({"title": STR, "version": STR}), "paths": map_of({"type": "object"}),
               "components": {"type": "object"}})


@hookimpl
def pvc_routes(runtime: Any) -> list:
    both = ("/auth/login",)
    core = ("core",)
    return [
        Route("GET", "/", root, summary="API version", auth=False, tags=core, returns=MESSAGE),
        Route("GET", "/login", login_form, summary="Login form (HTML)", auth=False,
              aliases=both, tags=core, media_type=HTML, returns=TEXT, responses=DISABLED),
        Route("POST", "/login", login, (TOKEN,), summary="Log in with an API token (sets a session cookie)",
              auth=False, aliases=both, tags=core, returns=MESSAGE,
              responses={401: "wrong token", **DISABLED}),
        Route("POST", "/logout", logout, summary="Log out (ends the session)", auth=False,
              aliases=("/auth/logout",), tags=core, returns=MESSAGE, responses=DISABLED),
        Route("GET", "/logout", logout, summary="Log out (seed B's GET form)", auth=False,
              aliases=("/auth/logout",), tags=core, returns=MESSAGE, responses=DISABLED),
        # admin: it creates the cluster itself
        Route("POST", "/initialize", initialize, summary="Create the base ZooKeeper tree of a new cluster",
              tags=core, returns=MESSAGE, scope=ADMIN),
        Route("GET", "/health", health_check, summary="Whether this daemon can serve (for load balancers)",
              auth=False, tags=core, returns=HEALTH,
              responses={503: {"description": "A dependency did not answer (the same document)",
                               "content": {JSON: {"schema": HEALTH}}}}),
        Route("GET", "/status", cluster_status, summary="Cluster status", tags=core, returns=STATUS),
        Route("POST", "/status", set_maintenance,
              (Param("state", STATE_VALUE, required=True, help="true to enter maintenance mode, false to leave it"),),
              summary="Set or clear maintenance mode", tags=core, returns=MESSAGE, responses=CONFLICT,
              scope=ADMIN),  # admin: cluster-wide, and node daemons stop fencing during maintenance
        Route("GET", "/plugins", list_plugins, summary="Loaded plugins, their versions and routes",
              tags=core, returns=array(PLUGIN)),
        *taskroutes.routes(runtime),  # /tasks[/<id>[/wait]]
        *auditroute.routes(),
        Route("GET", "/openapi.json", openapi_json, summary="This API as an OpenAPI 3 document",
              tags=core, returns=OPENAPI),
        Route("GET", "/doc", openapi_page, summary="This API as an HTML page", tags=core, media_type=HTML,
              returns=TEXT),
        *backup.routes(),
        *metrics.routes(runtime),
    ]


@hookimpl
def pvc_db_models() -> list:
    return list(audit.MODELS)


@hookimpl
def pvc_start(runtime: Any) -> None:
    for kind in backup.kinds(runtime):
        runtime.task_monitor.register(kind)

"""OpenAPI 3 document and HTML docs page, generated from the route table alone.

Every operation states its success status, media type and body schema (from
the Route), and every error status it can answer: the generic ones follow
from the route's parameters, path variables, method and authentication, the
others are declared on the route. Every authenticated operation names the
scope it requires (``x-pvc-scope`` and a sentence of its description) and
declares the 403 a token or session of a lower scope gets.
"""

from __future__ import annotations

import html
import re
from typing import Any

from . import __version__
from .auth import SCOPES
from .params import BOOLEAN, INTEGER, Param
from .routes import API_PREFIX, MAIN_LISTENER, READ_METHODS, Header, Route, RouteTable
from .shapes import JSON, MESSAGE

_VARIABLE = re.compile(r"<([^>]+)>")


def _openapi_path(path: str) -> str:
    return _VARIABLE.sub(r"{\1}", path)


# A path variable is one segment: not empty, no "/" and (the dispatcher's 400) no control characters.
PATH_SEGMENT = {"type": "string", "pattern": "^[^/\\u0000-\\u001f\\u007f]+$"}
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
GENERIC = {
    400: "Bad input (a parameter, the path or the body) or a failed precondition",
    401: "Authentication required or failed",
    403: "The token's (or login session's) scope is below the scope this operation requires",
    404: "No such object (or, for a list, nothing matched)",
    408: "The request body did not arrive within pvc.api.body_timeout",
    413: "Request body larger than pvc.api.max_body_size",
    415: "The streamed body was sent with a Content-Encoding (gzip...); it is never decoded: send it unencoded",
    429: "Too many open connections from this client address (pvc.api.max_connections_per_client)",
    503: "A backing service (ZooKeeper, database, queue, Ceph) is unreachable",
}


def _param_schema(param: Param) -> dict:
    """The parameter's type with every limit the parser enforces."""
    schema = dict(param.type.schema)
    if param.choices is not None:
        schema["enum"] = list(param.choices)
    low, high = param.bounds()
    if param.type is INTEGER and (low, high) == (None, None):
        schema["format"] = "int64"
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    if param.max_length is not None:
        schema["maxLength"] = param.max_length
    if param.pattern is not None:
        schema["pattern"] = f"^(?:{param.pattern})$"
    if param.default is not None and not param.repeated:
        schema["default"] = param.default
    if param.repeated:
        schema = {"type": "array", "items": schema}
    return schema


def _parameter(param: Param) -> dict:
    description = param.help or ""
    if description and not description.endswith("."):
        description += "."
    if param.pattern_help:
        description += (" " if description else "") + f"Expected: {param.pattern_help}."
    if param.aliases:
        description += (" " if description else "") + "Also accepted as: " + ", ".join(param.aliases) + "."
    out: dict[str, Any] = {"name": param.name, "in": "query", "required": param.required,
                           "schema": _param_schema(param)}
    if param.repeated:
        out["style"] = "form"
        out["explode"] = True
    if param.type is BOOLEAN:
        # DECISIONS: a flag given with no value (``?force``) is true.
        out["allowEmptyValue"] = True
    if description:
        out["description"] = description
    if param.aliases:
        out["x-aliases"] = list(param.aliases)
    return out


class _Components:
    """Named schemas (those with a ``title``) hoisted out of the routes' declarations."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict] = {}
        self.owners: dict[str, str] = {}
        self.hoist(MESSAGE, "core")

    def hoist(self, schema: Any, owner: str) -> Any:
        if isinstance(schema, list):
            return [self.hoist(item, owner) for item in schema]
        if not isinstance(schema, dict):
            return schema
        inner = {key: self.hoist(value, owner) for key, value in schema.items()}
        title = schema.get("title")
        if not isinstance(title, str) or not ({"type", "oneOf", "anyOf"} & set(schema)):
            return inner  # not a named schema (or a "title" property of one)
        known = self.schemas.get(title)
        if known is None:
            self.schemas[title], self.owners[title] = inner, owner
        elif known != inner:
            raise ValueError(f"response schema {title!r} declared differently by {self.owners[title]!r} "
                             f"and {owner!r}")
        return {"$ref": f"#/components/schemas/{title}"}


def _message(description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": {"$ref": "#/components/schemas/Message"}}}}


def _header(declared: str | Header) -> dict:
    text = declared.description if isinstance(declared, Header) else declared
    return {"description": text, "schema": {"type": "string"}}


def _responses(route: Route, path: str, components: _Components) -> dict:
    owner = route.plugin or "core"
    success = {"description": "Success" if route.status < 400 else (route.summary or "The answer"),
               "content": {route.media_type: {"schema": components.hoist(route.returns or {}, owner)}}}
    if route.headers:
        success["headers"] = {name: _header(declared) for name, declared in route.headers.items()}
    responses: dict[int, dict] = {route.status: success}
    generic = [429, 503]
    if route.params or "{" in path or route.method in BODY_METHODS:
        generic.append(400)
    if route.auth:
        generic.extend((401, 403))
    if "{" in path:
        generic.append(404)
    if route.method in BODY_METHODS:
        generic.extend((408, 413))
    if route.stream_body:
        generic.append(415)
    for code in generic:
        responses.setdefault(code, _message(GENERIC[code]))
    for code, declared in route.responses.items():
        responses[code] = _message(declared) if isinstance(declared, str) else components.hoist(declared, owner)
    if route.etag:
        _conditional_responses(route, responses)
    for name, declared in route.headers.items():
        for code in declared.errors if isinstance(declared, Header) else ():
            if code not in responses:
                raise ValueError(f"route {route.method} {route.path}: header {name} on status {code}, "
                                 "which the route does not declare")
            responses[code] = {**responses[code], "headers": {**responses[code].get("headers", {}),
                                                              name: _header(declared)}}
    return {str(code): responses[code] for code in sorted(responses)}


# Routes with ``etag`` (pvc_core.etags): the ETag a GET answers, the If-Match a change takes.
ETAG_HEADER = {"description": "The object's entity tag: send it back as If-Match to change the object only "
                              "while it is still as read", "schema": {"type": "string"}}
IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
            "description": "Change the object only while its ETag (the ETag header of {source}) is one of "
                           "these entity tags; * only while it exists. Otherwise 412 and nothing is changed. "
                           "Without it: unconditional."}
IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "304 without a body when the object's ETag is one of these entity tags."}


def _conditional_responses(route: Route, responses: dict[int, dict]) -> None:
    if route.method in READ_METHODS:
        responses[route.status] = {**responses[route.status], "headers": {"ETag": ETAG_HEADER}}
        responses[304] = {"description": "Not modified: the object's ETag is one If-None-Match lists",
                          "headers": {"ETag": ETAG_HEADER}}
    else:
        responses[412] = {**_message("Precondition failed: the object changed (or went) since it was read, and "
                                     "If-Match no longer holds; nothing was changed"),
                          "headers": {"ETag": {**ETAG_HEADER, "description": "The object's current entity tag "
                                                                             "(absent when it does not exist)"}}}


def etag_source(path: str, readers: list[str]) -> str:
    """The GET whose ETag a conditional change of ``path`` takes: the object's own, or that of the object it
    is part of (a VM's state, a template's disk): the longest GET path with an ETag that ``path`` starts with."""
    segments = path.split("/")
    found = [reader for reader in readers if segments[:reader.count("/") + 1] == reader.split("/")]
    return "GET " + _openapi_path(max(found, key=len)) if found else "a GET of the object"


def _operation(route: Route, path: str, operation_ids: set[str], components: _Components,
               readers: list[str] | None = None) -> dict:
    base = re.sub(r"[^A-Za-z0-9]+", "_", f"{route.method.lower()}{path}").strip("_")
    operation_id, counter = base, 2
    while operation_id in operation_ids:
        operation_id, counter = f"{base}_{counter}", counter + 1
    operation_ids.add(operation_id)
    parameters = [{"name": name, "in": "path", "required": True, "schema": dict(PATH_SEGMENT)}
                  for name in _VARIABLE.findall(path)]
    parameters += [_parameter(param) for param in route.params]
    if route.etag and route.method in READ_METHODS:
        parameters.append(dict(IF_NONE_MATCH))
    elif route.etag:
        parameters.append({**IF_MATCH, "description": IF_MATCH["description"].format(
            source=etag_source(path, readers or []))})
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": route.summary or f"{route.method} {path}",
        "tags": list(route.tags) or [route.plugin or "core"],
        "parameters": parameters,
        "responses": _responses(route, _openapi_path(path), components),
    }
    if route.json_document:
        operation["requestBody"] = {"required": False, "content": {JSON: {"schema": {"type": "object"}}}}
    if route.stream_body:
        binary = {"type": "string", "format": "binary"}
        operation["requestBody"] = {"required": True, "content": {
            "application/octet-stream": {"schema": binary},
            "multipart/form-data": {"schema": {"type": "object", "properties": {"file": binary},
                                               "required": ["file"]}}}}
    if route.plugin:
        operation["x-plugin"] = route.plugin
    description = []
    if path != route.full_paths()[0]:
        description.append(f"Alias of {route.full_paths()[0]}.")
    if route.auth:
        operation["x-pvc-scope"] = route.scope
        description.append(scope_sentence(route.scope))
    else:
        operation["security"] = []
        description.append("No authentication needed.")
    operation["description"] = " ".join(description)
    return operation


def scope_sentence(scope: str) -> str:
    """The description's statement of what an operation requires (the same as its ``x-pvc-scope``)."""
    allowed = list(SCOPES[SCOPES.index(scope):])
    names = allowed[0] if len(allowed) == 1 else ", ".join(allowed[:-1]) + " or " + allowed[-1]
    return (f"Requires scope {scope}: a token (or a login session of a token) of scope {names}; "
            "a lower scope gets 403.")


SCOPE_HELP = ("Each configured token has a scope, read < write < admin (absent: admin); an operation's "
              "x-pvc-scope is the lowest that may use it.")


def _root_redirect() -> dict:
    """The dispatcher's own answer at the bare prefix (not a route)."""
    return {"get": {
        "operationId": "get_api_v1_redirect",
        "summary": f"Redirect to {API_PREFIX}/",
        "tags": ["core"],
        "security": [],
        "parameters": [],
        "responses": {"301": {**_message(f"Moved permanently to {API_PREFIX}/"),
                              "headers": {"Location": {"schema": {"type": "string"}}}}},
    }}


def document(table: RouteTable, plugins: dict | None = None, listener: str = MAIN_LISTENER) -> dict:
    """The OpenAPI 3.0 document of one listener's routes (the main API by default)."""
    paths: dict[str, dict] = {}
    operation_ids: set[str] = set()
    components = _Components()
    readers = [full for route in table.for_listener(listener) if route.etag and route.method in READ_METHODS
               for full in route.full_paths()]
    for route in table.for_listener(listener):
        for full in route.full_paths():
            entry = paths.setdefault(_openapi_path(full), {})
            entry[route.method.lower()] = _operation(route, full, operation_ids, components, readers)
    if listener == MAIN_LISTENER:
        paths[API_PREFIX] = _root_redirect()
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "PVC API" if listener == MAIN_LISTENER else f"PVC API, listener {listener!r}",
            "version": __version__,
            "description": "Parallel Virtual Cluster API (v0.6 compatible). Loaded plugins: "
                           + (", ".join(sorted(plugins or {})) or "none") + ".",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
                           "description": SCOPE_HELP},
                "session": {"type": "apiKey", "in": "cookie", "name": "session",
                            "description": "Set by POST /api/v1/login; it holds the scope of the token that "
                                           "logged in. " + SCOPE_HELP},
            },
            "schemas": dict(sorted(components.schemas.items())),
        },
        "security": [{"apiKey": []}, {"session": []}],
    }


def html_page(doc: dict) -> str:
    """A self-contained page (no external assets: the daemon may have no Internet)."""
    rows = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            params = "".join(
                f"<li><code>{html.escape(p['name'])}</code> ({p['in']}, "
                f"{html.escape(str(p['schema'].get('type', '')))}"
                f"{', required' if p.get('required') else ''})"
                f"{' — ' + html.escape(p['description']) if p.get('description') else ''}</li>"
                for p in operation["parameters"])
            auth = "no" if operation.get("security") == [] else operation.get("x-pvc-scope", "yes")
            answers = ", ".join(operation["responses"])
            rows.append(
                f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation['summary'])}</td><td>{auth}</td>"
                f"<td><ul>{params}</ul></td><td>{answers}</td></tr>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>PVC API</title>"
            "<style>body{font-family:sans-serif}td{vertical-align:top;border-top:1px solid #ccc;"
            "padding:4px}ul{margin:0;padding-left:1.2em}</style></head><body>"
            f"<h1>{html.escape(doc['info']['title'])} {html.escape(doc['info']['version'])}</h1>"
            f"<p>{html.escape(doc['info']['description'])} Machine-readable: "
            "<a href='/api/v1/openapi.json'>openapi.json</a>.</p>"
            "<table><tr><th>Method</th><th>Path</th><th>Summary</th><th>Scope</th><th>Parameters</th><th>Statuses</th></tr>"
            + "".join(rows) + "</table></body></html>")

"""OpenAPI 3 document and HTML docs page, generated from the route table alone."""

from __future__ import annotations

import html
import re
from typing import Any

from . import __version__
from .routes import MAIN_LISTENER, Route, RouteTable

_VARIABLE = re.compile(r"<([^>]+)>")


def _openapi_path(path: str) -> str:
    return _VARIABLE.sub(r"{\1}", path)


def _parameter(param: Any) -> dict:
    schema = dict(param.type.schema)
    if param.choices is not None:
        schema["enum"] = list(param.choices)
    if param.default is not None and not param.repeated:
        schema["default"] = param.default
    if param.repeated:
        schema = {"type": "array", "items": schema}
    description = param.help or ""
    if param.aliases:
        description += (" " if description else "") + "Also accepted as: " + ", ".join(param.aliases) + "."
    out: dict[str, Any] = {"name": param.name, "in": "query", "required": param.required, "schema": schema}
    if param.repeated:
        out["style"] = "form"
        out["explode"] = True
    if description:
        out["description"] = description
    if param.aliases:
        out["x-aliases"] = list(param.aliases)
    return out


def _operation(route: Route, path: str, operation_ids: set[str]) -> dict:
    base = re.sub(r"[^A-Za-z0-9]+", "_", f"{route.method.lower()}{path}").strip("_")
    operation_id, counter = base, 2
    while operation_id in operation_ids:
        operation_id, counter = f"{base}_{counter}", counter + 1
    operation_ids.add(operation_id)
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in _VARIABLE.findall(path)]
    parameters += [_parameter(param) for param in route.params]
    responses: dict[str, Any] = {
        "200": {"description": "Success", "content": {"application/json": {"schema": {}}}},
        "400": {"description": "Bad input or failed precondition", "content": _message_content()},
    }
    if route.auth:
        responses["401"] = {"description": "Authentication required or failed", "content": _message_content()}
    responses["503"] = {"description": "A backing service is unreachable", "content": _message_content()}
    for code, text in route.responses.items():
        responses[str(code)] = {"description": text, "content": _message_content()}
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": route.summary or f"{route.method} {path}",
        "tags": list(route.tags) or [route.plugin or "core"],
        "parameters": parameters,
        "responses": responses,
    }
    if route.plugin:
        operation["x-plugin"] = route.plugin
    if not route.auth:
        operation["security"] = []
    if path != route.full_paths()[0]:
        operation["description"] = f"Alias of {route.full_paths()[0]}."
    return operation


def _message_content() -> dict:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}}


def document(table: RouteTable, plugins: dict | None = None) -> dict:
    """The OpenAPI 3.0 document of the main listener's routes."""
    paths: dict[str, dict] = {}
    operation_ids: set[str] = set()
    for route in table.for_listener(MAIN_LISTENER):
        for full in route.full_paths():
            entry = paths.setdefault(_openapi_path(full), {})
            entry[route.method.lower()] = _operation(route, full, operation_ids)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "PVC API",
            "version": __version__,
            "description": "Parallel Virtual Cluster API (v0.6 compatible). Loaded plugins: "
                           + (", ".join(sorted(plugins or {})) or "none") + ".",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
            "schemas": {
                "Message": {"type": "object", "properties": {"message": {"type": "string"}},
                            "required": ["message"]},
            },
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
            auth = "no" if operation.get("security") == [] else "yes"
            rows.append(
                f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation['summary'])}</td><td>{auth}</td>"
                f"<td><ul>{params}</ul></td></tr>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>PVC API</title>"
            "<style>body{font-family:sans-serif}td{vertical-align:top;border-top:1px solid #ccc;"
            "padding:4px}ul{margin:0;padding-left:1.2em}</style></head><body>"
            f"<h1>{html.escape(doc['info']['title'])} {html.escape(doc['info']['version'])}</h1>"
            f"<p>{html.escape(doc['info']['description'])} Machine-readable: "
            "<a href='/api/v1/openapi.json'>openapi.json</a>.</p>"
            "<table><tr><th>Method</th><th>Path</th><th>Summary</th><th>Auth</th><th>Parameters</th></tr>"
            + "".join(rows) + "</table></body></html>")

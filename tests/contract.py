"""The daemon's OpenAPI document as a contract: every answer the suite receives is checked against it.

``Contract(document).check(...)`` raises AssertionError when a status is not
declared for the operation, or the body does not match the schema declared for
that status and media type. An unknown path must answer 404 and a known path
with an undeclared method 405, both with a ``{"message"}`` body.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match

MESSAGE_REF = {"$ref": "#/components/schemas/Message"}


def to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects as JSON Schema (draft 4): ``nullable`` becomes a null type."""
    if isinstance(node, list):
        return [to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_jsonschema(value) for key, value in node.items()}
    if out.get("nullable") is True:
        del out["nullable"]
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _media(text: str) -> tuple[str, set[str]]:
    """A media type and its parameters (``text/plain; version=0.0.4`` -> ``text/plain``, ``{"version=0.0.4"}``)."""
    kind, *parameters = (part.strip().lower().replace(" ", "") for part in text.split(";"))
    return kind, set(parameters)


def _declared_media(content: dict, content_type: str | None) -> str | None:
    """The declared media type an answer's Content-Type is: the same type, with at least the parameters
    the declaration names (``text/plain; version=0.0.4`` is answered ``...; version=0.0.4; charset=utf-8``)."""
    kind, parameters = _media(content_type or "")
    for declared in content:
        declared_kind, declared_parameters = _media(declared)
        if declared_kind == kind and declared_parameters <= parameters:
            return declared
    return None


def _shown(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    return text if len(text) <= 600 else text[:600] + "..."


class Contract:
    """One OpenAPI document, indexed for checking answers by concrete path."""

    def __init__(self, document: dict):
        self.document = document
        self.components = to_jsonschema(document.get("components", {}).get("schemas", {}))
        self.static: dict[str, dict] = {}
        self.templates: list[tuple[re.Pattern, int, str]] = []
        for template, operations in document["paths"].items():
            if "{" not in template:
                self.static[template] = operations
                continue
            segments = template.split("/")
            pattern = "/".join("[^/]+" if seg.startswith("{") else re.escape(seg) for seg in segments)
            variables = sum(seg.startswith("{") for seg in segments)
            self.templates.append((re.compile(pattern), variables, template))
        self._validators: dict[str, Draft4Validator] = {}

    def match(self, method: str, path: str) -> tuple[str, dict] | None:
        """The path template a concrete path falls under (static first, as the dispatcher) and its operations."""
        if path in self.static:
            return path, self.static[path]
        found = [(variables, template) for regex, variables, template in self.templates if regex.fullmatch(path)]
        if not found:
            return None
        paths = self.document["paths"]
        with_method = [item for item in found if method.lower() in paths[item[1]]]
        _variables, template = min(with_method or found)
        return template, paths[template]

    def validator(self, schema: dict) -> Draft4Validator:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            root = {"allOf": [to_jsonschema(schema)], "components": {"schemas": self.components}}
            validator = self._validators[key] = Draft4Validator(root)
        return validator

    def check(self, method: str, path: str, status: int, content_type: str | None, body: bytes) -> None:
        """Raise AssertionError unless this answer is one the document declares."""
        method, path = method.upper(), unquote(path)
        where = f"{method} {path} answered {status}"
        found = self.match(method, path)
        if method == "OPTIONS" and found is not None:
            if status != 200 or body:
                raise AssertionError(f"OpenAPI contract: {where}; OPTIONS of a known path is 200 with no body")
            return
        if found is None:
            self._body(where, "unknown path", MESSAGE_REF, content_type, body, expected=(404, status))
            return
        template, operations = found
        operation = operations.get(method.lower()) or (operations.get("get") if method == "HEAD" else None)
        if operation is None:
            self._body(where, f"method not documented for {template}", MESSAGE_REF, content_type, body,
                       expected=(405, status))
            return
        declared = operation["responses"].get(str(status))
        if declared is None:
            raise AssertionError(f"OpenAPI contract: {where}, a status not declared for {method} {template} "
                                 f"(declared: {', '.join(operation['responses'])})\n  body: {_shown(body)}")
        if method == "HEAD":
            return
        content = declared.get("content") or {}
        if not content:
            if body:
                raise AssertionError(f"OpenAPI contract: {where}: {method} {template} declares no body for "
                                     f"{status}\n  body: {_shown(body)}")
            return
        declared_type = _declared_media(content, content_type)
        if declared_type is None:
            raise AssertionError(f"OpenAPI contract: {where} as {content_type!r}; {method} {template} declares "
                                 f"{', '.join(content)} for {status}\n  body: {_shown(body)}")
        self._body(where, f"{method} {template}", content[declared_type].get("schema", {}), content_type, body)

    def _body(self, where: str, operation: str, schema: dict, content_type: str | None, body: bytes,
              expected: tuple[int, int] | None = None) -> None:
        if expected is not None and expected[0] != expected[1]:
            raise AssertionError(f"OpenAPI contract: {where}; expected {expected[0]} ({operation})\n"
                                 f"  body: {_shown(body)}")
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            try:
                value = json.loads(body)
            except ValueError:
                raise AssertionError(f"OpenAPI contract: {where} with a body that is not JSON ({operation})\n"
                                     f"  body: {_shown(body)}") from None
        elif expected is not None:
            raise AssertionError(f"OpenAPI contract: {where} as {content_type!r}, expected JSON ({operation})")
        else:
            value = body.decode("utf-8", errors="replace")
        error = best_match(self.validator(schema).iter_errors(value))
        if error is not None:
            at = "/".join(str(part) for part in error.absolute_path) or "(the body)"
            text = error.message if len(error.message) <= 400 else error.message[:400] + "..."
            raise AssertionError(f"OpenAPI contract: {where}, body does not match the schema of {operation}: "
                                 f"at {at}: {text}\n  body: {_shown(body)}")

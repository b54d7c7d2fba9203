"""Building blocks for declaring what a route answers (``Route.returns``).

Response bodies are OpenAPI 3.0 schema objects. A schema with a ``title`` is a
named one: the OpenAPI generator hoists it into ``components.schemas`` under
that title and refers to it, so a plugin declares each shared object (a VM,
a pool...) once, as a module constant, and uses it on every route that answers
it. ``obj`` makes every listed property required unless named optional, which
is what catches a field that disappears or changes type.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

STR: dict = {"type": "string"}
INT: dict = {"type": "integer"}
NUM: dict = {"type": "number"}
BOOL: dict = {"type": "boolean"}
ANY: dict = {"description": "any JSON value"}
TEXT: dict = {"type": "string"}  # a text/html or text/plain body

JSON = "application/json"
HTML = "text/html"
PLAIN = "text/plain"


def nullable(schema: dict) -> dict:
    """The schema or null (OpenAPI 3.0 ``nullable``; needs ``type`` beside it)."""
    return {**schema, "nullable": True}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def obj(properties: dict[str, dict], optional: Iterable[str] = (), **extra: Any) -> dict:
    """An object whose properties are all required except ``optional``; other keys are allowed."""
    skip = set(optional)
    unknown = skip - set(properties)
    if unknown:
        raise ValueError(f"optional names no property: {sorted(unknown)}")
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    required = [name for name in properties if name not in skip]
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


def map_of(values: dict) -> dict:
    """An object with free keys, every value matching ``values``."""
    return {"type": "object", "additionalProperties": values}


def named(title: str, schema: dict) -> dict:
    """A shared schema: listed once in ``components.schemas`` as ``title``."""
    return {**schema, "title": title}


def one_or_many(item: dict) -> dict:
    """v0.6 single-element collapse: one element is answered bare, several as an array."""
    return {"oneOf": [item, array(item)]}


MESSAGE = named("Message", obj({"message": STR}))


__all__ = ["ANY", "BOOL", "HTML", "INT", "JSON", "MESSAGE", "NUM", "PLAIN", "STR", "TEXT", "array", "map_of",
           "named", "nullable", "obj", "one_or_many"]

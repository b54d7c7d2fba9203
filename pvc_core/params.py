"""Declared request parameters: types, parsing and the 400 messages they produce.

A route lists its parameters once; the dispatcher parses them with
``parse_params`` and the OpenAPI generator reads the same declarations, so the
documentation cannot drift from what is enforced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import parse_bool
from .errors import BadRequest

MultiDict = Mapping[str, list[str]]


@dataclass(frozen=True)
class ParamType:
    """How a string from the query/form becomes a value, and how it is documented."""

    name: str
    expected: str
    parse: Callable[[str], Any]
    schema: dict = field(default_factory=dict)


def _parse_flag(value: str) -> bool:
    # DECISIONS: a flag given with no value (``?force``) is true.
    if value == "":
        return True
    return parse_bool(value)


STRING = ParamType("string", "a string", str, {"type": "string"})
INTEGER = ParamType("integer", "an integer", int, {"type": "integer"})
NUMBER = ParamType("number", "a number", float, {"type": "number"})
BOOLEAN = ParamType("boolean", "a boolean (true/false, yes/no, on/off, 1/0)", _parse_flag,
                    {"type": "boolean"})


@dataclass(frozen=True)
class Param:
    """One declared argument of a route.

    ``aliases`` are accepted spellings (the seeds' names); the OpenAPI document
    shows ``name`` and lists the aliases. ``repeated`` keeps every value in
    order; otherwise the last value wins (DECISIONS §9).
    """

    name: str
    type: ParamType = STRING
    required: bool = False
    choices: tuple | None = None
    default: Any = None
    repeated: bool = False
    aliases: tuple[str, ...] = ()
    help: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def describe_expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        return self.type.expected

    def convert(self, raw: str) -> Any:
        try:
            value = self.type.parse(raw)
        except (ValueError, TypeError):
            raise BadRequest(f"Parameter '{self.name}': expected {self.type.expected}, got {raw!r}") from None
        if self.choices is not None and value not in self.choices:
            raise BadRequest(f"Parameter '{self.name}': expected {self.describe_expected()}, got {raw!r}")
        return value


def parse_params(declared: Iterable[Param], values: MultiDict) -> dict[str, Any]:
    """Validate the declared parameters, in declaration order; undeclared names are ignored."""
    out: dict[str, Any] = {}
    for param in declared:
        raw: list[str] = []
        for name in param.names:
            found = values.get(name)
            if found:
                raw.extend(found)
        if not raw:
            if param.required:
                hint = f" ({param.help})" if param.help else ""
                raise BadRequest(
                    f"Parameter '{param.name}': required, expected {param.describe_expected()}{hint}")
            out[param.name] = list(param.default or []) if param.repeated else param.default
            continue
        if param.repeated:
            out[param.name] = [param.convert(item) for item in raw]
        else:
            out[param.name] = param.convert(raw[-1])
    return out


def json_to_multidict(document: Any) -> dict[str, list[str]]:
    """Flatten a JSON object body the way v0.6 did: every value becomes a string."""
    if not isinstance(document, dict):
        raise BadRequest("JSON body: expected an object of parameter names to values")
    out: dict[str, list[str]] = {}
    for key, value in document.items():
        items = value if isinstance(value, list) else [value]
        strings = [_stringify(item) for item in items if item is not None]
        if strings:
            out[str(key)] = strings
    return out


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def merge_sources(*sources: Mapping[str, Any]) -> dict[str, list[str]]:
    """Combine query, form and JSON values per name, in source order."""
    out: dict[str, list[str]] = {}
    for source in sources:
        for key, value in source.items():
            items = value if isinstance(value, list) else [value]
            out.setdefault(key, []).extend(item if isinstance(item, str) else str(item) for item in items)
    return out

"""Declared request parameters: types, parsing and the 400 messages they produce.

A route lists its parameters once; the dispatcher parses them with
``parse_params`` and the OpenAPI generator reads the same declarations, so the
documentation cannot drift from what is enforced.
"""

from __future__ import annotations

import math
import re
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

    def takes_json(self, kind: str) -> bool:
        """Whether a JSON body's value of ``kind`` (besides a string) may give this type's text.

        The one place that decides it, for every type (the built-in ones and those a plugin
        declares): a number wherever v0.6 took its text (an integer, a number, a string such as
        ``{"size": 10}``; a boolean or time type parses "1" or refuses it like any text); a
        boolean only where the type is documented boolean (v0.6's "True"/"False" parse there,
        elsewhere they became a name ``True``); an object or an array inside an array never
        (their Python text, ``{'a': 1}``, is nobody's value).
        """
        if kind == "number":
            return True
        if kind == "boolean":
            return self.schema.get("type") == "boolean"
        return False


def _parse_flag(value: str) -> bool:
    # DECISIONS: a flag given with no value (``?force``) is true.
    if value == "":
        return True
    return parse_bool(value)


def _parse_integer(value: str) -> int:
    # int() also takes "1_000", surrounding spaces and non-ASCII digits; the document says integer.
    if not _INTEGER.fullmatch(value):
        raise ValueError(value)
    return int(value)


def _parse_number(value: str) -> float:
    # float() also takes "nan", "inf" and "1_0": none is a JSON number.
    if not _NUMBER.fullmatch(value) or not math.isfinite(float(value)):
        raise ValueError(value)
    return float(value)


_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")

STRING = ParamType("string", "a string", str, {"type": "string"})
INTEGER = ParamType("integer", "an integer", _parse_integer, {"type": "integer"})
NUMBER = ParamType("number", "a number", _parse_number, {"type": "number"})
BOOLEAN = ParamType("boolean", "a boolean (true/false, yes/no, on/off, 1/0)", _parse_flag,
                    {"type": "boolean"})


@dataclass(frozen=True)
class Param:
    """One declared argument of a route.

    ``aliases`` are accepted spellings (the seeds' names); the OpenAPI document
    shows ``name`` and lists the aliases. ``repeated`` keeps every value in
    order; otherwise the last value wins (DECISIONS §9). ``secret`` values (a
    token, a password) are masked in the audit log (``pvc_core.redaction``).
    """

    name: str
    type: ParamType = STRING
    required: bool = False
    choices: tuple | None = None
    default: Any = None
    repeated: bool = False
    aliases: tuple[str, ...] = ()
    help: str = ""
    minimum: int | float | None = None
    maximum: int | float | None = None
    max_length: int | None = None
    pattern: str | None = None
    pattern_help: str = ""
    secret: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def describe_expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        expected = self.type.expected
        if self.pattern_help:
            expected = self.pattern_help
        low, high = self.bounds()
        if low is not None and high is not None:
            expected += f" from {low} to {high}"
        elif low is not None:
            expected += f" of at least {low}"
        elif high is not None:
            expected += f" of at most {high}"
        if self.max_length is not None:
            expected += f" of at most {self.max_length} characters"
        return expected

    def bounds(self) -> tuple[Any, Any]:
        """The range worth stating: the declared one (an integer's implicit 64 bits go unsaid)."""
        low, high = self.type_bounds()
        if self.type is INTEGER and (low, high) == (INT64_MIN, INT64_MAX):
            return None, None
        return low, high

    def convert(self, raw: str) -> Any:
        kind = getattr(raw, "json_kind", None)
        if kind is not None and not self.type.takes_json(kind):
            raise BadRequest(f"Parameter '{self.name}': expected {self.describe_expected()}, "
                             f"got {JSON_KIND_SHOWN[kind]}")
        if "\x00" in raw:
            raise BadRequest(f"Parameter '{self.name}': expected text without NUL bytes")
        if self.max_length is not None and len(raw) > self.max_length:
            raise BadRequest(f"Parameter '{self.name}': expected {self.describe_expected()}, "
                             f"got {len(raw)} characters")
        try:
            value = self.type.parse(raw)
        except (ValueError, TypeError):
            # the whole expectation (an integer from 1 to 4096), as for a value out of range
            raise BadRequest(f"Parameter '{self.name}': expected {self.describe_expected()}, "
                             f"got {_shown(raw)}") from None
        if self.choices is not None and value not in self.choices:
            raise BadRequest(f"Parameter '{self.name}': expected {self.describe_expected()}, got {_shown(raw)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, raw):
            raise BadRequest(f"Parameter '{self.name}': expected {self.describe_expected()}, got {_shown(raw)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = self.type_bounds()
            if (low is not None and value < low) or (high is not None and value > high):
                expected = self.describe_expected()
                if self.bounds() == (None, None):  # only the implicit 64 bits were exceeded
                    expected += f" from {low} to {high} (64 bits)"
                raise BadRequest(f"Parameter '{self.name}': expected {expected}, got {_shown(raw)}")
        return value

    def type_bounds(self) -> tuple[Any, Any]:
        """The range enforced: the declared one, else the type's own (an integer fits the database's 64 bits)."""
        low, high = self.minimum, self.maximum
        if self.type is INTEGER:
            low = INT64_MIN if low is None else low
            high = INT64_MAX if high is None else high
        return low, high


def _shown(raw: str) -> str:
    """The offending value as the message quotes it: shortened, so a huge input is not echoed whole."""
    return repr(raw if len(raw) <= 80 else raw[:77] + "...")


INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
# An object name that is safe as one ZooKeeper path segment, one database value and one
# file name: not empty, no "/" or control characters, not "." or "..".
NAME_PATTERN = r"(?!\.\.?$)[^\x00-\x1f\x7f/]+"
NAME_HELP = "a name without '/' or control characters, not '.' or '..'"
_NAME = re.compile(NAME_PATTERN)


# v0.6 took any value of yes-i-really-mean-it as a yes, "no" too: an explicit negative is refused instead
CONFIRM_PATTERN = r"(?!(?:[Nn][Oo]?|[Ff][Aa][Ll][Ss][Ee]|0|[Oo][Ff][Ff])$)[\s\S]*"
CONFIRM_HELP = "any value (even empty) but a negative one (no, n, false, 0, off)"


def confirmation(help: str) -> Param:
    """The confirmation of a destructive change: present, as in v0.6 (and as ``yes_i_really_mean_it``, which
    DECISIONS accepts too), with any value but an explicit negative, which v0.6 also took as a yes."""
    return Param("yes-i-really-mean-it", STRING, required=True, aliases=("yes_i_really_mean_it",),
                 pattern=CONFIRM_PATTERN, pattern_help=CONFIRM_HELP, help=help)


def is_name(value: str) -> bool:
    """Whether ``value`` is a safe object name (``NAME_PATTERN``), for names that arrive outside
    a declared Param (a path segment, a service call); the caller words the 400."""
    return _NAME.fullmatch(value) is not None


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


def ignored_names(declared: Iterable[Param], values: MultiDict) -> list[str]:
    """The given names that no declared parameter takes (sorted, shortened for a header)."""
    known = {name for param in declared for name in param.names}
    return sorted(_header_safe(name) for name in values if name not in known)[:20]


def _header_safe(name: str) -> str:
    name = "".join(char if " " <= char < "\x7f" and char != "," else "?" for char in name)
    return name[:64]


class JsonText(str):
    """A JSON body's value other than a string, as the text v0.6 made of it ("True", "10", "{'a': 1}"),
    remembering the JSON kind it was (``json_kind``: number, boolean, object, array): ``Param.convert``
    refuses the kinds its type does not take (``ParamType.takes_json``)."""

    json_kind: str

    def __new__(cls, text: str, kind: str) -> JsonText:
        value = super().__new__(cls, text)
        value.json_kind = kind
        return value


JSON_KIND_SHOWN = {"boolean": "a JSON boolean", "number": "a JSON number", "object": "a JSON object",
                   "array": "a JSON array inside an array"}


def json_to_multidict(document: Any) -> dict[str, list[str]]:
    """Flatten a JSON object body the way v0.6 did: every value becomes a string (a list gives one
    value per item); one that was not a JSON string is a ``JsonText`` that remembers its kind."""
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
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return JsonText("True" if value else "False", "boolean")
    if isinstance(value, (int, float)):
        return JsonText(str(value), "number")
    return JsonText(str(value), "object" if isinstance(value, dict) else "array")


def merge_sources(*sources: Mapping[str, Any]) -> dict[str, list[str]]:
    """Combine query, form and JSON values per name, in source order."""
    out: dict[str, list[str]] = {}
    for source in sources:
        for key, value in source.items():
            items = value if isinstance(value, list) else [value]
            out.setdefault(key, []).extend(item if isinstance(item, str) else str(item) for item in items)
    return out

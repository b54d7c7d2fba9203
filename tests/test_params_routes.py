"""Parameter parsing (DECISIONS booleans, last-wins, repeated, aliases) and route matching."""

from __future__ import annotations

import pytest

from pvc_core.auditroute import TIME
from pvc_core.coreplugin import STATE_VALUE
from pvc_core.errors import ApiError
from pvc_core.params import (
    BOOLEAN,
    INTEGER,
    NAME_HELP,
    NAME_PATTERN,
    NUMBER,
    STRING,
    JsonText,
    Param,
    json_to_multidict,
    merge_sources,
    parse_params,
)
from pvc_core.routes import Route, RouteTable

FLAG = Param("force", BOOLEAN, default=False)


@pytest.mark.parametrize("raw, expected", [
    ("true", True), ("TRUE", True), ("t", True), ("Yes", True), ("y", True), ("on", True), ("1", True),
    ("false", False), ("F", False), ("no", False), ("n", False), ("OFF", False), ("0", False),
    ("", True),  # ?force
])
def test_booleans(raw, expected):
    assert parse_params([FLAG], {"force": [raw]}) == {"force": expected}


def test_boolean_absent_is_default_and_invalid_is_400():
    assert parse_params([FLAG], {}) == {"force": False}
    with pytest.raises(ApiError) as info:
        parse_params([FLAG], {"force": ["maybe"]})
    assert info.value.status == 400
    assert info.value.message == ("Parameter 'force': expected a boolean (true/false, yes/no, on/off, 1/0), "
                                  "got 'maybe'")


def test_integer_message():
    with pytest.raises(ApiError) as info:
        parse_params([Param("vcpus", INTEGER)], {"vcpus": ["lots"]})
    assert info.value.message == "Parameter 'vcpus': expected an integer, got 'lots'"


@pytest.mark.parametrize("kind, raw", [
    (INTEGER, "1_000"), (INTEGER, " 1"), (INTEGER, "\u00b2"), (INTEGER, "1.0"), (INTEGER, "9" * 20),
    (NUMBER, "nan"), (NUMBER, "inf"), (NUMBER, "1e999"), (NUMBER, "1_0"), (NUMBER, "\u0661"),
])
def test_numbers_are_ascii_decimal_and_finite(kind, raw):
    """int()/float() accept all of these; the document says integer/number, so the daemon must not."""
    with pytest.raises(ApiError) as info:
        parse_params([Param("n", kind)], {"n": [raw]})
    assert info.value.status == 400 and info.value.message.startswith("Parameter 'n': expected")


def test_ranges_lengths_patterns_and_nul():
    declared = [Param("vcpus", INTEGER, minimum=1, maximum=64), Param("name", STRING, max_length=8,
                                                                    pattern=NAME_PATTERN, pattern_help=NAME_HELP)]
    assert parse_params(declared, {"vcpus": ["+64"], "name": ["web-1"]}) == {"vcpus": 64, "name": "web-1"}
    for values, message in [
        ({"vcpus": ["0"]}, "Parameter 'vcpus': expected an integer from 1 to 64, got '0'"),
        ({"vcpus": ["65"]}, "Parameter 'vcpus': expected an integer from 1 to 64, got '65'"),
        ({"name": ["a" * 9]}, "Parameter 'name': expected " + NAME_HELP + " of at most 8 characters, got 9 characters"),
        ({"name": [".."]}, "Parameter 'name': expected " + NAME_HELP + " of at most 8 characters, got '..'"),
        ({"name": ["a/b"]}, "Parameter 'name': expected " + NAME_HELP + " of at most 8 characters, got 'a/b'"),
        ({"name": ["a\nb"]}, "Parameter 'name': expected " + NAME_HELP + " of at most 8 characters, got 'a\\nb'"),
        ({"name": ["a\x00b"]}, "Parameter 'name': expected text without NUL bytes"),
    ]:
        with pytest.raises(ApiError) as info:
            parse_params(declared, values)
        assert info.value.message == message
    with pytest.raises(ApiError) as info:  # an integer beyond 64 bits never reaches a database
        parse_params([Param("n", INTEGER)], {"n": [str(2 ** 63)]})
    assert info.value.message == ("Parameter 'n': expected an integer from -9223372036854775808 to "
                                  "9223372036854775807 (64 bits), got '9223372036854775808'")


def test_required_and_choices_in_declaration_order():
    declared = [Param("a", STRING, required=True, help="the a"), Param("b", STRING, choices=("x", "y"))]
    with pytest.raises(ApiError) as info:
        parse_params(declared, {"b": ["z"]})
    assert info.value.message == "Parameter 'a': required, expected a string (the a)"
    with pytest.raises(ApiError) as info:
        parse_params(declared, {"a": ["1"], "b": ["z"]})
    assert info.value.message == "Parameter 'b': expected one of x, y, got 'z'"


def test_last_wins_repeated_keeps_all_aliases_merge():
    declared = [Param("limit", STRING), Param("arg", STRING, repeated=True),
                Param("storage_template", STRING, aliases=("disk_template",))]
    values = merge_sources({"limit": ["a", "b"], "arg": ["1"]}, {"arg": ["2", "3"], "disk_template": "d"})
    assert parse_params(declared, values) == {"limit": "b", "arg": ["1", "2", "3"], "storage_template": "d"}


def test_json_body_stringified_like_v06():
    assert json_to_multidict({"autostart": True, "n": 5, "x": None, "l": ["a", 1]}) == {
        "autostart": ["True"], "n": ["5"], "l": ["a", "1"]}
    with pytest.raises(ApiError):
        json_to_multidict([1, 2])


def test_json_body_values_remember_their_kind_through_merge():
    flat = json_to_multidict({"s": "text", "b": False, "n": 1.5, "o": {"a": 1}, "l": ["a", 2, ["x"], True]})
    merged = merge_sources({"s": ["query"]}, flat)
    kinds = {name: [getattr(value, "json_kind", None) for value in values] for name, values in merged.items()}
    assert kinds == {"s": [None, None], "b": ["boolean"], "n": ["number"], "o": ["object"],
                     "l": [None, "number", "array", "boolean"]}
    assert merged["o"] == ["{'a': 1}"] and merged["l"] == ["a", "2", "['x']", "True"]  # v0.6's text


@pytest.mark.parametrize("kind, value, expected", [
    (BOOLEAN, True, True), (BOOLEAN, False, False), (BOOLEAN, 1, True), (BOOLEAN, 0, False),
    (STATE_VALUE, True, True), (STATE_VALUE, False, False),
    (INTEGER, 5, 5), (INTEGER, -3, -3), (NUMBER, 2.5, 2.5), (NUMBER, 7, 7.0),
    (STRING, 10, "10"), (STRING, 1.5, "1.5"), (STRING, "True", "True"), (TIME, 1700000000, 1.7e9),
])
def test_json_kinds_each_type_takes(kind, value, expected):
    """A JSON boolean where the type is boolean (POST /status's state too), a JSON number wherever v0.6
    took its text (a string too; the audit's epoch seconds)."""
    values = json_to_multidict({"p": value})
    assert parse_params([Param("p", kind)], values) == {"p": expected}


@pytest.mark.parametrize("kind, value, shown", [
    (kind, value, shown)
    for kind in (STRING, INTEGER, NUMBER, BOOLEAN, STATE_VALUE, TIME)
    for value, shown in [({"a": 1}, "a JSON object"), ([["a"]], "a JSON array inside an array"),
                         ([{"a": 1}], "a JSON object"), (True, "a JSON boolean"), (False, "a JSON boolean")]
    if not (shown == "a JSON boolean" and kind.schema.get("type") == "boolean")
])
def test_json_kinds_each_type_refuses(kind, value, shown):
    """v0.6 made "True" or "{'a': 1}" of these: a VM renamed True, a tag {'a': 1}; now 400 naming the
    parameter (a boolean everywhere but a boolean type)."""
    param = Param("p", kind)
    with pytest.raises(ApiError) as info:
        parse_params([param], json_to_multidict({"p": value}))
    assert info.value.status == 400
    assert info.value.message == f"Parameter 'p': expected {param.describe_expected()}, got {shown}"


def test_json_refusal_words_the_expectation_like_other_errors():
    declared = [Param("new_name", STRING, required=True, pattern=NAME_PATTERN, pattern_help=NAME_HELP),
                Param("tags", STRING, repeated=True), Param("mode", STRING, choices=("a", "b"))]
    for body, message in [
        ({"new_name": True}, f"Parameter 'new_name': expected {NAME_HELP}, got a JSON boolean"),
        ({"new_name": "x", "tags": ["a", {"b": 2}]}, "Parameter 'tags': expected a string, got a JSON object"),
        ({"new_name": "x", "mode": False}, "Parameter 'mode': expected one of a, b, got a JSON boolean"),
    ]:
        with pytest.raises(ApiError) as info:
            parse_params(declared, json_to_multidict(body))
        assert info.value.message == message
    # a list of strings for a repeated parameter, a number for a string: as before
    assert parse_params(declared, json_to_multidict({"new_name": 10, "tags": ["a", "b"]})) == {
        "new_name": "10", "tags": ["a", "b"], "mode": None}
    # the same text from a query string or a form is a string as it always was
    assert parse_params(declared, {"new_name": ["True"], "tags": ["{'a': 1}"]})["new_name"] == "True"
    assert isinstance(JsonText("True", "boolean"), str)


def _handler(ctx, params, **kw):
    return kw


def test_route_matching():
    table = RouteTable()
    table.add(Route("GET", "/vm", _handler))
    table.add(Route("POST", "/vm", _handler))
    table.add(Route("GET", "/vm/<vm>", _handler))
    table.add(Route("GET", "/vm/<vm>/state", _handler, aliases=("/vm/<vm>/status",)))
    table.add(Route("GET", "/meta", _handler, listener="metadata"))
    route, variables = table.match("main", "GET", "/api/v1/vm/test 1")
    assert route.path == "/vm/<vm>" and variables == {"vm": "test 1"}
    assert table.match("main", "GET", "/api/v1/vm/x/status")[1] == {"vm": "x"}
    assert table.match("main", "HEAD", "/api/v1/vm")[0].method == "GET"
    with pytest.raises(ApiError) as info:
        table.match("main", "DELETE", "/api/v1/vm")
    assert info.value.status == 405 and info.value.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    for path in ("/api/v1/vm/", "/api/v1/VM", "/api/v1/vm//state", "/meta"):
        with pytest.raises(ApiError) as info:
            table.match("main", "GET", path)
        assert info.value.status == 404, path
    assert table.match("metadata", "GET", "/meta")[0].listener == "metadata"


def test_duplicate_route_rejected():
    table = RouteTable()
    table.add(Route("GET", "/vm", _handler, plugin="vm"))
    with pytest.raises(ValueError, match="declared twice"):
        table.add(Route("GET", "/vm", _handler, plugin="other"))

"""Parameter parsing (DECISIONS booleans, last-wins, repeated, aliases) and route matching."""

from __future__ import annotations

import pytest

from pvc_core.errors import ApiError
from pvc_core.params import BOOLEAN, INTEGER, STRING, Param, json_to_multidict, merge_sources, parse_params
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

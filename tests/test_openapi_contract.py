"""The OpenAPI document is a contract: complete for every route, and the suite's check of it really bites."""

from __future__ import annotations

import re

import pytest
from contract import Contract
from openapi_spec_validator import validate

from conftest import base_config, deep_merge, write_config
from pvc_core import openapi
from pvc_core.runtime import Runtime
from pvc_core.zkserver import free_port

GOOD_NODE = {"name": "hv1", "daemon_state": "run", "coordinator_state": "primary", "domain_state": "ready",
             "cpu_count": 16, "kernel": "6.1", "os": "GNU/Linux", "arch": "x86_64", "load": 0.5,
             "domains_count": 0, "running_domains": [], "vcpu": {"total": 16, "allocated": 0},
             "memory": {"total": 64000, "allocated": 0, "used": 2000, "free": 62000}}


@pytest.fixture(scope="module")
def every_listener(tmp_path_factory) -> Runtime:
    """A runtime (not started) with every installed plugin and every listener, metadata's and example's too."""
    workdir = tmp_path_factory.mktemp("contract")
    config = deep_merge(base_config("127.0.0.1:1", free_port(), str(workdir / "data")),
                        {"metadata": {"enabled": "True", "listen_address": "127.0.0.1",
                                      "listen_port": str(free_port())},
                         "example": {"listen_port": str(free_port())}})
    return Runtime.from_config(str(write_config(workdir / "pvcapid.yaml", config)))


def test_every_route_declares_a_success_body(every_listener):
    routes = every_listener.routes.routes
    assert {route.plugin for route in routes} >= {"core", "node", "vm", "network", "ceph", "provisioner",
                                                  "metadata", "example", "example_dependent"}
    undeclared = [f"{route.method} {route.full_paths()[0]} ({route.plugin})" for route in routes if not route.returns]
    assert undeclared == []


@pytest.mark.parametrize("listener", ["main", "metadata", "example"])
def test_each_listener_document_validates(every_listener, listener):
    document = openapi.document(every_listener.routes, every_listener.plugins, listener=listener)
    validate(document)
    assert document["paths"]


def test_served_document_declares_every_answer(daemon):
    document = daemon.get("/openapi.json").json()
    validate(document)
    assert set(document["components"]["schemas"]) >= {"Message", "Node", "VM", "Network", "Lease", "ACL", "OSD",
                                                      "Pool", "Volume", "Snapshot", "SystemTemplate", "Profile",
                                                      "Task", "CreationStatus"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            for code, response in responses.items():
                for media, content in response.get("content", {}).items():
                    assert content.get("schema"), f"{where} {code} {media}: empty schema"
            if path == "/api/v1":  # the dispatcher's redirect, no route
                assert list(responses) == ["301"]
                continue
            assert "503" in responses, where
            has_input = bool(operation["parameters"]) or method in ("post", "put", "delete")
            assert ("400" in responses) == has_input, where
            if operation.get("security") != []:
                assert "401" in responses, where
                # scoped tokens: the scope is stated, and a lower one's 403 is declared as a {"message"}
                scope = operation["x-pvc-scope"]
                assert scope in ("read", "write", "admin"), where
                assert f"Requires scope {scope}:" in operation["description"], where
                assert responses["403"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Message"}, where
            else:
                assert "403" not in responses and "x-pvc-scope" not in operation, where
            if "{" in path:
                assert "404" in responses, where
                variables = [p for p in operation["parameters"] if p["in"] == "path"]
                assert variables and all(p["schema"].get("pattern") for p in variables), where
            if method in ("post", "put", "delete"):
                assert "413" in responses, where


def test_special_answers_are_declared(daemon):
    paths = daemon.get("/openapi.json").json()["paths"]
    create = paths["/api/v1/provisioner/create"]["post"]["responses"]
    assert "202" in create and "200" not in create
    assert create["202"]["content"]["application/json"]["schema"]["required"] == ["task_id"]
    for path in ("/api/v1/login", "/api/v1/auth/login", "/api/v1/doc"):
        assert list(paths[path]["get"]["responses"][
            "200"]["content"]) == ["text/html"], path
    assert "302" in paths["/api/v1/login"]["post"]["responses"]
    assert "409" in paths["/api/v1/vm/{vm}/state"]["post"]["responses"]
    assert "409" not in paths["/api/v1/vm/{vm}/state"]["get"]["responses"]
    listing = paths["/api/v1/vm"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing == {"oneOf": [{"$ref": "#/components/schemas/VM"},
                                 {"type": "array", "items": {"$ref": "#/components/schemas/VM"}}]}


def test_parameter_limits_are_documented(every_listener):
    from pvc_core.params import INTEGER, Param
    from pvc_core.routes import Route, RouteTable
    table = RouteTable()
    table.add(Route("POST", "/limits", lambda ctx, params: {}, params=(
        Param("count", INTEGER, minimum=1, maximum=99), Param("name", max_length=32, pattern="[a-z]+"),
        Param("any", INTEGER)), returns={"type": "object"}))
    schemas = {p["name"]: p["schema"] for p in openapi.document(table)["paths"]["/api/v1/limits"]["post"]["parameters"]}
    assert schemas["count"] == {"type": "integer", "minimum": 1, "maximum": 99}
    assert schemas["name"] == {"type": "string", "maxLength": 32, "pattern": "^(?:[a-z]+)$"}
    assert schemas["any"] == {"type": "integer", "format": "int64"}
    for operations in openapi.document(every_listener.routes)["paths"].values():
        for operation in operations.values():
            for parameter in operation["parameters"]:
                if "pattern" in parameter["schema"]:
                    re.compile(parameter["schema"]["pattern"])  # a pattern the document states is a real one


def test_the_check_catches_drift(daemon):
    """A check that cannot fail proves nothing: each kind of drift must be refused."""
    contract = Contract(daemon.get("/openapi.json").json())
    good = ("GET", "/api/v1/node/hv1", 200, "application/json")
    contract.check(*good, repr_json(GOOD_NODE))  # the control: a true answer passes
    contract.check("GET", "/api/v1/node", 200, "application/json", repr_json([GOOD_NODE, GOOD_NODE]))
    drifts = {
        "missing field": (good, {key: value for key, value in GOOD_NODE.items() if key != "memory"}),
        "number as string": (good, {**GOOD_NODE, "cpu_count": "16"}),
        "nested type": (good, {**GOOD_NODE, "vcpu": {"total": 16, "allocated": None}}),
        "list where object": (("GET", "/api/v1/node/hv1", 200, "application/json"), [GOOD_NODE]),
        "undeclared status": (("GET", "/api/v1/node/hv1", 418, "application/json"), {"message": "teapot"}),
        "409 on a read": (("GET", "/api/v1/vm/x/state", 409, "application/json"), {"message": "busy"}),
        "wrong media type": (("GET", "/api/v1/status", 200, "text/html"), {"message": "x"}),
        "error without message": (("GET", "/api/v1/vm/x", 404, "application/json"), {"error": "gone"}),
        "200 on a 202 route": (("POST", "/api/v1/provisioner/create", 200, "application/json"), {"task_id": "1"}),
        "unknown path not 404": (("GET", "/api/v1/nowhere", 200, "application/json"), {"message": "x"}),
        "403 without authentication": (("GET", "/api/v1/health", 403, "application/json"), {"message": "x"}),
        "wrong method not 405": (("PATCH", "/api/v1/status", 400, "application/json"), {"message": "x"}),
    }
    for name, (answer, body) in drifts.items():
        with pytest.raises(AssertionError, match="OpenAPI contract"):
            contract.check(*answer, repr_json(body))
            pytest.fail(f"drift not caught: {name}")


def test_daemon_requests_are_checked(daemon):
    """The suite's request helper applies the check to every answer (here against a doctored document)."""
    document = daemon.get("/openapi.json").json()
    document["paths"]["/api/v1/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "type": "object", "required": ["not-there"]}
    saved = daemon._contract
    daemon._contract = Contract(document)
    try:
        with pytest.raises(AssertionError, match="not-there"):
            daemon.get("/")
        assert daemon.get("/", validate=False).status_code == 200
    finally:
        daemon._contract = saved


def repr_json(value: object) -> bytes:
    import json
    return json.dumps(value).encode()

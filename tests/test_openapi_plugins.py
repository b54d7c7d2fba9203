"""The OpenAPI document, the plugin list and plugin loading rules (the hook contract: test_hookspecs.py)."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from conftest import run_pvcapid, write_config


def test_openapi_document_is_valid_and_complete(daemon):
    document = daemon.get("/openapi.json").json()
    validate(document)
    plugins = daemon.get("/plugins").json()
    listed = {(route.split(" ", 1)[0].lower(), re.sub(r"<([^>]+)>", r"{\1}", route.split(" ", 1)[1]))
              for plugin in plugins for route in plugin["routes"]}
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert listed <= documented
    for core in [("get", "/api/v1/"), ("post", "/api/v1/login"), ("get", "/api/v1/auth/login"),
                 ("post", "/api/v1/status"), ("get", "/api/v1/tasks/{task_id}"), ("get", "/api/v1/doc")]:
        assert core in documented
    hello = document["paths"]["/api/v1/example/hello"]["get"]
    params = {param["name"]: param for param in hello["parameters"]}
    assert set(params) == {"name", "times", "loud", "tag", "color"}
    assert params["times"]["schema"] == {"type": "integer", "format": "int64", "default": 1}
    assert params["color"]["schema"]["enum"] == ["red", "green"]
    assert params["tag"]["schema"]["type"] == "array"
    assert params["name"]["x-aliases"] == ["who"]
    assert "Also accepted as: who" in params["name"]["description"]
    assert document["paths"]["/api/v1/example/greet"]["get"]["description"].startswith(
        "Alias of /api/v1/example/hello. Requires scope read")
    assert document["paths"]["/api/v1/tasks/{task_id}"]["get"]["parameters"][0]["in"] == "path"
    assert document["paths"]["/api/v1/"]["get"]["security"] == []
    assert "security" not in document["paths"]["/api/v1/status"]["get"]


def test_doc_page(daemon):
    page = daemon.get("/doc")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/api/v1/example/hello" in page.text and "openapi.json" in page.text


def test_plugins_endpoint(daemon):
    plugins = {plugin["name"]: plugin for plugin in daemon.get("/plugins").json()}
    example = plugins["example"]
    assert example["version"] == "1.2.3" and example["distribution"] == "pvc-plugin-example"
    assert example["services"] == ["example"] and example["optional"] == ["ceph"]
    assert "GET /api/v1/example/hello" in example["routes"] and "GET /api/v1/example/greet" in example["routes"]
    assert plugins["example_dependent"]["requires"] == ["example"]


def test_dependent_plugin_uses_published_service(daemon):
    assert daemon.get("/example-dependent/shout").json() == {"message": "HELLO"}


def test_plugin_config_section_with_defaults_and_override(daemon_factory):
    custom = daemon_factory({"example": {"greeting": "Howdy"}})
    assert custom.get("/example/hello").json()["message"] == "Howdy, world"


def test_disabled_plugin_is_absent(daemon, daemon_factory, clean_zk):
    installed = [plugin["name"] for plugin in daemon.get("/plugins").json()]
    assert {"example", "network", "node"} <= set(installed)
    without = daemon_factory({"plugins": {"disabled": installed}})
    assert without.get("/example/hello").status_code == 404
    assert without.get("/example-dependent/shout").status_code == 404
    assert without.get("/network").status_code == 404
    assert without.get("/plugins").json() == []
    paths = without.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if "example" in path or "network" in path]
    # a third-party plugin's own status field goes; the v0.6 fields stay, as zeros
    assert without.post("/initialize").status_code == 200
    clean_zk.create("/networks/1", b"net")
    clean_zk.create("/nodes/hv1", b"coordinator")
    status = without.get("/status").json()
    assert "example_counter" not in status and status["vms"] == {"total": 0} and status["networks"] == 0
    assert status["nodes"] == {"total": 0}


def test_enabled_list_selects(daemon_factory):
    only = daemon_factory({"plugins": {"enabled": ["example"]}})
    assert [plugin["name"] for plugin in only.get("/plugins").json()] == ["example"]


def test_missing_hard_dependency_stops_startup(tmp_path, daemon_factory):
    daemon = daemon_factory({"plugins": {"enabled": ["example_dependent"]}}, start=False)
    result = run_pvcapid("--config", str(daemon.config_path))
    assert result.returncode == 1
    assert result.stderr.strip() == ("ERROR: Failed to load plugins: plugin 'example_dependent' requires plugin "
                                     "'example', which is not enabled or not installed")


def test_unsatisfied_plugin_is_left_out_when_not_asked_for(daemon_factory):
    """All installed plugins load by default; one whose hard dependency is disabled is skipped, not fatal."""
    daemon = daemon_factory({"plugins": {"disabled": ["ceph"]}})
    names = [plugin["name"] for plugin in daemon.get("/plugins").json()]
    assert "provisioner" not in names and "ceph" not in names and "vm" in names
    assert "plugin 'provisioner' is not loaded: it requires plugin 'ceph'" in daemon.log()
    assert daemon.get("/provisioner/profile").status_code == 404


def test_plugin_that_fails_to_import_stops_startup(tmp_path, daemon_factory, broken_plugin):
    daemon = daemon_factory(start=False)
    for args in (["--config", str(daemon.config_path)], ["--check-config", "--config", str(daemon.config_path)]):
        result = run_pvcapid(*args)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr
        assert "plugin 'broken' failed to load: ModuleNotFoundError" in lines[0]
    # disabling it is the operator's way out
    write_config(daemon.config_path, {**daemon.config, "plugins": {"disabled": ["broken"]}})
    assert run_pvcapid("--check-config", "--config", str(daemon.config_path)).returncode == 0

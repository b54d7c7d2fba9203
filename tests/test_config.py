"""Configuration: both file forms, defaults, optional keys of disabled features, clear errors."""

from __future__ import annotations

import pytest

from conftest import run_pvcapid, write_config
from pvc_core import config as configmod
from pvc_core.errors import ConfigError

V06_SAMPLE = """---
pvc:
    debug: True
    coordinators:
      - pvchv1
      - pvchv2:2281
      - pvchv3
    api:
        listen_address: "127.0.0.1"
        listen_port: "7370"
        authentication:
            enabled: False
            secret_key: ""
            tokens:
                - description: "testing"
                  token: ""
        ssl:
            enabled: False
            cert_file: ""
            key_file: ""
    provisioner:
        database:
            host: localhost
            port: 5432
            name: pvcprov
            user: pvcprov
            pass: pvcprov
        queue:
            host: localhost
            port: 6379
            path: /0
        ceph_cluster:
            storage_hosts:
              - pvchv1
            storage_domain: "pvc.storage"
            ceph_monitor_port: 6789
            ceph_storage_secret_uuid: ""
"""

SEED_B_MINIMAL = """pvc:
  debug: False
  coordinators: [pvc-hv1, pvc-hv2, pvc-hv3]
  api:
    listen_address: 0.0.0.0
    listen_port: 7370
    authentication:
      enabled: True
      secret_key: "aSuperLong&SecurePasswordString"
      tokens:
        - description: admin
          token: 5f4c1c2e-4a1b-4bd7-9fd3-0b5bcf1d0a11
    ssl:
      enabled: False
"""


def load(tmp_path, text: str, name: str = "pvcapid.yaml") -> configmod.Config:
    path = tmp_path / name
    path.write_text(text)
    return configmod.build(configmod.core_schema(), configmod.read_raw(str(path)), str(path))


def test_v06_sample_pvc_api_yaml(tmp_path):
    config = load(tmp_path, V06_SAMPLE, "pvc-api.yaml")
    assert config["debug"] is True
    assert config["api.listen_port"] == 7370
    assert config["api.authentication.enabled"] is False
    assert config["provisioner.database.port"] == 5432
    assert config["provisioner.queue.path"] == "/0"
    assert configmod.coordinator_hosts(config["coordinators"]) == "pvchv1:2181,pvchv2:2281,pvchv3:2181"
    # keys this daemon does not own are kept for the plugin that does
    assert config["provisioner.ceph_cluster"]["storage_domain"] == "pvc.storage"
    # our own keys get their defaults
    assert config["api.threads"] == 16
    assert config["api.authentication.session_lifetime"] == 43200


def test_seed_form_without_optional_sections(tmp_path):
    config = load(tmp_path, SEED_B_MINIMAL)
    assert config["api.authentication.tokens"][0]["token"].startswith("5f4c")
    assert config.get("provisioner.database") is None
    assert config["api.ssl.cert_file"] == ""


@pytest.mark.parametrize("text, expected", [
    (V06_SAMPLE.replace('listen_port: "7370"', 'listen_port: "seventy"'),
     "pvc.api.listen_port: expected an integer, got 'seventy'"),
    (V06_SAMPLE.replace("debug: True", "debug: maybe"), "pvc.debug: expected a boolean"),
    (V06_SAMPLE.replace('        listen_address: "127.0.0.1"\n', ""),
     "pvc.api.listen_address: required key is missing"),
    (V06_SAMPLE.replace("port: 5432", "port: 99999"), "pvc.provisioner.database.port: expected a port number"),
    (V06_SAMPLE.replace("enabled: False\n            secret_key", "enabled: True\n            secret_key"),
     "pvc.api.authentication.secret_key: expected a non-empty string"),
    (SEED_B_MINIMAL.replace("token: 5f4c1c2e-4a1b-4bd7-9fd3-0b5bcf1d0a11", 'token: ""'),
     "pvc.api.authentication.tokens: expected at least one non-empty token"),
    (SEED_B_MINIMAL.replace("        - description: admin\n", "        - description: admin\n          x: 1\n")
     .replace("          token: 5f4c", "          tokn: 5f4c"), "pvc.api.authentication.tokens[0].token: required"),
    (SEED_B_MINIMAL.replace("ssl:\n      enabled: False", "ssl:\n      enabled: True"),
     "pvc.api.ssl.cert_file: required when pvc.api.ssl.enabled is true"),
    (SEED_B_MINIMAL.replace("coordinators: [pvc-hv1, pvc-hv2, pvc-hv3]", "coordinators: [a:b]"),
     "pvc.coordinators: expected host:port entries with a numeric port"),
    ("pvc: [1, 2]", "expected a mapping with a top-level 'pvc' section"),
])
def test_invalid_values_name_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert expected in str(info.value)


def test_unparsable_yaml(tmp_path):
    with pytest.raises(ConfigError, match="Failed to parse configuration file"):
        load(tmp_path, "pvc: {debug: [unclosed\n")


def test_default_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("PVC_CONFIG_FILE", str(tmp_path / "x.yaml"))
    assert configmod.find_config_path() == str(tmp_path / "x.yaml")
    assert configmod.find_config_path("/explicit.yaml") == "/explicit.yaml"
    monkeypatch.delenv("PVC_CONFIG_FILE")
    monkeypatch.setattr(configmod, "DEFAULT_PATHS", (str(tmp_path / "pvcapid.yaml"), str(tmp_path / "pvc-api.yaml")))
    with pytest.raises(ConfigError, match="PVC_CONFIG_FILE"):
        configmod.find_config_path()
    (tmp_path / "pvc-api.yaml").write_text("x")
    assert configmod.find_config_path().endswith("pvc-api.yaml")
    (tmp_path / "pvcapid.yaml").write_text("x")
    assert configmod.find_config_path().endswith("pvcapid.yaml")


# -- the command line ------------------------------------------------------------------------

def _valid(tmp_path, zk_address: str = "127.0.0.1:2181") -> dict:
    return {"debug": "False", "data_dir": str(tmp_path / "data"), "coordinators": [zk_address],
            "api": {"listen_address": "127.0.0.1", "listen_port": "7399",
                    "authentication": {"enabled": "False"}, "ssl": {"enabled": "False"}}}


def _assert_one_error_line(result, *fragments: str):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ERROR: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


def test_check_config_valid(tmp_path):
    path = write_config(tmp_path / "c.yaml", _valid(tmp_path))
    result = run_pvcapid("--check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout and "example" in result.stdout


def test_check_config_from_environment(tmp_path):
    path = write_config(tmp_path / "c.yaml", _valid(tmp_path))
    result = run_pvcapid("--check-config", env={"PVC_CONFIG_FILE": str(path)})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", ["--check-config", "start"])
def test_missing_key_one_line(tmp_path, mode):
    config = _valid(tmp_path)
    del config["api"]["listen_port"]
    path = write_config(tmp_path / "c.yaml", config)
    args = ["--config", str(path)] + (["--check-config"] if mode == "--check-config" else [])
    _assert_one_error_line(run_pvcapid(*args), "pvc.api.listen_port", "required")


@pytest.mark.parametrize("mode", ["--check-config", "start"])
def test_wrong_type_one_line(tmp_path, mode):
    config = _valid(tmp_path)
    config["api"]["threads"] = "many"
    path = write_config(tmp_path / "c.yaml", config)
    args = ["--config", str(path)] + (["--check-config"] if mode == "--check-config" else [])
    _assert_one_error_line(run_pvcapid(*args), "pvc.api.threads", "expected an integer", "'many'")


@pytest.mark.parametrize("mode", ["--check-config", "start"])
def test_unknown_plugin_one_line(tmp_path, mode):
    config = _valid(tmp_path)
    config["plugins"] = {"enabled": ["example", "nosuchplugin"]}
    path = write_config(tmp_path / "c.yaml", config)
    args = ["--config", str(path)] + (["--check-config"] if mode == "--check-config" else [])
    _assert_one_error_line(run_pvcapid(*args), "'nosuchplugin' is not installed")


def test_missing_config_file(tmp_path):
    _assert_one_error_line(run_pvcapid("--config", str(tmp_path / "absent.yaml")), "cannot read")


def test_plugin_config_fields_validated(tmp_path):
    config = _valid(tmp_path)
    config["example"] = {"greeting": {"nested": "map"}}
    path = write_config(tmp_path / "c.yaml", config)
    _assert_one_error_line(run_pvcapid("--check-config", "--config", str(path)),
                           "pvc.example.greeting: expected a string")


def test_version():
    result = run_pvcapid("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pvcapid ")

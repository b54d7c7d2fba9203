"""Scoped tokens (issue 15): read < write < admin, over the whole route table, sessions, the access log,
token_sha256, the configuration's refusals and SIGHUP."""

from __future__ import annotations

import hashlib
import re

import pytest
import requests
from test_reload import reload_with

from conftest import (
    AUTH_ON,
    REQUEST_TIMEOUT,
    TOKEN,
    base_config,
    deep_merge,
    http_session,
    run_pvcapid,
    wait_until,
    write_config,
)
from pvc_core.zkserver import free_port

READ_TOKEN = "read-" + TOKEN
WRITE_TOKEN = "write-" + TOKEN
ADMIN_TOKEN = "admin-" + TOKEN
V06_TOKEN = TOKEN  # no scope: admin, as every token was in v0.6
HASHED_TOKEN = "hashed-" + TOKEN  # configured only as its SHA-256
ALL_TOKENS = (READ_TOKEN, WRITE_TOKEN, ADMIN_TOKEN, V06_TOKEN, HASHED_TOKEN)


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


SCOPED = deep_merge(AUTH_ON, {"api": {"authentication": {"tokens": [
    {"description": "empty", "token": ""},
    {"description": "reader", "token": READ_TOKEN, "scope": "read"},
    {"description": "writer", "token": WRITE_TOKEN, "scope": "write"},
    {"description": "the admins", "token": ADMIN_TOKEN, "scope": "admin"},
    {"description": "v0.6", "token": V06_TOKEN},
    {"description": "hashed reader", "token_sha256": sha256(HASHED_TOKEN), "scope": "read"},
]}}})

# Every operation of the main listener that declares admin, with its aliases: the cluster's foundations
# (creation, maintenance mode, coordinator roles, Ceph flags, OSDs and pools), the scripts the provisioning
# worker runs as root, the simulator's node crashes, the audit log (who did what with which token), the
# cluster's backup and restore (the whole tree), and a VM snapshot's export and import (files on the API host).
# Everything else is derived from the method.
ADMIN_OPERATIONS = {
    ("POST", "/api/v1/initialize"),
    ("POST", "/api/v1/status"),
    ("POST", "/api/v1/node/{node}/coordinator-state"),
    ("POST", "/api/v1/storage/ceph/option"),
    ("POST", "/api/v1/storage/ceph/cluster-option"),
    ("POST", "/api/v1/storage/ceph/osd"),
    ("DELETE", "/api/v1/storage/ceph/osd/{osdid}"),
    ("POST", "/api/v1/storage/ceph/osd/{osdid}/state"),
    ("POST", "/api/v1/storage/ceph/pool"),
    ("POST", "/api/v1/storage/ceph/pool/{pool}"),
    ("DELETE", "/api/v1/storage/ceph/pool/{pool}"),
    ("POST", "/api/v1/provisioner/script"),
    ("POST", "/api/v1/provisioner/script/{script}"),
    ("PUT", "/api/v1/provisioner/script/{script}"),
    ("DELETE", "/api/v1/provisioner/script/{script}"),
    ("POST", "/api/v1/simnode/{node}"),
    ("POST", "/api/v1/restore"),
    ("GET", "/api/v1/backup"),
    ("GET", "/api/v1/audit"),
    ("POST", "/api/v1/vm/{vm}/snapshot/export"),
    ("POST", "/api/v1/vm/{vm}/snapshot/import"),
}


def every_plugin() -> dict:
    """Every plugin that can load here: the default ones, the example plugin (installed for the run),
    simnode (included, with no nodes: the walk initializes the cluster) and metadata on loopback."""
    return deep_merge(SCOPED, {"plugins": {"include": ["simnode"]}, "simnode": {"nodes": "0"},
                               "metadata": {"enabled": "True", "listen_address": "127.0.0.1",
                                            "listen_port": str(free_port())},
                               "ceph": {"timeout": "1"}})


def operations(daemon) -> list[tuple[str, str, str]]:
    """(method, path template, x-pvc-scope) of every authenticated operation of the daemon's document."""
    document = daemon.get("/openapi.json", headers={"X-Api-Key": READ_TOKEN}).json()
    out = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if operation.get("security") == []:
                assert "x-pvc-scope" not in operation, (method, path)
                continue
            out.append((method.upper(), path, operation["x-pvc-scope"]))
    return out


def ask(daemon, method: str, template: str, token: str) -> requests.Response:
    """One request to a concrete path of ``template`` (dummy names), checked against the document."""
    path = re.sub(r"\{[^}]+\}", "walk-test", template).removeprefix("/api/v1")
    return daemon.request(method, path, headers={"X-Api-Key": token}, allow_redirects=False)


def test_every_route_refuses_a_scope_below_its_own(daemon_factory, clean_zk):
    """The whole route table of a daemon with every plugin, by five tokens: a read token (clear or given as
    its SHA-256) is refused exactly the write and admin operations, a write token exactly the admin ones,
    an admin and a scope-less (v0.6) token nothing. Refused requests never reach the handler, so the read
    and write walks go first and change nothing they may not.

    The scopes themselves are held to the rule first: GET reads, other methods write, and admin is
    exactly ``ADMIN_OPERATIONS``."""
    daemon = daemon_factory(every_plugin())
    found = operations(daemon)
    assert len(found) > 100
    plugins = {plugin["name"] for plugin in daemon.get("/plugins", headers={"X-Api-Key": READ_TOKEN}).json()}
    assert plugins >= {"node", "vm", "network", "ceph", "provisioner", "metadata", "simnode", "example"}
    for method, path, scope in found:
        expected = "admin" if (method, path) in ADMIN_OPERATIONS else "read" if method == "GET" else "write"
        assert scope == expected, (method, path)
    assert ADMIN_OPERATIONS <= {(method, path) for method, path, _ in found}
    refused: dict[str, int] = {}
    for token, scope in ((READ_TOKEN, "read"), (HASHED_TOKEN, "read"), (WRITE_TOKEN, "write"),
                         (ADMIN_TOKEN, "admin"), (V06_TOKEN, "admin")):
        refused[token] = 0
        for method, template, required in found:
            response = ask(daemon, method, template, token)
            assert response.status_code != 401, (scope, method, template, response.text)
            below = ("read", "write", "admin").index(scope) < ("read", "write", "admin").index(required)
            if below:
                assert response.status_code == 403, (scope, method, template, response.status_code, response.text)
                message = response.json()["message"]
                assert f"'{scope}'" in message and f"'{required}'" in message, message
                assert token not in message
                refused[token] += 1
            else:
                assert response.status_code != 403, (scope, method, template, response.text)
    writes = sum(required != "read" for _, _, required in found)
    admins = sum(required == "admin" for _, _, required in found)
    assert refused == {READ_TOKEN: writes, HASHED_TOKEN: writes, WRITE_TOKEN: admins, ADMIN_TOKEN: 0, V06_TOKEN: 0}
    # HEAD is a read, OPTIONS needs no credential at all
    assert requests.head(daemon.url("/status"), headers={"X-Api-Key": READ_TOKEN},
                         timeout=REQUEST_TIMEOUT).status_code == 200
    assert requests.options(daemon.url("/initialize"), timeout=REQUEST_TIMEOUT).status_code == 200
    log = daemon.log()
    daemon.stop()
    assert not any(token in log for token in ALL_TOKENS)


@pytest.fixture(scope="module")
def scoped(daemon_factory):
    return daemon_factory(SCOPED)


def test_a_token_given_as_its_sha256(scoped):
    """The file holds only the digest; the token itself works, the digest given as a key does not."""
    assert HASHED_TOKEN not in scoped.config_path.read_text()
    assert scoped.get("/status", headers={"X-Api-Key": HASHED_TOKEN}).status_code == 200
    assert scoped.get("/status", headers={"X-Api-Key": sha256(HASHED_TOKEN)}).status_code == 401
    refused = scoped.post("/status", data={"state": "true"}, headers={"X-Api-Key": HASHED_TOKEN})
    assert refused.status_code == 403
    assert refused.json() == {"message": "Insufficient scope: this token's scope is 'read', POST /api/v1/status "
                                         "requires scope 'admin'"}
    session = http_session()
    assert session.post(scoped.url("/login"), data={"token": HASHED_TOKEN},
                        timeout=REQUEST_TIMEOUT).status_code == 200
    assert session.get(scoped.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 200


@pytest.mark.parametrize("token, scope, allowed, refused", [
    (READ_TOKEN, "read", ("GET", "/status"), ("POST", "/network")),
    (WRITE_TOKEN, "write", ("POST", "/network"), ("POST", "/initialize")),
    (ADMIN_TOKEN, "admin", ("POST", "/initialize"), None),
], ids=["read", "write", "admin"])  # not the tokens: they are random, and pytest-xdist workers must agree
def test_a_session_holds_its_tokens_scope(scoped, token, scope, allowed, refused):
    session = http_session()
    login = session.post(scoped.url("/login"), data={"token": token}, timeout=REQUEST_TIMEOUT)
    assert login.status_code == 200
    answer = session.request(allowed[0], scoped.url(allowed[1]), timeout=REQUEST_TIMEOUT)
    assert answer.status_code not in (401, 403), answer.text
    if refused is not None:
        answer = session.request(refused[0], scoped.url(refused[1]), timeout=REQUEST_TIMEOUT)
        assert answer.status_code == 403
        assert answer.json()["message"].startswith(f"Insufficient scope: this session's scope is '{scope}'")
    # a key of a higher scope beside the cookie is that key's request
    assert requests.post(scoped.url("/initialize"), cookies={"session": session.cookies["session"]},
                         headers={"X-Api-Key": ADMIN_TOKEN}, timeout=REQUEST_TIMEOUT).status_code != 403


def access_line(daemon, response: requests.Response) -> str:
    request_id = response.headers["X-Request-Id"]
    return wait_until(lambda: next((line for line in daemon.log().splitlines()
                                    if request_id in line and " pvc.access: " in line), None),
                      message="the request was not logged")


def test_the_access_log_names_the_token(scoped):
    line = access_line(scoped, scoped.get("/status", headers={"X-Api-Key": ADMIN_TOKEN}))
    assert re.search(r'"GET /api/v1/status" 200 [0-9.]+ms the admins$', line), line
    refused = scoped.post("/status", headers={"X-Api-Key": READ_TOKEN})
    assert access_line(scoped, refused).endswith("ms reader") and " 403 " in access_line(scoped, refused)
    session = http_session()
    session.post(scoped.url("/login"), data={"token": WRITE_TOKEN}, timeout=REQUEST_TIMEOUT)
    assert access_line(scoped, session.get(scoped.url("/status"), timeout=REQUEST_TIMEOUT)).endswith(
        "ms session:writer")
    assert access_line(scoped, scoped.get("/")).endswith("ms -")  # no credential needed
    assert access_line(scoped, scoped.get("/status", headers={"X-Api-Key": "wrong"})).endswith("ms -")
    assert not any(token in scoped.log() for token in ALL_TOKENS)


def test_with_authentication_off_everything_is_allowed(daemon):
    assert daemon.post("/status", data={"state": "false"}).status_code == 200
    assert access_line(daemon, daemon.get("/status")).endswith("ms -")


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("ERROR: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("entry, expected", [
    ({"description": "both", "token": "clear-secret", "token_sha256": sha256("clear-secret")},
     "pvc.api.authentication.tokens[1]: expected exactly one of token and token_sha256, got both"),
    ({"description": "neither", "scope": "read"}, "pvc.api.authentication.tokens[1].token: required key is missing"),
    ({"description": "bad scope", "token": "clear-secret", "scope": "root"},
     "pvc.api.authentication.tokens[1].scope: expected read, write or admin, got 'root'"),
    ({"description": "short", "token_sha256": "clear-secret"},
     "pvc.api.authentication.tokens[1].token_sha256: expected a SHA-256 digest in hex"),
    ({"description": "empty", "token_sha256": sha256("")},
     "pvc.api.authentication.tokens[1].token_sha256: expected the digest of a non-empty token"),
    ({"description": "twice", "token_sha256": sha256(ADMIN_TOKEN), "scope": "read"},
     "pvc.api.authentication.tokens[1]: the same token as tokens[0] with another scope ('read', there 'admin')"),
])
@pytest.mark.parametrize("mode", ["--check-config", "start"])
def test_a_wrong_token_entry_is_refused_in_one_line(tmp_path, entry, expected, mode):
    config = deep_merge(base_config("127.0.0.1:1", free_port(), str(tmp_path / "data")), SCOPED)
    config["api"]["authentication"]["tokens"] = [{"description": "first", "token": ADMIN_TOKEN}, entry]
    path = write_config(tmp_path / "c.yaml", config)
    result = run_pvcapid("--config", str(path), *(["--check-config"] if mode == "--check-config" else []))
    line = _one_error_line(result)
    assert expected in line
    assert "clear-secret" not in result.stderr + result.stdout and ADMIN_TOKEN not in result.stderr


def test_a_v06_configuration_is_all_admin(tmp_path):
    """No scope anywhere, as every v0.6 file: valid, and each token is admin."""
    from pvc_core import config as configmod
    config = configmod.build(configmod.core_schema(), deep_merge(AUTH_ON, {
        "debug": "False", "coordinators": ["h"], "api": {"listen_address": "0.0.0.0", "listen_port": "7370",
                                                          "ssl": {"enabled": "False"}}}))
    assert [entry["scope"] for entry in config["api.authentication.tokens"]] == ["admin", "admin"]


def test_the_readme_example_is_valid():
    """The README's example of scoped tokens loads, and its digest is that of the token its comment names."""
    import yaml

    from conftest import ROOT
    from pvc_core import config as configmod
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Tokens and scopes", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    raw = yaml.load(example, Loader=yaml.BaseLoader)["pvc"]
    raw = deep_merge(raw, {"debug": "False", "coordinators": ["h"], "api": {
        "listen_address": "127.0.0.1", "listen_port": "7370", "ssl": {"enabled": "False"}}})
    tokens = configmod.build(configmod.core_schema(), raw)["api.authentication.tokens"]
    assert [entry["scope"] for entry in tokens] == ["read", "write", "admin"]
    named = re.search(r"printf %s '([^']+)' \| sha256sum", example).group(1)
    assert tokens[0]["token_sha256"] == sha256(named)


def test_sighup_applies_new_scopes(daemon_factory):
    """A reload changes a token's scope for its next request; its sessions follow a lowering at once (a
    session is worth at most its token's scope now), but never rise above the scope they were made with;
    a token taken out of the file ends its sessions."""
    daemon = daemon_factory(SCOPED)
    made_as_read = http_session()
    assert made_as_read.post(daemon.url("/login"), data={"token": READ_TOKEN}, timeout=REQUEST_TIMEOUT).ok
    made_as_admin = http_session()
    assert made_as_admin.post(daemon.url("/login"), data={"token": ADMIN_TOKEN}, timeout=REQUEST_TIMEOUT).ok
    assert daemon.post("/status", headers={"X-Api-Key": READ_TOKEN}).status_code == 403

    def scopes(read: str, admin: str | None) -> object:
        def change(pvc: dict) -> None:
            tokens = pvc["api"]["authentication"]["tokens"]
            for entry in tokens:
                if entry.get("token") == READ_TOKEN:
                    entry["scope"] = read
            if admin is None:
                tokens[:] = [entry for entry in tokens if entry.get("token") != ADMIN_TOKEN]
            else:
                next(entry for entry in tokens if entry.get("token") == ADMIN_TOKEN)["scope"] = admin
        return change

    reload_with(daemon, scopes("admin", "read"))
    # the read token is admin now: POST /status gets past the scope check to its parameters
    assert daemon.post("/status", headers={"X-Api-Key": READ_TOKEN}).status_code == 400
    assert daemon.post("/status", headers={"X-Api-Key": ADMIN_TOKEN}).status_code == 403
    assert made_as_read.post(daemon.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 403  # made as read
    assert made_as_admin.post(daemon.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 403  # token is read now
    assert made_as_admin.get(daemon.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 200

    reload_with(daemon, scopes("read", None))
    assert daemon.post("/status", headers={"X-Api-Key": READ_TOKEN}).status_code == 403
    assert daemon.get("/status", headers={"X-Api-Key": ADMIN_TOKEN}).status_code == 401
    assert made_as_admin.get(daemon.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 401
    assert made_as_read.get(daemon.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 200
    assert daemon.log().count("reloaded ") == 2 and "refused" not in daemon.log()
    daemon.stop()

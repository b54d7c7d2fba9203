"""SIGHUP (pvc_core/reload.py): tokens, the TLS certificate and key, the log level and the request
limits change without a restart and without dropping open connections; a configuration that does
not validate changes nothing and says why in one line."""

from __future__ import annotations

import http.client
import json
import signal
import ssl

import yaml
from test_server import make_certificate

from conftest import AUTH_ON, TOKEN, deep_merge, wait_until

NEW_TOKEN = "a-new-token-after-reload"


def context_for(cert: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False
    return context


def ask(connection: http.client.HTTPSConnection, path: str, token: str) -> tuple[int, bytes]:
    connection.request("GET", f"/api/v1{path}", headers={"X-Api-Key": token})
    response = connection.getresponse()
    return response.status, response.read()


def reload_with(daemon, change) -> None:
    """Rewrite the daemon's file with ``change`` applied, send SIGHUP, wait for the reload's line."""
    before = daemon.log().count("reload of") + daemon.log().count("reloaded ")
    document = yaml.safe_load(daemon.config_path.read_text())
    change(document["pvc"])
    daemon.config_path.write_text(yaml.safe_dump(document))
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: daemon.log().count("reload of") + daemon.log().count("reloaded ") > before,
               message="the daemon to log the reload")


def test_sighup_reloads_tokens_certificate_and_log_level_keeping_connections(daemon_factory, tmp_path):
    (tmp_path / "first").mkdir()
    cert, key = make_certificate(tmp_path / "first")
    daemon = daemon_factory(deep_merge(AUTH_ON, {"api": {"ssl": {"enabled": "True", "cert_file": cert,
                                                                 "key_file": key}}}), scheme="https",
                            verify=cert)
    first_der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    kept = http.client.HTTPSConnection("127.0.0.1", daemon.port, context=context_for(cert), timeout=30)
    assert ask(kept, "/status", TOKEN)[0] == 200
    socket_before = kept.sock

    # renew the certificate in place, replace the token, turn debug on
    (tmp_path / "second").mkdir()
    new_cert, new_key = make_certificate(tmp_path / "second")
    open(cert, "w").write(open(new_cert).read())
    open(key, "w").write(open(new_key).read())

    def change(pvc: dict) -> None:
        pvc["debug"] = "True"
        pvc["api"]["authentication"]["tokens"] = [{"description": "new", "token": NEW_TOKEN}]
    reload_with(daemon, change)
    assert "reloaded " in daemon.log()

    # the open connection carries on, under the new tokens
    assert ask(kept, "/status", NEW_TOKEN)[0] == 200 and kept.sock is socket_before
    assert ask(kept, "/status", TOKEN)[0] == 401
    status, body = ask(kept, "/", NEW_TOKEN)
    assert status == 200 and body == b'{\n    "message": "PVC API version 1.0"\n}\n'  # debug: indented
    kept.close()
    # a new connection is served with the renewed certificate
    served = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", daemon.port)))
    assert served == ssl.PEM_cert_to_DER_cert(open(cert).read()) and served != first_der

    # a configuration that does not validate changes nothing, and says why in one line
    def broken(pvc: dict) -> None:
        pvc["api"]["authentication"]["tokens"] = [{"description": "newer", "token": "not-applied"}]
        pvc["api"]["threads"] = "-3"
    reload_with(daemon, broken)
    [line] = [line for line in daemon.log().splitlines() if "ERROR: reload of" in line]
    assert "pvc.api.threads" in line and "the configuration in force is kept" in line
    fresh = http.client.HTTPSConnection("127.0.0.1", daemon.port, context=context_for(cert), timeout=30)
    assert ask(fresh, "/status", NEW_TOKEN)[0] == 200 and ask(fresh, "/status", "not-applied")[0] == 401

    # a certificate and key that do not belong together are refused the same way
    (tmp_path / "third").mkdir()
    _, other_key = make_certificate(tmp_path / "third")

    def mismatched(pvc: dict) -> None:
        pvc["api"]["threads"] = "16"
        pvc["api"]["ssl"]["key_file"] = other_key
    reload_with(daemon, mismatched)
    assert sum("ERROR: reload of" in line for line in daemon.log().splitlines()) == 2
    assert "do not load together" in daemon.log().splitlines()[-1] or "do not load together" in daemon.log()
    assert ask(fresh, "/status", NEW_TOKEN)[0] == 200
    fresh.close()


def test_a_change_that_needs_a_restart_is_named(daemon_factory):
    daemon = daemon_factory()

    def change(pvc: dict) -> None:
        pvc["api"]["threads"] = "7"
        pvc["api"]["header_timeout"] = "3"
    reload_with(daemon, change)
    warning = [line for line in daemon.log().splitlines() if "take effect at the next restart" in line]
    assert len(warning) == 1 and "api.threads" in warning[0] and "header_timeout" not in warning[0]
    assert json.loads(daemon.get("/").content) == {"message": "PVC API version 1.0"}

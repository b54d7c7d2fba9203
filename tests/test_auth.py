"""Authentication over the whole route table: tokens, sessions, login/logout, disabled mode."""

from __future__ import annotations

import math
import re
import time

import pytest
import requests

from conftest import AUTH_ON, REQUEST_TIMEOUT, SLOWDOWN, TOKEN, deep_merge, http_session, settle_timeout, wait_until

OPEN_ROUTES = {"/api/v1", "/api/v1/", "/api/v1/login", "/api/v1/logout", "/api/v1/auth/login",
               "/api/v1/auth/logout", "/api/v1/health"}


def route_table(daemon) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the daemon, from its own OpenAPI document."""
    document = daemon.get("/openapi.json", headers={"X-Api-Key": TOKEN}).json()
    routes = []
    for path, operations in document["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "walk-test", path)
        for method in operations:
            routes.append((method.upper(), concrete))
    return routes


@pytest.mark.parametrize("credential", ["none", "empty", "wrong", "prefix", "longer"])
def test_every_protected_route_rejects(auth_daemon, credential):
    headers = {"none": {}, "empty": {"X-Api-Key": ""}, "wrong": {"X-Api-Key": "not-the-token"},
               "prefix": {"X-Api-Key": TOKEN[:-1]}, "longer": {"X-Api-Key": TOKEN + "x"}}[credential]
    checked = 0
    for method, path in route_table(auth_daemon):
        if path in OPEN_ROUTES:
            continue
        response = requests.request(method, auth_daemon.base + path, headers=headers, timeout=REQUEST_TIMEOUT,
                                    allow_redirects=False)
        assert response.status_code == 401, (method, path, response.text)
        expected = "Authentication required" if credential == "none" else "Authentication failed"
        assert response.json() == {"message": expected}, (method, path)
        checked += 1
    assert checked >= 10


def test_auth_is_checked_before_parameters(auth_daemon):
    response = requests.post(auth_daemon.url("/status"), params={"state": "bogus"}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 401


def test_every_protected_route_accepts_key_and_session(auth_daemon):
    session = http_session()
    login = session.post(auth_daemon.url("/login"), data={"token": TOKEN}, timeout=REQUEST_TIMEOUT)
    assert login.status_code == 200 and login.json() == {"message": "Authentication successful"}
    for method, path in route_table(auth_daemon):
        if path in OPEN_ROUTES or path.endswith("/initialize"):
            continue
        for client, headers in ((requests, {"X-Api-Key": TOKEN}), (session, {})):
            response = client.request(method, auth_daemon.base + path, headers=headers, timeout=REQUEST_TIMEOUT,
                                      allow_redirects=False)
            assert response.status_code != 401, (method, path, response.text)
            assert response.headers["Content-Type"].startswith(("application/json", "text/html")), path


def test_open_routes_need_no_credential(auth_daemon):
    assert requests.get(auth_daemon.url("/"), timeout=REQUEST_TIMEOUT).status_code == 200
    form = requests.get(auth_daemon.url("/login"), timeout=REQUEST_TIMEOUT)
    assert form.status_code == 200 and form.headers["Content-Type"].startswith("text/html")
    assert '<form method="post"' in form.text and 'name="token"' in form.text
    assert requests.get(auth_daemon.url("/auth/login"), timeout=REQUEST_TIMEOUT).status_code == 200


@pytest.mark.parametrize("path", ["/login", "/auth/login"])
def test_login_logout_session(auth_daemon, path):
    session = http_session()
    wrong = session.post(auth_daemon.url(path), data={"token": "nope"}, timeout=REQUEST_TIMEOUT)
    assert wrong.status_code == 401 and wrong.json() == {"message": "Authentication failed"}
    empty = session.post(auth_daemon.url(path), data={"token": ""}, timeout=REQUEST_TIMEOUT)
    assert empty.status_code == 401  # the configured empty token never matches
    missing = session.post(auth_daemon.url(path), timeout=REQUEST_TIMEOUT)
    assert missing.status_code == 400 and "'token'" in missing.json()["message"]

    ok = session.post(auth_daemon.url(path), params={"token": TOKEN}, timeout=REQUEST_TIMEOUT)
    assert ok.status_code == 200
    cookie = ok.headers["Set-Cookie"]
    assert cookie.startswith("session=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Max-Age=43200" in cookie and "Secure" not in cookie
    assert session.get(auth_daemon.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 200
    stolen = session.cookies.get("session")

    logout_path = path.replace("login", "logout")
    out = session.post(auth_daemon.url(logout_path), timeout=REQUEST_TIMEOUT)
    assert out.status_code == 200 and out.json() == {"message": "Deauthentication successful"}
    assert session.get(auth_daemon.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 401
    # a copy of the cookie taken before logout no longer works either
    replay = requests.get(auth_daemon.url("/status"), cookies={"session": stolen}, timeout=REQUEST_TIMEOUT)
    assert replay.status_code == 401


def test_forged_and_garbage_cookies(auth_daemon):
    for value in ("garbage", "a.b", "eyJzaWQiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.forged", ""):
        response = requests.get(auth_daemon.url("/status"), cookies={"session": value}, timeout=REQUEST_TIMEOUT)
        assert response.status_code == 401, value


def test_session_expires(daemon_factory):
    lifetime = math.ceil(SLOWDOWN * 3)  # the first request must come within it, even on a loaded machine
    short = daemon_factory(deep_merge(AUTH_ON, {"api": {"authentication": {"session_lifetime": str(lifetime)}}}))
    session = http_session()
    before = time.monotonic()
    assert session.post(short.url("/login"), data={"token": TOKEN}, timeout=REQUEST_TIMEOUT).status_code == 200
    # sent by hand: the client's cookie jar drops it by itself at Max-Age (rounded down), the server is on test
    cookie = {"session": session.cookies["session"]}

    def status() -> int:
        return requests.get(short.url("/status"), cookies=cookie, timeout=REQUEST_TIMEOUT).status_code

    assert status() == 200
    assert time.monotonic() - before < lifetime, "too slow to tell a live session from an expired one"
    wait_until(lambda: status() == 401, timeout=lifetime + settle_timeout(short.config), interval=0.2,
               message="the session did not expire")
    assert time.monotonic() - before >= lifetime  # not before its lifetime was over


def test_sessions_survive_restart_with_same_key(daemon_factory):
    first = daemon_factory(AUTH_ON)
    session = http_session()
    assert session.post(first.url("/login"), data={"token": TOKEN}, timeout=REQUEST_TIMEOUT).status_code == 200
    first.stop()
    first.start()
    assert session.get(first.url("/status"), timeout=REQUEST_TIMEOUT).status_code == 200


@pytest.mark.parametrize("path", ["/login", "/logout", "/auth/login", "/auth/logout"])
def test_disabled_auth_redirects(daemon, path):
    response = daemon.post(path, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == "/api/v1/"


def test_disabled_auth_ignores_key(daemon):
    assert daemon.get("/status", headers={"X-Api-Key": "N/A"}).status_code == 200


def test_logout_on_one_daemon_ends_the_session_on_every_daemon(auth_daemon, daemon_factory, clean_zk):
    """Three daemons of one cluster with the same secret key accept one session cookie; a logout on
    any of them is recorded in ZooKeeper, and every daemon refuses the cookie from then on, a daemon
    started afterwards included. An API key keeps working meanwhile."""
    from pvc_core import schema
    others = [daemon_factory(AUTH_ON) for _ in range(2)]
    login = requests.post(auth_daemon.url("/login"), data={"token": TOKEN}, timeout=REQUEST_TIMEOUT)
    cookie = {"session": login.cookies["session"]}
    for daemon in (auth_daemon, *others):
        assert requests.get(daemon.url("/status"), cookies=cookie, timeout=REQUEST_TIMEOUT).status_code == 200
    out = requests.post(others[0].url("/logout"), cookies=cookie, timeout=REQUEST_TIMEOUT)
    assert out.status_code == 200
    [revoked] = clean_zk.get_children(schema.REVOKED_SESSIONS)
    # the writer refuses at once; the others as soon as the watch reaches them
    assert requests.get(others[0].url("/status"), cookies=cookie, timeout=REQUEST_TIMEOUT).status_code == 401
    for daemon in (auth_daemon, others[1]):
        wait_until(lambda daemon=daemon: requests.get(daemon.url("/status"), cookies=cookie,
                                                      timeout=REQUEST_TIMEOUT).status_code == 401,
                   message="another daemon to refuse the logged-out session")
    late = daemon_factory(AUTH_ON)
    assert requests.get(late.url("/status"), cookies=cookie, timeout=REQUEST_TIMEOUT).status_code == 401
    assert requests.get(late.url("/status"), cookies=cookie, headers={"X-Api-Key": TOKEN},
                        timeout=REQUEST_TIMEOUT).status_code == 200
    expiry = int(clean_zk.get(f"{schema.REVOKED_SESSIONS}/{revoked}")[0])
    assert time.time() < expiry <= time.time() + 43200 + 5

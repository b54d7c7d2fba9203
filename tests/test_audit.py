"""The audit log (issue 15): every mutating request, refused ones too, in the database; GET /audit for admins;
secrets masked, large values cut; retention; a database that does not answer delays entries, never requests."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import peewee
import pytest
import requests
from test_scopes import ADMIN_TOKEN, READ_TOKEN, SCOPED, WRITE_TOKEN

from conftest import ANSWER_SLACK, REQUEST_TIMEOUT, deep_merge, http_session, settle_timeout, wait_until
from pvc_core.audit import AuditEntry, purge
from pvc_core.redaction import summarize

PURGE_INTERVAL = 0.5  # seconds; the daemon's default is an hour
MAX_VALUE = 1024  # the default pvc.audit.max_value_length
DAY = 86400
COLUMNS = ("id", "time", "token", "credential", "remote", "method", "route", "path", "params", "status",
           "request_id", "task_id")


@pytest.fixture(scope="module")
def audited(daemon_factory):
    """Scoped tokens (reader, writer, the admins), every default plugin, SQLite, purges every half second."""
    return daemon_factory(deep_merge(SCOPED, {"audit": {"purge_interval": str(PURGE_INTERVAL)}}))


def database_rows(daemon, since: float = 0.0, until: float = 1e12) -> list[dict]:
    """The audit table straight from the daemon's SQLite file, newest first, params decoded."""
    path = Path(daemon.config["data_dir"]) / "pvc.db"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=REQUEST_TIMEOUT)
    try:
        found = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM pvc_audit WHERE time >= ? AND time <= ? "
                                   "ORDER BY time DESC, id DESC", (since, until)).fetchall()
    finally:
        connection.close()
    return [{**dict(zip(COLUMNS, values, strict=True)), "params": json.loads(values[COLUMNS.index("params")])}
            for values in found]


def audit(daemon, **filters) -> list[dict]:
    answer = daemon.get("/audit", params=filters, headers={"X-Api-Key": ADMIN_TOKEN})
    assert answer.status_code == 200, answer.text
    return answer.json()


class Session:
    """Requests sent, and the entry each one should leave (its time as the window it was sent in)."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.expected: list[dict] = []

    def send(self, method: str, path: str, status: int, token: str | None = None, who: str | None = None,
             credential: str | None = None, route: str | None = None, recorded: dict | None = None,
             http: requests.Session | None = None, **kwargs) -> requests.Response:
        headers = {"X-Api-Key": token} if token else {}
        before = time.time()
        if http is None:
            answer = self.daemon.request(method, path, headers=headers, **kwargs)
        else:  # a login session's cookie jar
            answer = http.request(method, self.daemon.url(path), headers=headers, timeout=REQUEST_TIMEOUT, **kwargs)
            self.daemon.contract().check(method, "/api/v1" + path, answer.status_code,
                                         answer.headers.get("Content-Type"), answer.content)
        after = time.time()
        assert answer.status_code == status, (method, path, answer.text)
        body = answer.json() if answer.content else None
        task_id = body.get("task_id") if isinstance(body, dict) else None
        self.expected.append({"window": (before, after), "token": who, "credential": credential,
                              "remote": "127.0.0.1", "method": method, "route": route, "path": "/api/v1" + path,
                              "params": recorded or {}, "status": status,
                              "request_id": answer.headers["X-Request-Id"], "task_id": task_id})
        return answer


def matches(entry: dict, expected: dict) -> bool:
    low, high = expected["window"]
    fields = {key: value for key, value in expected.items() if key != "window"}
    return low - 0.001 <= entry["time"] <= high + 0.001 and {key: entry[key] for key in fields} == fields


def test_a_session_is_audited_exactly(audited):
    """Writes by tokens of two scopes and a login session (login and logout too), with a refused one (403), a
    validation failure (400), an unauthenticated one (401), an unknown path (404) and a wrong method (405),
    each naming the token it presented: GET /audit answers exactly their entries, newest first, every field
    as sent, the same as the database holds; secrets are masked and a script's text cut to the bound; reads
    are not recorded; each filter selects what it says; a read or write token gets 403."""
    daemon, session = audited, Session(audited)
    started = time.time()
    script = ("#!/usr/bin/env python3\nroot_password = \"hunter2\"\n\n\ndef install(**kwargs):\n"
              + "    pass  # padding\n" * 400)
    masked = script.replace('"hunter2"', "***")
    writer = {"token": WRITE_TOKEN, "who": "writer", "credential": "token"}
    session.send("POST", "/example/counter", 200, **writer, route="/example/counter",
                 recorded={"value": "5", "password": "***"}, data={"value": "5", "password": "hunter2"})
    daemon.get("/example/counter", headers={"X-Api-Key": WRITE_TOKEN})  # reads are not recorded
    job = session.send("POST", "/example/job", 200, **writer, route="/example/job", recorded={"steps": "2"},
                       json={"steps": 2})
    assert re.fullmatch(r"[0-9a-f-]{36}", job.json()["task_id"])
    # refused before its body is read: only the query string is known
    refused = session.send("POST", "/example/counter", 403, token=READ_TOKEN, who="reader", credential="token",
                           route="/example/counter", recorded={"value": "6"}, params={"value": "6"},
                           data={"other": "unread"})
    assert "scope is 'read'" in refused.json()["message"]
    invalid = session.send("POST", "/example/counter", 400, **writer, route="/example/counter",
                           recorded={"value": "many"}, data={"value": "many"})
    assert invalid.json() == {"message": "Parameter 'value': expected an integer, got 'many'"}
    session.send("POST", "/provisioner/script/audit-script", 200, token=ADMIN_TOKEN, who="the admins",
                 credential="token", route="/provisioner/script/<script>",
                 recorded={"data": masked[:MAX_VALUE] + f"... [{len(script)} characters]"}, data={"data": script})
    session.send("POST", "/example/counter", 401, route="/example/counter", recorded={"value": "7"},
                 params={"value": "7"}, data={"other": "unread"})
    login = http_session()
    session.send("POST", "/login", 200, route="/login", recorded={"token": "***"}, data={"token": WRITE_TOKEN},
                 http=login)
    session.send("POST", "/example/counter", 200, who="writer", credential="session", route="/example/counter",
                 recorded={"value": "8"}, data={"value": "8"}, http=login)
    assert login.get(daemon.url("/audit"), timeout=REQUEST_TIMEOUT).status_code == 403  # a writer's session
    session.send("POST", "/logout", 200, who="writer", credential="session", route="/logout", http=login)
    session.send("POST", "/nosuch", 404, **writer)
    session.send("PUT", "/example/counter", 405, **writer, recorded={"value": "9"}, params={"value": "9"})
    session.send("DELETE", "/provisioner/script/audit-script", 200, token=ADMIN_TOKEN, who="the admins",
                 credential="token", route="/provisioner/script/<script>")
    assert requests.options(daemon.url("/example/counter"), timeout=REQUEST_TIMEOUT).status_code == 200
    assert requests.head(daemon.url("/status"), headers={"X-Api-Key": READ_TOKEN},
                         timeout=REQUEST_TIMEOUT).status_code == 200
    expected = session.expected[::-1]  # newest first

    entries = wait_until(lambda: (found := audit(daemon, since=started)) and len(found) >= len(expected) and found,
                         timeout=settle_timeout(), message="the session's entries in GET /audit")
    assert len(entries) == len(expected), entries
    for entry, wanted in zip(entries, expected, strict=True):
        assert set(entry) == set(COLUMNS)
        assert matches(entry, wanted), json.dumps([entry, wanted], indent=1)
    assert [entry["id"] for entry in entries] == sorted((entry["id"] for entry in entries), reverse=True)
    assert entries[-1]["time"] >= started and entries == database_rows(daemon, since=started)
    assert entries[-2]["task_id"] == job.json()["task_id"]
    for secret in (WRITE_TOKEN, READ_TOKEN, ADMIN_TOKEN, "hunter2"):
        assert secret not in json.dumps(database_rows(daemon))

    def only(**conditions) -> list[dict]:
        return [entry for entry in entries if all(test(entry) for test in conditions.values())]
    middle = (entries[4]["time"] + entries[5]["time"]) / 2
    iso = datetime.fromtimestamp(middle, UTC).isoformat()
    for filters, selected in (
            ({"token": "writer"}, only(token=lambda e: e["token"] == "writer")),
            ({"method": "put"}, only(method=lambda e: e["method"] == "PUT")),
            ({"status": 403}, only(status=lambda e: e["status"] == 403)),
            ({"route": "/example/"}, only(route=lambda e: (e["route"] or "").startswith("/example/"))),
            ({"route": "/provisioner/script/<"}, only(route=lambda e: e["route"] == "/provisioner/script/<script>")),
            ({"path": "/api/v1/nos"}, only(path=lambda e: e["path"] == "/api/v1/nosuch")),
            ({"until": middle}, only(until=lambda e: e["time"] <= middle)),
            ({"since": iso.replace("+00:00", "Z")}, only(since=lambda e: e["time"] >= middle)),
            ({"since": iso.replace("+00:00", "")}, only(since=lambda e: e["time"] >= middle)),
            ({"request_id": entries[3]["request_id"]}, [entries[3]]),
            ({"task_id": job.json()["task_id"]}, [entries[-2]]),
            ({"token": "writer", "status": 200}, only(token=lambda e: e["token"] == "writer",
                                                      status=lambda e: e["status"] == 200)),
            ({"limit": 2}, entries[:2])):
        assert audit(daemon, **{"since": started, **filters}) == selected, filters
        assert selected, filters
    for filters, message in (
            ({"limit": 10001}, "Parameter 'limit': expected an integer from 1 to 10000, got '10001'"),
            ({"since": "yesterday"}, "Parameter 'since': expected epoch seconds or an ISO 8601 time "
                                     "(2024-06-11T12:00:00Z; UTC unless a zone is given), got 'yesterday'"),
            ({"status": 600}, "Parameter 'status': expected an integer from 100 to 599, got '600'")):
        answer = daemon.get("/audit", params=filters, headers={"X-Api-Key": ADMIN_TOKEN})
        assert (answer.status_code, answer.json()) == (400, {"message": message})
    for token, scope in ((READ_TOKEN, "read"), (WRITE_TOKEN, "write")):
        answer = daemon.get("/audit", headers={"X-Api-Key": token})
        assert (answer.status_code, answer.json()) == (403, {
            "message": f"Insufficient scope: this token's scope is '{scope}', GET /api/v1/audit requires scope "
                       "'admin'"})


def test_retention_purges_old_entries(audited):
    """Rows written straight into the database, 91 and 89 days old: the daemon's periodic purge forgets the
    first (pvc.audit.retention_days, 90 by default) and keeps the second, whole; a retention of 0 forgets
    nothing."""
    now = time.time()
    path = Path(audited.config["data_dir"]) / "pvc.db"
    rows = [{"time": now - days * DAY, "token": "writer", "credential": "token", "remote": "10.0.0.5",
             "method": "POST", "route": "/vm/<vm>", "path": f"/api/v1/vm/old{days}", "params": {"state": "start"},
             "status": 200, "request_id": f"{days:016x}", "task_id": None} for days in (91, 89)]
    connection = sqlite3.connect(path, timeout=REQUEST_TIMEOUT)
    with connection:
        for entry in rows:
            entry["id"] = connection.execute(
                f"INSERT INTO pvc_audit ({', '.join(COLUMNS[1:])}) VALUES ({', '.join('?' * len(COLUMNS[1:]))})",
                [json.dumps(entry[name]) if name == "params" else entry[name] for name in COLUMNS[1:]]).lastrowid
    connection.close()
    old, young = rows
    wait_until(lambda: database_rows(audited, until=now - 80 * DAY) == [young], timeout=settle_timeout(),
               message="the purge of the 91-day-old entry")
    assert audit(audited, until=now - 80 * DAY) == [young]
    database = peewee.SqliteDatabase(str(path), pragmas={"busy_timeout": 10000})
    with database.bind_ctx([AuditEntry]):
        assert purge(0) == 0  # 0: kept for ever
        assert database_rows(audited, until=now - 80 * DAY) == [young]
        assert purge(88) == 1
    database.close()
    assert audit(audited, until=now - 80 * DAY) == []


def test_a_database_that_does_not_answer_delays_entries_never_requests(daemon_factory, own_postgres):
    """PostgreSQL frozen (connections open, nothing answers): writes are answered as fast as ever, the audit
    log says once that the database does not answer and once that its backlog (5 here) is full; thawed, the
    backlog is written (the first entries, in order: those that came while it was full were dropped) and the
    number dropped is logged."""
    import psycopg2
    timeout, backlog, writes = 3.0, 5, 12
    daemon = daemon_factory({"provisioner": {"database": {**own_postgres["settings"], "timeout": str(timeout)}},
                             "audit": {"backlog": str(backlog)}, "plugins": {"disabled": ["ceph"]}})
    settings = own_postgres["settings"]

    def stored() -> list[dict]:
        connection = psycopg2.connect(host=settings["host"], port=settings["port"], user=settings["user"],
                                      password=settings["pass"], dbname=settings["name"], connect_timeout=5)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM pvc_audit ORDER BY id")
                return [dict(zip(COLUMNS, values, strict=True)) for values in cursor.fetchall()]
        finally:
            connection.close()
    try:
        first = daemon.post("/example/counter", params={"value": "100"})
        assert first.status_code == 200
        # PostgreSQL refuses NUL in text: the path is stored escaped, the parameters as JSON
        nul = daemon.post("/example/counter%00x", params={"value": "1\x002"})
        assert nul.status_code == 404
        wait_until(lambda: len(stored()) == 2, timeout=settle_timeout(), message="the first entries in PostgreSQL")
        common = {"token": "anonymous", "credential": "none", "remote": "127.0.0.1", "method": "POST", "task_id": None}
        assert [{key: entry[key] for key in COLUMNS if key not in ("id", "time")} for entry in stored()] == [
            {**common, "route": "/example/counter", "path": "/api/v1/example/counter", "params": '{"value": "100"}',
             "status": 200, "request_id": first.headers["X-Request-Id"]},
            {**common, "route": None, "path": "/api/v1/example/counter\\x00x", "params": '{"value": "1\\u00002"}',
             "status": 404, "request_id": nul.headers["X-Request-Id"]}]
        own_postgres["freeze"]()
        try:
            started = time.monotonic()
            for value in range(writes):
                assert daemon.post("/example/counter", params={"value": str(value)}).status_code == 200
            elapsed = time.monotonic() - started
            # had a request waited for its entry, each would have waited the database's timeout
            assert elapsed < timeout + ANSWER_SLACK, elapsed
            # a line of the one log format: "<time> WARNING pvc.audit: <request or task id, or -> <message>"
            wait_until(lambda: re.search(r"pvc\.audit: \S+ the PostgreSQL database", daemon.log()),
                       timeout=settle_timeout(),
                       message="the audit writer to say the database does not answer")
        finally:
            own_postgres["thaw"]()
        recovered = wait_until(lambda: re.search(r"pvc\.audit: \S+ the PostgreSQL database .* answers again; entries "
                                                 r"dropped meanwhile \(backlog full\): (\d+)", daemon.log()),
                               timeout=settle_timeout(), message="the audit writer to catch up")
        dropped = int(recovered.group(1))
        log = daemon.log()
        said = [line for line in log.splitlines() if "pvc.audit:" in line]
        assert len([line for line in said if "does not answer" in line]) == 1, said
        assert len([line for line in said if f"the backlog of {backlog} entries is full" in line]) == 1, said
        kept = writes - dropped
        assert backlog <= kept <= backlog + writes // 2  # the backlog, and any batch the writer held when it froze
        rows = wait_until(lambda: (found := stored()) and len(found) == 2 + kept and found, timeout=settle_timeout(),
                          message="the backlog in PostgreSQL")
        values = [int(json.loads(row["params"])["value"]) for row in rows[2:]]
        # in order; the first ones filled the backlog, and what came while it was full was dropped
        assert values == sorted(set(values)) and values[:backlog] == list(range(backlog)), values
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()


def test_what_is_kept_of_parameters():
    """Masked: a parameter the route declares secret, one whose name says it is a credential, and inline
    credentials in any value (a provisioner arg, a cloud-config, a script), even cut at the bound; values cut
    to the bound with their length; repeated values and the record as a whole bounded."""
    record = summarize({
        "token": ["declared secret"], "new_password": ["p1"], "db_pass": ["p2"], "api-key": ["p3"],
        "bypass": ["kept"], "arg": ["root_password=p4", "deb_release=bookworm"],
        "data": ["#cloud-config\npassword: p5\nchpasswd: {expire: False}\n"],
        "script": ["x" * 90 + 'secret_token = "p6 p7"\n' + "y" * 200],
        "xml": ["<domain>" + "z" * 300 + "</domain>"],
    }, secret=["token"], limit=100)
    assert record == {
        "token": "***", "new_password": "***", "db_pass": "***", "api-key": "***", "bypass": "kept",
        "arg": ["root_password=***", "deb_release=bookworm"],
        "data": "#cloud-config\npassword: ***\nchpasswd: *** False}\n",
        "script": "x" * 90 + "secret_tok... [313 characters]",
        "xml": "<domain>" + "z" * 92 + "... [317 characters]"}
    assert "p6" not in json.dumps(summarize({"script": ["x" * 95 + 'token = "p6"']}, (), 100))
    many = summarize({"tag": [str(n) for n in range(40)], **{f"p{n}": ["v" * 100] for n in range(30)}}, (), 100)
    assert many["tag"] == [*(str(n) for n in range(32)), "... 8 more values"]
    # 1,600 characters (16 values of 100) and the value that crossed that line
    assert many["p15"] == "v" * 100 and "p16" not in many and many["..."] == "14 more parameters not recorded"

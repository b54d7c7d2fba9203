"""One log format (pvc_core/logformat.py) for the API, the plugins and the worker: every line of a daemon's
log and of a worker's parses with one regex (``text``, the default) or ``json.loads`` (``json``), and the lines
of a request carry its ``X-Request-Id``, the lines of a task its id."""

from __future__ import annotations

import datetime
import json
import re

import pytest
from test_tasks import start_consumer, stop_consumer, wait_task

from conftest import TOKEN, settle_timeout, wait_until

# time, level, logger, context (request_id=<id>, task_id=<id> or -), message
TEXT_LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d) "
                       r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<logger>[\w.]+): "
                       r"(?:(?P<key>request_id|task_id)=(?P<id>\S+)|-) (?P<message>.*)$")
JSON_KEYS = {"time", "level", "logger", "message"}
OPTIONAL_KEYS = {"request_id", "task_id", "exception", "remote", "method", "path", "status", "elapsed_ms", "who"}


def recent(stamp: str) -> bool:
    """A time of the line format: ISO 8601 with its UTC offset, within the last few minutes."""
    when = datetime.datetime.fromisoformat(stamp)
    return abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) < settle_timeout()


def text_lines(text: str) -> list[re.Match]:
    lines = text.splitlines()
    parsed = [TEXT_LINE.match(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match][:3]
    return parsed


def json_lines(text: str) -> list[dict]:
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        assert JSON_KEYS <= set(record) <= JSON_KEYS | OPTIONAL_KEYS, record
        assert not {"request_id", "task_id"} <= set(record), record
    return records


def test_text_lines_carry_the_request_id(daemon):
    crash = daemon.get("/example/crash")
    hello = daemon.get("/example/hello", params={"name": "logs"})
    crash_id, hello_id = crash.headers["X-Request-Id"], hello.headers["X-Request-Id"]

    def of(request_id: str) -> list[re.Match]:
        return [match for match in text_lines(daemon.log()) if match["id"] == request_id]
    wait_until(lambda: any(match["logger"] == "pvc.access" for match in of(crash_id))
               and any(match["logger"] == "pvc.access" for match in of(hello_id)),
               message="the requests were not logged")
    lines = text_lines(daemon.log())  # every line, whoever wrote it
    assert lines  # every line parsed (text_lines checks), and this test's own lines carry a time of now
    assert all(recent(match["time"]) for match in of(crash_id) + of(hello_id))
    crashed = [(match["level"], match["logger"], match["key"]) for match in of(crash_id)]
    assert crashed == [("ERROR", "pvc.api", "request_id"), ("INFO", "pvc.access", "request_id")], crashed
    error, access = of(crash_id)
    assert error["message"].startswith(f"request {crash_id}: unhandled error in GET /example/crash\\nTraceback ")
    assert "RuntimeError: deliberate bug" in error["message"]  # the traceback, on the same line
    assert access["message"].startswith('127.0.0.1 "GET /api/v1/example/crash" 500 ')
    assert [(match["level"], match["logger"], match["message"]) for match in of(hello_id)][0] == (
        "INFO", "pvc.example", "greeting logs")  # a plugin's line


@pytest.fixture(scope="module")
def jsoned(daemon_factory):
    """JSON lines; metrics without authentication (authentication is on, to show it is not needed)."""
    from test_metrics import METERED
    daemon = daemon_factory({**METERED, "log": {"format": "json"}, "metrics": {"enabled": "true", "auth": "none"}})
    daemon.http.headers["X-Api-Key"] = TOKEN
    return daemon


def test_json_lines_of_the_daemon_and_the_worker(jsoned):
    """Requests and tasks in JSON lines: a request's lines carry its id (the access line its fields too), a task's
    lines its id, with Huey's own failure line and its traceback; ``metrics.auth: none`` needs no token."""
    scrape = jsoned.get("/metrics", headers={"X-Api-Key": None})
    assert scrape.status_code == 200 and "pvc_http_requests_in_flight 1.0" in scrape.text
    crash = jsoned.get("/example/crash")
    crash_id = crash.headers["X-Request-Id"]

    def of(request_id: str) -> list[dict]:
        return [record for record in json_lines(jsoned.log()) if record.get("request_id") == request_id]
    wait_until(lambda: len(of(crash_id)) == 2, message="the request was not logged")
    error, access = of(crash_id)
    assert (error["level"], error["logger"], error["message"]) == (
        "ERROR", "pvc.api", f"request {crash_id}: unhandled error in GET /example/crash")
    assert error["exception"].startswith("Traceback ")
    assert error["exception"].endswith("RuntimeError: deliberate bug for the 500 test")
    assert {key: access[key] for key in ("level", "logger", "remote", "method", "path", "status", "who")} == {
        "level": "INFO", "logger": "pvc.access", "remote": "127.0.0.1", "method": "GET",
        "path": "/api/v1/example/crash", "status": 500, "who": "test"}
    assert access["message"].startswith('127.0.0.1 "GET /api/v1/example/crash" 500 ') and access["elapsed_ms"] >= 0
    assert recent(access["time"]) and recent(error["time"])
    assert [record["request_id"] for record in json_lines(jsoned.log())
            if record["logger"] == "pvc.access" and record.get("path") == "/api/v1/metrics"] == [
        scrape.headers["X-Request-Id"]]

    jobs = {name: jsoned.post("/example/job", params=params).json()["task_id"]
            for name, params in (("done", {"steps": "1"}), ("fail", {"fail": "yes"}), ("crash", {"crash": "yes"}))}
    consumer = start_consumer(jsoned, workers=1)
    try:
        assert [wait_task(jsoned, jobs[name])["state"] for name in jobs] == ["SUCCESS", "FAILURE", "FAILURE"]
    finally:
        assert stop_consumer(consumer) == 0, (jsoned.workdir / "consumer.log").read_text()
    records = json_lines((jsoned.workdir / "consumer.log").read_text())
    assert any(record["logger"] == "huey.consumer" and record["message"].startswith("Huey consumer started")
               for record in records)
    by_task = {name: [record for record in records if record.get("task_id") == task_id]
               for name, task_id in jobs.items()}
    assert by_task["done"][0]["message"] == f"Executing pvc_example.plugin.example.count: {jobs['done']}"
    [warning] = [record for record in by_task["fail"] if record["level"] == "WARNING"]
    assert (warning["logger"], warning["message"]) == (
        "pvc.example", f"example job {jobs['fail']} failed: asked to fail")
    [failure] = [record for record in by_task["crash"] if record["level"] == "ERROR"]
    assert (failure["logger"], failure["message"]) == ("huey", f"Unhandled exception in task {jobs['crash']}.")
    assert failure["exception"].endswith(f"RuntimeError: example job {jobs['crash']} crashed as asked")
    assert all(recent(record["time"]) for record in (warning, failure))
    # Huey's lines under a task's id are about that task
    assert all(jobs[name] in record["message"] or record["logger"] != "huey" for name in jobs
               for record in by_task[name])

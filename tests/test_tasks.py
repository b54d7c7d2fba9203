"""Task records, the stock Huey consumer running plugin tasks, and unreachable services."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import ANSWER_SLACK, BIN, START_TIMEOUT, settle_timeout, wait_until
from pvc_core.zkserver import free_port


def start_consumer(daemon, workers: int = 2) -> subprocess.Popen:
    log = open(daemon.workdir / "consumer.log", "ab")
    process = subprocess.Popen(
        [str(BIN / "huey_consumer"), "pvc_core.consumer.huey", "-w", str(workers), "-k", "thread", "-d", "0.05",
         "-m", "0.5"],
        env={**os.environ, "PVC_CONFIG_FILE": str(daemon.config_path)}, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    log.close()
    return process


def stop_consumer(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=START_TIMEOUT)


def wait_task(daemon, task_id: str, timeout: float = START_TIMEOUT) -> dict:
    """The task's record once it has ended; the consumer may still be starting."""
    deadline = time.monotonic() + timeout
    while True:
        record = daemon.get(f"/tasks/{task_id}").json()
        if record["state"] in ("SUCCESS", "FAILURE"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)


def run_jobs(daemon):
    consumer = start_consumer(daemon)
    try:
        job = daemon.post("/example/job", params={"steps": "4"})
        assert job.status_code == 200
        task_id = job.json()["task_id"]
        # the record exists before the answer was sent
        first = daemon.get(f"/tasks/{task_id}")
        assert first.status_code == 200 and first.json()["name"] == "example.count"
        done = wait_task(daemon, task_id)
        assert done["state"] == "SUCCESS" and done["result"] == {"counted": 4}
        assert done["current"] == 4 and done["total"] == 4 and done["plugin"] == "example"
        assert done["args"] == [4, False]
        failed = wait_task(daemon, daemon.post("/example/job", params={"fail": "yes"}).json()["task_id"])
        assert failed["state"] == "FAILURE" and failed["status"] == "asked to fail"
        listing = daemon.get("/tasks", params={"state": "FAILURE", "plugin": "example"}).json()
        assert [record["id"] for record in listing] == [failed["id"]]
        assert daemon.get("/tasks", params={"state": "bogus"}).status_code == 400
    finally:
        assert stop_consumer(consumer) == 0, (daemon.workdir / "consumer.log").read_text()


def test_embedded_sqlite_database_and_queue(daemon_factory):
    daemon = daemon_factory()
    run_jobs(daemon)
    data = daemon.workdir / "data"
    assert (data / "pvc.db").exists() and (data / "huey.db").exists()


def test_postgresql_database_and_redis_queue(daemon_factory, postgres, redis_server):
    daemon = daemon_factory({"provisioner": {"database": postgres, "queue": redis_server}})
    run_jobs(daemon)
    assert not (daemon.workdir / "data" / "pvc.db").exists()
    import psycopg2
    connection = psycopg2.connect(host=postgres["host"], port=5432, user=postgres["user"],
                                  password=postgres["pass"], dbname=postgres["name"])
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pvc_task WHERE state = 'SUCCESS'")
        assert cursor.fetchone()[0] >= 1
    connection.close()


def test_plugin_models_get_tables(daemon_factory, postgres):
    daemon = daemon_factory({"provisioner": {"database": postgres}})
    assert daemon.post("/example/greeting", params={"name": "a"}).json()["count"] == 1
    assert daemon.post("/example/greeting", params={"name": "b"}).json()["count"] == 2


def test_unknown_task_404(daemon):
    response = daemon.get("/tasks/no-such-task")
    assert response.status_code == 404 and response.json() == {"message": "No task with ID 'no-such-task'"}


def test_database_unreachable_503(daemon_factory, postgres):
    port = free_port()
    daemon = daemon_factory({"provisioner": {"database": {**postgres, "port": str(port)}}})
    started = time.monotonic()
    response = daemon.get("/tasks")
    assert time.monotonic() - started < 5 + ANSWER_SLACK  # pvc_core.db connects with connect_timeout=5
    assert response.status_code == 503
    assert response.json()["message"].startswith(f"The PostgreSQL database '{postgres['name']}' at "
                                                 f"127.0.0.1:{port} is unreachable")


def test_queue_unreachable_503_and_no_record_left(daemon_factory, redis_server):
    port = free_port()
    daemon = daemon_factory({"provisioner": {"queue": {**redis_server, "port": str(port)}}})
    response = daemon.post("/example/job")
    assert response.status_code == 503
    assert response.json()["message"] == f"The Redis queue at 127.0.0.1:{port}{redis_server['path']} is unreachable"
    assert daemon.get("/tasks").status_code == 404 or daemon.get("/tasks").json() == []


def test_a_frozen_queue_answers_503_within_its_timeout_and_leaves_no_record(daemon_factory, own_redis):
    from pvc_core.queue import SOCKET_TIMEOUT
    port, process = own_redis
    daemon = daemon_factory({"provisioner": {"queue": {"host": "127.0.0.1", "port": str(port), "path": "/0"}}})
    assert daemon.post("/example/job").status_code == 200
    before = daemon.get("/tasks").json()
    os.kill(process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = daemon.post("/example/job")
        elapsed = time.monotonic() - started
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert response.status_code == 503 and "timed out" in response.json()["message"], response.json()
    assert elapsed <= SOCKET_TIMEOUT * 1.1 + ANSWER_SLACK, elapsed
    assert daemon.get("/tasks").json() == before


def test_bad_queue_path_is_a_config_error(daemon_factory, redis_server):
    from conftest import run_pvcapid
    daemon = daemon_factory({"provisioner": {"queue": {**redis_server, "path": "/zero"}}}, start=False)
    result = run_pvcapid("--check-config", "--config", str(daemon.config_path))
    assert result.returncode == 1 and "pvc.provisioner.queue.path" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown(daemon_factory, signum):
    daemon = daemon_factory()
    process = daemon.process
    process.send_signal(signum)
    assert process.wait(timeout=START_TIMEOUT) == 0
    assert "Traceback" not in daemon.log()
    daemon.process = None


def test_task_list_bounds_and_odd_ids_are_400_on_postgresql(daemon_factory, postgres):
    """What PostgreSQL refuses (a negative LIMIT, a NUL byte) is a 400 naming the parameter, never its 500."""
    daemon = daemon_factory({"provisioner": {"database": postgres}})
    for limit in ("-1", "0", "10001", str(2 ** 63)):
        response = daemon.get("/tasks", params={"limit": limit})
        assert response.status_code == 400, (limit, response.text)
        assert response.json() == {"message": f"Parameter 'limit': expected an integer from 1 to 10000, got '{limit}'"}
    assert daemon.get("/tasks", params={"limit": "10000"}).status_code == 200
    nul = daemon.get("/tasks", params={"plugin": "a\x00b"})
    assert nul.status_code == 400 and nul.json() == {"message": "Parameter 'plugin': expected text without NUL bytes"}
    for task_id in ("a%00b", "a%0Db"):
        response = daemon.get(f"/tasks/{task_id}")
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith("Path segment <task_id>: expected a name without control")
    assert "Traceback" not in daemon.log()


def test_a_frozen_database_answers_503_within_its_timeout_and_other_plugins_serve(daemon_factory, own_postgres):
    """PostgreSQL frozen (every process SIGSTOPped: connections stay open, nothing answers): the
    routes that need it answer 503 within provisioner.database.timeout, the others keep serving,
    and it serves again once PostgreSQL is back."""
    timeout = 2.0
    daemon = daemon_factory({"provisioner": {"database": {**own_postgres["settings"], "timeout": str(timeout)}},
                             "plugins": {"disabled": ["ceph"]}})
    assert daemon.get("/tasks").status_code == 200  # a pooled connection now exists
    own_postgres["freeze"]()
    try:
        for method, path in (("GET", "/tasks"), ("POST", "/example/job"), ("GET", "/tasks")):
            started = time.monotonic()
            response = daemon.request(method, path)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, (method, path, response.text)
            assert "PostgreSQL" in response.json()["message"]
            assert elapsed <= timeout * 1.1 + ANSWER_SLACK, (method, path, elapsed)
        assert daemon.get("/node").status_code in (200, 404)  # ZooKeeper plugins keep serving
        assert daemon.get("/").status_code == 200
    finally:
        own_postgres["thaw"]()
    wait_until(lambda: daemon.get("/tasks").status_code == 200, timeout=5 + ANSWER_SLACK,
               message="the tasks to be served again after PostgreSQL thawed")


def test_two_consumers_on_one_queue_run_each_task_once(daemon_factory, postgres, redis_server):
    """Two Huey consumers (separate processes, as on two coordinators) on one Redis queue: 40 jobs
    submitted through two daemons all succeed, each ran exactly once, and both consumers took part."""
    daemons = [daemon_factory({"provisioner": {"database": postgres, "queue": redis_server}}) for _ in range(2)]
    # both consumers read the first daemon's configuration: one data directory for the execution log
    consumers = [start_consumer(daemons[0], workers=2) for _ in range(2)]
    runs_log = daemons[0].workdir / "data" / "example-runs.log"

    def took_part() -> set[str]:
        return {line.split()[1] for line in runs_log.read_text().splitlines()} if runs_log.exists() else set()
    task_ids: list[str] = []
    try:
        # batches of 40 until both consumers have taken some: one that was still starting while
        # the other ran a whole batch is no finding (seen on a loaded machine)
        deadline = time.monotonic() + settle_timeout()
        while len(took_part()) < 2 and time.monotonic() < deadline:
            batch = [daemons[index % 2].post("/example/job", params={"steps": "2"}).json()["task_id"]
                     for index in range(40)]
            for task_id in batch:  # one database: either daemon reads every record
                assert wait_task(daemons[0], task_id)["state"] == "SUCCESS"
            task_ids += batch
    finally:
        for consumer in consumers:
            assert stop_consumer(consumer) == 0
    runs = [line.split() for line in runs_log.read_text().splitlines()]
    ran = [task_id for task_id, _ in runs]
    assert sorted(ran) == sorted(task_ids), "a task ran twice or not at all"
    assert {pid for _, pid in runs} == {str(consumer.pid) for consumer in consumers}, "a consumer took no task"

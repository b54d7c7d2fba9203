"""Task records of the long operations beyond provisioning, followed through real node daemons (simnode).

Each route answers exactly as v0.6 did and names its record in ``X-Task-Id``;
the record is followed by the daemon's task monitor until ZooKeeper shows the
target state. Every record read is compared with its row (and log) straight
from the database.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import requests
from test_node import seed_node
from test_simnode import define, domain_state, other_vm, set_node, set_state, zk_placement, zk_value
from test_vm import UUID, uuid_for

from conftest import ANSWER_SLACK, REQUEST_TIMEOUT, Daemon, deep_merge, settle_timeout, sim_ready, wait_until
from pvc_core.taskrecords import TOO_LATE

NO_CEPH = {"plugins": {"disabled": ["ceph"]}}
FIELDS = ("id", "name", "plugin", "kind", "state", "current", "total", "status", "result", "args", "kwargs",
          "created", "updated", "started", "worker", "ended", "cancelled", "deadline")
# what a wait may take beyond the record's end: the monitor's poll interval (0.25 s) and the answer
WAKE_BOUND = 0.25 + ANSWER_SLACK


def _rows(daemon: Daemon, task_id: str) -> tuple[dict, list[dict]]:
    settings = daemon.config.get("provisioner", {}).get("database")
    record = "SELECT * FROM pvc_task WHERE id = {0}"
    log = "SELECT time, message FROM pvc_task_log WHERE task_id = {0} ORDER BY time, id"
    if settings:
        import psycopg2
        import psycopg2.extras
        connection = psycopg2.connect(host=settings["host"], port=settings["port"], user=settings["user"],
                                      password=settings["pass"], dbname=settings["name"],
                                      cursor_factory=psycopg2.extras.RealDictCursor)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(record.format("%s"), (task_id,))
                row = dict(cursor.fetchone())
                cursor.execute(log.format("%s"), (task_id,))
                return row, [dict(line) for line in cursor.fetchall()]
        finally:
            connection.close()
    connection = sqlite3.connect(str(daemon.workdir / "data" / "pvc.db"))
    connection.row_factory = sqlite3.Row
    try:
        return (dict(connection.execute(record.format("?"), (task_id,)).fetchone()),
                [dict(line) for line in connection.execute(log.format("?"), (task_id,)).fetchall()])
    finally:
        connection.close()


def database_record(daemon: Daemon, task_id: str) -> dict:
    """The record and its log as the database (SQLite or PostgreSQL) holds them, in the API's shape."""
    row, lines = _rows(daemon, task_id)
    row["kind"] = row["kind"] or row["name"]
    for name in ("result", "args", "kwargs"):
        row[name] = json.loads(row[name]) if row[name] else None
    record = {name: row[name] for name in FIELDS}
    record["log"] = [{"time": line["time"], "message": line["message"]} for line in lines]
    return record


def ended(daemon: Daemon, task_id: str) -> dict:
    """Wait (long poll) for the record to end; the answer must come right after its end."""
    answer = daemon.get(f"/tasks/{task_id}/wait", params={"timeout": str(settle_timeout())})
    returned = time.time()
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["ended"] is not None and returned - record["ended"] < WAKE_BOUND, (returned, record)
    assert record == database_record(daemon, task_id)
    return record


def started(answer: Any, message: str) -> str:
    """The v0.6 answer, unchanged, and the task it names."""
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"message": message}
    return answer.headers["X-Task-Id"]


def check(record: dict, kind: str, plugin: str, status: str, first: str, state: str = "SUCCESS") -> None:
    assert (record["kind"], record["plugin"], record["state"], record["status"]) == (kind, plugin, state, status)
    assert record["worker"].startswith("api@") and record["cancelled"] is None
    assert record["created"] <= record["started"] <= record["ended"] <= record["deadline"]
    times = [line["time"] for line in record["log"]]
    assert times == sorted(times) and record["created"] <= times[0] and times[-1] == record["ended"]
    assert record["log"][0]["message"] == first and record["log"][-1]["message"] == status


def test_vm_and_node_tasks_follow_the_node_daemons(sim_factory, clean_zk):
    """Migrate, move, shutdown, restart, flush and ready: each a record that ends once ZooKeeper shows the
    target; filters by kind, plugin and age; a finished task cannot be cancelled (409)."""
    sim = sim_factory(NO_CEPH)
    define(sim)
    define(sim, other_vm("small1", 1, 512), node="pvchv3")
    assert set_state(sim, "start").status_code == 200
    assert set_state(sim, "start", vm="small1").status_code == 200
    begun = time.time()

    task = started(set_node(sim, "migrate", "pvchv2", wait=False), "Migrating VM 'test1' to node 'pvchv2'.")
    record = ended(sim, task)
    check(record, "vm.migrate", "vm", "VM 'test1' runs on node 'pvchv2'", "Migrating VM 'test1' to node 'pvchv2'.")
    assert record["kwargs"] == {"uuid": UUID, "vm": "test1", "source": "pvchv1", "target": "pvchv2",
                                "lastnode": "", "expect": "start"}
    assert clean_zk.get(f"/domains/{UUID}/node")[0] == b"pvchv2"

    task = started(set_node(sim, "move", "pvchv3"), "Permanently migrating VM 'test1' to node 'pvchv3'.")
    check(ended(sim, task), "vm.move", "vm", "VM 'test1' runs on node 'pvchv3'",
          "Permanently migrating VM 'test1' to node 'pvchv3'.")

    task = started(set_state(sim, "restart", wait=False), "Restarting VM 'test1'.")
    check(ended(sim, task), "vm.restart", "vm", "VM 'test1' restarted on node 'pvchv3'", "Restarting VM 'test1'.")

    # a flush: both VMs on pvchv3 leave it; the record counts them
    task = started(domain_state(sim, "pvchv3", "flush", wait=False), "Flushing hypervisor pvchv3 of running VMs.")
    record = ended(sim, task)
    check(record, "node.flush", "node", "Flushed hypervisor pvchv3 of running VMs.",
          "Flushing hypervisor pvchv3 of running VMs.")
    assert (record["current"], record["total"]) == (2, 2)
    assert clean_zk.get("/nodes/pvchv3/domainstate")[0] == b"flushed"
    task = started(domain_state(sim, "pvchv3", "ready"), "Restored hypervisor pvchv3 to active service.")
    check(ended(sim, task), "node.ready", "node", "Restored hypervisor pvchv3 to active service.",
          "Restoring hypervisor pvchv3 to active service.")

    task = started(set_state(sim, "shutdown"), "Shutting down VM 'test1'.")
    shutdown = ended(sim, task)
    check(shutdown, "vm.shutdown", "vm", "VM 'test1' is shut down", "Shutting down VM 'test1'.")
    assert clean_zk.get(f"/domains/{UUID}/state")[0] == b"stop"

    # states without a task answer without the header
    assert "X-Task-Id" not in set_state(sim, "start").headers

    kinds = [record["kind"] for record in sim.get("/tasks", params={"max_age": str(time.time() - begun + 1)}).json()]
    assert kinds == ["vm.shutdown", "node.ready", "node.flush", "vm.restart", "vm.move", "vm.migrate"]
    assert [record["kind"] for record in sim.get("/tasks", params={"plugin": "node"}).json()] == \
        ["node.ready", "node.flush"]
    only = sim.get("/tasks", params={"kind": "vm.shutdown", "since": str(begun)}).json()
    assert [record["id"] for record in only] == [shutdown["id"]]
    assert {key: value for key, value in shutdown.items() if key != "log"} == only[0]
    assert sim.get("/tasks", params={"since": str(time.time() + 60)}).json() == []
    assert sim.get("/tasks", params={"max_age": "-1"}).status_code == 400

    refused = sim.delete(f"/tasks/{shutdown['id']}")
    assert refused.status_code == 409
    assert refused.json() == {"message": f"Task {shutdown['id']} has already ended (SUCCESS: VM 'test1' is shut "
                                         "down); nothing to cancel"}
    assert sim.delete("/tasks/no-such-task").status_code == 404
    assert ended(sim, shutdown["id"]) == shutdown  # an ended task's wait answers at once, unchanged


def test_a_request_that_waited_ends_its_record_with_its_answer(sim_factory, clean_zk):
    """A migrate or a flush answered 200 after waiting (wait=true) has its record ended SUCCESS before the
    answer: an unmigrate sent right after the migrate's answer, or a ready after the flush's, made the
    monitor's next turn find the first superseded, and the record of a request answered 200 ended FAILURE
    (found by a new user's trial, 3 times in 3)."""
    sim = sim_factory(NO_CEPH)
    define(sim)
    assert set_state(sim, "start").status_code == 200
    for _ in range(3):
        migrated = set_node(sim, "migrate", "pvchv2")
        assert migrated.status_code == 200, migrated.text
        record = sim.get(f"/tasks/{migrated.headers['X-Task-Id']}").json()  # before anything else is sent
        assert (record["state"], record["status"]) == ("SUCCESS", "VM 'test1' runs on node 'pvchv2'"), record
        assert set_node(sim, "unmigrate").status_code == 200
        assert database_record(sim, record["id"]) == sim.get(f"/tasks/{record['id']}").json()
        assert sim.get(f"/tasks/{record['id']}").json()["state"] == "SUCCESS"
    flushed = domain_state(sim, "pvchv1", "flush")
    assert flushed.status_code == 200, flushed.text
    record = sim.get(f"/tasks/{flushed.headers['X-Task-Id']}").json()
    assert (record["state"], record["status"]) == ("SUCCESS", "Flushed hypervisor pvchv1 of running VMs."), record
    readied = domain_state(sim, "pvchv1", "ready")
    assert readied.status_code == 200, readied.text
    assert sim.get(f"/tasks/{readied.headers['X-Task-Id']}").json()["state"] == "SUCCESS"
    assert sim.get(f"/tasks/{record['id']}").json() == {**record, "log": record["log"]}  # an end is final


# -- following across daemons, cancelling midway ------------------------------------------------
#
# The simulated nodes hold a migration on demand (POST /simnode/<node> action=hold, step, release): the VM
# stays "migrate" on its target while its source holds it, so work is caught under way, by event.

# what the daemon under test needs when the simulated nodes run in another daemon
WAITS = {"vm": {"wait_timeout": str(settle_timeout())}, "node": {"wait_timeout": str(settle_timeout())}}
FOLLOWED_AGAIN = "Followed again after its daemon restarted"
BACKGROUND = ThreadPoolExecutor(max_workers=2, thread_name_prefix="waiting-request")


def simnode(sim: Daemon, node: str, action: str) -> None:
    answer = sim.post(f"/simnode/{node}", params={"action": action})
    assert answer.status_code == 200, answer.text


def placed(zk: Any, uuid: str, where: tuple, message: str) -> None:
    wait_until(lambda: zk_placement(zk, uuid) == where, message=message)


def messages(record: dict) -> list[str]:
    return [line["message"] for line in record["log"]]


def in_order(lines: list[str], *expected: str) -> bool:
    """``expected`` appear in ``lines`` in this order (progress lines may come between)."""
    positions = [lines.index(line) if line in lines else -1 for line in expected]
    return -1 not in positions and positions == sorted(positions)


def in_background(sim: Daemon, path: str, **params: str) -> Future:
    """A POST answered in another thread (a wait=true request), on a connection of its own, checked against the
    daemon's OpenAPI document as every answer is."""
    def post() -> requests.Response:
        answer = requests.post(sim.url(path), params=params, timeout=REQUEST_TIMEOUT)
        sim.contract().check("POST", "/api/v1" + path, answer.status_code, answer.headers.get("Content-Type"),
                             answer.content)
        return answer
    return BACKGROUND.submit(post)


def running_task(sim: Daemon, kind: str) -> str:
    """The id of the one running record of ``kind`` (a wait=true request names it only in its answer)."""
    found = wait_until(lambda: sim.get("/tasks", params={"kind": kind, "state": "RUNNING"}).json(),
                       message=f"a running {kind} record")
    assert len(found) == 1, found
    return found[0]["id"]


def refused_with_task(answer: Future, task: str, *messages: str) -> None:
    """A wait=true request whose work was cancelled: 409 (one of ``messages``), still naming its record."""
    response = answer.result(timeout=settle_timeout())
    assert response.status_code == 409 and response.json() in [{"message": text} for text in messages], \
        response.text
    assert response.headers["X-Task-Id"] == task


def cancelled(sim: Daemon, task: str) -> dict:
    """DELETE of a running task: 202 with the record still running, marked; then its end."""
    answer = sim.delete(f"/tasks/{task}")
    assert answer.status_code == 202, answer.text
    marked = answer.json()
    assert (marked["state"], marked["ended"]) == ("RUNNING", None) and marked["cancelled"] is not None
    record = ended(sim, task)
    assert record["state"] == "FAILURE" and record["cancelled"] == marked["cancelled"]
    assert record["result"] == {"error": "cancelled", "cancelled": True}
    assert record["created"] <= record["started"] <= record["cancelled"] <= record["ended"]
    assert sim.delete(f"/tasks/{task}").status_code == 409  # ended: nothing to cancel any more
    return record


def test_cancel_a_migration_and_a_flush_midway(sim_factory, clean_zk):
    """A migration cancelled while its VM is still 'migrate' puts the VM back on its source (lastnode as
    before); a flush cancelled after its first VM moved stops (no further VM leaves) and brings that one back;
    both end FAILURE 'Cancelled…' with their log. A ready under way cannot be cancelled (409)."""
    sim = sim_factory(NO_CEPH)
    # the task's header is declared on the error answers that carry it, not only on success
    operations = sim.get("/openapi.json").json()["paths"]
    for path, statuses in (("/api/v1/vm/{vm}/node", ("200", "400", "409", "503")),
                           ("/api/v1/node/{node}/domain-state", ("200", "409", "503"))):
        responses = operations[path]["post"]["responses"]
        assert sorted(code for code, answer in responses.items()
                      if "X-Task-Id" in answer.get("headers", {})) == list(statuses), path
    vms = {f"held{index}": uuid_for(40 + index) for index in (1, 2, 3)}
    for index, name in enumerate(vms, start=41):
        define(sim, other_vm(name, index, 1024))
        assert set_state(sim, "start", vm=name).status_code == 200
    home = {uuid: ("start", "pvchv1", "") for uuid in vms.values()}
    simnode(sim, "pvchv1", "hold")

    # a migration (its request waiting for it), cancelled while pvchv1 holds it
    first = uuid_for(41)
    asked = "Migrating VM 'held1' to node 'pvchv2'."
    waiting = in_background(sim, "/vm/held1/node", action="migrate", node="pvchv2", wait="true")
    placed(clean_zk, first, ("migrate", "pvchv2", "pvchv1"), "the migration to be held at pvchv1")
    task = running_task(sim, "vm.migrate")
    record = cancelled(sim, task)
    refused_with_task(waiting, task, "VM 'held1' runs on node 'pvchv1', not 'pvchv2': the migrate was cancelled "
                                     "or superseded")
    assert record["status"] == "Cancelled: VM 'held1' put back on node 'pvchv1'"
    wanted = {"uuid": first, "vm": "held1", "source": "pvchv1", "target": "pvchv2", "lastnode": "", "expect": "start"}
    assert record["kwargs"] == {**wanted, "_cancelling": True,  # what was asked, and the undo followed since
                                "_undo": {**wanted, "source": "pvchv2", "target": "pvchv1"}}
    assert in_order(messages(record), asked, f"Cancel requested: DELETE /tasks/{task}",
                    "Cancelling: VM 'held1' put back on node 'pvchv1' (the move to 'pvchv2' is abandoned)",
                    record["status"]) and messages(record)[-1] == record["status"]
    assert {uuid: zk_placement(clean_zk, uuid) for uuid in vms.values()} == home
    assert sorted(zk_value(clean_zk, "/nodes/pvchv1/runningdomains").split()) == sorted(vms.values())

    # a flush of three VMs: the first goes (one step), the second is held; then the cancel
    asked = "Flushing hypervisor pvchv1 of running VMs."
    waiting = in_background(sim, "/node/pvchv1/domain-state", state="flush", wait="true")
    task = running_task(sim, "node.flush")

    def moving(count: int) -> Any:
        places = {uuid: zk_placement(clean_zk, uuid) for uuid in vms.values()}
        gone = [uuid for uuid, (state, node, _) in places.items() if (state, node) != ("start", "pvchv1")]
        held = [uuid for uuid in gone if places[uuid][0] == "migrate"]
        return places if (len(gone), len(held)) == (count, 1) else None
    wait_until(lambda: moving(1), message="the flush's first migration to be held")
    simnode(sim, "pvchv1", "step")
    places = wait_until(lambda: moving(2), message="the first VM moved and the second held")
    wait_until(lambda: sim.get(f"/tasks/{task}").json()["current"] == 1, message="the record counting one VM moved")
    untouched = [uuid for uuid, where in places.items() if where == home[uuid]]
    assert len(untouched) == 1
    record = cancelled(sim, task)
    # the request sees the unflush, or already its end
    refused_with_task(waiting, task, *(f"Node 'pvchv1' did not become flushed: its domain state is now '{state}' "
                                       "(the flush was cancelled or superseded)" for state in ("unflush", "ready")))
    assert record["status"] == "Cancelled: flush stopped; hypervisor pvchv1 returned to service"
    assert in_order(messages(record), asked, "Flushing hypervisor pvchv1: 2 of 3 VMs still running there",
                    f"Cancel requested: DELETE /tasks/{task}",
                    "Cancelling: wrote domain state 'unflush'; node pvchv1 stops migrating VMs away and brings "
                    "back those it moved", record["status"]) and messages(record)[-1] == record["status"]
    # what was asked, and the undo followed since the cancel
    assert record["kwargs"] == {"node": "pvchv1", "target": "flushed", "vms": 3, "_cancelling": True,
                                "_undo": {"node": "pvchv1", "target": "ready"}}
    assert zk_value(clean_zk, "/nodes/pvchv1/domainstate") == "ready"
    # the node is ready once it has sent the moved VMs back (v0.6's unflush); their migrations end after
    wait_until(lambda: {uuid: zk_placement(clean_zk, uuid) for uuid in vms.values()} == home
               and sorted(zk_value(clean_zk, "/nodes/pvchv1/runningdomains").split()) == sorted(vms.values()),
               timeout=settle_timeout(), message="the moved VMs back home")

    # a ready under way (its VMs held where the flush sent them) cannot be cancelled
    simnode(sim, "pvchv1", "release")
    assert domain_state(sim, "pvchv1", "flush").status_code == 200
    for node in ("pvchv2", "pvchv3"):
        simnode(sim, node, "hold")
    task = started(domain_state(sim, "pvchv1", "ready", wait=False), "Restoring hypervisor pvchv1 to active service.")
    wait_until(lambda: any(zk_placement(clean_zk, uuid)[:2] == ("migrate", "pvchv1") for uuid in vms.values()),
               message="the ready's first migration back to be held")
    refused = sim.delete(f"/tasks/{task}")
    assert refused.status_code == 409
    assert refused.json() == {"message": "Tasks of kind 'node.ready' cannot be cancelled once running: a ready is "
                                         "undone by a flush, which is a request of its own"}
    running = sim.get(f"/tasks/{task}").json()
    assert (running["state"], running["cancelled"]) == ("RUNNING", None)
    for node in ("pvchv2", "pvchv3"):
        simnode(sim, node, "release")
    check(ended(sim, task), "node.ready", "node", "Restored hypervisor pvchv1 to active service.",
          "Restoring hypervisor pvchv1 to active service.")
    assert {uuid: zk_placement(clean_zk, uuid) for uuid in vms.values()} == home


def test_a_cancel_that_comes_too_late_for_a_migration(daemon_factory, clean_zk):
    """Nodes written by hand, no node daemon acting: the VM has arrived (state 'start' on its target) but the
    target does not list it running yet, so the record still runs. A cancel then has nothing to put back:
    nothing is written and its log says so; when the target lists the VM the record ends SUCCESS, its status
    saying the cancel came too late and its ``cancelled`` kept, as the records of work run in a daemon do."""
    api = daemon_factory(deep_merge(NO_CEPH, WAITS))
    assert api.post("/initialize").status_code == 200
    seed_node(clean_zk, "pvchv1", runningdomains=UUID)
    seed_node(clean_zk, "pvchv2", runningdomains="")
    wait_until(lambda: len(api.get("/node").json()) == 2, message="the nodes written by hand")
    define(api)
    clean_zk.set(f"/domains/{UUID}/state", b"start")
    wait_until(lambda: api.get("/vm/test1/state").json()["state"] == "start", message="the VM running")
    asked = "Migrating VM 'test1' to node 'pvchv2'."
    task = started(set_node(api, "migrate", "pvchv2", wait=False), asked)
    clean_zk.set(f"/domains/{UUID}/state", b"start")  # the target has taken the VM; it is not running there yet
    arriving = "Migrating VM 'test1' to node 'pvchv2' (state 'start')"
    wait_until(lambda: api.get(f"/tasks/{task}").json()["status"] == arriving, message="the record seeing the arrival")

    answer = api.delete(f"/tasks/{task}")
    assert answer.status_code == 202, answer.text
    marked = answer.json()["cancelled"]
    late = "Cancel came too late: the work is done or undone already"
    record = wait_until(lambda: (lambda seen: seen if late in messages(seen) else None)(
        api.get(f"/tasks/{task}").json()), message="the cancel found too late")
    assert (record["state"], record["cancelled"]) == ("RUNNING", marked)
    assert zk_placement(clean_zk, UUID) == ("start", "pvchv2", "pvchv1")  # nothing put back
    again = api.delete(f"/tasks/{task}")  # asked twice: still running, and not tried again
    assert again.status_code == 202 and again.json()["cancelled"] == marked

    clean_zk.set("/nodes/pvchv2/runningdomains", UUID.encode())
    record = ended(api, task)
    status = f"VM 'test1' runs on node 'pvchv2' ({TOO_LATE})"
    assert (record["state"], record["status"], record["cancelled"]) == ("SUCCESS", status, marked)
    assert in_order(messages(record), asked, arriving, f"Cancel requested: DELETE /tasks/{task}", late, status)
    assert messages(record).count(late) == 1 and messages(record)[-1] == status
    assert zk_placement(clean_zk, UUID) == ("start", "pvchv2", "pvchv1")
    assert api.delete(f"/tasks/{task}").status_code == 409


def test_a_restarted_daemon_follows_its_running_records_again(sim_factory, daemon_factory, clean_zk):
    """The daemon under test (no nodes of its own) starts a migration and a flush that the simulated nodes hold,
    stops with both RUNNING, starts again on its port, and ends both SUCCESS once the nodes finish."""
    sim = sim_factory(NO_CEPH)
    api = daemon_factory(deep_merge(NO_CEPH, WAITS))
    wait_until(lambda: sim_ready(api), message="the daemon under test seeing the simulated nodes")
    define(sim)
    define(sim, other_vm("small1", 1, 512), node="pvchv3")
    for vm in ("test1", "small1"):
        assert set_state(sim, "start", vm=vm).status_code == 200
    for node in ("pvchv1", "pvchv3"):
        simnode(sim, node, "hold")
    migrate = started(set_node(api, "migrate", "pvchv2", wait=False), "Migrating VM 'test1' to node 'pvchv2'.")
    flush = started(domain_state(api, "pvchv3", "flush", wait=False), "Flushing hypervisor pvchv3 of running VMs.")
    placed(clean_zk, UUID, ("migrate", "pvchv2", "pvchv1"), "the migration to be held at pvchv1")
    wait_until(lambda: zk_placement(clean_zk, uuid_for(1))[0] == "migrate", message="the flush to be held")
    worker = api.get(f"/tasks/{migrate}").json()["worker"]
    assert worker == f"api@{socket.gethostname()}:{api.port}"

    assert api.stop() == 0
    for task in (migrate, flush):
        record = database_record(api, task)
        assert (record["state"], record["worker"], record["ended"]) == ("RUNNING", worker, None)
    api.start()
    for node in ("pvchv1", "pvchv3"):
        simnode(sim, node, "release")
    record = ended(api, migrate)
    check(record, "vm.migrate", "vm", "VM 'test1' runs on node 'pvchv2'", "Migrating VM 'test1' to node 'pvchv2'.")
    assert FOLLOWED_AGAIN in messages(record) and record["worker"] == worker
    record = ended(api, flush)
    check(record, "node.flush", "node", "Flushed hypervisor pvchv3 of running VMs.",
          "Flushing hypervisor pvchv3 of running VMs.")
    assert FOLLOWED_AGAIN in messages(record) and record["worker"] == worker
    assert (record["current"], record["total"]) == (1, 1)


def test_a_record_whose_daemon_died_is_failed_by_another_after_three_heartbeats(sim_factory, daemon_factory,
                                                                                clean_zk, postgres):
    """One database, two daemons: the one that follows a held migration is killed (SIGKILL); the other fails
    its record 'Abandoned: …' three heartbeats after its last mark, and the end stays when the node finishes."""
    heartbeat = 1.0
    shared = {"provisioner": {"database": postgres}, "tasks": {"heartbeat": str(heartbeat)}}
    sim = sim_factory(deep_merge(NO_CEPH, shared))
    api = daemon_factory(deep_merge(deep_merge(NO_CEPH, WAITS), shared))
    wait_until(lambda: sim_ready(api), message="the daemon under test seeing the simulated nodes")
    define(sim)
    assert set_state(sim, "start").status_code == 200
    simnode(sim, "pvchv1", "hold")
    task = started(set_node(api, "migrate", "pvchv2", wait=False), "Migrating VM 'test1' to node 'pvchv2'.")
    placed(clean_zk, UUID, ("migrate", "pvchv2", "pvchv1"), "the migration to be held at pvchv1")
    api.process.kill()
    api.process.wait()
    api.process = None
    record = ended(sim, task)
    last_mark = _rows(sim, task)[0]["heartbeat"]
    worker = f"api@{socket.gethostname()}:{api.port}"
    assert record["worker"] == worker and record["state"] == "FAILURE"
    assert record["status"].startswith(f"Abandoned: {worker} stopped following it (no sign of it for ")
    assert record["status"].endswith(" s); the outcome is not known to this record")
    silent = record["ended"] - last_mark
    # swept by a turn of the other daemon's heartbeat (every heartbeat, looked at every poll_interval)
    assert 3 * heartbeat <= silent <= 4 * heartbeat + 0.25 + ANSWER_SLACK, silent
    assert messages(record)[0] == "Migrating VM 'test1' to node 'pvchv2'." and messages(record)[-1] == record["status"]
    simnode(sim, "pvchv1", "release")
    placed(clean_zk, UUID, ("start", "pvchv2", "pvchv1"), "the held migration to finish")
    assert database_record(sim, task) == record  # an end is final

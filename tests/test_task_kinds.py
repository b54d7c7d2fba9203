"""Task records of the long operations beyond provisioning, followed through real node daemons (simnode).

Each route answers exactly as v0.6 did and names its record in ``X-Task-Id``;
the record is followed by the daemon's task monitor until ZooKeeper shows the
target state. Every record read is compared with its row (and log) straight
from the database.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from test_simnode import define, domain_state, other_vm, set_node, set_state
from test_vm import UUID

from conftest import ANSWER_SLACK, Daemon, settle_timeout

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

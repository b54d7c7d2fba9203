"""OSDs as the API shows them (/ceph/osds), their in/out state, cluster flags, and OSD statistics.

In/out and flags run directly against Ceph (the v0.7+ model); creating and
removing an OSD must happen on the OSD's own host, so they go to its node
daemon over the v0.6 ``/cmd/ceph`` channel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pvc_core import matching
from pvc_core.cmdchannel import IGNORED, CommandChannel
from pvc_core.errors import ApiError, BadRequest, NotFound
from pvc_core.routes import quoted

from . import schema, tasks
from .area import CephArea, bounded

OPTION = re.compile(r"^[a-z0-9_-]+$")
DEVICE = re.compile(r"^/[A-Za-z0-9_./:+-]+$")


@contextmanager
def _ending(task: Any) -> Iterator[None]:
    """A refusal or a timeout of the node's command ends the task with the same message as the answer."""
    try:
        yield
    except ApiError as exc:
        task.fail(exc.message)
        raise


class Osds(CephArea):
    def __init__(self, runtime: Any, client: Any):
        super().__init__(runtime, client)
        self.channel = CommandChannel(runtime, schema.CMD_CEPH)

    def add(self, node: str, device: str, weight: float, on_task: Callable[[str | None], None] | None = None) -> str:
        if not self.runtime.service("node").exists(node):
            raise BadRequest(quoted(f'ERROR: No node named "{node}" is present in the cluster.'))
        if not DEVICE.match(device):
            raise BadRequest(f"Parameter 'device': expected a block device path such as /dev/sdb, got {device!r}")
        if weight < 0:
            raise BadRequest(f"Parameter 'weight': expected a CRUSH weight of 0 or more, got {weight!r}")
        ids = self.ids()
        owners = self.zk.get_many(path for osd_id in ids for path in (schema.osd(osd_id, "node"),
                                                                       schema.osd(osd_id, "device")))
        for osd_id in ids:
            if (owners[schema.osd(osd_id, "node")], owners[schema.osd(osd_id, "device")]) == (node, device):
                raise BadRequest(quoted(f'ERROR: Block device "{device}" on node "{node}" is used by OSD "{osd_id}"'))
        command = f"osd_add {node},{device},{weight}"
        task = self.runtime.task_monitor.begin(tasks.OSD_ADD, {"node": node, "device": device, "weight": weight},
                                               f"Asking node {node} to create an OSD on {device} ({schema.CMD_CEPH})")
        if on_task is not None:
            on_task(task.id)
        with _ending(task):
            result = self.channel.run(command, self.runtime.config["ceph.osd_add_timeout"])
            if result == IGNORED:
                raise BadRequest("ERROR: Command ignored by node.")
            if not result:
                raise BadRequest("ERROR: Failed to create new OSD; check node logs for details.")
            message = quoted(f'Created new OSD with block device "{device}" on node "{node}".')
            task.succeed(message)
        return message

    def remove(self, osd_id: str, on_task: Callable[[str | None], None] | None = None) -> str:
        if osd_id not in self.ids():
            raise NotFound(quoted(f'ERROR: No OSD with ID "{osd_id}" is present in the cluster.'))
        node = self.zk.get(schema.osd(osd_id, "node")) or "its node"
        task = self.runtime.task_monitor.begin(tasks.OSD_REMOVE, {"osd": osd_id},
                                               f"Asking {node} to drain and remove OSD {osd_id} ({schema.CMD_CEPH})")
        if on_task is not None:
            on_task(task.id)
        with _ending(task):
            result = self.channel.run(f"osd_remove {osd_id}", self.runtime.config["ceph.osd_remove_timeout"])
            if result == IGNORED:
                raise BadRequest("ERROR Command ignored by node.")  # v0.6's text, without the colon
            if not result:
                raise BadRequest("ERROR: Failed to remove OSD; check node logs for details.")
            message = quoted(f'Removed OSD "{osd_id}" from the cluster.')
            task.succeed(message)
        return message

    def ids(self) -> list[str]:
        return sorted(self.zk.children(schema.OSDS) or [], key=lambda value: (len(value), value))

    def _objects(self, ids: list[str]) -> list[dict]:
        stats = self.read_stats(schema.osd(osd_id, "stats") for osd_id in ids)
        return [{"id": osd_id, "stats": stats[schema.osd(osd_id, "stats")]} for osd_id in ids]

    def list(self, limit: str | None) -> list[dict]:
        ids = self.ids()
        if limit:
            pattern = matching.fuzzy(limit)
            ids = [osd_id for osd_id in ids if pattern.match(osd_id)]
        if not ids:
            raise NotFound("OSD not found.")
        return self._objects(ids)  # never collapsed (v0.6)

    def get(self, osd_id: str) -> list[dict]:
        if osd_id not in self.ids():
            raise NotFound("OSD not found.")
        return self._objects([osd_id])

    def state(self, osd_id: str) -> dict:
        stats = self.get(osd_id)[0]["stats"]
        return {"id": osd_id, "in": stats.get("in", 0), "up": stats.get("up", 0)}

    @bounded("set OSD {0} {1}")
    def set_state(self, osd_id: str, state: str) -> str:
        if osd_id not in self.ids():
            raise NotFound(quoted(f'ERROR: No OSD with ID "{osd_id}" is present in the cluster.'))
        ret, _, reason = self.client.run(f"osd {state}", ids=[osd_id])
        word = "online" if state == "in" else "offline"
        if ret != 0:
            raise ApiError(f"ERROR: Failed to set OSD {word}: {reason or f'error {ret}'}", 400)
        self._record_state(osd_id)
        return f"Set OSD {osd_id} {word} in the cluster."

    def _record_state(self, osd_id: str) -> None:
        """Ceph first, then its key: the OSD's ``in`` and ``up`` as the new OSD map has them, so that the next
        read shows the change (it waited up to a collector interval, showing the old state meanwhile)."""
        dump = json.loads(self.client.mon_command("osd dump", format="json"))
        entry = next((osd for osd in dump.get("osds", []) if str(osd.get("osd")) == osd_id), None)
        path = schema.osd(osd_id, "stats")
        try:
            stats = json.loads(self.zk.get(path) or "{}")
        except ValueError:
            stats = {}
        if entry is None or not isinstance(stats, dict):
            return  # the collector records it as it finds it
        self.zk.write({path: json.dumps({**stats, "in": entry.get("in"), "up": entry.get("up")})})

    @bounded("{1} OSD option {0}")
    def set_option(self, option: str, action: str) -> str:
        if not OPTION.match(option):
            raise BadRequest(f"Parameter 'option': expected a Ceph OSD flag such as noout, got {option!r}")
        ret, _, reason = self.client.run(f"osd {action}", key=option)
        if ret != 0:
            raise ApiError(f"ERROR: Failed to {action} OSD property {option}: {reason or f'error {ret}'}", 400)
        return f"{'Set' if action == 'set' else 'Unset'} OSD property {option} on the cluster."

    def statistics(self) -> dict[str, str]:
        """/ceph/osds/<id>/stats values (ceph.md §2.2) for the OSDs recorded in ZooKeeper."""
        ids = self.ids()
        if not ids:
            return {}
        dump = json.loads(self.client.mon_command("osd dump", format="json"))
        usage = json.loads(self.client.mon_command("osd df", format="json"))
        dump = {str(osd["osd"]): osd for osd in dump["osds"]}
        usage = {str(node["id"]): node for node in usage["nodes"]}
        table = self._status_table()
        out = {}
        for osd_id in ids:
            if osd_id not in dump or osd_id not in usage or osd_id not in table:
                continue  # as v0.6: nothing written when a source lacks the OSD
            entry, use, row = dump[osd_id], usage[osd_id], table[osd_id]
            out[schema.osd(osd_id, "stats")] = json.dumps({
                "uuid": entry.get("uuid"), "up": entry.get("up"), "in": entry.get("in"),
                "primary_affinity": entry.get("primary_affinity"), "utilization": use.get("utilization"),
                "var": use.get("var"), "pgs": use.get("pgs"), "kb": use.get("kb"), "weight": use.get("crush_weight"),
                "reweight": use.get("reweight"), **row,
            })
        return out

    def _status_table(self) -> dict[str, dict]:
        """`ceph osd status` (a manager command answering a text table), parsed as v0.6 nodes did."""
        import rados
        try:
            with self.client.handle() as cluster:
                ret, out, _ = cluster.mgr_command(json.dumps({"prefix": "osd status"}), b"",
                                                  timeout=int(max(1, self.client.timeout)))
        except rados.Error:
            return {}
        rows = {}
        for line in out.decode("utf-8", errors="replace").splitlines():
            tokens = [token for token in re.sub(r"\x1b\[[0-9;]*m", "", line).split() if token != "|"]
            if len(tokens) >= 9 and tokens[0].isdigit():
                rows[tokens[0]] = {"node": tokens[1].split(".")[0], "used": tokens[2], "avail": tokens[3],
                                   "wr_ops": tokens[4], "wr_data": tokens[5], "rd_ops": tokens[6],
                                   "rd_data": tokens[7], "state": tokens[8]}
        return rows

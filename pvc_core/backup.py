"""The cluster's configuration as one JSON document: ``GET /backup`` and ``POST /restore`` (PVC 1.x).

The document is PVC 1.x's backup format in v0.6 layout: ``{path: value}`` for
every persistent key of the tree (``/zookeeper`` and ephemeral keys, which
belong to live sessions, are left out). A restore makes the tree equal to the
document: it deletes what the document lacks (only under PVC's own roots and
the document's top-level keys; other software's trees in the same ensemble
stay), creates what is missing and sets what differs. ZooKeeper refuses one
transaction above about 1 MB, so the changes go in transactions of bounded
size; the restore is therefore not atomic. While it runs, ``/pvcapid/restore``
records it; if one of its transactions fails, the tree as it was before is
written back the same way and the record removed. Only when that fails too
(ZooKeeper gone half-way) does the record stay: the tree is then part old,
part restored, ``GET /backup`` answers 409, and posting the same document
again finishes the restore (it applies only what still differs).

``/pvcapid`` is left out of both: it holds the API daemons' own state (sessions
logged out, rollbacks and restores under way, command locks), not the cluster's
configuration. A restore neither deletes nor writes it, and ignores the keys of
it an older backup holds: deleting it failed every restore whose document lacked
it (its own record is a child), and writing a rollback's record back would
describe work that is not under way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NoNodeError

from . import schema
from .errors import ApiError, BadRequest, Conflict
from .params import STRING, Param, confirmation
from .routes import ADMIN, Route
from .shapes import MESSAGE, STR, map_of, nullable
from .taskmonitor import Cancelled, Kind
from .taskroutes import announce, task_headers

log = logging.getLogger("pvc.backup")

MARKER = f"{schema.DAEMON_ROOT}/restore"
# One transaction's share: ZooKeeper's default jute.maxbuffer is 1 MB per request.
CHUNK_OPS = 500
CHUNK_BYTES = 512 * 1024
PVC_ROOTS = sorted({"/" + path.split("/")[1] for path in schema.BASE_TREE})
DOCUMENT = map_of(nullable(STR))
RESTORE = "core.restore"


def _daemons_own(path: str) -> bool:
    return path == schema.DAEMON_ROOT or path.startswith(f"{schema.DAEMON_ROOT}/")


def read_tree(zk: Any) -> tuple[dict[str, str], set[str]]:
    """Every persistent key (path -> value, parents first) but the daemons' own (``/pvcapid``), and the paths
    that are or hold ephemeral keys.

    One pipelined round trip per level of the tree, each bounded like any ZooKeeper wait.
    """
    zk.require()
    client = zk.client
    values: dict[str, str] = {}
    pinned: set[str] = set()
    level = [f"/{child}" for child in sorted(zk.wait(client.get_children_async("/")))
             if child != "zookeeper" and not _daemons_own(f"/{child}")]
    while level:
        pending = [(path, client.get_async(path), client.get_children_async(path)) for path in level]
        level = []
        for path, data, children in pending:
            try:
                raw, stat = zk.wait(data)
                kids = zk.wait(children)
            except NoNodeError:
                continue  # deleted meanwhile
            if stat.ephemeralOwner:
                parts = path.split("/")
                pinned.update("/".join(parts[:index]) for index in range(2, len(parts) + 1))
                continue
            values[path] = "" if raw is None else raw.decode("utf-8", errors="replace")
            level.extend(f"{path}/{child}" for child in sorted(kids))
    return values, pinned


def backup(ctx: Any, params: dict) -> dict:
    zk = ctx.runtime.zk
    if zk.exists(MARKER):
        raise Conflict(f"A restore is running or stopped half-way ({MARKER}: {zk.get(MARKER)}); the tree is not "
                       "a consistent configuration now. POST the same document to /restore again to finish it")
    return read_tree(zk)[0]


def _valid_path(path: Any) -> str | None:
    """Why ``path`` is no key a backup can hold, or None."""
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        return "expected an absolute ZooKeeper path other than '/'"
    if path.endswith("/") or "//" in path:
        return "expected no empty path segment"
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        return "expected no control characters"
    if any(segment in (".", "..") for segment in path.split("/")[1:]):
        return "expected no '.' or '..' segment"
    if path == "/zookeeper" or path.startswith("/zookeeper/"):
        return "expected no key of ZooKeeper's own /zookeeper tree"
    return None


def validate(document: Any) -> dict[str, str]:
    """The document as ``{path: value}``, or a 400 saying what is wrong with it."""
    if not isinstance(document, dict):
        raise BadRequest("Cluster backup: expected a JSON object of ZooKeeper paths to values (GET /backup's "
                         "answer)")
    if not document:
        raise BadRequest("Cluster backup: the JSON object is empty; expected ZooKeeper paths to values (GET "
                         "/backup's answer)")
    out: dict[str, str] = {}
    for path, value in document.items():
        problem = _valid_path(path)
        if problem:
            raise BadRequest(f"Cluster backup: key {path[:200]!r}: {problem}")
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"Cluster backup: value of {path!r}: expected a string or null, got "
                             f"{type(value).__name__}")
        size = len(path.encode()) + len((value or "").encode())
        if size > CHUNK_BYTES:
            raise BadRequest(f"Cluster backup: key {path[:200]!r} with its value is {size} bytes; expected at most "
                             f"{CHUNK_BYTES} (ZooKeeper refuses a request above about 1 MB, and drops the "
                             "connection that sent it)")
        if not _daemons_own(path):  # an older backup's: no configuration (the module's docstring)
            out[path] = value or ""
    orphans = sorted(path for path in out if path.rsplit("/", 1)[0] and path.rsplit("/", 1)[0] not in out)
    if orphans:
        raise BadRequest(f"Cluster backup: expected every key's parent in the document; missing the parent of "
                         f"{', '.join(orphans[:5])}")
    missing = sorted(set(schema.BASE_TREE) - set(out))
    if missing:
        raise BadRequest(f"Cluster backup: expected a PVC cluster's base keys; missing {', '.join(missing)}")
    return out


def _plan(current: dict[str, str], pinned: set[str], target: dict[str, str],
          written: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """``(kind, path, value)`` operations that make ``current`` equal to ``target``: deletes (deepest
    first), then creates (parents first) and sets. Keys held by live sessions are left alone. Only PVC's roots
    and the target's top-level keys are touched, and, for the undo of a restore, those of the document it
    ``written`` (keys it made under a top-level key the tree did not have)."""
    roots = set(PVC_ROOTS) | {"/" + path.split("/")[1] for path in (*target, *(written or ()))}
    gone = [path for path in current if path not in target and path not in pinned
            and "/" + path.split("/")[1] in roots]
    ops = [("delete", path, "") for path in sorted(gone, key=lambda p: (-p.count("/"), p))]
    for path in sorted(target, key=lambda p: (p.count("/"), p)):
        if path in pinned and path not in current:
            continue  # an ephemeral key of a live session holds the path
        if path not in current:
            ops.append(("create", path, target[path]))
        elif current[path] != target[path]:
            ops.append(("set", path, target[path]))
    return ops


def _apply(zk: Any, ops: list[tuple[str, str, str]], what: str,
           between: Callable[[int, int], None] | None = None) -> int:
    """Commit ``ops`` in bounded transactions; how many were committed (raises on the first failure).
    ``between(done, total)`` is called before each transaction and after the last (a task's progress, and
    where a cancel stops it)."""
    chunks: list[list[tuple[str, str, str]]] = [[]]
    size = 0
    for op in ops:
        cost = len(op[1]) + len(op[2].encode()) + 32
        if chunks[-1] and (len(chunks[-1]) >= CHUNK_OPS or size + cost > CHUNK_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += cost
    done = 0
    chunks = [chunk for chunk in chunks if chunk]
    for index, chunk in enumerate(chunks):
        if between is not None:
            between(index, len(chunks))
        transaction = zk.transaction()
        for kind, path, value in chunk:
            if kind == "delete":
                transaction.delete(path)
            elif kind == "create":
                transaction.create(path, value.encode())
            else:
                transaction.set_data(path, value.encode())
        zk.commit(transaction, f"{what} (transaction {index + 1})")
        done += 1
    if between is not None:
        between(done, len(chunks))
    return done


def _unrecord(zk: Any, made_root: bool) -> None:
    """Remove the restore record, and its parent when the restore made it and nothing else is in it."""
    zk.delete([MARKER])
    if made_root and not zk.children(schema.DAEMON_ROOT):
        zk.delete([schema.DAEMON_ROOT])


def restore(ctx: Any, params: dict) -> dict:
    zk = ctx.runtime.zk
    document = ctx.document
    if document is None:
        if params["cluster_data"] is None:
            raise BadRequest("Cluster backup: expected the JSON document as the body (Content-Type: "
                             "application/json) or as parameter 'cluster_data' (PVC 1.x)")
        try:
            document = json.loads(params["cluster_data"])
        except ValueError as exc:
            raise BadRequest(f"Parameter 'cluster_data': expected a JSON cluster backup ({exc})") from None
    target = validate(document)
    current, pinned = read_tree(zk)
    ops = _plan(current, pinned, target)
    if not ops:
        return {"message": "Restore completed successfully: the cluster already held this configuration."}
    record = {MARKER: json.dumps({"started": time.time(), "keys": len(target)})}
    made_root = not zk.exists(schema.DAEMON_ROOT)
    if made_root:  # a fresh ensemble: the record's parent is made for it
        record[schema.DAEMON_ROOT] = ""

    def apply(handle: Any) -> str:
        def between(done: int, total: int) -> None:
            if done:
                handle.step(done, total, f"Committed {done} of {total} transactions")
            if done < total:
                handle.stop_if_cancelled(f"the restore after {done} of {total} transactions")

        zk.write(record)
        try:
            count = _apply(zk, ops, "restore", between)
        except ApiError as exc:
            log.error("restore failed (%s); writing the previous tree back", exc.message)
            try:
                now, pinned_now = read_tree(zk)
                _apply(zk, _plan(now, pinned_now, current, written=target), "undo of a failed restore")
                _unrecord(zk, made_root)
            except ApiError as undo:
                raise ApiError(f"Restore failed ({exc.message}) and so did writing the previous tree back "
                               f"({undo.message}): the tree is part old, part restored, as {MARKER} records. POST "
                               "the same document again to finish the restore", undo.status) from None
            if isinstance(exc, Cancelled):
                raise Cancelled(f"{exc.message}; the previous tree was written back, nothing was changed") from None
            raise ApiError(f"Restore failed ({exc.message}); the previous tree was written back, nothing was "
                           "changed", exc.status) from None
        _unrecord(zk, made_root)
        return f"Restore completed successfully: {len(ops)} changes in {count} transactions."
    return {"message": ctx.runtime.task_monitor.run(RESTORE, {"keys": len(target), "changes": len(ops)},
                                                    f"Restoring {len(target)} keys ({len(ops)} changes)", apply,
                                                    announce(ctx))}


def recover(runtime: Any, args: dict) -> str:
    """A restore cut by its daemon's end cannot be undone (the tree before it was only in that process)."""
    if runtime.zk.exists(MARKER):
        return (f"the tree is part old, part restored, as {MARKER} records: POST the same document to /restore "
                "again to finish it")
    return "the restore had been completed"


def kinds(runtime: Any) -> list[Kind]:
    return [Kind(RESTORE, "core", lambda: 30 * 86400.0, "a month", recover=lambda args: recover(runtime, args))]


CONFIRM = confirmation("Restore is destructive; please confirm with the argument 'yes-i-really-mean-it'.")


def routes() -> list[Route]:
    core = ("core",)
    return [
        # admin: the whole configuration at once, ready to be restored into another cluster
        Route("GET", "/backup", backup, summary="The cluster's ZooKeeper tree as JSON, path to value (PVC 1.x)",
              tags=core, returns=DOCUMENT, responses={409: "A restore is running or stopped half-way"},
              scope=ADMIN),
        # admin: it replaces the whole cluster tree
        Route("POST", "/restore", restore, (
            CONFIRM,
            Param("cluster_data", STRING, help="the backup as JSON text (PVC 1.x); or send it as the JSON body"),
        ), summary="Replace the cluster's ZooKeeper tree with a backup (PVC 1.x; a task)", tags=core,
            returns=MESSAGE, headers=task_headers(409, 503), scope=ADMIN, json_document=True,
            responses={409: "A concurrent change during the restore, or a cancel (DELETE /tasks/<id>); the previous "
                            "tree was written back"}),
    ]

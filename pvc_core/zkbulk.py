"""Warming a view in bulk: ZooKeeper's multiRead and SetWatches requests, which kazoo does not offer.

A view of 10,000 VMs follows 100,000 znodes. Read one request each, with a
watch each, kazoo spends most of the warm-up in its own per-request work (a
wake-up, a select and a send per request). Two requests of the ZooKeeper
protocol do the same in bulk:

* multiRead (ZooKeeper 3.6+): many reads in one request; it sets no watches;
* SetWatches (what clients send to re-register watches after a reconnect):
  registers data and exist watches on many paths at once, relative to a zxid;
  the server fires at once every watch whose znode changed after that zxid.

So a warm-up reads everything with multiRead after noting the server's zxid,
then registers every watch with SetWatches relative to that zxid: a change
made between the read and the registration fires its watch, exactly as if the
watch had been set by the read. The callbacks are placed in kazoo's own
watcher tables, so events reach them through kazoo's normal dispatch, and a
fired watch is re-set by an ordinary read, as before.

Older ensembles (v0.6 clusters ran ZooKeeper 3.4) do not know multiRead:
``supported`` probes on a connection of its own, never the daemon's session.
"""

from __future__ import annotations

import logging
from collections import namedtuple
from collections.abc import Callable, Iterable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.serialization import (
    MultiHeader,
    ZnodeStat,
    int_struct,
    long_struct,
    multiheader_struct,
    read_buffer,
    stat_struct,
    write_string,
)

log = logging.getLogger("pvc.zk")

READS_PER_REQUEST = 500  # a VM's XML is ~1.5 KB: responses stay near a megabyte
WATCH_BYTES_PER_REQUEST = 128 * 1024  # what the Java client sends per SetWatches


class MultiRead(namedtuple("MultiRead", "paths")):
    """``getData`` of every path, in one request (OpCode.multiRead); None for an absent znode."""

    type = 22

    def serialize(self) -> bytearray:
        out = bytearray()
        for path in self.paths:
            out.extend(MultiHeader(4, False, -1).serialize())
            out.extend(write_string(path))
            out.append(0)  # no watch: SetWatches registers them afterwards
        out.extend(multiheader_struct.pack(-1, True, -1))
        return out

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> list[tuple[bytes, Any] | None]:
        results: list[tuple[bytes, Any] | None] = []
        while True:
            header, offset = MultiHeader.deserialize(data, offset)
            if header.done:
                return results
            if header.type == -1:  # an error result: only NoNode is expected for a read
                error = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                if error != NoNodeError.code:
                    raise RuntimeError(f"multiRead: error {error}")
                results.append(None)
            else:
                value, offset = read_buffer(data, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(data, offset))
                offset += stat_struct.size
                results.append((value or b"", stat))


class SetWatches(namedtuple("SetWatches", "zxid data exist child")):
    """Register watches on many paths at once (OpCode.setWatches), relative to ``zxid``."""

    type = 101

    def serialize(self) -> bytearray:
        out = bytearray(long_struct.pack(self.zxid))
        for paths in (self.data, self.exist, self.child):
            out.extend(int_struct.pack(len(paths)))
            for path in paths:
                out.extend(write_string(path))
        return out

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> bool:
        return True


class RemoveWatches(namedtuple("RemoveWatches", "path kind")):
    """Drop this session's watches on one path (OpCode.removeWatches, ZooKeeper 3.5+); ``kind`` 2 is
    data watches, exists watches included. An answer of NoWatcherError means there were none."""

    type = 18

    def serialize(self) -> bytearray:
        out = bytearray(write_string(self.path))
        out.extend(int_struct.pack(self.kind))
        return out

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> bool:
        return True


def forget_data_watches(client: KazooClient, paths: Iterable[str], watcher: Callable, server: bool) -> None:
    """Forget ``watcher``'s data and exists watches on ``paths``. For the keys of a deleted child,
    whose exists watches would otherwise wait for a path that never comes back.

    Only ``watcher`` leaves kazoo's registry; ZooKeeper holds one watch per path for the whole
    session, so it is removed there (``server``: 3.5+) only when no other watcher (another view,
    whose root is one of these keys) still wants that path. Fire and forget: a failure leaves one
    watch behind.
    """
    for path in paths:
        watchers = client._data_watchers.get(path)
        if watchers is None:
            continue
        watchers.discard(watcher)
        if len(watchers):
            continue
        client._data_watchers.pop(path, None)
        if server:
            _call(client, RemoveWatches(path, 2))


def _call(client: KazooClient, request: Any) -> Any:
    result = client.handler.async_result()
    client._call(request, result)
    return result


def supported(hosts: str, timeout: float) -> bool:
    """Whether the ensemble answers multiRead, asked on a throwaway connection."""
    probe = KazooClient(hosts=hosts, timeout=max(timeout, 4.0), connection_retry=None, command_retry=None,
                        logger=logging.getLogger("pvc.zk.probe"))
    try:
        probe.start(timeout=timeout)
        answer = _call(probe, MultiRead(["/"])).get(timeout=timeout)
        return isinstance(answer, list) and len(answer) == 1
    except Exception as exc:  # noqa: BLE001 - any failure means: read one znode per request
        log.info("ZooKeeper does not answer multiRead (%s): views warm one read per key", type(exc).__name__)
        return False
    finally:
        try:
            probe.stop()
            probe.close()
        except Exception:  # noqa: BLE001
            pass


def read_and_watch(client: KazooClient, paths: list[str], watcher: Callable, timeout: float,
                   still_wanted: Callable[[], bool] = lambda: True) -> dict[str, tuple[str, int] | None] | None:
    """``{path: (value, mzxid) or None when absent}``, with ``watcher`` set on every path (a data watch,
    or an exist watch for an absent one); None when ``still_wanted`` turned false meanwhile."""
    client.exists("/")  # a fresh zxid: every change after the reads below has a higher one
    since = client.last_zxid
    pending = [(chunk, _call(client, MultiRead(chunk)))
               for chunk in (paths[start:start + READS_PER_REQUEST]
                             for start in range(0, len(paths), READS_PER_REQUEST))]
    found: dict[str, tuple[str, int] | None] = {}
    for chunk, result in pending:
        if not still_wanted():
            return None
        for path, answer in zip(chunk, result.get(timeout=timeout), strict=True):
            found[path] = None if answer is None else (answer[0].decode("utf-8", errors="replace"),
                                                       answer[1].mzxid)
    for path in paths:  # kazoo dispatches a fired watch to the callbacks in these tables
        client._data_watchers[path].add(watcher)
    present = [path for path in paths if found[path] is not None]
    absent = [path for path in paths if found[path] is None]
    for data, exist in _batches(present, absent):
        _call(client, SetWatches(since, data, exist, [])).get(timeout=timeout)
    return found


def _batches(present: list[str], absent: Iterable[str]) -> Iterable[tuple[list[str], list[str]]]:
    batch: tuple[list[str], list[str]] = ([], [])
    size = 0
    for kind, paths in ((0, present), (1, absent)):
        for path in paths:
            batch[kind].append(path)
            size += len(path) + 4
            if size >= WATCH_BYTES_PER_REQUEST:
                yield batch
                batch, size = ([], []), 0
    if batch[0] or batch[1]:
        yield batch

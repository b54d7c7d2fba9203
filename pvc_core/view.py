"""A watched, in-memory view of one ZooKeeper subtree: ``<root>/<child>`` and ``<root>/<child>/<key>``.

Listing 1,000 VMs with one read per key costs about a second; from memory it
costs milliseconds. The view is warmed once with pipelined reads that set a
one-shot watch on every key, and every watch that fires re-reads its key and
sets the next watch, so the view follows whatever node daemons and other API
instances write. Only the declared keys of each child are followed (a VM's
``consolelog``, rewritten by node daemons twice a second, is not).

Consistency: ``ready`` is false while warming and from a lost connection
until the re-warm after it (kazoo does not re-register watches on a new
connection, so the view re-reads everything); callers read ZooKeeper
directly meanwhile (``snapshot`` does that for them). Writes made through this process
are applied to the view as soon as they commit (``apply``), so a write is
visible to the next read from the same daemon even before its watch fires; a
later watch re-read always fetches the current value, so the two converge.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import Callback, EventType, KazooState

from . import etags, zkbulk
from .zk import ZooKeeper, decode

log = logging.getLogger("pvc.view")
WARM_WINDOW = 2000  # reads in flight at once while warming
_RECHECK = type("Recheck", (), {"type": "RECHECK"})()  # an event of our own: read the children again
_ABSENT = object()  # not in the view at all (None is "known to be absent in ZooKeeper")


# Round trips ``SubtreeView.sync`` makes at most after the first (the longest chain of re-reads one
# change starts is five; others' changes meanwhile may keep the count above zero).
CHAIN_ROUNDS = 6


class SubtreeView:
    """Values of ``root``'s children and of the declared keys below each child."""

    def __init__(self, zk: ZooKeeper, root: str, keys: Iterable[str], index: Iterable[str] = ()):
        self.zk = zk
        self.root = root.rstrip("/")
        self.keys = tuple(keys)
        self.index_keys = tuple(index)
        self._values: dict[str, str | None] = {}   # path -> value (None: key absent)
        # Every change of a child's values gives it a new, never reused revision; a serialized answer
        # kept with the revision it was built from is current exactly while the two are equal.
        self._tick = 0
        self._revisions: dict[str, int] = {}
        # child -> (revision, answer, its ETag or None until ``answer`` made it)
        self._encoded: dict[str, tuple[int, bytes, str | None]] = {}
        # value -> children, per indexed key (an absent key counts as ""): filters and counts that do
        # not visit every child.
        self._index: dict[str, dict[str, set[str]]] = {key: {} for key in self.index_keys}
        self._order: tuple[int, list[tuple[str, str]]] = (-1, [])
        # Set by the owning service: how each child's answer is built (built for all children before
        # the view says it is ready, so that the first list after start costs a join), and how long a
        # read made while the view warms waits for it instead of reading ZooKeeper directly.
        self.encoder: Callable[[str, dict], bytes] | None = None
        self.warmup_wait = 0.0
        self._mzxid: dict[str, int] = {}            # path -> mzxid of the stored value
        # Paths whose stored mzxid is a stand-in, not ZooKeeper's (``apply`` of a commit whose reply told
        # no zxid): an ETag (``answer``) is not made from them until a read stores the real one.
        self._unstamped: set[str] = set()
        # One bound method for every watch: ``self._data_fired`` would make a new object per path.
        self._data_watch = self._data_fired
        self._children: set[str] = set()
        self._lock = threading.RLock()
        self._generation = 0
        self._ready = threading.Event()
        self._started = False
        self._names_revision = 0  # bumps when a child or a child's own value changes
        self._by_value: tuple[int, dict[str, str]] = (-1, {})
        self._names: tuple[int, dict[str, str]] = (-1, {})
        # Since when (monotonic) the view may have missed changes: from its creation until its first
        # warm-up, and from a lost or suspended connection until the re-warm; None while it is current.
        self._stale_since: float | None = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.zk.client.add_listener(self._state_changed)
        if self.zk.connected:
            # In the background: the daemon answers (from ZooKeeper directly) while this runs.
            self.zk.client.handler.spawn(self._warm)

    def _state_changed(self, state: str) -> None:
        if state in (KazooState.LOST, KazooState.SUSPENDED):
            # kazoo does not re-register watches on a new connection (no SetWatches),
            # so whatever happens meanwhile would be missed: read directly until re-warmed.
            self._ready.clear()
            if self._stale_since is None:
                self._stale_since = time.monotonic()
        elif state == KazooState.CONNECTED and not self._ready.is_set():
            self.zk.client.handler.spawn(self._warm)  # off the kazoo event thread

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def size(self) -> int:
        """How many children the view holds now (from memory; none while it has not warmed)."""
        return len(self._children)

    def staleness(self) -> float:
        """Seconds since the view last held everything ZooKeeper committed: 0 while it is ready (its
        watches keep it current), else the time since it was created or lost its connection."""
        since = self._stale_since
        return 0.0 if since is None or self._ready.is_set() else max(0.0, time.monotonic() - since)

    def _warm(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._values.clear()
            self._mzxid.clear()
            self._unstamped.clear()
            self._children.clear()
            self._encoded.clear()
            self._revisions.clear()
            self._index = {key: {} for key in self.index_keys}
            self._names_revision += 1
        try:
            children = self.zk.wait(self.zk.client.get_children_async(self.root, watch=self._children_fired))
        except NoNodeError:
            children = []
            self._watch_root_creation()
        except Exception:  # noqa: BLE001 - retried on the next CONNECTED
            log.warning("could not warm the view of %s", self.root, exc_info=True)
            return
        with self._lock:
            self._children = set(children)
        # Pipelined reads that set watches; results are stored here, without a
        # per-read callback (handing 100,000 completions to kazoo's callback
        # thread doubled the warm-up time).
        client = self.zk.client
        paths = [path for child in children for path in self._paths(child)]
        if self.zk.bulk:
            self._warm_bulk(paths, generation)
            return
        # In windows of WARM_WINDOW reads: deep enough to keep the server busy, and the pending
        # results (each with its own lock) never all exist at once, which kept RSS high for good.
        absent = []
        for start in range(0, len(paths), WARM_WINDOW):
            pending = [(path, client.get_async(path, watch=self._data_watch))
                       for path in paths[start:start + WARM_WINDOW]]
            for path, result in pending:
                if generation != self._generation:
                    return
                try:
                    data, stat = self.zk.wait(result)
                except NoNodeError:
                    absent.append(path)
                    continue
                except Exception:  # noqa: BLE001 - connection trouble: the next CONNECTED re-warms
                    return
                self._store(path, decode(data), stat.mzxid)
        for path in absent:
            self._store(path, None, None, authoritative=False)
            self._watch_creation(path, generation)
        self._become_ready(generation)

    def _warm_bulk(self, paths: list[str], generation: int) -> None:
        """Read every path and set every watch in bulk (pvc_core/zkbulk.py), then store as reads do."""
        try:
            found = zkbulk.read_and_watch(self.zk.client, paths, self._data_watch, self.zk.request_timeout * 4,
                                          lambda: generation == self._generation)
        except Exception:  # noqa: BLE001 - connection trouble: the next CONNECTED re-warms
            log.warning("could not warm the view of %s in bulk", self.root, exc_info=True)
            return
        if found is None or generation != self._generation:
            return
        for path, answer in found.items():
            if answer is None:
                self._store(path, None, None, authoritative=False)
            else:
                self._store(path, answer[0], answer[1])
        self._become_ready(generation)

    def _become_ready(self, generation: int) -> None:
        if generation != self._generation:
            return
        if self.encoder is not None:
            with self._lock:
                todo = [(child, self._revisions.get(child), self._entry(child)) for child in self._children]
            built = {}
            for child, revision, entry in todo:
                if entry is not None and revision is not None:
                    try:
                        built[child] = (revision, self.encoder(child, entry))
                    except Exception:  # noqa: BLE001 - one odd child must not keep the view from ready
                        log.warning("view of %s: could not build the answer of %s", self.root, child,
                                    exc_info=True)
            self._keep(built)
        if generation == self._generation:
            self._stale_since = None
            self._ready.set()
            log.info("view of %s ready: %d children", self.root, len(self._children))

    def _await(self) -> None:
        """While the view warms, a read waits for it (bounded by ``warmup_wait``) rather than reading the
        tree directly: a thousand requests during a warm-up must not become a thousand full reads."""
        if not self._ready.is_set() and self._started and self.warmup_wait > 0 and self.zk.connected:
            self._ready.wait(self.warmup_wait)

    def _paths(self, child: str) -> list[str]:
        base = f"{self.root}/{child}"
        return [base] + [f"{base}/{key}" for key in self.keys]

    # -- watches ---------------------------------------------------------------------------

    def _watch_read(self, path: str, generation: int) -> Any:
        """Read ``path`` with a watch; on completion store the value (or note its absence)."""
        self._reading(1)
        result = self.zk.client.get_async(path, watch=self._data_watch)

        def done(async_result: Any) -> None:
            try:
                if generation != self._generation:
                    return
                try:
                    data, stat = async_result.get_nowait()
                except NoNodeError:
                    self._store(path, None, None)
                    self._watch_creation_if_child_lives(path, generation)
                    return
                except Exception:  # noqa: BLE001 - connection trouble: the re-warm repairs it
                    return
                self._store(path, decode(data), stat.mzxid)
            finally:
                self._reading(-1)

        result.rawlink(done)
        return result

    def _reading(self, step: int) -> None:
        """Count a watch re-read sent (+1) or stored (-1); a re-read sent from a completion is
        counted before that completion's own ends, so the count is zero only between chains."""
        self.zk.view_reads.add(step)

    def _watch_creation_if_child_lives(self, path: str, generation: int) -> None:
        """A key found absent: watch for its creation while its child is in the view.

        A child deleted key by key (as v0.6 daemons delete) still has keys when the
        first ones go, so exists watches are set on keys of a child that is going;
        ``_forget`` removes them once the children watch reports the child gone. A
        child deleted and created again before the children watch looks again is
        never reported gone, and these watches are what see its keys come back.
        """
        child = path[len(self.root) + 1:].split("/", 1)[0]
        if child in self._children:
            self._watch_creation(path, generation)

    def _forget(self, children: Iterable[str]) -> None:
        """Drop the watches left on deleted children's keys (see ``_watch_creation_if_child_lives``: a
        child deleted key by key, as v0.6 daemons do, has live keys when the first ones go)."""
        paths = [path for child in children for path in self._paths(child)]
        if paths:
            zkbulk.forget_data_watches(self.zk.client, paths, self._data_watch, server=self.zk.bulk_known)

    def _watch_creation(self, path: str, generation: int) -> None:
        """Watch an absent key for its creation; if it appeared meanwhile, read it."""
        self._reading(1)
        exists = self.zk.client.exists_async(path, watch=self._data_watch)
        exists.rawlink(lambda found: self._created_meanwhile(found, path, generation))

    def _created_meanwhile(self, found: Any, path: str, generation: int) -> None:
        try:
            self._check_created(found, path, generation)
        finally:
            self._reading(-1)

    def _check_created(self, found: Any, path: str, generation: int) -> None:
        try:
            stat = found.get_nowait()
        except Exception:  # noqa: BLE001
            return
        child = path[len(self.root) + 1:].split("/", 1)[0]
        if child not in self._children:
            # The child went while this watch was being set (after ``_forget`` ran for it).
            zkbulk.forget_data_watches(self.zk.client, [path], self._data_watch, server=self.zk.bulk_known)
            return
        if stat is not None and generation == self._generation:
            self._watch_read(path, generation)

    def _store(self, path: str, value: str | None, mzxid: int | None, authoritative: bool = True) -> None:
        """Store a read's result unless a newer one (higher mzxid) is already there.

        Warm-up results are stored by the warming thread while watch re-reads
        are stored by kazoo's callback thread, so results can arrive out of
        order; the znode's mzxid orders them. A warm-up "absent" never replaces
        a value a re-read found.
        """
        with self._lock:
            child = path[len(self.root) + 1:].split("/", 1)[0]
            if child not in self._children:
                self._drop(path)
                return
            if value is None:
                if not authoritative and path in self._values:
                    return
                self._stamp(path, None)
            else:
                if mzxid is not None and mzxid < self._mzxid.get(path, -1):
                    return
                self._stamp(path, mzxid if mzxid is not None else 0)
            self._put(path, value)

    def _stamp(self, path: str, mzxid: int | None, own: bool = True) -> None:
        """Record the mzxid of a stored value (None: absent) and whether it is ZooKeeper's own (``own``;
        see ``answer``). A change of either renews the child's revision, also when the value itself is
        the same (a rewrite of it): an ETag kept with the child's answer is then made again (caller holds
        the lock)."""
        before = (self._mzxid.get(path), path in self._unstamped)
        if mzxid is None:
            self._mzxid.pop(path, None)
        else:
            self._mzxid[path] = mzxid
        if own:
            self._unstamped.discard(path)
        else:
            self._unstamped.add(path)
        if (self._mzxid.get(path), path in self._unstamped) != before:
            child = path[len(self.root) + 1:].split("/", 1)[0]
            if child in self._children:
                self._tick += 1
                self._revisions[child] = self._tick

    def _put(self, path: str, value: str | None) -> None:
        """Set one value (caller holds the lock), keeping revisions, indexes and names current."""
        old = self._values.get(path, _ABSENT)
        if old is not _ABSENT and old == value:
            return
        self._values[path] = value
        self._changed(path, old, value)

    def _drop(self, path: str) -> None:
        self._mzxid.pop(path, None)
        self._unstamped.discard(path)
        old = self._values.pop(path, _ABSENT)
        if old is not _ABSENT:
            self._changed(path, old, _ABSENT)

    def _changed(self, path: str, old: Any, new: Any) -> None:
        child, _, key = path[len(self.root) + 1:].partition("/")
        self._tick += 1
        if child in self._children:
            self._revisions[child] = self._tick
        else:  # a deleted child's keys going: nothing of it may stay behind
            self._revisions.pop(child, None)
            self._encoded.pop(child, None)
        if not key:
            self._names_revision += 1
            if new is _ABSENT:
                self._encoded.pop(child, None)
                self._revisions.pop(child, None)
        index = self._index.get(key)
        if index is not None:
            if old is not _ABSENT:
                members = index.get(old or "")
                if members is not None:
                    members.discard(child)
                    if not members:
                        del index[old or ""]
            if new is not _ABSENT:
                index.setdefault(new or "", set()).add(child)

    def _data_fired(self, event: Any) -> None:
        if event.type == EventType.NONE:
            return
        self._watch_read(event.path, self._generation)

    def _watch_root_creation(self) -> None:
        """Watch an absent root for its creation; if it is back already (deleted and re-created in
        quick succession), read its children now: an exists watch on a present znode would only
        report its deletion or a change of its own value, never its children."""
        self._reading(1)
        found = self.zk.client.exists_async(self.root, watch=self._children_fired)

        def done(result: Any) -> None:
            try:
                stat = result.get_nowait()
            except Exception:  # noqa: BLE001 - connection trouble: the re-warm repairs it
                return
            else:
                if stat is not None:
                    self._children_fired(_RECHECK)
            finally:
                self._reading(-1)
        found.rawlink(done)

    def _children_fired(self, event: Any) -> None:
        if event.type == EventType.NONE:
            return
        generation = self._generation
        self._reading(1)
        result = self.zk.client.get_children_async(self.root, watch=self._children_fired)

        def done(async_result: Any) -> None:
            try:
                self._children_listed(async_result, generation)
            finally:
                self._reading(-1)

        result.rawlink(done)

    def _children_listed(self, async_result: Any, generation: int) -> None:
        if generation != self._generation:
            return
        try:
            children = set(async_result.get_nowait())
        except NoNodeError:
            children = set()
            self._watch_root_creation()
        except Exception:  # noqa: BLE001
            return
        with self._lock:
            added = children - self._children
            removed = self._children - children
            self._children = children
            for child in removed:
                for path in self._paths(child):
                    self._drop(path)
            if added or removed:
                self._names_revision += 1
        self._forget(removed)
        for child in added:
            for path in self._paths(child):
                self._watch_read(path, generation)

    # -- reading and write-through ---------------------------------------------------------

    def apply(self, values: dict[str, Any] | None = None, deleted: Iterable[str] = (),
              zxid: int | None = None) -> None:
        """Record this process's committed writes (paths under the root only).

        ``zxid`` is the commit's, when its reply told it: a value some read
        stored with a later mzxid is newer and stays. Without it the write is
        taken as newer than anything stored, which holds because commits are
        applied in the order ZooKeeper made them (``ZooKeeper._commit``).
        """
        created: list[str] = []
        removed: list[str] = []
        with self._lock:
            values = values or {}
            for path, value in values.items():
                if not path.startswith(self.root + "/"):
                    continue
                child, _, rest = path[len(self.root) + 1:].partition("/")
                if not rest and child not in self._children:
                    # A child created by this write has no keys but those written with it;
                    # an existing child whose own value is rewritten keeps its other keys.
                    created.append(child)
                    self._children.add(child)
                    for sub in self._paths(child)[1:]:
                        if sub not in values:
                            self._put(sub, None)
                            self._stamp(sub, None, own=False)  # absent, as far as this write tells; its read will say
                if rest == "" or rest in self.keys:
                    known = self._mzxid.get(path, -1)
                    if zxid is not None and zxid < known:
                        continue
                    self._put(path, value if isinstance(value, str) else str(value))
                    # Our commit is newer than any reply still in flight for this key (a stand-in when the
                    # reply told no zxid: until a read stores ZooKeeper's, ``answer`` reads directly).
                    self._stamp(path, zxid if zxid is not None else known + 1, own=zxid is not None)
            for path in deleted:
                if not path.startswith(self.root + "/"):
                    continue
                child, _, rest = path[len(self.root) + 1:].partition("/")
                if not rest:
                    self._children.discard(child)
                    removed.append(child)
                    for sub in self._paths(child):
                        self._drop(sub)
                else:
                    self._drop(path)
            self._names_revision += 1
        self._forget(removed)
        # The children watch will not report these as new any more: watch their keys now.
        if self._started:
            for child in created:
                for path in self._paths(child):
                    self._watch_read(path, self._generation)

    def snapshot(self) -> dict[str, dict[str, str | None]]:
        """``{child: {"": value, key: value...}}`` from memory, or from ZooKeeper while warming."""
        self._await()
        if not self.ready:
            return self.read_direct()
        self.zk.require()
        with self._lock:
            out = {}
            for child in self._children:
                entry = self._entry(child)
                if entry is not None:
                    out[child] = entry
            return out

    def _entry(self, child: str) -> dict[str, str | None] | None:
        """A child's values, or None while any of its first reads is in flight (caller holds the lock)."""
        values = self._values
        base = f"{self.root}/{child}"
        if base not in values:
            return None
        entry = {"": values[base]}
        for key in self.keys:
            path = f"{base}/{key}"
            if path not in values:
                return None
            entry[key] = values[path]
        return entry

    def answer(self, child: str, encode: Callable[[str, dict], bytes]) -> tuple[bytes, str] | None:
        """One child's serialized answer and its ETag, as one consistent pair; None when the child does
        not exist.

        The ETag is ``pvc_core.etags.of_zxids`` of the mzxid of each znode the answer was built from
        (``_paths`` order, 0 for an absent key): the same from every daemon that holds the same state,
        and never one answer with the ETag of another. From memory (kept with the answer until the
        child's revision changes, which a new mzxid renews) when the view holds ZooKeeper's own mzxids
        for every znode of the child; else (warming, unwatched, right after this process's own
        create-only write) read directly, stats included.
        """
        self._await()
        if self.ready:
            self.zk.require()
            with self._lock:
                if child not in self._children:
                    return None
                revision = self._revisions.get(child)
                kept = self._encoded.get(child)
                if kept is not None and kept[0] == revision and kept[2] is not None:
                    # as made: whatever changed since (a value, an mzxid, a stand-in) renewed the revision
                    return kept[1], kept[2]
                paths = self._paths(child)
                values = self._values
                # every value read (none in flight) and every mzxid ZooKeeper's own
                stamped = all(path in values for path in paths) and self._unstamped.isdisjoint(paths)
                if stamped:
                    if values[paths[0]] is None:
                        return None
                    mzxid = self._mzxid
                    stamps = [mzxid.get(path, 0) for path in paths]
                    data = kept[1] if kept is not None and kept[0] == revision else None
                    entry = self._entry(child) if data is None else None
            if stamped:
                if data is None:
                    data = encode(child, entry)
                tag = etags.of_zxids(stamps)
                with self._lock:
                    if revision is not None and self._revisions.get(child) == revision:  # nothing changed meanwhile
                        self._encoded[child] = (revision, data, tag)
                return data, tag
        paths = self._paths(child)
        found = self.zk.get_stats(paths)
        if found[paths[0]][1] is None:
            return None
        entry = {"": found[paths[0]][0]}
        entry.update((key, found[path][0]) for key, path in zip(self.keys, paths[1:], strict=True))
        return encode(child, entry), etags.of_stats([stat for _, stat in map(found.get, paths)])

    def read_direct(self, children: Iterable[str] | None = None) -> dict[str, dict[str, str | None]]:
        """The same shape, read from ZooKeeper now (pipelined)."""
        if children is None:
            children = self.zk.children(self.root) or []
        children = list(children)
        values = self.zk.get_many(path for child in children for path in self._paths(child))
        out = {}
        for child in children:
            base = f"{self.root}/{child}"
            if values[base] is None:
                continue
            out[child] = {"": values[base], **{key: values[f"{base}/{key}"] for key in self.keys}}
        return out

    def one(self, child: str) -> dict[str, str | None] | None:
        """One child's entry: from memory when ready, else directly."""
        self._await()
        if self.ready:
            self.zk.require()
            with self._lock:
                if child not in self._children:
                    return None
                entry = self._entry(child)
                if entry is not None:
                    return entry
        return self.read_direct([child]).get(child)

    def names(self) -> dict[str, str]:
        """``{child: its own value}`` (a VM's name), cached until a child or name changes."""
        self._await()
        if not self.ready:
            children = self.zk.children(self.root) or []
            values = self.zk.get_many(f"{self.root}/{child}" for child in children)
            return {child: values[f"{self.root}/{child}"] for child in children
                    if values[f"{self.root}/{child}"] is not None}
        self.zk.require()
        with self._lock:
            revision, names = self._names
            if revision != self._names_revision:
                names = {child: self._values[f"{self.root}/{child}"] for child in self._children
                         if self._values.get(f"{self.root}/{child}") is not None}
                self._names = (self._names_revision, names)
            return names

    def entries(self, children: Iterable[str]) -> dict[str, dict[str, str | None]]:
        """The entries of some children only (a filtered list need not copy the rest)."""
        self._await()
        children = list(children)
        if not self.ready:
            return self.read_direct(children)
        self.zk.require()
        with self._lock:
            found = {child: self._entry(child) for child in children if child in self._children}
        missing = [child for child, entry in found.items() if entry is None]
        out = {child: entry for child, entry in found.items() if entry is not None}
        if missing:
            out.update(self.read_direct(missing))
        return out

    # The server's last zxid as of the latest completed ``sync``: everything committed up to it is
    # in the view. A later ``sync`` that finds the server still there needs one round trip only.
    _synced_zxid = 0

    def sync(self) -> None:
        """Return once the view holds every change ZooKeeper committed before the call.

        Watches make the view follow other writers within a watch's latency
        (tens of milliseconds under load); a read that must see a write known
        to be committed elsewhere calls this first: a lease a node daemon has
        just recorded, asked for by the VM that got it. It costs up to three
        small reads instead of re-reading the subtree (a few more while a chain of
        re-reads is still out, see ``CHAIN_ROUNDS``). ZooKeeper sends a
        session's notifications before the reply to any later request, so
        after one round trip kazoo has received every notification of an
        earlier change; kazoo runs watch callbacks in order on one thread and
        completions in order on another, so a marker queued behind them runs
        once the re-reads they started are sent, and a later read's completion
        runs once those re-reads are stored. Rounds: the notification, the
        re-read of a changed key or of the children, the reads of a new child's
        keys; only the first when nothing at all was committed since the last
        ``sync`` (every reply carries the server's last zxid). The queues are
        the client's, so every other ready view of this client has caught up
        as well. A view that is not ready is read directly anyway. Never call
        it from a kazoo callback (it would wait for itself).
        """
        if not self._started or not self.ready:
            return
        client = self.zk.client
        self.zk.require()

        def reached(marker: threading.Event) -> None:
            if not marker.wait(self.zk.remaining()):
                raise self.zk.unavailable("no answer while the view caught up with its watches")

        self.zk.wait(client.exists_async(self.root))  # 1: every earlier notification is in
        horizon = client.last_zxid  # of this reply or a later one: their notifications are in too
        if horizon == self._synced_zxid:
            return
        marker = threading.Event()
        client.handler.dispatch_callback(Callback("watch", marker.set, ()))
        reached(marker)  # their callbacks ran: the re-reads are sent
        # 2: those re-reads are stored; 3: so are the keys of children they found; more while re-reads
        # are still out (a root deleted and created again: its listing fails, an exists watch finds it
        # back, it is listed again, then its children are read), bounded by CHAIN_ROUNDS.
        for done in range(CHAIN_ROUNDS):
            if done >= 2 and not self.zk.view_reads.value:
                break
            marker = threading.Event()
            client.exists_async(self.root).rawlink(lambda _result, marker=marker: marker.set())
            reached(marker)
        self._synced_zxid = max(self._synced_zxid, horizon)

    # -- serialized answers, indexes and order (lists that cost little per child) -----------

    def encoded(self, children: Iterable[str], encode: Callable[[str, dict], bytes]) -> list[bytes]:
        """Each child's serialized answer, in the given order, skipping children that are gone.

        ``encode(child, entry)`` runs only for a child whose values changed since its answer was
        last built (or that was never built): a 10,000-VM list then costs a join of kept bytes. An
        answer built from values that changed meanwhile is served once but not kept.
        """
        self._await()
        children = list(children)
        if not self.ready:
            entries = self.read_direct(children)
            return [encode(child, entries[child]) for child in children if child in entries]
        self.zk.require()
        out: list[bytes | None] = [None] * len(children)
        todo: list[tuple[int, str, int | None, dict | None]] = []
        with self._lock:
            for position, child in enumerate(children):
                revision = self._revisions.get(child)
                kept = self._encoded.get(child)
                if kept is not None and kept[0] == revision:
                    out[position] = kept[1]
                elif child in self._children:
                    todo.append((position, child, revision, self._entry(child)))
        if todo:
            direct = self.read_direct([child for _, child, _, entry in todo if entry is None])
            fresh = {}
            for position, child, revision, entry in todo:
                if entry is None:  # its first reads are still in flight
                    if child in direct:
                        out[position] = encode(child, direct[child])
                    continue
                data = encode(child, entry)
                out[position] = data
                fresh[child] = (revision, data)
            self._keep(fresh)
        return [data for data in out if data is not None]

    def _keep(self, built: dict[str, tuple[int | None, bytes]]) -> None:
        """Keep answers built from the revisions given, unless a change came in while they were built."""
        with self._lock:
            for child, (revision, data) in built.items():
                if revision is not None and self._revisions.get(child) == revision:
                    self._encoded[child] = (revision, data, None)

    def select(self, key: str, value: str) -> set[str]:
        """Children whose indexed ``key`` equals ``value`` ("" for absent), from the index."""
        self._await()
        if not self.ready:
            entries = self.read_direct()
            return {child for child, entry in entries.items() if (entry.get(key) or "") == value}
        self.zk.require()
        with self._lock:
            return set(self._index[key].get(value, ()))

    def counts(self, key: str) -> dict[str, int]:
        """``{value: number of children}`` of an indexed key ("" for absent)."""
        self._await()
        if not self.ready:
            counts: dict[str, int] = {}
            for entry in self.read_direct().values():
                counts[entry.get(key) or ""] = counts.get(entry.get(key) or "", 0) + 1
            return counts
        self.zk.require()
        with self._lock:
            return {value: len(members) for value, members in self._index[key].items()}

    def ordered(self) -> list[tuple[str, str]]:
        """``(own value, child)`` of every child with a value, sorted: the v0.6 list order by name."""
        self._await()
        if not self.ready:
            return sorted((name, child) for child, name in self.names().items())
        self.zk.require()
        with self._lock:
            revision, order = self._order
            if revision != self._names_revision:
                order = sorted((name, child) for child, name in self.names().items())
                self._order = (self._names_revision, order)
            return order

    def child_with_value(self, value: str) -> str | None:
        """The first child (sorted) whose own value equals ``value``: a VM by its name."""
        self._await()
        if self.ready:
            self.zk.require()
            with self._lock:
                revision, index = self._by_value
                if revision != self._names_revision:
                    index = {}
                    for child in sorted(self._children, reverse=True):  # the first (sorted) wins
                        own = self._values.get(f"{self.root}/{child}")
                        if own is not None:
                            index[own] = child
                    self._by_value = (self._names_revision, index)
                return index.get(value)
        children = self.zk.children(self.root) or []
        values = self.zk.get_many(f"{self.root}/{child}" for child in children)
        for child in children:
            if values[f"{self.root}/{child}"] == value:
                return child
        return None

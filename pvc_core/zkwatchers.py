"""A kazoo client whose watch registry costs tens of bytes per watched path instead of hundreds.

kazoo keeps ``{path: set(watchers)}``; a set costs 216 bytes even with one
member, and a view watches every key of every object: about 130,000 paths,
28 MiB, at 10,000 VMs, each path with the same one watcher. ``Watchers``
holds one watcher in a slot and makes a set only for a second.

kazoo touches its registries in four ways, which these classes keep working:
``registry[path].add(watcher)`` when a watching read returns,
``registry.pop(path, [])`` when an event fires, iterating ``values()`` to tell
every watcher of a lost session, and recipes' ``get(path, set()).discard()``.
``_reset_watchers`` replaces both registries with plain ``defaultdict(set)``,
so the client puts compact ones back after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from kazoo.client import KazooClient

Watcher = Callable[[Any], None]


class Watchers:
    """The watchers of one path: a slot for the first, a set only when there are more."""

    __slots__ = ("_one", "_more")

    def __init__(self) -> None:
        self._one: Watcher | None = None
        self._more: set[Watcher] | None = None

    def add(self, watcher: Watcher) -> None:
        if self._one is None or self._one == watcher:
            self._one = watcher
        elif self._more is None:
            self._more = {watcher}
        else:
            self._more.add(watcher)

    def discard(self, watcher: Watcher) -> None:
        if self._one == watcher:
            self._one = self._more.pop() if self._more else None
        elif self._more is not None:
            self._more.discard(watcher)

    def __iter__(self) -> Iterator[Watcher]:
        if self._one is not None:
            yield self._one
        if self._more:
            yield from tuple(self._more)

    def __len__(self) -> int:
        return (self._one is not None) + (len(self._more) if self._more else 0)

    def __contains__(self, watcher: object) -> bool:
        return watcher == self._one or (self._more is not None and watcher in self._more)


class Registry(dict):
    """``defaultdict(set)`` with compact values."""

    def __missing__(self, path: str) -> Watchers:
        watchers = self[path] = Watchers()
        return watchers


class Client(KazooClient):
    """KazooClient with compact watch registries, kept compact across lost sessions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._compact()

    def _compact(self) -> None:
        """Swap in compact registries, carrying over anything registered meanwhile."""
        for name in ("_child_watchers", "_data_watchers"):
            registry = Registry()
            for path, watchers in getattr(self, name).items():
                for watcher in watchers:
                    registry[path].add(watcher)
            setattr(self, name, registry)

    def _reset_watchers(self) -> None:
        super()._reset_watchers()
        self._compact()

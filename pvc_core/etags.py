"""ETags and If-Match: a change made only while the object is still as the client read it (issue 15).

Two clients that read one object and both write it back: without a precondition the second write
silently undoes the first. A GET of an object (a route declared ``etag=True``) answers an ``ETag``;
a change of it (PUT, POST, DELETE declared ``etag=True``) sent with ``If-Match`` is made only while
the object's current ETag is one of those given (``*``: while it exists at all), else 412 with the
current ETag. Without If-Match a request behaves as in v0.6.

The comparison must be part of the write, not a read before it: a write of another daemon between
the two would still be lost. So an ETag is computed from what the write itself can check:

* ZooKeeper objects: the ``mzxid`` of each znode the GET's answer is built from (0 for an absent
  key), hashed. The mzxid is ZooKeeper's own, so every daemon computes the same ETag for the same
  state, and any set, creation or deletion of one of those znodes changes it. A change reads the
  znodes' stats (``guard``) and, when the ETag matches, commits with a ``check(path, version)`` of
  each in its transaction (and, for a key that was absent, a creation and deletion of it, which
  fails if it was created meanwhile): a write that slipped in between fails the transaction, and
  the retry (``zk.optimistic``) finds the ETag changed: 412.
* Database rows: a hash of the GET's answer (``of_content``), compared inside the write's
  transaction once the row is locked (the provisioner's store).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kazoo.protocol.states import ZnodeStat

from .errors import BadRequest, PreconditionFailed
from .routes import READ_METHODS, Route

HEADER = "ETag"
# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text
_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
SYNTAX = 'expected * or a comma-separated list of quoted entity tags as a GET\'s ETag header gives them, e.g. "3f2a9c"'


def of_zxids(zxids: Iterable[int]) -> str:
    """The ETag of an answer built from znodes with these mzxids (in a fixed order; 0: absent).

    Packed as 64-bit integers (a zxid is ZooKeeper's signed long) before hashing: formatting them
    as text cost more than the rest of a VM's GET from memory.
    """
    values = tuple(zxids)
    digest = hashlib.blake2b(struct.pack(f">{len(values)}q", *values), digest_size=12, person=b"pvc-zxids")
    return '"' + digest.hexdigest() + '"'


def of_stats(stats: Sequence[ZnodeStat | None]) -> str | None:
    """``of_zxids`` from znode stats; None when the first (the object's own znode) is absent."""
    if not stats or stats[0] is None:
        return None
    return of_zxids(stat.mzxid if stat is not None else 0 for stat in stats)


def of_parts(tags: Sequence[str]) -> str:
    """The ETag of an answer made of several objects' answers, from theirs (one: that object's own)."""
    if len(tags) == 1:
        return tags[0]
    return '"' + hashlib.blake2b("".join(tags).encode(), digest_size=12, person=b"pvc-parts").hexdigest() + '"'


def of_content(value: Any) -> str:
    """The ETag of a JSON answer by its content (rows of the database, which keep no version)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return '"' + hashlib.blake2b(text, digest_size=12, person=b"pvc-content").hexdigest() + '"'


def _tags(header: str) -> list[tuple[bool, str]] | None:
    """``[(weak, "tag")]`` of a list of entity tags, or None when it is not one."""
    out, position = [], 0
    text = header.strip()
    while position < len(text):
        match = _TAG.match(text, position)
        if match is None or match.end() == position:
            return None
        out.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return out or None


class Precondition:
    """A request's ``If-Match``: ``*`` (the object exists) or entity tags, compared strongly (a weak
    tag never matches, RFC 9110 §13.1.1)."""

    __slots__ = ("header", "tags", "weak", "checked")

    def __init__(self, header: str, tags: frozenset[str] | None, weak: frozenset[str] = frozenset()):
        self.header = header
        self.tags = tags  # None: "*"
        self.weak = weak  # the tags sent as W/"...": never a match, but the 412 says why
        self.checked = False  # set by ``require``: the dispatcher logs a change that never checked it

    @classmethod
    def parse(cls, header: str) -> Precondition:
        if header.strip() == "*":
            return cls("*", None)
        tags = _tags(header)
        if tags is None:
            raise BadRequest(f"Header If-Match: {SYNTAX}; got {header!r}")
        return cls(header.strip(), frozenset(tag for weak, tag in tags if not weak),
                   frozenset(tag for weak, tag in tags if weak))

    def holds(self, etag: str | None) -> bool:
        if etag is None:
            return False
        return self.tags is None or etag in self.tags

    def require(self, etag: str | None, what: str, location: str) -> None:
        """412 unless the object's current ETag (None: it does not exist) satisfies this If-Match."""
        self.checked = True
        if self.holds(etag):
            return
        if etag is None:
            raise PreconditionFailed(
                f"Precondition failed (If-Match: {self.header}): {what} does not exist (any more); "
                f"nothing was changed. GET {location} shows what is there now")
        if etag in self.weak:
            raise PreconditionFailed(
                f"Precondition failed (If-Match: {self.header}): W/{etag} is a weak entity tag, and If-Match "
                "compares entity tags strongly (RFC 9110 §13.1.1), so a weak one never matches; nothing was "
                f"changed. Send the ETag as GET {location} gives it: If-Match: {etag}", headers={HEADER: etag})
        raise PreconditionFailed(
            f"Precondition failed (If-Match: {self.header}): {what} changed since it was read; nothing was "
            f"changed. Its current ETag is {etag}: GET {location} to re-read it, then send the change again "
            "with If-Match set to the new ETag", headers={HEADER: etag})


def if_match(route: Route, headers: Mapping[str, str]) -> Precondition | None:
    """The request's If-Match, for a change of an object that keeps an ETag (``Route.etag``).

    A read changes nothing, so If-Match on a GET is ignored. On a change that keeps no ETag it is
    refused (400) rather than ignored: the client would believe its change conditional.
    """
    header = headers.get("If-Match")
    if header is None or route.method in READ_METHODS:
        return None
    if not route.etag:
        raise BadRequest(f"Header If-Match: {route.method} {route.full_paths()[0]} keeps no ETag, so a change "
                         "through it cannot be made conditional; send it without If-Match")
    return Precondition.parse(header)


def not_modified(headers: Mapping[str, str], etag: str | None) -> bool:
    """If-None-Match on a GET: true when the answer's ETag is listed (weak comparison) or it is ``*``."""
    header = headers.get("If-None-Match")
    if header is None or etag is None:
        return False
    if header.strip() == "*":
        return True
    tags = _tags(header)
    return tags is not None and any(tag == etag for _weak, tag in tags)


# -- ZooKeeper objects -----------------------------------------------------------------------------

@dataclass
class Guard:
    """An object's znodes as one change read them: its ETag, their values, and the operations that
    make the change's transaction fail if any of them changed meanwhile."""

    etag: str | None
    values: dict[str, str | None] = field(default_factory=dict)
    checks: list[tuple[str, int]] = field(default_factory=list)  # (path, data version) of each present one
    absent: list[str] = field(default_factory=list)  # keys that were absent

    def add_to(self, transaction: Any) -> None:
        """Add those operations, before any write of the transaction: ZooKeeper applies a multi's
        operations in order, so a check placed after a write of its znode would meet the version that
        write made. ZooKeeper has no check of absence; a creation and deletion of the key in the same
        transaction is one (it fails if the key exists, and leaves nothing behind)."""
        for path, version in self.checks:
            transaction.check(path, version)
        for path in self.absent:
            transaction.create(path, b"")
            transaction.delete(path)


def read(zk: Any, paths: Sequence[str]) -> Guard:
    """The stats and values of an object's znodes now (``paths[0]`` is the object's own znode)."""
    found = zk.get_stats(paths)
    stats = [found[path][1] for path in paths]
    return Guard(of_stats(stats), {path: found[path][0] for path in paths},
                 [(path, stat.version) for path, stat in zip(paths, stats, strict=True) if stat is not None],
                 [path for path, stat in zip(paths[1:], stats[1:], strict=True) if stat is None])


def guard(zk: Any, precondition: Precondition | None, paths: Sequence[str], what: str, location: str) -> Guard:
    """``read``, then 412 unless ``precondition`` holds; with no precondition, no checks (v0.6)."""
    if precondition is None:
        return Guard(None)
    found = read(zk, paths)
    precondition.require(found.etag, what, location)
    return found


__all__ = ["HEADER", "Guard", "Precondition", "guard", "if_match", "not_modified", "of_content", "of_parts",
           "of_stats", "of_zxids", "read"]

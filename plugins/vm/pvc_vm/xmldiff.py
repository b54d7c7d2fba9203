"""PVC 1.x's ``xml_diff_lines`` of a VM snapshot: how the VM's current XML differs from the snapshot's.

The VM answers are built from the watched view (pvc_core/view.py) and kept serialized per VM until one of
the VM's keys changes; a list of 10,000 VMs joins them. A VM's answer is built again whenever any of its
keys changes (state, node, ... several times a day per VM), so the diff is made only when the two XMLs
differ at all (most snapshots' XML is the current one: a string comparison), and a diff made is kept, by
the digest of the two XMLs, for the next build of the same VM. Nothing of it is stored in ZooKeeper.
"""

from __future__ import annotations

import difflib
import hashlib
import threading
from collections import OrderedDict

CACHED = 4096  # diffs kept (least recently used go first): a few MB at most
_cache: OrderedDict[bytes, tuple[str, ...]] = OrderedDict()
_lock = threading.Lock()


def diff_lines(snapshot_xml: str, current_xml: str) -> list[str]:
    """PVC 1.x's form: ``unified_diff`` from the current XML ("current") to the snapshot's ("snapshot"),
    lines split at "\\n", one line of context, no trailing newlines: what a rollback would change. Empty
    when they are equal."""
    if snapshot_xml == current_xml:
        return []
    key = hashlib.blake2b(f"{len(current_xml)}:{current_xml}{snapshot_xml}".encode(), digest_size=20).digest()
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return list(found)
    lines = tuple(difflib.unified_diff(current_xml.split("\n"), snapshot_xml.split("\n"), fromfile="current",
                                       tofile="snapshot", fromfiledate="", tofiledate="", n=1, lineterm=""))
    with _lock:
        _cache[key] = lines
        while len(_cache) > CACHED:
            _cache.popitem(last=False)
    return list(lines)

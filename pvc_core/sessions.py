"""Logged-out sessions in ZooKeeper, so that a logout on one daemon ends the session on all of them.

A session cookie is signed, not stored, so any daemon with the same secret
key accepts it; a logout used to be remembered by the one process that got it,
and a second daemon behind the same address still accepted the cookie. Each
logout is now a child of ``/pvcapid/revoked_sessions`` (value: the session's
expiry), read through a watched view by every daemon; expired ones are
removed by the next logout.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import schema

log = logging.getLogger("pvc.auth")


class SharedRevocations:
    def __init__(self, runtime: Any):
        self.runtime = runtime

    def _view(self) -> Any:
        return self.runtime.view(schema.REVOKED_SESSIONS, ())

    def revoked(self, sid: str) -> bool:
        return self._view().one(sid) is not None

    def revoke(self, sid: str, expiry: int) -> None:
        zk = self.runtime.zk
        zk.optimistic(lambda: zk.write({schema.DAEMON_ROOT: "", schema.REVOKED_SESSIONS: "",
                                        f"{schema.REVOKED_SESSIONS}/{sid}": str(expiry)}))
        self._purge()

    def _purge(self) -> None:
        """Forget sessions that have expired anyway (best effort: another daemon may race us)."""
        now = time.time()
        expired = [f"{schema.REVOKED_SESSIONS}/{sid}" for sid, entry in self._view().snapshot().items()
                   if not (entry.get("") or "").isdigit() or int(entry[""]) <= now]
        for path in expired:
            try:
                self.runtime.zk.delete([path])
            except Exception:  # noqa: BLE001 - gone already, or ZooKeeper busy: the next logout retries
                log.debug("could not remove the expired revocation %s", path, exc_info=True)

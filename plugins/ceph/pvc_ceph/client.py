"""The daemon's connection to Ceph: librados/librbd bindings with a timeout on every call.

Bindings rather than the ``ceph``/``rbd`` CLIs: a CLI call costs 140-200 ms of
Python start-up (``rbd`` 28-55 ms) against milliseconds for the same call in
process (bench/bench_ceph.py measures both). Every call is bounded; a cluster
that does not answer is a 503, never a hung request.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import threading
from typing import Any

from pvc_core.errors import ServiceUnavailable

log = logging.getLogger("pvc.ceph")


class CephClient:
    """One lazily opened cluster handle, reopened after a failure."""

    def __init__(self, conffile: str, name: str, keyring: str | None, timeout: float,
                 mon_host: str | None = None):
        self.conffile = conffile
        self.name = name
        self.keyring = keyring
        self.timeout = timeout
        self.mon_host = mon_host
        self._cluster: Any = None
        self._lock = threading.Lock()

    def unavailable(self, detail: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"Ceph is unreachable (conf {self.conffile}, {self.name}): {detail}")

    def cluster(self) -> Any:
        import rados
        with self._lock:
            if self._cluster is not None:
                return self._cluster
            seconds = str(int(math.ceil(self.timeout)))  # librados wants whole seconds here
            conf = {"client_mount_timeout": seconds, "rados_mon_op_timeout": seconds,
                    "rados_osd_op_timeout": seconds}
            if self.keyring:
                conf["keyring"] = self.keyring
            if self.mon_host:
                conf["mon_host"] = self.mon_host
            try:
                cluster = rados.Rados(conffile=self.conffile, name=self.name, conf=conf)
                cluster.connect(timeout=int(max(1, self.timeout)))
            except (rados.Error, OSError) as exc:
                raise self.unavailable(str(exc) or type(exc).__name__) from None
            self._cluster = cluster
            return cluster

    def reset(self) -> None:
        with self._lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            try:
                cluster.shutdown()
            except Exception:  # noqa: BLE001 - closing a broken handle
                log.debug("error closing the Ceph handle", exc_info=True)

    def run(self, prefix: str, **args: Any) -> tuple[int, str, str]:
        """A monitor command: (return code, output, Ceph's own message). Unreachable is 503."""
        import rados
        command = {"prefix": prefix, **args}
        try:
            ret, out, err = self.cluster().mon_command(json.dumps(command), b"", timeout=int(max(1, self.timeout)))
        except rados.Error as exc:
            self.reset()
            raise self.unavailable(f"{prefix}: {exc}") from None
        if ret in (-errno.ETIMEDOUT, -errno.ENOTCONN, -errno.ESHUTDOWN):
            self.reset()  # the monitors did not answer: reconnect next time
            raise self.unavailable(f"{prefix}: {err.strip() or errno.errorcode.get(-ret, ret)}")
        return ret, out.decode("utf-8", errors="replace"), err.strip()

    def mon_command(self, prefix: str, **args: Any) -> str:
        """A monitor command that must succeed (statistics); text output unless ``format`` is given."""
        ret, out, err = self.run(prefix, **args)
        if ret != 0:
            raise self.unavailable(f"{prefix} failed ({ret}): {err}")
        return out

    def close(self) -> None:
        self.reset()

"""The Huey instance: Redis when ``provisioner.queue`` is set, a SQLite file otherwise."""

from __future__ import annotations

import os
from typing import Any

from huey import RedisHuey, SqliteHuey
from huey.api import Huey

HUEY_NAME = "pvc"
# Seconds any one Redis command may wait.
SOCKET_TIMEOUT = 5


def make_huey(config: Any) -> Huey:
    queue = config.get("provisioner.queue")
    if queue:
        path = queue["path"].strip("/") or "0"
        if not (path.isascii() and path.isdigit()):
            from .errors import ConfigError
            raise ConfigError(f"pvc.provisioner.queue.path: expected '/<database number>', got {queue['path']!r}")
        return RedisHuey(HUEY_NAME, host=queue["host"], port=queue["port"], db=int(path),
                         socket_connect_timeout=3, socket_timeout=SOCKET_TIMEOUT)
    directory = config["data_dir"]
    os.makedirs(directory, exist_ok=True)
    return SqliteHuey(HUEY_NAME, filename=os.path.join(directory, "huey.db"))


def describe(huey: Huey, config: Any) -> str:
    queue = config.get("provisioner.queue")
    if queue:
        return f"Redis queue at {queue['host']}:{queue['port']}{queue['path']}"
    return f"SQLite queue {os.path.join(config['data_dir'], 'huey.db')}"

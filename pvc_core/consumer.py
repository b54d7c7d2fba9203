"""Entry module for the stock Huey consumer: ``huey_consumer pvc_core.consumer.huey``.

Importing it builds the same Runtime as the API (from ``PVC_CONFIG_FILE``),
so every enabled plugin's tasks are registered on ``huey``; the runtime's
connections are opened by the workers' startup hooks and closed by their
shutdown hooks.
"""

from __future__ import annotations

import sys

from .errors import ConfigError, PluginError
from .runtime import Runtime

try:
    runtime = Runtime.from_config()
except (ConfigError, PluginError) as exc:
    print(f"ERROR: Failed to load configuration: {exc}", file=sys.stderr)
    raise SystemExit(1) from None

runtime.role = "worker"
huey = runtime.huey


@huey.on_startup()
def _start_runtime() -> None:
    runtime.start()


@huey.on_shutdown()
def _stop_runtime() -> None:
    runtime.stop()

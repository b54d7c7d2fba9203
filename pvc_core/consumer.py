"""Entry module for the stock Huey consumer: ``huey_consumer pvc_core.consumer.huey``.

Importing it builds the same Runtime as the API (from ``PVC_CONFIG_FILE``),
so every enabled plugin's tasks are registered on ``huey``; the runtime's
connections are opened by the workers' startup hooks and closed by their
shutdown hooks.

The worker logs in the daemon's one format (``pvc_core.logformat``,
``pvc.log.format``): ``huey_consumer`` sets up its own handler on the
``huey`` logger after importing this module and before it creates the
consumer, so the consumer's creation is where that handler (stderr, or the
file of ``-l``) is taken over for every line of the process. Each line logged
while a task runs carries its id (``task_id``), which is its task record's id
(``TaskRecords.submit``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from huey import signals

from . import logformat
from .errors import ConfigError, PluginError
from .runtime import Runtime

try:
    runtime = Runtime.from_config()
except (ConfigError, PluginError) as exc:
    print(f"ERROR: Failed to load configuration: {exc}", file=sys.stderr)
    raise SystemExit(1) from None

runtime.role = "worker"
huey = runtime.huey
logformat.setup(runtime.config["log.format"], runtime.config["debug"], sys.stderr)

# The signals that end a task's execution (Huey sends "error" after its own failure line, "complete"
# after "executed in").
_ENDED = (signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR, signals.SIGNAL_CANCELED, signals.SIGNAL_INTERRUPTED,
          signals.SIGNAL_TIMEOUT, signals.SIGNAL_LOCKED, signals.SIGNAL_RATE_LIMITED)


def _dequeue() -> Any:
    """A worker takes its next task here, just before Huey logs "Executing": from then on its lines
    carry the task's id, until the task ends (``_task_ends``) or the worker finds the queue empty."""
    task = _stock_dequeue()
    if task is None:
        logformat.unbind()
    else:
        logformat.bind("task_id", task.id)
    return task


@huey.signal(*_ENDED)
def _task_ends(signal: str, task: Any, *args: Any) -> None:
    logformat.unbind()


def _create_consumer(**options: Any) -> Any:
    logformat.adopt_handlers(logging.getLogger("huey"))
    return _stock_create_consumer(**options)


# Instance attributes of our own Huey object, used by the consumer only (the API never dequeues).
_stock_dequeue, huey.dequeue = huey.dequeue, _dequeue
_stock_create_consumer, huey.create_consumer = huey.create_consumer, _create_consumer


@huey.on_startup()
def _start_runtime() -> None:
    runtime.start()


@huey.on_shutdown()
def _stop_runtime() -> None:
    runtime.stop()

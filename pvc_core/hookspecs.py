"""The hook specifications: the whole contract between the core and a plugin.

A plugin is a module (or object) registered under its entry-point name in
group ``pvc.plugins``; it implements any subset of these hooks with
``@pvc_core.hookimpl``. The core calls most hooks once per plugin so that
what a hook returns can be attributed to the plugin that returned it.
Every hook here must have a docstring, a row in README.md's hook table
(with its exact arguments), an implementation in a shipped plugin or the
example plugin, and a ``test_hook_<name>`` observing it through a running
daemon: tests/test_hookspecs.py fails otherwise.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("pvc")
hookimpl = pluggy.HookimplMarker("pvc")


@hookspec
def pvc_plugin_info() -> dict:
    """Declare dependencies: ``{"requires": [...], "optional": [...], "description": str}``."""


@hookspec
def pvc_config_fields() -> Any:
    """Return a ``config.Section`` of this plugin's keys under ``pvc`` (with defaults)."""


@hookspec
def pvc_routes(runtime: Any) -> list:
    """Return the plugin's ``Route`` objects (path, method, params, handler, auth, listener)."""


@hookspec
def pvc_listeners(runtime: Any) -> dict:
    """Return extra listeners ``{name: (address, port)}`` that this plugin's routes use."""


@hookspec
def pvc_services(runtime: Any) -> dict:
    """Return ``{service_name: object}`` published for other plugins (``runtime.service``)."""


@hookspec
def pvc_start(runtime: Any) -> None:
    """Open connections and ensure schema; called once the core services are up."""


@hookspec
def pvc_stop(runtime: Any) -> None:
    """Release what ``pvc_start`` acquired; called before the core services stop."""


@hookspec
def pvc_tasks(huey: Any, runtime: Any) -> None:
    """Register the plugin's background tasks (with explicit stable names) on ``huey``."""


@hookspec
def pvc_db_models() -> list:
    """Return peewee models that the core should create tables for on start."""


@hookspec
def pvc_status(runtime: Any) -> dict:
    """Return this plugin's part of ``GET /status``: ``{"fields": {...}, "degraded": bool}``."""


@hookspec
def pvc_health(runtime: Any) -> list:
    """Return ``pvc_core.health.Probe`` objects for the dependencies this plugin adds (Ceph), which
    ``GET /health`` checks besides ZooKeeper, the database and the queue."""


@hookspec
def pvc_metrics(runtime: Any) -> list:
    """Return Prometheus collectors (objects with ``collect()`` yielding ``prometheus_client`` metric
    families) for this plugin's part of ``GET /metrics``; read from what the daemon keeps in memory (views,
    caches), never a slow call per scrape. Called once, when metrics are enabled."""


@hookspec
def pvc_initialize_keys(runtime: Any) -> dict:
    """Return extra ``{path: value}`` keys that ``POST /initialize`` must create."""


@hookspec
def pvc_embedded_options(parser: Any) -> None:
    """Add this plugin's command-line options to ``pvcapid-embedded`` (an ``argparse`` parser)."""


@hookspec
def pvc_embedded(run: Any) -> Any:
    """Return the ``pvc_core.embedded.Part`` the embedded run needs for this plugin (what it starts
    before the daemon, what it writes into the first configuration, what this run overrides), or None.

    Called on every installed plugin, off-by-default ones included: the embedded run is where a
    simulator belongs. ``run`` has ``data_dir``, ``args`` (the parsed options) and ``coordinator``.
    """

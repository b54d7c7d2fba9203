"""The runtime: configuration, plugins, ZooKeeper, database, queue and services in one object.

Both processes build exactly this: the API daemon wraps it in a CherryPy
engine plugin, the Huey consumer (``pvc_core.consumer``) in Huey's startup
and shutdown hooks. Everything the plugins contribute is collected once, at
construction, so a request never asks the plugin manager anything.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import peewee
import redis.exceptions

from . import auth, coreplugin, health, metrics, openapi
from . import config as configmod
from .auth import Authenticator
from .db import database_proxy, make_database
from .db import describe as describe_database
from .errors import PluginError, ServiceUnavailable
from .plugins import PluginHost, installed_plugins, select
from .queue import describe as describe_queue
from .queue import make_huey
from .routes import RouteTable
from .sessions import SharedRevocations
from .taskmonitor import TaskMonitor
from .taskrecords import TaskRecords
from .zk import ZooKeeper

log = logging.getLogger("pvc.runtime")


class Runtime:
    """Everything a handler or a task needs, started and stopped as one."""

    def __init__(self, config: configmod.Config, host: PluginHost):
        self.config = config
        self.host = host
        self.plugins = host.plugins
        self.zk = ZooKeeper(config["coordinators"], config.get("zookeeper.session_timeout", 10.0),
                            config.get("zookeeper.request_timeout", 5.0), config.get("zookeeper.bulk_reads", "auto"))
        self.database = make_database(config)
        database_proxy.initialize(self.database)
        self.huey = make_huey(config)
        self.tasks = TaskRecords()
        self.task_monitor = TaskMonitor(self)  # started in the API daemon only
        # "api" in the daemon, "worker" in the Huey consumer (pvc_core.consumer sets it)
        self.role = "api"
        self.auth = Authenticator(**auth.settings(config), secure_cookies=config["api.ssl.enabled"])
        self.auth.shared = SharedRevocations(self)
        self.unavailable = {
            peewee.OperationalError: lambda: f"The {describe_database(self.database)} is unreachable",
            peewee.InterfaceError: lambda: f"The {describe_database(self.database)} is unreachable",
            redis.exceptions.ConnectionError: lambda: f"The {describe_queue(self.huey, config)} is unreachable",
            redis.exceptions.TimeoutError: lambda: f"The {describe_queue(self.huey, config)} timed out",
        }
        self.routes = RouteTable()
        self.listeners: dict[str, tuple[str, int]] = {}
        self.services: dict[str, Any] = {}
        self.views: dict[str, Any] = {}
        self.service_owners: dict[str, str] = {}
        self.models: list[Any] = list(TaskRecords.models)
        self._users = 0
        self._lock = threading.RLock()
        self.failure: str | None = None  # set by fail(): the daemon stops on it
        self._schema_ready = False
        self.config_schema: Any = None  # set by from_config: what a reload validates against
        self.config_overrides: dict = {}
        self._collect()

    # -- construction -------------------------------------------------------------------

    def _collect(self) -> None:
        host = self.host
        for name, services in host.call_each("pvc_services", runtime=self):
            for service_name, service in (services or {}).items():
                if service_name in self.services:
                    raise PluginError(f"service {service_name!r} published twice (again by {name!r})")
                self.services[service_name] = service
                self.service_owners[service_name] = name
        for _name, listeners in host.call_each("pvc_listeners", runtime=self):
            self.listeners.update(listeners or {})
        for name, routes in host.call_each("pvc_routes", runtime=self):
            for route in routes or ():
                route.plugin = name
                if route.listener != "main" and route.listener not in self.listeners:
                    raise PluginError(f"plugin {name!r}: route {route.path} uses unknown listener "
                                      f"{route.listener!r}")
                self.routes.add(route)
        for _name, models in host.call_each("pvc_db_models"):
            self.models.extend(models or ())
        for _name, _ in host.call_each("pvc_tasks", huey=self.huey, runtime=self):
            pass
        self.status_hooks = host.implementations("pvc_status")
        probes = health.core_probes(self)
        for _name, extra in host.call_each("pvc_health", runtime=self):
            probes.extend(extra or ())
        self.health = health.Health(probes)
        self.openapi_document = openapi.document(self.routes, self.plugins)
        self.metrics = metrics.build(self)  # None unless pvc.metrics.enabled

    @classmethod
    def from_config(cls, path: str | None = None, overrides: dict | None = None) -> Runtime:
        """Read, discover plugins, validate with their fields, build. Raises ConfigError/PluginError."""
        path = configmod.find_config_path(path)
        raw = configmod.merge_raw(configmod.read_raw(path), overrides or {})
        schema = configmod.core_schema()
        plugin_section = configmod.validate(schema.fields["plugins"], raw.get("plugins") or {}, "pvc.plugins")
        names = select(sorted(installed_plugins()), plugin_section["enabled"], plugin_section["disabled"],
                       plugin_section["include"])
        host = PluginHost()
        host.register_core(coreplugin)
        host.load(names, explicit=set(plugin_section["enabled"] or []), included=set(plugin_section["include"]))
        for _name, section in host.call_each("pvc_config_fields"):
            if section is not None:
                configmod.merge_section(schema, section)
        runtime = cls(configmod.build(schema, raw, path), host)
        runtime.config_schema, runtime.config_overrides = schema, overrides or {}
        return runtime

    def reread_config(self) -> configmod.Config:
        """The configuration file as it is now, validated like at start (same plugins, same
        overrides); raises ConfigError. Nothing is applied here: that is ``pvc_core.reload``."""
        raw = configmod.merge_raw(configmod.read_raw(self.config.path), self.config_overrides)
        return configmod.build(self.config_schema, raw, self.config.path)

    # -- services -----------------------------------------------------------------------

    def service(self, name: str, required: bool = True) -> Any:
        """Another plugin's published service; None (or 400 when required) if it is not loaded."""
        service = self.services.get(name)
        if service is None and required:
            from .errors import BadRequest
            raise BadRequest(f"This operation needs the {name!r} service, whose plugin is not enabled")
        return service

    def view(self, root: str, keys: tuple[str, ...], watch: bool = True, index: tuple[str, ...] = (),
             encoder: Any = None, warmup_wait: float = 0.0) -> Any:
        """The shared watched view of ``root`` (one per subtree per process), started on first use.

        ``watch=False`` gives an unstarted view: the same reads, always straight from ZooKeeper.
        ``index``: keys whose values the view indexes (filters and counts without visiting every child);
        ``encoder`` builds a child's serialized answer (all are built before the view is ready);
        ``warmup_wait``: how long a read waits for a warming view before reading ZooKeeper directly.
        """
        from .view import SubtreeView
        if not watch:
            return SubtreeView(self.zk, root, keys, index)
        with self._lock:
            view = self.views.get(root)
            if view is None:
                view = SubtreeView(self.zk, root, keys, index)
                view.encoder, view.warmup_wait = encoder, warmup_wait
                self.views[root] = view
                self.zk.observers.append(view)
            elif view.keys != tuple(keys):
                raise PluginError(f"view of {root} requested with different keys")
        view.start()
        return view

    @property
    def unavailable_errors(self) -> tuple[type, ...]:
        return tuple(self.unavailable)

    def describe_unavailable(self, exc: Exception) -> str:
        for kind, text in self.unavailable.items():
            if isinstance(exc, kind):
                return text()
        return f"A backing service is unreachable ({type(exc).__name__})"

    def ensure_schema(self) -> None:
        """Create the tables of the core and plugin models; retried until it works once."""
        if self._schema_ready:
            return
        try:
            with self.database.connection_context():
                self.database.create_tables(self.models, safe=True)
                add_missing_columns(self.database, self.models)
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            raise ServiceUnavailable(f"The {describe_database(self.database)} is unreachable: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
        self._schema_ready = True

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start once per process; later calls only count users (the consumer's workers)."""
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self.zk.start()
            try:
                self.ensure_schema()
            except ServiceUnavailable as exc:
                log.warning("%s; will retry on first use", exc.message)
            for _name, _ in self.host.call_each("pvc_start", runtime=self):
                pass
            if self.role == "api":
                self.task_monitor.start()  # after the plugins registered their task kinds

    def fail(self, reason: str) -> None:
        """A plugin found, after start, that this daemon must not go on (simnode: a cluster with real
        nodes appeared): it stops as a plugin refusing at start does, with exit status 1. The caller has
        logged ``reason``; any thread may call this."""
        self.failure = reason

    def stop(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            self._users = 0
            self.task_monitor.stop()
            for name, function, argnames in self.host.implementations("pvc_stop", reverse=True):
                # one plugin failing to stop must not keep the others, ZooKeeper and the database open
                try:
                    function(**({"runtime": self} if "runtime" in argnames else {}))
                    log.debug("stopped plugin %s", name)
                except Exception:
                    log.exception("plugin %s failed to stop; stopping the rest", name)
            self.zk.stop()
            if not self.database.is_closed():
                self.database.close()


def add_missing_columns(database: peewee.Database, models: list[Any]) -> None:
    """The additive migration: a nullable column a model gained since its table was made is added.

    Anything beyond adding nullable columns (renames, type changes) belongs in
    the owning plugin's own versioned migrations.
    """
    from playhouse.migrate import SchemaMigrator, migrate
    migrator = None
    for model in models:
        table = model._meta.table_name
        present = {column.name for column in database.get_columns(table)}
        for field in model._meta.sorted_fields:
            if field.column_name not in present and field.null:
                migrator = migrator or SchemaMigrator.from_database(database)
                log.info("adding column %s.%s", table, field.column_name)
                migrate(migrator.add_column(table, field.column_name, field))

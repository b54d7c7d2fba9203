"""Plugin discovery (stevedore, entry-point group ``pvc.plugins``) and hook calling (pluggy).

Nothing is skipped silently: a configured plugin that is not installed, an
installed plugin that fails to import or was built for another core version,
or a hard dependency that is not enabled stops the daemon with a message that
names the plugin.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pluggy import PluginValidationError
from stevedore import NamedExtensionManager

from . import hookspecs
from .compat import core_mismatch
from .errors import PluginError

log = logging.getLogger("pvc.plugins")

ENTRY_POINT_GROUP = "pvc.plugins"
CORE = "core"


@dataclass
class LoadedPlugin:
    name: str
    module: Any
    version: str
    distribution: str
    requires: list[str] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)
    description: str = ""


def installed_plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Entry points of group ``pvc.plugins`` by name, without importing them."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def select(installed: list[str], enabled: list[str] | None, disabled: list[str],
           include: list[str] | None = None) -> list[str]:
    """The plugin names to import: ``enabled`` (default all installed) minus ``disabled``.

    ``include`` only has to name installed plugins here: whether an
    off-by-default plugin stays loaded is decided once its info is known
    (``PluginHost.load``).
    """
    unknown = [name for name in (enabled or []) + list(disabled) + list(include or []) if name not in installed]
    if unknown:
        raise PluginError(
            f"pvc.plugins: plugin {unknown[0]!r} is not installed "
            f"(installed: {', '.join(sorted(installed)) or 'none'})")
    chosen = sorted(installed) if enabled is None else list(dict.fromkeys(enabled))
    return [name for name in chosen if name not in disabled]


class PluginHost:
    """The pluggy manager plus what we know about each loaded plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("pvc")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, LoadedPlugin] = {}
        self.order: list[str] = []

    def register_core(self, module: Any) -> None:
        """Core features are hook implementations too; they cannot be disabled."""
        self.pm.register(module, name=CORE)

    def load(self, names: list[str], explicit: set[str] | None = None, included: set[str] | None = None) -> None:
        """Import the named plugins through stevedore and register them with pluggy.

        ``explicit`` are the names the configuration asked for by name; any
        other plugin (loaded because all installed ones are, by default) whose
        hard dependency is missing is left out with a warning instead of
        stopping the daemon, so disabling ``ceph`` does not also require
        disabling everything that needs it.
        """
        # A plugin built for another core is refused before it is imported.
        entry_points = installed_plugins()
        failures = [problem for name in names
                    if (problem := core_mismatch(name, getattr(entry_points.get(name), "dist", None)))]
        if failures:
            raise PluginError("; ".join(failures))

        def on_failure(manager: Any, entrypoint: Any, exc: Exception) -> None:
            failures.append(f"plugin {entrypoint.name!r} failed to load: {type(exc).__name__}: {exc}")

        def on_missing(missing: Any) -> None:
            failures.append(f"plugin(s) {', '.join(sorted(missing))} not installed")

        manager = NamedExtensionManager(
            ENTRY_POINT_GROUP, names=names, invoke_on_load=False, name_order=True,
            on_load_failure_callback=on_failure, on_missing_entrypoints_callback=on_missing)
        if failures:
            raise PluginError("; ".join(failures))
        # stevedore's cached entry points carry no distribution; importlib's do (``entry_points``).
        for extension in manager.extensions:
            distribution = getattr(entry_points.get(extension.name), "dist", None)
            plugin = LoadedPlugin(
                name=extension.name,
                module=extension.plugin,
                version=getattr(distribution, "version", "unknown"),
                distribution=getattr(distribution, "name", "unknown"),
            )
            self.pm.register(extension.plugin, name=extension.name)
            self.plugins[extension.name] = plugin
        self.check_hook_names()
        self.order = list(self.plugins)
        for name, info in self.call_each("pvc_plugin_info"):
            if name in self.plugins and info:
                plugin = self.plugins[name]
                plugin.requires = list(info.get("requires", []))
                plugin.optional = list(info.get("optional", []))
                plugin.description = info.get("description", "")
                if info.get("enabled_by_default", True) is False and name not in (explicit or set()) \
                        and name not in (included or set()):
                    self.pm.unregister(name=name)
                    del self.plugins[name]
        self.order = list(self.plugins)
        self._drop_unsatisfied(explicit if explicit is not None else set(self.plugins))
        self._check_dependencies()

    def check_hook_names(self) -> None:
        """A ``@hookimpl`` whose name matches no hook (a misspelt ``pvc_route``) would never be
        called: the daemon refuses to start instead of running without it."""
        try:
            self.pm.check_pending()
        except PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or "?"
            raise PluginError(f"plugin {name!r}: {exc} (no such hook in pvc_core.hookspecs)") from None

    def _drop_unsatisfied(self, explicit: set[str]) -> None:
        while True:
            dropped = [(plugin, needed) for plugin in self.plugins.values() if plugin.name not in explicit
                       for needed in plugin.requires if needed not in self.plugins][:1]
            if not dropped:
                return
            plugin, needed = dropped[0]
            log.warning("plugin %r is not loaded: it requires plugin %r, which is not enabled or not installed",
                        plugin.name, needed)
            self.pm.unregister(name=plugin.name)
            del self.plugins[plugin.name]
            self.order = list(self.plugins)

    def _check_dependencies(self) -> None:
        for plugin in self.plugins.values():
            for needed in plugin.requires:
                if needed not in self.plugins:
                    raise PluginError(f"plugin {plugin.name!r} requires plugin {needed!r}, "
                                      "which is not enabled or not installed")
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in order:
                return
            if name in visiting:
                raise PluginError("plugin dependency cycle: " + " -> ".join((*chain, name)))
            visiting.add(name)
            plugin = self.plugins[name]
            for dep in plugin.requires:
                visit(dep, (*chain, name))
            for dep in plugin.optional:  # ordering only; two plugins may use each other
                if dep in self.plugins and dep not in visiting:
                    visit(dep, (*chain, name))
            visiting.discard(name)
            order.append(name)

        for name in sorted(self.plugins):
            visit(name, ())
        self.order = order

    def implementations(self, hook: str, reverse: bool = False) -> list[tuple[str, Any, list[str]]]:
        """``(plugin, function, argnames)`` per implementing plugin: core first, then dependency order.

        Built from pluggy's own implementation records, so an implementation
        may accept any subset of the spec's arguments; callers that run a hook
        per request keep this list instead of asking pluggy each time.
        """
        caller = getattr(self.pm.hook, hook)
        by_plugin = {impl.plugin_name: impl for impl in caller.get_hookimpls()}
        names = [CORE, *self.order]
        found = [(name, by_plugin[name].function, list(by_plugin[name].argnames))
                 for name in names if name in by_plugin]
        return found[::-1] if reverse else found

    def call_each(self, hook: str, reverse: bool = False, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call a hook once per implementing plugin (``reverse``: dependents first, for stop)."""
        for name, function, argnames in self.implementations(hook, reverse):
            yield name, function(**{arg: kwargs[arg] for arg in argnames})

"""SIGHUP: read the configuration file again and apply what can change without a restart.

Renewing a certificate or changing a token needed a restart, which drops
every open connection. On SIGHUP the file is read and validated exactly as at
start (same plugins, same command-line overrides). If anything is wrong, or
the new certificate and key do not load, nothing is applied and one line
says why. Otherwise these take effect at once, for the next request or
connection, while open connections carry on:

* ``api.authentication`` (tokens and their scopes, which the sessions they
  made follow too; secret key, session lifetime, enabled);
* ``api.ssl.cert_file`` / ``key_file`` (the contents too: renewing in place
  is the usual case), for new TLS connections;
* ``debug`` (log level and JSON indentation);
* ``api.header_timeout``, ``body_timeout``, ``max_connections_per_client``,
  ``max_body_size``.

Any other change (addresses, ports, threads, plugins, coordinators, the
database, plugin sections) is named in a warning and waits for a restart.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

from . import auth, connections
from .errors import ConfigError

log = logging.getLogger("pvc.reload")

# Dotted keys applied by a reload; a change anywhere else is reported as needing a restart.
APPLIED = ("debug", "api.authentication", "api.ssl.cert_file", "api.ssl.key_file", "api.header_timeout",
           "api.body_timeout", "api.max_connections_per_client", "api.max_body_size")

_lock = threading.Lock()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _needs_restart(old: dict, new: dict) -> list[str]:
    before, after = _flatten(old), _flatten(new)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    return sorted(key for key in changed
                  if not any(key == applied or key.startswith(applied + ".") for applied in APPLIED))


def _tls_context(config: Any, server: Any) -> ssl.SSLContext | None:
    """The live TLS context, after checking that the new certificate and key load (on a scratch
    context first, so that a bad pair changes nothing)."""
    adapter = getattr(server, "ssl_adapter", None) if server is not None else None
    if not config["api.ssl.enabled"] or adapter is None:
        return None
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        scratch.load_cert_chain(config["api.ssl.cert_file"], config["api.ssl.key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"pvc.api.ssl: the certificate and key do not load together ({exc})") from None
    return adapter.context


def reload(runtime: Any, dispatcher: Any, server: Any) -> bool:
    """Apply the configuration file as it is now; False (and one ERROR line) when it is not valid."""
    with _lock:
        path = runtime.config.path
        try:
            config = runtime.reread_config()
            context = _tls_context(config, server)
        except ConfigError as exc:
            log.error("ERROR: reload of %s refused, the configuration in force is kept: %s", path, exc)
            return False
        if context is not None:
            context.load_cert_chain(config["api.ssl.cert_file"], config["api.ssl.key_file"])
        runtime.auth.configure(**auth.settings(config))
        logging.getLogger().setLevel(logging.DEBUG if config["debug"] else logging.INFO)
        dispatcher.reconfigure(config)
        connections.LIMITS = connections.limits(config)
        waiting = _needs_restart(runtime.config.data, config.data)
        runtime.config = config
        log.info("reloaded %s: authentication, TLS certificate, log level and request limits applied", path)
        if waiting:
            log.warning("reload of %s: changes to %s take effect at the next restart", path, ", ".join(waiting))
        return True

"""``pvcapid``: run the daemon, or check its configuration.

A configuration or plugin problem ends in one ``ERROR: ...`` line on stderr
and exit status 1, never a traceback: it is what an operator reads in the
journal when the unit fails to start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from . import __version__, logformat
from .errors import ConfigError, PluginError


def setup_logging(config: Any) -> None:
    """Every line of the daemon on stdout in the one log format (``pvc_core.logformat``)."""
    logformat.setup(config["log.format"], config["debug"], sys.stdout)


def main(argv: list[str] | None = None, overrides: dict | None = None) -> int:
    """``overrides``: configuration values that win over the file (the embedded run's options)."""
    parser = argparse.ArgumentParser(prog="pvcapid", description="PVC cluster API daemon")
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: $PVC_CONFIG_FILE, "
                        "then /etc/pvc/pvcapid.yaml, then /etc/pvc/pvc-api.yaml)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--version", action="version", version=f"pvcapid {__version__}")
    args = parser.parse_args(argv)

    from .runtime import Runtime

    try:
        runtime = Runtime.from_config(args.config, overrides)
    except ConfigError as exc:
        print(f"ERROR: Failed to load configuration: {exc}", file=sys.stderr)
        return 1
    except PluginError as exc:
        print(f"ERROR: Failed to load plugins: {exc}", file=sys.stderr)
        return 1
    if args.check_config:
        names = ", ".join(sorted(runtime.plugins)) or "none"
        print(f"Configuration {runtime.config.path} is valid; plugins: {names}")
        return 0
    setup_logging(runtime.config)
    from .memory import tune_allocator
    tune_allocator()
    logging.getLogger("pvc.api").info("Starting PVC API daemon %s", __version__)
    from .server import serve

    serve(runtime)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

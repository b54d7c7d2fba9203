"""A plugin with a hard dependency on ``example``: enabling it alone must stop the daemon."""

from typing import Any

from pvc_core import hookimpl
from pvc_core.routes import Route
from pvc_core.shapes import MESSAGE


def shout(ctx: Any, params: dict) -> dict:
    return {"message": ctx.service("example").greeting().upper()}


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": ["example"], "description": "Depends on the example plugin"}


@hookimpl
def pvc_routes(runtime: Any) -> list:
    return [Route("GET", "/example-dependent/shout", shout, summary="Greeting, shouted", returns=MESSAGE)]

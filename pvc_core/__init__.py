"""pvcapid core: configuration, HTTP server, routing, authentication and the plugin host."""

from .version import VERSION as __version__

API_VERSION_MESSAGE = "PVC API version 1.0"

from .hookspecs import hookimpl  # noqa: E402  (the one import a plugin needs)

__all__ = ["API_VERSION_MESSAGE", "__version__", "hookimpl"]

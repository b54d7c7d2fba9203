"""pvcapid core: configuration, HTTP server, routing, authentication and the plugin host."""

__version__ = "0.6.100"
API_VERSION_MESSAGE = "PVC API version 1.0"

from .hookspecs import hookimpl  # noqa: E402  (the one import a plugin needs)

__all__ = ["API_VERSION_MESSAGE", "__version__", "hookimpl"]

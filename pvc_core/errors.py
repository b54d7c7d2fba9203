"""The exceptions that become HTTP answers.

Everything a client can cause is raised as an ApiError somewhere below the
handler and turned into ``{"message": ...}`` by the dispatcher, so no layer
has to know about HTTP beyond choosing a status code.
"""

from __future__ import annotations


class ApiError(Exception):
    """A client-visible failure: HTTP status plus one message string."""

    status = 400
    # set where the failure is a timeout: what was sent may still be applied, so the answer does not say
    # whether the change happened (the ceph plugin looks at the object again until it knows)
    outcome_unknown = False

    def __init__(self, message: str, status: int | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    """Authenticated, but the token's (or session's) scope is below the route's."""

    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class Conflict(ApiError):
    status = 409


class PreconditionFailed(ApiError):
    """An ``If-Match`` that no longer holds: the object changed (or went) since the client read it."""

    status = 412


class PayloadTooLarge(ApiError):
    status = 413


class ServiceUnavailable(ApiError):
    """A backing service (ZooKeeper, database, queue, Ceph) cannot be reached."""

    status = 503


class ConfigError(Exception):
    """Invalid configuration; the message names the key and what was expected."""


class PluginError(Exception):
    """A plugin cannot be loaded or its dependencies are not satisfied."""

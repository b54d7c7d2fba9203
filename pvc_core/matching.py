"""The v0.6 ``limit`` filters: regular expressions with ``re.match`` semantics."""

from __future__ import annotations

import re

from .errors import BadRequest


def regex(pattern: str) -> re.Pattern:
    """Compile a client's pattern; an invalid one is 400 ``Regex Error: ...`` (v0.6 text)."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadRequest(f"Regex Error: {exc}") from None


def fuzzy(pattern: str) -> re.Pattern:
    """v0.6 "fuzzy" limits: ``.*`` added on each side that is not anchored by ``^`` / ``$``."""
    if not pattern.startswith("^"):
        pattern = ".*" + pattern
    if not pattern.endswith("$"):
        pattern = pattern + ".*"
    return regex(pattern)

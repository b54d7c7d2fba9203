"""The v0.6 ``limit`` filters: regular expressions with ``re.match`` semantics.

A client's pattern runs on the API's own threads, so it must not be able to hold
them: Python's ``re`` matches with the GIL held and cannot be stopped, and a
pattern such as ``(a*)*b`` backtracks exponentially (one request froze the whole
daemon, its simulated nodes and its shutdown). Patterns are matched with the
``regex`` module (``re``'s syntax and semantics, as its VERSION0 is), which lets
other threads run while it matches (``concurrent=True``) and stops at a timeout:
one request's matching takes at most ``MATCH_BUDGET`` seconds in all, else 400.
"""

from __future__ import annotations

import time

import regex as _regex

from .errors import BadRequest

# Seconds of matching one request's pattern may take in all (a simple pattern over 10,000 names takes
# milliseconds).
MATCH_BUDGET = 0.5


class Pattern:
    """A compiled client pattern whose ``match`` calls share one time budget, counted from the first."""

    def __init__(self, compiled: _regex.Pattern, text: str):
        self._compiled = compiled
        self._text = text
        self._deadline: float | None = None

    def match(self, subject: str) -> bool:
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + MATCH_BUDGET
        remaining = self._deadline - now
        try:
            if remaining <= 0:
                raise TimeoutError
            return self._compiled.match(subject, timeout=remaining, concurrent=True) is not None
        except TimeoutError:
            raise BadRequest(f"Regex Error: the pattern {self._text[:200]!r} took more than {MATCH_BUDGET:g} s to "
                             "match; expected a simpler regular expression (a repeat of a repeat, such as "
                             "'(a*)*', can take exponential time)") from None


def regex(pattern: str) -> Pattern:
    """Compile a client's pattern; an invalid one is 400 ``Regex Error: ...`` (v0.6 text)."""
    try:
        return Pattern(_regex.compile(pattern), pattern)
    except (_regex.error, ValueError, OverflowError) as exc:
        raise BadRequest(f"Regex Error: {exc}") from None


def fuzzy(pattern: str) -> Pattern:
    """v0.6 "fuzzy" limits: ``.*`` added on each side that is not anchored by ``^`` / ``$``."""
    if not pattern.startswith("^"):
        pattern = ".*" + pattern
    if not pattern.endswith("$"):
        pattern = pattern + ".*"
    return regex(pattern)

"""What the audit log keeps of a request's parameters: secrets masked, large values cut short.

The audit log is read by more people, and kept longer, than the cluster's
credentials should be, so a token given to ``POST /login``, a password in a
provisioner ``arg=root_password=...`` or in a script's or userdata's text must
not reach it. A parameter is masked whole when its route declares it secret
(``Param.secret``) or its name says it is one (``password``, ``db_pass``,
``api_key``, ``token``...); in every other value, an inline ``name=value``,
``name: value`` or ``name = "value"`` whose name says so has its value
masked. Masking comes before shortening, so a secret cut at the bound is
masked all the same. Values are then cut to a bound (a VM's XML or a script
is hundreds of kilobytes; its first kilobyte says what it was), and a
request's whole record to a bound as well, so a row never grows with the
request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"
OMITTED = "..."  # the key that says how many parameters were left out
NAME_LIMIT = 128  # characters of a parameter's name
VALUES_LIMIT = 32  # values kept of a repeated parameter
RECORD_FACTOR = 16  # a record holds at most this many values' bound of text

_WORDS = r"passw(?:or)?d|passphrase|secret|token|api[_-]?key|credential|private[_-]?key"
_SECRET_NAME = re.compile(rf"(?i)(?:{_WORDS})|(?:^|[^a-z])pass$")
# A name, from its start only and never given back (possessive): linear in the text's length, where a
# name pattern that could backtrack took 0.4 ms over a 2 KB run of letters.
# A text that holds none of these (lower-cased) is left as it is, unscanned: plain substring searches
# take 15 µs over 2 KB, where one case-insensitive alternation took 270 µs.
_FRAGMENTS = ("pass", "secret", "token", "key", "credential")
_ASSIGNMENT = re.compile(r"(?<![\w.-])([\w.-]++)(\s*[:=]\s*)(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&'\"]++)")


def is_secret_name(name: str) -> bool:
    """Whether a parameter's name says that its value is a credential."""
    return _SECRET_NAME.search(name) is not None


def scrub(text: str) -> str:
    """``text`` with the value of every inline credential (``password=...``, ``token: ...``) masked."""
    lowered = text.lower()
    if not any(fragment in lowered for fragment in _FRAGMENTS):
        return text
    return _ASSIGNMENT.sub(_mask_assignment, text)


def _mask_assignment(match: re.Match) -> str:
    name, separator, _value = match.groups()
    return name + separator + MASK if is_secret_name(name) else match.group(0)


def storable(text: str) -> str:
    """Text every database stores: NUL (PostgreSQL refuses it in text) and lone surrogates (a path's
    undecodable bytes; not UTF-8) written as escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def shorten(text: str, limit: int, length: int | None = None) -> str:
    """At most ``limit`` characters of ``text``, saying how long it was (``length``, when ``text`` is
    already a part of the value) when it was cut."""
    length = len(text) if length is None else length
    if length <= limit:
        return text
    return f"{text[:limit]}... [{length} characters]"


def bounded(value: str, limit: int) -> str:
    """A value as recorded: its credentials masked, then cut to ``limit`` characters. Only its head is
    read (twice the bound, for a credential that straddles it), so a 16 MB body costs what 2 KB does."""
    return shorten(scrub(value[:2 * limit]), limit, len(value))


def summarize(values: Mapping[str, Iterable[str]], secret: Iterable[str], limit: int) -> dict[str, str | list[str]]:
    """The record of a request's parameters (a name to its value, or its values when repeated).

    ``secret`` are the names the route declares secret; ``limit`` bounds each
    value, ``RECORD_FACTOR`` values' worth the whole record: what is beyond
    is counted instead (under ``"..."`` for whole parameters).
    """
    declared = set(secret)
    budget = limit * RECORD_FACTOR
    out: dict[str, str | list[str]] = {}
    names = list(values)
    for index, name in enumerate(names):
        if budget <= 0:
            out[OMITTED] = f"{len(names) - index} more parameters not recorded"
            break
        items = list(values[name])
        masked = name in declared or is_secret_name(name)
        key = shorten(name, NAME_LIMIT)
        budget -= len(key)
        kept: list[str] = []
        for item in items[:VALUES_LIMIT]:
            if budget <= 0:
                break
            kept.append(MASK if masked else bounded(item, limit))
            budget -= len(kept[-1])
        if len(items) > len(kept):
            kept.append(f"... {len(items) - len(kept)} more values")
        out[key] = kept[0] if len(kept) == 1 else kept
    return out

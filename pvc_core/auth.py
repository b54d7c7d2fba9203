"""Authentication and scopes: X-Api-Key tokens and signed session cookies.

Every configured token has a scope, ``read`` < ``write`` < ``admin`` (absent
means ``admin``, so a v0.6 configuration keeps the all-powerful tokens it
had), and every route requires one (``Route.scope``); the dispatcher refuses a
credential whose scope is below the route's with 403.

Tokens are kept only as their SHA-256 digests (a token may be configured that
way, ``token_sha256``, so the file need not hold it in clear). A presented key
is hashed once and compared with ``hmac.compare_digest`` against every
configured digest, with no early exit: timing reveals neither which token
matched nor how much of it, nor (since digests all have one length) how long
the configured tokens are. Empty configured tokens never match (the v0.6
sample ships one). A token never reaches a log line or an error message.

Sessions are stateless signed cookies, as v0.6's Flask sessions were, so they
survive a restart with the same ``secret_key``; each carries an expiry, the
scope of the token that made it and an opaque id of that token (a keyed hash
of its digest). A session is worth at most the scope it was made with and
never more than its token's scope now, so lowering a token's scope on SIGHUP
also lowers the sessions it made, and a session whose token is no longer
configured stops working. A logout also records the session id as revoked
until its expiry so a copied cookie stops working at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from .errors import Forbidden, Unauthorized

COOKIE_NAME = "session"
REQUIRED_MESSAGE = "Authentication required"
FAILED_MESSAGE = "Authentication failed"

# Lowest to highest; each scope allows everything the ones before it allow.
SCOPES = ("read", "write", "admin")
DEFAULT_SCOPE = "admin"  # a token without a scope: v0.6 had no per-route authorisation at all
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}


def scope_allows(held: str, required: str) -> bool:
    """Whether a credential of scope ``held`` may use a route that requires ``required``."""
    return _RANK[held] >= _RANK[required]


def token_digest(token: str) -> bytes:
    """The SHA-256 digest a token is kept and compared as (``printf %s TOKEN | sha256sum`` in hex)."""
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).digest()


@dataclass(frozen=True)
class Credential:
    """What authenticated a request: its kind (``token``, ``session``, or ``none`` when
    authentication is off), the token's description and the scope it holds."""

    kind: str
    description: str
    scope: str

    @property
    def label(self) -> str:
        """How the access log names it: the token's description, never the token."""
        if self.kind == "token":
            return self.description
        if self.kind == "session":
            return f"session:{self.description}"
        return "-"


# Authentication disabled: every request may do everything, as in v0.6.
OPEN = Credential("none", "-", "admin")


@dataclass(frozen=True)
class TokenEntry:
    """One configured token as it is kept: its digest, scope, name for the log and session id, and the
    credential a request with it has (made once here: a request then allocates nothing for it)."""

    digest: bytes
    scope: str
    description: str
    tid: str
    credential: Credential


def settings(config: Any) -> dict:
    """What ``Authenticator.configure`` takes, from a configuration (at start and on SIGHUP)."""
    return {"enabled": config["api.authentication.enabled"],
            "tokens": list(config["api.authentication.tokens"]),
            "secret_key": config["api.authentication.secret_key"],
            "session_lifetime": config["api.authentication.session_lifetime"]}


def _entry_digest(entry: dict | str) -> bytes | None:
    """The digest of a configured entry, or None for an empty token (which never matches)."""
    if isinstance(entry, str):
        return token_digest(entry) if entry else None
    if entry.get("token_sha256"):
        return bytes.fromhex(entry["token_sha256"])
    token = entry.get("token")
    return token_digest(token) if token else None


class Authenticator:
    """Decides whether a request may use an authenticated route, and with which scope."""

    def __init__(self, enabled: bool, tokens: list[dict | str], secret_key: str,
                 session_lifetime: int = 43200, secure_cookies: bool = False):
        self.secure_cookies = secure_cookies
        self.configure(enabled, tokens, secret_key, session_lifetime)
        self._revoked: dict[str, float] = {}
        self._revoked_lock = threading.Lock()
        # Revocations every daemon of the cluster sees (``pvc_core.sessions``); set by the runtime.
        self.shared: Any = None

    def configure(self, enabled: bool, tokens: list[dict | str], secret_key: str, session_lifetime: int) -> None:
        """Set (or, on SIGHUP, replace) what requests are checked against.

        ``tokens`` are configuration entries (``description``, ``token`` or
        ``token_sha256``, ``scope``); a bare string is a token of scope admin.
        Each attribute is swapped whole, so a request running meanwhile sees
        the old or the new, never a mix within one. A token listed twice is
        kept once (the configuration refuses it twice with different scopes),
        so at most one entry can match a key.
        """
        key = hashlib.sha256(b"pvc-session:" + secret_key.encode("utf-8")).digest()
        entries: list[TokenEntry] = []
        seen: set[bytes] = set()
        for index, entry in enumerate(tokens):
            digest = _entry_digest(entry)
            if digest is None or digest in seen:
                continue
            seen.add(digest)
            fields = {} if isinstance(entry, str) else entry
            scope = fields.get("scope") or DEFAULT_SCOPE
            description = fields.get("description") or f"tokens[{index}]"
            tid = hmac.new(key, b"token:" + digest, hashlib.sha256).hexdigest()[:32]
            entries.append(TokenEntry(digest, scope, description, tid, Credential("token", description, scope)))
        by_tid = {entry.tid: entry for entry in entries}
        self._key = key
        self.entries = entries
        self._by_tid = by_tid
        self.session_lifetime = session_lifetime
        self.enabled = enabled

    # -- tokens -----------------------------------------------------------------------------

    def token_entry(self, candidate: str) -> TokenEntry | None:
        """The configured token ``candidate`` is, or None; every entry is compared every time."""
        if not candidate:
            return None
        digest = token_digest(candidate)
        entries = self.entries  # one list for the whole comparison, even during a reload
        position = 0
        for index, entry in enumerate(entries, start=1):
            # arithmetic, not a branch on the result; entries are distinct, so at most one adds
            position += hmac.compare_digest(digest, entry.digest) * index
        return entries[position - 1] if position else None

    def token_matches(self, candidate: str) -> bool:
        return self.token_entry(candidate) is not None

    # -- sessions ---------------------------------------------------------------------------

    def _sign(self, payload: bytes, key: bytes | None = None) -> str:
        digest = hmac.new(self._key if key is None else key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def new_session(self, entry: TokenEntry, now: float | None = None) -> str:
        """A cookie value for a fresh session of the token ``entry``, carrying its scope."""
        now = time.time() if now is None else now
        payload = json.dumps({"sid": secrets.token_urlsafe(16), "exp": math.ceil(now + self.session_lifetime),
                              "scope": entry.scope, "tid": entry.tid}, separators=(",", ":")).encode()
        encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{encoded}.{self._sign(payload)}"

    def _decode(self, cookie: str) -> dict | None:
        key = self._key
        try:
            encoded, signature = cookie.split(".", 1)
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(signature, self._sign(payload, key)):
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            return None
        return data

    def session_credential(self, cookie: str | None, now: float | None = None) -> Credential | None:
        """The credential a session cookie stands for, or None when it is not (or no longer) valid.

        A cookie without a scope (made before scopes existed) is not valid: its
        token may have been given a lower scope meanwhile, and logging in again
        is cheap.
        """
        if not cookie:
            return None
        data = self._decode(cookie)
        if data is None:
            return None
        now = time.time() if now is None else now
        if data["exp"] <= now:
            return None
        scope = data.get("scope")
        entry = self._by_tid.get(data.get("tid")) if isinstance(data.get("tid"), str) else None
        if scope not in _RANK or entry is None:
            return None
        sid = str(data.get("sid"))
        with self._revoked_lock:
            if sid in self._revoked:
                return None
        if self.shared is not None and self.shared.revoked(sid):
            return None
        held = scope if scope_allows(entry.scope, scope) else entry.scope
        return Credential("session", entry.description, held)

    def session_valid(self, cookie: str | None, now: float | None = None) -> bool:
        return self.session_credential(cookie, now) is not None

    def revoke(self, cookie: str | None) -> None:
        data = self._decode(cookie) if cookie else None
        if data is None:
            return
        now = time.time()
        sid = str(data.get("sid"))
        with self._revoked_lock:
            for known, expiry in list(self._revoked.items()):
                if expiry <= now:
                    del self._revoked[known]
            self._revoked[sid] = data["exp"]
        if self.shared is not None:
            self.shared.revoke(sid, data["exp"])

    def cookie_header(self, value: str, max_age: int | None = None) -> str:
        """Set-Cookie value: HttpOnly, SameSite=Strict, Secure under SSL, with an expiry."""
        age = self.session_lifetime if max_age is None else max_age
        parts = [f"{COOKIE_NAME}={value}", "Path=/", f"Max-Age={age}", "HttpOnly", "SameSite=Strict"]
        if self.secure_cookies:
            parts.append("Secure")
        return "; ".join(parts)

    # -- the per-request check ------------------------------------------------------------

    def check(self, session_cookie: str | None, api_key: str | None) -> Credential:
        """The request's credential; 401 unless auth is off, the key matches, or the session is valid."""
        if not self.enabled:
            return OPEN
        # The key first: it needs nothing but memory, while a session may need the shared
        # revocation list (ZooKeeper), so a valid key still works while ZooKeeper is away.
        if api_key is not None:
            entry = self.token_entry(api_key)
            if entry is not None:
                return entry.credential
        credential = self.session_credential(session_cookie)
        if credential is not None:
            return credential
        raise Unauthorized(REQUIRED_MESSAGE if api_key is None else FAILED_MESSAGE)


def forbidden(credential: Credential, required: str, operation: str) -> Forbidden:
    """The 403 of a ``credential`` below the scope ``required`` by an operation (``"POST /api/v1/vm"``):
    it names both scopes, so the caller knows which token to use, and never the token."""
    held = "this session's" if credential.kind == "session" else "this token's"
    return Forbidden(f"Insufficient scope: {held} scope is '{credential.scope}', {operation} requires "
                     f"scope '{required}'")

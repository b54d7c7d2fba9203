"""Authentication: X-Api-Key tokens and signed session cookies.

Tokens are compared with ``hmac.compare_digest`` against every configured
token (no early exit), so timing reveals neither which token nor how much of
it matched. Empty configured tokens never match (the v0.6 sample ships one).

Sessions are stateless signed cookies, as v0.6's Flask sessions were, so they
survive a restart with the same ``secret_key``; each carries an expiry, and a
logout also records the session id as revoked until that expiry so a copied
cookie stops working at once.
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
from typing import Any

from .errors import Unauthorized

COOKIE_NAME = "session"
REQUIRED_MESSAGE = "Authentication required"
FAILED_MESSAGE = "Authentication failed"


def settings(config: Any) -> dict:
    """What ``Authenticator.configure`` takes, from a configuration (at start and on SIGHUP)."""
    return {"enabled": config["api.authentication.enabled"],
            "tokens": [entry["token"] for entry in config["api.authentication.tokens"]],
            "secret_key": config["api.authentication.secret_key"],
            "session_lifetime": config["api.authentication.session_lifetime"]}


class Authenticator:
    """Decides whether a request may use an authenticated route."""

    def __init__(self, enabled: bool, tokens: list[str], secret_key: str,
                 session_lifetime: int = 43200, secure_cookies: bool = False):
        self.secure_cookies = secure_cookies
        self.configure(enabled, tokens, secret_key, session_lifetime)
        self._revoked: dict[str, float] = {}
        self._revoked_lock = threading.Lock()
        # Revocations every daemon of the cluster sees (``pvc_core.sessions``); set by the runtime.
        self.shared: Any = None

    def configure(self, enabled: bool, tokens: list[str], secret_key: str, session_lifetime: int) -> None:
        """Set (or, on SIGHUP, replace) what requests are checked against; each attribute is swapped
        whole, so a request running meanwhile sees the old or the new, never a mix within one."""
        self.tokens = [token.encode("utf-8") for token in tokens if token]
        self._key = hashlib.sha256(b"pvc-session:" + secret_key.encode("utf-8")).digest()
        self.session_lifetime = session_lifetime
        self.enabled = enabled

    # -- tokens -----------------------------------------------------------------------------

    def token_matches(self, candidate: str) -> bool:
        given = candidate.encode("utf-8", errors="surrogateescape")
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(given, token)
        return matched and bool(given)

    # -- sessions ---------------------------------------------------------------------------

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def new_session(self, now: float | None = None) -> str:
        """A cookie value for a fresh session."""
        now = time.time() if now is None else now
        payload = json.dumps({"sid": secrets.token_urlsafe(16), "exp": math.ceil(now + self.session_lifetime)},
                             separators=(",", ":")).encode()
        encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{encoded}.{self._sign(payload)}"

    def _decode(self, cookie: str) -> dict | None:
        try:
            encoded, signature = cookie.split(".", 1)
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            return None
        return data

    def session_valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie:
            return False
        data = self._decode(cookie)
        if data is None:
            return False
        now = time.time() if now is None else now
        if data["exp"] <= now:
            return False
        sid = str(data.get("sid"))
        with self._revoked_lock:
            if sid in self._revoked:
                return False
        return self.shared is None or not self.shared.revoked(sid)

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

    def check(self, session_cookie: str | None, api_key: str | None) -> None:
        """Raise 401 unless auth is off, the session is valid, or the key matches."""
        if not self.enabled:
            return
        # The key first: it needs nothing but memory, while a session may need the shared
        # revocation list (ZooKeeper), so a valid key still works while ZooKeeper is away.
        if api_key is not None and self.token_matches(api_key):
            return
        if self.session_valid(session_cookie):
            return
        raise Unauthorized(REQUIRED_MESSAGE if api_key is None else FAILED_MESSAGE)

"""Who is asking: signed anonymous session tokens for browsers, API keys for servers.

A session token is `<base64url(json)>.<base64url(hmac-sha256)>`, signed with the server's
secret; it names an anonymous user id and an expiry. Nothing is stored server-side: a token is
valid exactly when its signature verifies and it has not expired. Changing the secret logs
every visitor out (their conversations stay, unreachable, until deleted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass


class BadToken(ValueError):
    """A token that is malformed, forged or expired."""


@dataclass(frozen=True)
class Identity:
    """`owner` keys conversations; `kind` says how the caller proved who it is."""

    owner: str
    kind: str  # "session" or "key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, secret: str, *, ttl_s: int = 30 * 86400) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 characters")
        self._key = secret.encode()
        self.ttl_s = ttl_s

    def issue(self, now: float | None = None) -> tuple[str, Identity, int]:
        """A new anonymous session: (token, identity, expiry as a Unix time)."""
        now = time.time() if now is None else now
        user = "anon-" + secrets.token_urlsafe(12)
        exp = int(now) + self.ttl_s
        body = _b64(json.dumps({"u": user, "exp": exp}, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}", Identity(user, "session"), exp

    def verify(self, token: str, now: float | None = None) -> Identity:
        body, _, sig = token.partition(".")
        if not body or not sig or not hmac.compare_digest(sig, self._sign(body)):
            raise BadToken("invalid session token")
        try:
            claims = json.loads(_unb64(body))
            user, exp = str(claims["u"]), int(claims["exp"])
        except (ValueError, KeyError, TypeError) as e:
            raise BadToken("invalid session token") from e
        if exp < (time.time() if now is None else now):
            raise BadToken("session expired; start a new one")
        return Identity(user, "session")

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


class ApiKeys:
    """Server-to-server keys: `name=secret` pairs. A key's conversations belong to `key:<name>`."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._by_secret = {secret: name for name, secret in keys.items() if secret}

    def identify(self, secret: str) -> Identity | None:
        for known, name in self._by_secret.items():
            if hmac.compare_digest(known, secret):
                return Identity(f"key:{name}", "key")
        return None

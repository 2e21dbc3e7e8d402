"""The dashboard's session cookie: who signed in, and the token that must come back with every form.

The cookie is `<payload>.<mac>`: the payload is base64url JSON, the mac its HMAC-SHA256 under the
server's dashboard secret. Nothing secret is in it (an operator key's id, a broker's public key),
so signing is enough; a key revoked or expired after sign-in, and an operator's role, are read
from the database at each request (`bkr.api.dashboard.auth`), never from the cookie.

A visitor who has not signed in holds an anonymous session too: it carries the CSRF token the
sign-in form must send back, so that another site cannot sign a browser in with its own key.
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

COOKIE = "bkr_session"
LIFETIME = timedelta(hours=12)


class Holder(StrEnum):
    """Whose key opened the session."""

    BROKER = "broker"
    OPERATOR = "operator"  # what it may do is its operator's role, read at each request


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    expires: int  # seconds since the epoch
    holder: Holder | None = None  # None: not signed in
    key_id: str | None = None  # the operator key's id, or the broker's public key
    broker_id: int | None = None

    @property
    def signed_in(self) -> bool:
        return self.holder is not None

    @property
    def is_operator(self) -> bool:
        return self.holder is Holder.OPERATOR


def anonymous(now: datetime) -> Session:
    return Session(csrf=secrets.token_urlsafe(24), expires=int((now + LIFETIME).timestamp()))


def signed_in(holder: Holder, key_id: str, broker_id: int | None, now: datetime) -> Session:
    """A new session for a key that was just checked; a fresh CSRF token, so that a token seen
    before sign-in is worth nothing after it."""
    return replace(anonymous(now), holder=holder, key_id=key_id, broker_id=broker_id)


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(session: Session, secret: str) -> str:
    payload = json.dumps({"c": session.csrf, "e": session.expires, "r": session.holder, "k": session.key_id,
                          "b": session.broker_id}, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def decode(cookie: str | None, secret: str, now: datetime) -> Session | None:
    """The session in a cookie, or None when it is absent, forged, malformed or expired."""
    if not cookie or cookie.count(".") != 1:
        return None
    payload_text, mac_text = cookie.split(".")
    try:
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    try:
        data = json.loads(payload)
        holder = None if data["r"] is None else Holder(data["r"])
        found = Session(csrf=str(data["c"]), expires=int(data["e"]), holder=holder, key_id=data["k"],
                        broker_id=data["b"])
    except (ValueError, KeyError, TypeError):
        return None
    return found if found.expires > now.timestamp() else None


def csrf_matches(session: Session, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(session.csrf.encode(), token.encode())

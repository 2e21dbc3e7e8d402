"""Signed requests as Backpack signs them: ED25519 over `instruction=…&k=v…&timestamp=…&window=…`.

A request names an *instruction* (each endpoint has one), its parameters (query parameters, or
the JSON body's keys), a timestamp in milliseconds and a window in milliseconds (default 5,000,
at most 60,000). The string signed is the instruction, then the parameters sorted by name as
`key=value` joined by `&`, then `timestamp` and `window`; booleans are `true`/`false`. The
signature and the public key (the `X-API-Key`) travel in base64; the secret is the base64 of
the 32-byte ED25519 seed, as Backpack issues it and as ccxt's `secret` expects it.

Pure functions: the caller supplies the time.
"""

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bkr.domain.errors import Unauthenticated

DEFAULT_WINDOW_MS = 5_000
MAX_WINDOW_MS = 60_000
FUTURE_SKEW_MS = 5_000  # a client clock this far ahead is still accepted
MAX_DIGITS = 19  # of X-Timestamp and X-Window, as many as a signed 64-bit number has


@dataclass(frozen=True, slots=True)
class KeyPair:
    api_key: str  # base64 public key: the X-API-Key
    secret: str  # base64 32-byte seed: what the client signs with


def new_key_pair() -> KeyPair:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KeyPair(base64.b64encode(public).decode(), base64.b64encode(seed).decode())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def signing_string(instruction: str, params: Mapping[str, Any], timestamp: int, window: int) -> str:
    """The exact text a client signs for one instruction."""
    parts = [f"instruction={instruction}"]
    parts += [f"{key}={_text(params[key])}" for key in sorted(params)]
    parts += [f"timestamp={timestamp}", f"window={window}"]
    return "&".join(parts)


def batch_signing_string(instruction: str, items: Sequence[Mapping[str, Any]], timestamp: int, window: int) -> str:
    """A batch (Backpack's POST /orders): each item's sorted parameters behind its own
    `instruction=…`, joined by `&`, then the timestamp and window once."""
    parts = []
    for item in items:
        parts.append(f"instruction={instruction}")
        parts += [f"{key}={_text(item[key])}" for key in sorted(item)]
    parts += [f"timestamp={timestamp}", f"window={window}"]
    return "&".join(parts)


def sign(secret: str, message: str) -> str:
    """The base64 signature of `message` with a base64 seed (what a client does)."""
    try:
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret, validate=True))
    except (binascii.Error, ValueError):
        raise Unauthenticated("the secret is not a base64 ED25519 seed of 32 bytes") from None
    return base64.b64encode(private.sign(message.encode())).decode()


def api_key_of(secret: str) -> str:
    """The public key (the `X-API-Key`) of a base64 seed: how the dashboard knows whose secret was
    pasted into its sign-in form without the secret ever being stored."""
    try:
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise Unauthenticated("the secret is not a base64 ED25519 seed of 32 bytes") from None
    return base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def public_key(api_key: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(api_key, validate=True))
    except (binascii.Error, ValueError):
        raise Unauthenticated("X-API-Key is not a base64 ED25519 public key", code="api_key_malformed",
                              field="X-API-Key") from None


def verifies(key: Ed25519PublicKey, signature: str, message: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message.encode())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def _millis(value: str) -> int | None:
    """ASCII digits, at most `MAX_DIGITS` of them (`int` would also take ` 12`, `+1`, `1_0`, `١٢`)."""
    if not 0 < len(value) <= MAX_DIGITS or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def _quoted(value: str) -> str:
    return repr(value) if len(value) <= MAX_DIGITS else f"{value[:MAX_DIGITS]!r}… ({len(value):,} characters)"


def parse_timing(timestamp: str | None, window: str | None) -> tuple[int, int]:
    """X-Timestamp and X-Window as integers, with the reason when they are missing or malformed."""
    if not timestamp:
        raise Unauthenticated("X-Timestamp is missing", code="timestamp_missing", field="X-Timestamp")
    stamp = _millis(timestamp)
    if stamp is None:
        raise Unauthenticated(f"X-Timestamp {_quoted(timestamp)} is not milliseconds since the epoch",
                              code="timestamp_malformed", field="X-Timestamp")
    if window is None or window == "":
        return stamp, DEFAULT_WINDOW_MS
    span = _millis(window)
    if span is None:
        raise Unauthenticated(f"X-Window {_quoted(window)} is not a number of milliseconds", code="window_malformed",
                              field="X-Window")
    return stamp, span


def check_timing(timestamp: int, window: int, now_ms: int) -> None:
    """Refuse a window outside 1..60,000 ms, a request whose window has passed (which is also
    what refuses a replay once its window is over), and a timestamp from the future."""
    if not 0 < window <= MAX_WINDOW_MS:
        raise Unauthenticated(f"X-Window {window} ms is outside 1..{MAX_WINDOW_MS}", code="window_too_large",
                              field="X-Window")
    if now_ms >= timestamp + window:
        raise Unauthenticated(f"request expired: signed at {timestamp}, valid for {window} ms, now {now_ms}",
                              code="request_expired", field="X-Timestamp")
    if timestamp > now_ms + FUTURE_SKEW_MS:
        raise Unauthenticated(f"X-Timestamp {timestamp} is ahead of the server's clock ({now_ms})",
                              code="timestamp_in_future", field="X-Timestamp")


def verify_request(key: Ed25519PublicKey, signature: str | None, instruction: str, params: Mapping[str, Any],
                   timestamp: int, window: int, *, other_instructions: Iterable[str] = ()) -> None:
    """Check a signature over `instruction`; when it fails, say whether the client signed the
    same request for another instruction (the commonest integration mistake)."""
    if not signature:
        raise Unauthenticated("X-Signature is missing", code="signature_missing", field="X-Signature")
    if verifies(key, signature, signing_string(instruction, params, timestamp, window)):
        return
    for other in other_instructions:
        if other != instruction and verifies(key, signature, signing_string(other, params, timestamp, window)):
            raise Unauthenticated(f"signed for instruction {other!r}; this endpoint's instruction is "
                                  f"{instruction!r}", code="wrong_instruction", field="X-Signature")
    raise Unauthenticated(f"signature does not verify; sign {signing_string(instruction, params, timestamp, window)!r}",
                          code="signature_invalid", field="X-Signature")

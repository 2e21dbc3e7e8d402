"""Signed statements: what the exchange's statement key signs, and how anyone checks it.

A signed statement is a JSON envelope:

    {"statement": {...the stored statement document...},
     "signature": {"algorithm": "ed25519", "key_id": "…", "public_key": "<base64>", "value": "<base64>"}}

The signature is ED25519 over the statement's *canonical bytes*: the UTF-8 encoding of
`json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
(`bkr.domain.statement_document.canonical_json`). Those are exactly the bytes the close stored in
`statements.document`, so whoever parses the envelope and serializes `statement` again holds the
bytes that were signed, whatever the envelope's own layout. `public_key` is the base64 of the raw
32-byte key; `key_id` is its fingerprint (the first 16 hex digits of its SHA-256), which the
exchange publishes beside it.

Checking a statement is two independent things: the signature (the exchange issued exactly these
bytes), here, and the figures (each is what the lines and the program terms the statement carries
make it: the tier from the volume, each line's rate, the payouts, the totals, the rounding), which
is `bkr.domain.statement_checks.check`, the same check `bkr reconcile` runs on stored statements.
The statement is read by `bkr.domain.statement_document.read_statement`, which reports an
unreadable field as a problem: every problem found is returned, not only the first.
"""

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import DecimalException
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bkr.domain.errors import InvalidInput
from bkr.domain.problems import Problem
from bkr.domain.statement_checks import check, recompute, unchecked
from bkr.domain.statement_document import canonical_bytes, read_statement
from bkr.domain.statements import BrokerStatement

ALGORITHM = "ed25519"


def key_id_of(public_key: str) -> str:
    """A public key's fingerprint: the first 16 hex digits of the SHA-256 of its raw 32 bytes."""
    return hashlib.sha256(base64.b64decode(public_key, validate=True)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class StatementKey:
    """The exchange's private statement key (its public half is published)."""

    key_id: str
    public_key: str  # base64 of the raw 32-byte public key
    seed: str = field(repr=False)  # base64 of the 32-byte private seed: what the key file holds


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A public statement key as the exchange publishes it."""

    key_id: str
    public_key: str
    created_at: datetime
    retired_at: datetime | None  # no longer signs; statements it signed still verify


def _from_private(private: Ed25519PrivateKey) -> StatementKey:
    public = base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    return StatementKey(key_id_of(public), public, base64.b64encode(private.private_bytes_raw()).decode())


def new_statement_key() -> StatementKey:
    return _from_private(Ed25519PrivateKey.generate())


def statement_key_from_seed(seed: str) -> StatementKey:
    """The key of a base64 32-byte seed (what `bkr statement-key create` writes)."""
    try:
        return _from_private(Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed.strip(), validate=True)))
    except (binascii.Error, ValueError):
        raise InvalidInput("not an ED25519 statement key: expected the base64 of a 32-byte seed") from None


@dataclass(frozen=True, slots=True)
class Signature:
    """The exchange's signature of a statement's canonical bytes."""

    key_id: str
    public_key: str  # base64 of the raw 32-byte public key
    value: str  # base64 of the 64-byte ED25519 signature
    algorithm: str = ALGORITHM

    def to_document(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "key_id": self.key_id, "public_key": self.public_key,
                "value": self.value}


def sign_stored(stored: str, key: StatementKey) -> Signature:
    """The signature of a stored statement document, over exactly its stored bytes."""
    body = stored.encode("utf-8")
    if canonical_bytes(json.loads(stored)) != body:  # a verifier could not reproduce the bytes signed
        raise InvalidInput("the stored statement is not in canonical form; it cannot be signed")
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(key.seed))
    return Signature(key.key_id, key.public_key, base64.b64encode(private.sign(body)).decode())


def envelope_of(stored: str, signature: Signature) -> dict[str, Any]:
    """The signed statement as it is handed out: `{"statement": …, "signature": …}`."""
    return {"statement": json.loads(stored), "signature": signature.to_document()}


def sign_statement(stored: str, key: StatementKey) -> dict[str, Any]:
    """The envelope of a stored statement document, signed over exactly its stored bytes."""
    return envelope_of(stored, sign_stored(stored, key))


# --- checking -------------------------------------------------------------------------------------------


class KeyStanding(StrEnum):
    NOT_CHECKED = "not_checked"  # no list of the exchange's keys to compare with
    PUBLISHED = "published"  # one of the exchange's current keys
    RETIRED = "retired"  # one of the exchange's keys, since retired: what it signed still verifies
    NOT_EXCHANGE_KEY = "not_exchange_key"


@dataclass(frozen=True, slots=True)
class Verification:
    broker_id: Any  # as the envelope states them, whatever they are
    month: Any
    key_id: str | None
    signature_valid: bool
    key_standing: KeyStanding
    statement: BrokerStatement | None  # the statement read; None if a field of it cannot be read
    restated: BrokerStatement | None  # what its lines and terms make of it; None if unreadable or beyond exact digits
    problems: tuple[Problem, ...]  # envelope, signature, key, reading and arithmetic problems, all of them
    unchecked: tuple[str, ...] = ()  # what its document does not carry, so was taken as stated (older formats)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_signature(signature: Any, statement: Mapping[str, Any], problems: list[Problem]) -> bool:
    """Whether `signature` (as received: it may be anything) verifies over the statement's canonical bytes."""
    if not isinstance(signature, dict):
        problems.append(Problem("signature", "missing or not an object"))
        return False
    missing = [name for name in ("algorithm", "key_id", "public_key", "value")
               if not isinstance(signature.get(name), str)]
    if missing:
        problems.append(Problem("signature", f"{', '.join(missing)} missing or not a string"))
        return False
    if signature["algorithm"] != ALGORITHM:
        problems.append(Problem("signature", f"algorithm {signature['algorithm']!r} is not {ALGORITHM!r}"))
        return False
    try:
        raw_key = base64.b64decode(signature["public_key"], validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw_key)
        value = base64.b64decode(signature["value"], validate=True)
    except (binascii.Error, ValueError):
        problems.append(Problem("signature", "public_key or value is not base64 of an ED25519 key or signature"))
        return False
    fingerprint = hashlib.sha256(raw_key).hexdigest()[:16]
    if signature["key_id"] != fingerprint:
        problems.append(Problem("signature", f"key_id {signature['key_id']} is not the fingerprint of public_key "
                                f"({fingerprint})"))
    try:
        key.verify(value, canonical_bytes(statement))
    except InvalidSignature:
        problems.append(Problem("signature", "does not verify: the statement is not, byte for byte, what key "
                                f"{signature['key_id']} signed"))
        return False
    return True


def verify_signed_statement(envelope: Any, published: Sequence[PublishedKey] | None = None) -> Verification:
    """Check an envelope (as received: it may be anything): its signature, and the arithmetic of
    its statement; with `published` (the exchange's statement keys), also that it was signed by
    one of them. Problems are reported, never raised."""
    problems: list[Problem] = []
    if not isinstance(envelope, dict) or not isinstance(envelope.get("statement"), dict):
        problems.append(Problem("", "not a signed statement: expected {\"statement\": {...}, \"signature\": {...}}"))
        return Verification(None, None, None, False, KeyStanding.NOT_CHECKED, None, None, tuple(problems))
    document: dict[str, Any] = envelope["statement"]
    signature = envelope.get("signature")
    valid = _check_signature(signature, document, problems)
    fields: dict[str, Any] = signature if isinstance(signature, dict) else {}
    key_id = fields.get("key_id") if isinstance(fields.get("key_id"), str) else None
    standing = KeyStanding.NOT_CHECKED
    if published is not None and key_id is not None:
        known = {key.key_id: key for key in published}.get(key_id)
        if known is None or known.public_key != fields.get("public_key"):
            standing = KeyStanding.NOT_EXCHANGE_KEY
            problems.append(Problem("key", f"{key_id} is not an exchange key (not among the exchange's published "
                                    "statement keys)"))
        else:
            standing = KeyStanding.PUBLISHED if known.retired_at is None else KeyStanding.RETIRED
    statement, unreadable = read_statement(document)
    problems += unreadable
    made = None
    if statement is not None:
        problems += check(statement)
        try:
            made = recompute(statement)
        except DecimalException:  # `check` has said so: figures too large to check exactly
            made = None
    return Verification(document.get("broker_id"), document.get("month"), key_id, valid, standing, statement, made,
                        tuple(problems), () if statement is None else tuple(unchecked(statement)))

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

Checking a statement is two independent things, both pure functions here: the signature (the
exchange issued exactly these bytes) and the arithmetic (the figures follow from the lines: each
line's payout is its fee base times its effective rate, `payout_exact` is their sum, `payout` is
that sum rounded down once). Every problem found is returned, not only the first.
"""

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, DecimalException, InvalidOperation
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bkr.domain.errors import InvalidInput
from bkr.domain.money import add, canonical, mul, total
from bkr.domain.statement_document import canonical_bytes
from bkr.domain.statements import carried_out, payable, quantum_of

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


def sign_statement(stored: str, key: StatementKey) -> dict[str, Any]:
    """The envelope of a stored statement document, signed over exactly its stored bytes."""
    statement = json.loads(stored)
    body = stored.encode("utf-8")
    if canonical_bytes(statement) != body:  # a verifier could not reproduce the bytes signed
        raise InvalidInput("the stored statement is not in canonical form; it cannot be signed")
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(key.seed))
    return {"statement": statement, "signature": {
        "algorithm": ALGORITHM, "key_id": key.key_id, "public_key": key.public_key,
        "value": base64.b64encode(private.sign(body)).decode()}}


# --- the arithmetic -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recomputation:
    """The payout worked out again from a statement's lines, and where the statement disagrees."""

    lines: int
    payout_exact: Decimal | None  # the sum of the lines' payouts (None if a line is unreadable)
    quantum: Decimal | None  # what `payout` is rounded to, read from how many decimals it is written with
    payout: Decimal | None  # max(0, payout_exact + carried_in) rounded down once to the quantum
    problems: tuple[str, ...]


def _amount(value: Any, where: str, problems: list[str]) -> Decimal | None:
    if not isinstance(value, str):
        problems.append(f"{where}: missing or not a decimal string ({value!r})")
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        problems.append(f"{where}: {value!r} is not a number")
        return None
    return amount


def _line_name(number: int, line: Mapping[str, Any]) -> str:
    return (f"line {number} ({line.get('user_id')} {line.get('market_type')} {line.get('fill_month')} "
            f"{line.get('kind')})")


def recompute_payout(statement: Mapping[str, Any]) -> Recomputation:
    """Check a statement's figures against its lines: each line's `payout_exact` is `fee_base` ×
    `effective_rate`; the statement's `payout_exact` is the sum of the lines' payouts, `payout` is
    that sum with `carried_in`, if positive, rounded down once, and `carried_out` what is left
    below zero; `fee_base` is the regular lines' sum and `adjustment_fee_base` and
    `adjustment_payout_exact` the other lines'; `spot_volume` and `futures_volume` are sums of the
    regular lines' volumes and `api_volume` their sum. A statement issued before carries existed
    has neither field: it carried nothing."""
    try:
        return _recompute(statement)
    except DecimalException:  # only a forged statement has figures beyond 80 exact digits
        return Recomputation(0, None, None, None, ("figures too large to check exactly",))


def _recompute(statement: Mapping[str, Any]) -> Recomputation:
    problems: list[str] = []
    lines = statement.get("lines")
    if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
        return Recomputation(0, None, None, None, ("lines: missing or not a list of lines",))
    payouts: list[Decimal] = []
    sums: dict[str, list[Decimal]] = {name: [] for name in (
        "fee_base", "adjustment_fee_base", "adjustment_payout_exact", "spot_volume", "futures_volume")}
    readable = True
    for number, line in enumerate(lines, start=1):
        name = _line_name(number, line)
        before = len(problems)
        fee_base = _amount(line.get("fee_base"), f"{name}: fee_base", problems)
        rate = _amount(line.get("effective_rate"), f"{name}: effective_rate", problems)
        payout = _amount(line.get("payout_exact"), f"{name}: payout_exact", problems)
        volume = _amount(line.get("volume_usd"), f"{name}: volume_usd", problems)
        kind = line.get("kind")
        if kind not in ("regular", "adjustment", "correction"):
            problems.append(f"{name}: kind {kind!r} is not regular, adjustment or correction")
        if len(problems) > before or fee_base is None or rate is None or payout is None or volume is None:
            readable = False
            continue
        expected = mul(fee_base, rate)
        if payout != expected:
            problems.append(f"{name}: payout_exact {line['payout_exact']} is not fee_base {line['fee_base']} × "
                            f"effective_rate {line['effective_rate']} = {canonical(expected)}")
        payouts.append(payout)
        if kind != "regular":
            sums["adjustment_fee_base"].append(fee_base)
            sums["adjustment_payout_exact"].append(payout)
        else:
            sums["fee_base"].append(fee_base)
            sums["spot_volume" if line.get("market_type") == "SPOT" else "futures_volume"].append(volume)
    if not readable:
        return Recomputation(len(lines), None, None, None, tuple(problems))
    payout_exact = total(payouts)
    for name, parts in sums.items():
        _compare(statement, name, total(parts), "the lines' sum", problems)
    spot, futures = (_amount(statement.get(name), name, []) for name in ("spot_volume", "futures_volume"))
    if spot is not None and futures is not None:
        _compare(statement, "api_volume", add(spot, futures), "spot_volume + futures_volume", problems)
    _compare(statement, "payout_exact", payout_exact, "the sum of the lines' payout_exact", problems)
    stated = _amount(statement.get("payout"), "payout", problems)
    if stated is None:
        return Recomputation(len(lines), payout_exact, None, None, tuple(problems))
    carried_in = _amount(statement.get("carried_in", "0"), "carried_in", problems)
    if carried_in is None:
        return Recomputation(len(lines), payout_exact, None, None, tuple(problems))
    if carried_in > 0:
        problems.append(f"carried_in: {statement['carried_in']} is positive; only a shortfall is carried")
    if "carried_out" in statement or "carried_in" in statement:
        _compare(statement, "carried_out", carried_out(payout_exact, carried_in),
                 "min(0, payout_exact + carried_in)", problems)
    quantum = quantum_of(stated)
    payout = payable(payout_exact, carried_in, quantum)
    if stated != payout:
        problems.append(f"payout: {statement['payout']} is not the lines' payout {canonical(payout_exact)} with "
                        f"carried_in {canonical(carried_in)}, if positive, rounded down to {quantum} = {payout}")
    return Recomputation(len(lines), payout_exact, quantum, payout, tuple(problems))


def _compare(statement: Mapping[str, Any], name: str, expected: Decimal, what: str, problems: list[str]) -> None:
    stated = _amount(statement.get(name), name, problems)
    if stated is not None and stated != expected:
        problems.append(f"{name}: {statement[name]} is not {what} = {canonical(expected)}")


# --- the signature --------------------------------------------------------------------------------------


class KeyStanding(StrEnum):
    NOT_CHECKED = "not_checked"  # no list of the exchange's keys to compare with
    PUBLISHED = "published"  # one of the exchange's current keys
    RETIRED = "retired"  # one of the exchange's keys, since retired: what it signed still verifies
    NOT_EXCHANGE_KEY = "not_exchange_key"


@dataclass(frozen=True, slots=True)
class Verification:
    broker_id: Any
    month: Any
    key_id: str | None
    signature_valid: bool
    key_standing: KeyStanding
    recomputation: Recomputation
    problems: tuple[str, ...]  # signature, key and arithmetic problems, all of them

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_signature(signature: Any, statement: Mapping[str, Any], problems: list[str]) -> bool:
    if not isinstance(signature, dict):
        problems.append("signature: missing or not an object")
        return False
    missing = [name for name in ("algorithm", "key_id", "public_key", "value")
               if not isinstance(signature.get(name), str)]
    if missing:
        problems.append(f"signature: {', '.join(missing)} missing or not a string")
        return False
    if signature["algorithm"] != ALGORITHM:
        problems.append(f"signature: algorithm {signature['algorithm']!r} is not {ALGORITHM!r}")
        return False
    try:
        raw_key = base64.b64decode(signature["public_key"], validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw_key)
        value = base64.b64decode(signature["value"], validate=True)
    except (binascii.Error, ValueError):
        problems.append("signature: public_key or value is not base64 of an ED25519 key or signature")
        return False
    fingerprint = hashlib.sha256(raw_key).hexdigest()[:16]
    if signature["key_id"] != fingerprint:
        problems.append(f"signature: key_id {signature['key_id']} is not the fingerprint of public_key "
                        f"({fingerprint})")
    try:
        key.verify(value, canonical_bytes(statement))
    except InvalidSignature:
        problems.append(f"signature: does not verify: the statement is not, byte for byte, what key "
                        f"{signature['key_id']} signed")
        return False
    return True


def verify_signed_statement(envelope: Any, published: Sequence[PublishedKey] | None = None) -> Verification:
    """Check an envelope's signature and arithmetic; with `published` (the exchange's statement
    keys), also that it was signed by one of them."""
    problems: list[str] = []
    if not isinstance(envelope, dict) or not isinstance(envelope.get("statement"), dict):
        problems.append("not a signed statement: expected {\"statement\": {...}, \"signature\": {...}}")
        return Verification(None, None, None, False, KeyStanding.NOT_CHECKED, Recomputation(0, None, None, None, ()),
                            tuple(problems))
    statement: dict[str, Any] = envelope["statement"]
    signature = envelope.get("signature")
    valid = _check_signature(signature, statement, problems)
    fields: dict[str, Any] = signature if isinstance(signature, dict) else {}
    key_id = fields.get("key_id") if isinstance(fields.get("key_id"), str) else None
    standing = KeyStanding.NOT_CHECKED
    if published is not None and key_id is not None:
        known = {key.key_id: key for key in published}.get(key_id)
        if known is None or known.public_key != fields.get("public_key"):
            standing = KeyStanding.NOT_EXCHANGE_KEY
            problems.append(f"key: {key_id} is not an exchange key (not among the exchange's published "
                            "statement keys)")
        else:
            standing = KeyStanding.PUBLISHED if known.retired_at is None else KeyStanding.RETIRED
    recomputation = recompute_payout(statement)
    problems += recomputation.problems
    return Verification(statement.get("broker_id"), statement.get("month"), key_id, valid, standing, recomputation,
                        tuple(problems))

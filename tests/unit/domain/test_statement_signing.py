"""Signed statements: the signature covers the stored bytes, any change is caught, and the payout
is recomputed from the lines exactly as the close computed it (the reader and `check` on their own
are in test_statement_document.py and test_statement_checks.py)."""

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.config import DEFAULT_CONFIG
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import MarketType
from bkr.domain.money import D, round_down, total
from bkr.domain.periods import Month
from bkr.domain.statement_checks import check, recompute
from bkr.domain.statement_document import canonical_bytes, canonical_json, read_statement
from bkr.domain.statement_signing import (
    KeyStanding,
    PublishedKey,
    key_id_of,
    new_statement_key,
    sign_statement,
    statement_key_from_seed,
    verify_signed_statement,
)
from bkr.domain.statements import AggregateLine, BrokerStatement, build_statement, quantum_of

MAY, APRIL = Month(2024, 5), Month(2024, 4)
KEY = new_statement_key()
CREATED = datetime(2024, 6, 1, tzinfo=UTC)
SCHEDULE = DEFAULT_CONFIG.schedule_for(MAY)


def aggregate(user: str, market: str, fee_base: str, *, rate: str = "0", volume: str = "1000",
              fill_month: Month = MAY, fills: int = 3, correction: bool = False) -> AggregateLine:
    return AggregateLine(1400, MAY, fill_month, user, MarketType(market), D(rate), fills, D(volume), D(fee_base),
                         D(fee_base), correction)


def stored(lines: list[AggregateLine], level: int = 3, quantum: str = "0.01", carried_in: str = "0") -> str:
    """A statement document as the close stores it: built by the domain, in canonical form."""
    config = replace(DEFAULT_CONFIG, rounding_quantum=D(quantum))
    statement = build_statement(config, 1400, MAY, lines, SCHEDULE.tiers[level], {APRIL: SCHEDULE.tiers[1]},
                                D(carried_in))
    return canonical_json(json.loads(canonical_json(statement.to_document())))


STORED = stored([
    aggregate("alice", "SPOT", "1500.123456", volume="15000000"),
    aggregate("bob", "PERP", "1200.00999", rate="0.15", volume="6000100"),
    aggregate("zoë <b>&amp;", "SPOT", "0.5", volume="5000", fills=1),  # not ASCII, not HTML-safe
    aggregate("carol", "SPOT", "80", rate="0.1", fill_month=APRIL),  # a late fill of April
])


def arithmetic(document: dict[str, Any]) -> list[str]:
    """What verification says of a statement's figures alone: the fields it cannot read, or else
    every figure that does not follow from the lines."""
    statement, unreadable = read_statement(document)
    return [str(problem) for problem in (unreadable if statement is None else check(statement))]


def recomputed(document: dict[str, Any]) -> BrokerStatement:
    """What a statement document's lines make of it."""
    statement, unreadable = read_statement(document)
    assert statement is not None, unreadable
    return recompute(statement)


def published(*keys: Any, retired: bool = False) -> list[PublishedKey]:
    return [PublishedKey(k.key_id, k.public_key, CREATED, CREATED if retired else None) for k in keys]


def tamper(envelope: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    """A copy of the envelope with one digit changed in the figure at `path` (its last digit +1)."""
    copy = json.loads(json.dumps(envelope))
    target = copy["statement"]
    for step in path[:-1]:
        target = target[step]
    text = str(target[path[-1]])
    position = max(i for i, c in enumerate(text) if c.isdigit())
    changed = text[:position] + str((int(text[position]) + 1) % 10) + text[position + 1:]
    target[path[-1]] = int(changed) if isinstance(target[path[-1]], int) else changed
    return copy


# --- the canonical bytes and the signature --------------------------------------------------------------


def test_the_canonical_bytes_of_a_stored_statement_are_the_stored_bytes() -> None:
    document = json.loads(STORED)

    assert canonical_bytes(document) == STORED.encode("utf-8")
    assert "zoë <b>&amp;" in STORED  # UTF-8 as is, never \\u escapes


def test_the_signature_is_ed25519_over_exactly_the_stored_bytes() -> None:
    envelope = sign_statement(STORED, KEY)
    signature = envelope["signature"]

    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"]))
    public.verify(base64.b64decode(signature["value"]), STORED.encode("utf-8"))  # raises if not
    assert (signature["algorithm"], signature["key_id"]) == ("ed25519", KEY.key_id)
    assert envelope["statement"] == json.loads(STORED)


def test_the_key_id_is_the_fingerprint_of_the_public_key() -> None:
    assert KEY.key_id == key_id_of(KEY.public_key)
    assert len(KEY.key_id) == 16 and int(KEY.key_id, 16) >= 0
    assert statement_key_from_seed(KEY.seed + "\n") == KEY


@pytest.mark.parametrize("seed", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_a_key_file_that_is_not_a_seed_is_refused(seed: str) -> None:
    with pytest.raises(InvalidInput, match="32-byte seed"):
        statement_key_from_seed(seed)


def test_a_document_not_in_canonical_form_is_not_signed() -> None:
    with pytest.raises(InvalidInput, match="canonical"):
        sign_statement(json.dumps(json.loads(STORED), indent=2), KEY)


def test_an_untouched_statement_verifies_with_its_figures() -> None:
    envelope = json.loads(json.dumps(sign_statement(STORED, KEY), indent=2))  # any layout: re-canonicalized

    result = verify_signed_statement(envelope, published(KEY))

    assert result.ok, result.problems
    assert (result.broker_id, result.month, result.key_id) == (1400, "2024-05", KEY.key_id)
    assert result.key_standing is KeyStanding.PUBLISHED
    found, statement = result.restated, result.statement
    document = json.loads(STORED)
    assert found is not None and statement is not None and len(statement.lines) == 4
    assert str(found.payout_exact) == document["payout_exact"]
    assert (format(found.payout, "f"), statement.quantum) == (document["payout"], Decimal("0.01"))


CORRECTED = stored([  # a bust of an April fill April's statement paid, and a shortfall carried from it
    aggregate("alice", "SPOT", "100", volume="1000000"),
    aggregate("carol", "SPOT", "-80", volume="-800000", fill_month=APRIL, correction=True),
], carried_in="-7.5")


def test_a_statement_with_a_correction_and_a_carried_shortfall_verifies() -> None:
    document = json.loads(CORRECTED)

    result = verify_signed_statement(sign_statement(CORRECTED, KEY), published(KEY))

    assert result.ok, result.problems
    assert [line["kind"] for line in document["lines"]] == ["regular", "correction"]
    assert (document["payout_exact"], document["carried_in"], document["carried_out"]) == ("16", "-7.5", "0")
    assert result.restated is not None
    assert format(result.restated.payout, "f") == document["payout"] == "8.50"


@pytest.mark.parametrize(("name", "value", "named"), [
    ("carried_in", "-7.4", "payout:"), ("carried_out", "-1", "carried_out:"), ("carried_in", "1", "carried_in:")])
def test_a_changed_carry_fails_the_recompute(name: str, value: str, named: str) -> None:
    document = json.loads(CORRECTED) | {name: value}

    problems = arithmetic(document)

    assert any(p.startswith(named) for p in problems), problems


# One digit changed: in a line's figures, in a count, in a rate, in the totals.
TAMPERED_FIGURES = [
    (("lines", 0, "payout_exact"), "line 1"),
    (("lines", 1, "fee_base"), "line 2"),
    (("lines", 1, "effective_rate"), "line 2"),
    (("lines", 0, "volume_usd"), "spot_volume"),
    (("lines", 1, "volume_usd"), "futures_volume"),
    (("lines", 3, "fee_base"), "line 4"),
    (("payout",), "payout:"),
    (("payout_exact",), "payout_exact:"),
    (("fee_base",), "fee_base:"),
    (("api_volume",), "api_volume:"),
    (("adjustment_payout_exact",), "adjustment_payout_exact:"),
    (("adjustment_fee_base",), "adjustment_fee_base:"),
    (("spot_volume",), "spot_volume:"),
    (("futures_volume",), "futures_volume:"),
    (("lines", 2, "fills"), None),  # no figure follows from a count: only the signature catches it
    (("lines", 2, "fee_usd"), None),
    (("broker_rate",), None),
]


@pytest.mark.parametrize(("path", "named"), TAMPERED_FIGURES, ids=["/".join(map(str, p)) for p, _ in TAMPERED_FIGURES])
def test_one_digit_changed_anywhere_fails_and_is_named(path: tuple[Any, ...], named: str | None) -> None:
    tampered = tamper(sign_statement(STORED, KEY), path)

    result = verify_signed_statement(tampered, published(KEY))

    assert not result.ok and not result.signature_valid
    problems = [str(p) for p in result.problems]
    assert any(p.startswith("signature: does not verify") for p in problems)
    if named is not None:  # the arithmetic names the figure that no longer adds up
        assert any(p.startswith(named) for p in problems), problems


def test_a_signature_by_a_key_the_exchange_did_not_publish_is_not_an_exchange_key() -> None:
    stranger = new_statement_key()

    result = verify_signed_statement(sign_statement(STORED, stranger), published(KEY))

    assert result.signature_valid and not result.ok
    assert result.key_standing is KeyStanding.NOT_EXCHANGE_KEY
    assert [str(p) for p in result.problems] == [f"key: {stranger.key_id} is not an exchange key (not among the "
                                                 "exchange's published statement keys)"]


def test_a_published_key_id_with_another_public_key_is_not_an_exchange_key() -> None:
    impostor = new_statement_key()
    claimed = replace(impostor, key_id=KEY.key_id)

    result = verify_signed_statement(sign_statement(STORED, claimed), published(KEY))

    assert result.key_standing is KeyStanding.NOT_EXCHANGE_KEY
    assert any("is not the fingerprint of public_key" in str(p) for p in result.problems)


def test_what_a_retired_key_signed_still_verifies() -> None:
    result = verify_signed_statement(sign_statement(STORED, KEY), published(KEY, retired=True))

    assert result.ok and result.key_standing is KeyStanding.RETIRED


def test_without_the_published_keys_the_key_is_not_checked() -> None:
    result = verify_signed_statement(sign_statement(STORED, new_statement_key()))

    assert result.ok and result.key_standing is KeyStanding.NOT_CHECKED


@pytest.mark.parametrize(("envelope", "problem"), [
    ([], "not a signed statement"),
    ({"signature": {}}, "not a signed statement"),
    ({"statement": json.loads(STORED)}, "signature: missing"),
    ({"statement": json.loads(STORED), "signature": {"algorithm": "ed25519"}},
     "signature: key_id, public_key, value missing"),
    ({"statement": json.loads(STORED), "signature": {"algorithm": "rsa", "key_id": "k", "public_key": "p",
                                                      "value": "v"}}, "signature: algorithm 'rsa'"),
    ({"statement": json.loads(STORED), "signature": {"algorithm": "ed25519", "key_id": "k", "public_key": "p!",
                                                      "value": "v"}}, "signature: public_key or value is not base64"),
])
def test_a_malformed_envelope_is_reported_not_raised(envelope: Any, problem: str) -> None:
    result = verify_signed_statement(envelope)

    assert not result.ok
    assert str(result.problems[0]).startswith(problem)


def test_unreadable_lines_are_reported_each() -> None:
    document = json.loads(STORED)
    document["lines"][0]["fee_base"] = 12
    document["lines"][1]["payout_exact"] = "lots"

    result = verify_signed_statement({"statement": document, "signature": sign_statement(STORED, KEY)["signature"]})

    assert (result.statement, result.restated) == (None, None)
    assert [str(p).split(":")[0] for p in result.problems[1:]] == ["line 1 (alice SPOT 2024-05 regular)",
                                                                    "line 2 (bob PERP 2024-05 regular)"]


def test_absurdly_large_forged_figures_are_reported_not_raised() -> None:
    document = json.loads(STORED)
    document["lines"][0]["fee_base"] = "9" * 200  # more digits than the money context keeps

    assert arithmetic(document) == ["figures too large to check exactly"]


@pytest.mark.parametrize(("payout", "quantum"), [("1020.05", "0.01"), ("0.00", "0.01"), ("1020", "1"),
                                                  ("3.125", "0.001")])
def test_the_quantum_is_read_from_how_the_payout_is_written(payout: str, quantum: str) -> None:
    assert quantum_of(Decimal(payout)) == Decimal(quantum)


@pytest.mark.parametrize("quantum", ["0.01", "0.001", "1"])
def test_the_payout_is_recomputed_at_the_statements_own_quantum(quantum: str) -> None:
    document = json.loads(stored([aggregate("alice", "SPOT", "1500.123456")], quantum=quantum))

    found = recomputed(document)

    assert arithmetic(document) == [] and found.quantum == Decimal(quantum)
    assert found.payout == round_down(Decimal("600.0493824"), Decimal(quantum))


# --- properties: random lines -------------------------------------------------------------------------

AMOUNTS = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**9), places=6,
                      allow_nan=False, allow_infinity=False)
RATES = st.sampled_from(["0", "0.1", "0.15", "0.25", "0.4", "0.5", "0.6"])
LINES = st.lists(st.tuples(st.sampled_from(["alice", "bob", "carol", "dan"]),
                           st.sampled_from(["SPOT", "PERP", "IPERP"]), RATES, AMOUNTS, AMOUNTS, st.booleans()),
                 min_size=1, max_size=12)


def random_statement(lines: list[tuple[str, str, str, Decimal, Decimal, bool]], level: int) -> str:
    return stored([aggregate(user, market, str(fee_base), rate=rate, volume=str(volume),
                             fill_month=APRIL if late else MAY)
                   for user, market, rate, fee_base, volume, late in lines], level)


@settings(max_examples=60, deadline=None)
@given(lines=LINES, level=st.integers(min_value=0, max_value=5))
def test_the_recomputed_payout_is_the_sum_of_the_line_payouts_rounded_down_once(
        lines: list[tuple[str, str, str, Decimal, Decimal, bool]], level: int) -> None:
    document = json.loads(random_statement(lines, level))

    found = recomputed(document)

    line_sum = total(D(line["payout_exact"]) for line in document["lines"])
    assert arithmetic(document) == []
    assert found.payout_exact == line_sum
    assert found.payout == round_down(line_sum, Decimal("0.01")) == D(document["payout"])


LINE_FIGURES = ["fee_base", "effective_rate", "payout_exact", "volume_usd", "fee_usd", "affiliate_rate", "fills"]


@settings(max_examples=60, deadline=None)
@given(lines=LINES, level=st.integers(min_value=0, max_value=5), data=st.data())
def test_any_change_of_a_lines_figure_fails_verification(
        lines: list[tuple[str, str, str, Decimal, Decimal, bool]], level: int, data: st.DataObject) -> None:
    envelope = sign_statement(random_statement(lines, level), KEY)
    assert verify_signed_statement(envelope, published(KEY)).ok
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
    figure = data.draw(st.sampled_from(LINE_FIGURES))

    result = verify_signed_statement(tamper(envelope, ("lines", index, figure)), published(KEY))

    assert not result.ok and not result.signature_valid


@settings(max_examples=60, deadline=None)
@given(lines=LINES, level=st.integers(min_value=0, max_value=5), data=st.data())
def test_any_change_of_a_lines_payout_figures_fails_the_recompute_alone(
        lines: list[tuple[str, str, str, Decimal, Decimal, bool]], level: int, data: st.DataObject) -> None:
    """Without the signature: a changed fee base, rate or line payout no longer adds up (fee bases
    here are positive; on a line with no fee base a rate pays nothing, whatever it says)."""
    document = json.loads(random_statement(lines, level))
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
    figure = data.draw(st.sampled_from(["fee_base", "effective_rate", "payout_exact"]))
    delta = data.draw(st.sampled_from(["0.000001", "0.01", "1", "-0.000001"]))
    line = document["lines"][index]
    line[figure] = str(D(line[figure]) + D(delta))

    assert arithmetic(document) != []

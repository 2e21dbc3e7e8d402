"""`bkr statement verify` works a signed statement out again in full, on SQLite and PostgreSQL.

Statements closed by bkr and signed with `bkr statement --format signed`; tampered copies signed
again with the exchange's own key (a statement that lies and still carries a valid signature, as
the issue found): verification must fail and name every figure that differs, stated and worked
out. A late fill's line, priced at its month's tier, is held to that tier; a statement of an
older format is checked as far as it can be, and the output says what was not checked.
"""

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from integration_support import JUNE, MAY, add_broker, add_code, add_users, close, fill, import_rows
from sqlalchemy import Engine

from bkr.domain.statement_document import canonical_json
from bkr.domain.statement_signing import sign_statement
from bkr.program.statement_signing import load_signing_key


@pytest.fixture(autouse=True)
def no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BKR_DATABASE_URL", "BKR_STATEMENT_KEY_FILE", "BKR_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed(engine: Engine, tmp_path: Path) -> Engine:
    """Broker 1400 in May 2024: alice (no referral code) 6M of spot, BKR 1 at 30%; bob, whose code
    gives his affiliate 15%, a perpetual fill. A late May fill of alice's lands in June's statement
    as an adjustment, priced at May's BKR 1; June's own volume is BKR 0's."""
    add_broker(engine, 1400)
    add_code(engine, "BOB-CODE", "0.15")
    add_users(engine, "alice")
    add_users(engine, "bob", code="BOB-CODE")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", user="alice", price="150", quantity="40000", fee="600.5"),
        fill("f-2", user="bob", market="PERP", price="100", quantity="10", fee="0.45"),
    ])
    close(engine, MAY)
    import_rows(engine, tmp_path / "june.csv", [
        fill("f-3", user="alice", at="2024-05-31T23:00:00Z", price="10", quantity="10", fee="1.5"),  # late
        fill("f-4", user="alice", at="2024-06-03T10:00:00Z", price="10", quantity="10", fee="2"),
    ])
    close(engine, JUNE)
    return engine


@pytest.fixture
def key_file(bkr: Any, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "statement.key"
    assert bkr("statement-key", "create", "--out", str(path), "--db", db_url).code == 0
    monkeypatch.setenv("BKR_STATEMENT_KEY_FILE", str(path))
    return path


def signed(bkr: Any, db_url: str, month: str) -> dict[str, Any]:
    result = bkr("statement", "--broker", "1400", "--month", month, "--format", "signed", "--db", db_url)
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def resigned(document: dict[str, Any], key_file: Path, path: Path) -> Path:
    """`document` signed with the exchange's own key: its signature is valid, whatever it says."""
    envelope = sign_statement(canonical_json(document), load_signing_key(key_file))
    path.write_text(json.dumps(envelope, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_genuine_statement_verifies_with_its_tier_its_volume_and_its_program_version(
        bkr: Any, closed: Engine, db_url: str, key_file: Path, tmp_path: Path) -> None:
    envelope = signed(bkr, db_url, "2024-05")
    document = envelope["statement"]
    path = tmp_path / "may.json"
    path.write_text(json.dumps(envelope), encoding="utf-8")

    result = bkr("statement", "verify", str(path), "--db", db_url)

    assert (document["format_version"], document["tier"], document["tier_volume"]) == (2, "BKR 1", "6001000")
    assert result.code == 0, result.out
    assert result.out.splitlines()[0] == ("OK: the statement of broker 1400 for 2024-05 is signed, and every figure "
                                          "follows from its lines and the program terms it carries")
    assert (f"  program    version {document['program']['version']}: BKR 1 for a volume of 6001000 (same_month) at "
            "0.3, cap 0.5, each line at its tier's rate under the cap") in result.out
    assert "unchecked" not in result.out


def test_a_statement_signed_with_the_exchanges_key_and_one_altered_rate_fails_naming_the_line(
        bkr: Any, closed: Engine, db_url: str, key_file: Path, tmp_path: Path) -> None:
    document = signed(bkr, db_url, "2024-05")["statement"]
    alice = document["lines"][0]
    assert (alice["user_id"], alice["affiliate_rate"], alice["effective_rate"]) == ("alice", "0", "0.3")
    # paid at 0.1 instead of 0.3, every payout and total made to agree: only the terms tell
    alice.update(effective_rate="0.1", payout_exact="60.05")
    bob = Decimal(document["lines"][1]["payout_exact"])  # 0.45 × 0.3
    document.update(payout_exact=str(Decimal("60.05") + bob), payout="60.18")
    path = resigned(document, key_file, tmp_path / "tampered.json")

    result = bkr("statement", "verify", str(path), "--db", db_url)
    as_json = bkr("statement", "verify", str(path), "--db", db_url, "--json")

    assert result.code == 1 and as_json.code == 1
    assert result.out.splitlines() == [
        "FAILED: the statement of broker 1400 for 2024-05 does not verify",
        "  - line 1 (alice SPOT 2024-05 regular): effective_rate 0.1 is not min(BKR 1's rate 0.3, max(0, cap 0.5 − "
        "affiliate_rate 0)) = 0.3",
        "  - line 1 (alice SPOT 2024-05 regular): payout_exact 60.05 is not fee_base 600.5 × effective_rate 0.3 = "
        "180.15",
        "  - payout_exact: 60.185 is not the sum of the lines' payout_exact = 180.285",
        "  - payout: 60.18 is not the lines' payout 180.285 with carried_in 0, if positive, rounded down to 0.01 = "
        "180.28",
        "  worked out again, it pays 180.28, not 60.18",
    ]
    report = json.loads(as_json.out)
    assert report["signature_valid"] is True and report["key"] == "published"
    assert report["differences"][0] == {"where": "line 1 (alice SPOT 2024-05 regular)", "figure": "effective_rate",
                                        "stated": "0.1", "recomputed": "0.3"}
    assert (report["payout"], report["tier"]) == ("180.28", "BKR 1")


def test_a_late_fill_is_held_to_the_tier_its_month_was_paid_at(
        bkr: Any, closed: Engine, db_url: str, key_file: Path, tmp_path: Path) -> None:
    envelope = signed(bkr, db_url, "2024-06")
    document = envelope["statement"]
    assert document["program"]["prior_tiers"] == [{"month": "2024-05", "rate": "0.3", "tier": "BKR 1"}]
    late = next(line for line in document["lines"] if line["kind"] == "adjustment")
    assert (document["tier"], late["tier"], late["effective_rate"]) == ("BKR 0", "BKR 1", "0.3")
    genuine = tmp_path / "june.json"
    genuine.write_text(json.dumps(envelope), encoding="utf-8")
    assert bkr("statement", "verify", str(genuine), "--db", db_url).code == 0

    late.update(tier="BKR 0", effective_rate="0.2", payout_exact="0.3")  # priced at June's tier instead
    document.update(adjustment_payout_exact="0.3",
                    payout_exact=str(Decimal("0.3") + Decimal(document["lines"][0]["payout_exact"])), payout="0.70")
    result = bkr("statement", "verify", str(resigned(document, key_file, tmp_path / "june-tampered.json")))

    assert result.code == 1
    assert "  - line 2 (alice SPOT 2024-05 adjustment): tier BKR 0 is not the tier 2024-05 was paid at " \
           "(program: prior_tiers) = BKR 1" in result.out.splitlines()
    assert "  - line 2 (alice SPOT 2024-05 adjustment): effective_rate 0.2 is not min(BKR 1's rate 0.3, max(0, cap " \
           "0.5 − affiliate_rate 0)) = 0.3" in result.out.splitlines()


def test_a_statement_issued_before_statements_named_their_program_is_checked_for_its_sums_and_says_so(
        bkr: Any, closed: Engine, db_url: str, key_file: Path, tmp_path: Path) -> None:
    document = signed(bkr, db_url, "2024-05")["statement"]
    for name in ("program", "format_version", "tier_volume"):  # as bkr issued statements before
        del document[name]

    result = bkr("statement", "verify", str(resigned(document, key_file, tmp_path / "old.json")), "--db", db_url)

    assert result.code == 0, result.out
    assert result.out.startswith("OK: the statement of broker 1400 for 2024-05 is signed, and its payout follows "
                                 "from its lines\n")
    assert ("  unchecked  the tier, the broker rate and the lines' rates: the statement carries no program version "
            "(it was issued before statements named one), so only its sums were checked") in result.out

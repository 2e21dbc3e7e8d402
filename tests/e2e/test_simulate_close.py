"""The whole month through the real command line, checked against an independent computation.

`bkr simulate` writes a month of fills and registers its brokers, affiliates and users;
`bkr fills import`, `bkr close --json` and `bkr statement` then run as an operator would run
them, on SQLite and on PostgreSQL. The expected statements are computed here from the raw
file with `csv` and `Decimal` alone, by the program's rules, so that a bug in the engine's
parsing, attribution, aggregation or pricing shows up as a digit that differs.
"""

import csv
import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

import pytest

from bkr.domain.periods import Month
from bkr.simulate import SimRegistry, plan_simulation

MONTH = "2025-03"
NEXT_MONTH = "2025-04"
FILLS = 2_000
SEED = 11
BKR = Path(sys.executable).with_name("bkr")

# The seed's program, written out again here rather than imported from the engine.
TIERS = [(Decimal(0), Decimal("0.20")), (Decimal(5_000_000), Decimal("0.30")), (Decimal(10_000_000), Decimal("0.35")),
         (Decimal(20_000_000), Decimal("0.40")), (Decimal(60_000_000), Decimal("0.45")),
         (Decimal(100_000_000), Decimal("0.50"))]
CAP = Decimal("0.5")
USD = {"USDC": Decimal(1), "USDT": Decimal(1), "USD": Decimal(1)}
SYSTEM = {"Liquidation", "Adl", "Backstop", "CollateralConversion", "AutoClose", "Settlement",
          "BackstopLiquidityProvider", "PositionTransfer", "Expiry"}
EXACT = Context(prec=200)


# --- the independent computation ----------------------------------------------------------------------

@dataclass
class Expected:
    spot: Decimal = Decimal(0)
    futures: Decimal = Decimal(0)
    fills: int = 0
    fee_base_by_rate: dict[Decimal, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    @property
    def api_volume(self) -> Decimal:
        return self.spot + self.futures

    @property
    def level(self) -> int:
        return max(level for level, (threshold, _) in enumerate(TIERS) if self.api_volume >= threshold)

    @property
    def fee_base(self) -> Decimal:
        return sum(self.fee_base_by_rate.values(), Decimal(0))

    def payout_exact(self, broker_rate: Decimal) -> Decimal:
        return sum((base * min(broker_rate, max(Decimal(0), CAP - affiliate))
                    for affiliate, base in self.fee_base_by_rate.items()), Decimal(0))


@dataclass
class FileOutcome:
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    conflicts: int = 0
    awaiting: int = 0
    brokers: dict[int, Expected] = field(default_factory=lambda: defaultdict(Expected))
    awaiting_fills: list[tuple[int, str, datetime, Decimal]] = field(default_factory=list)  # broker, user, t, base


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _amount(text: str) -> Decimal:
    value = Decimal(text)  # raises on "1,234.50"
    if not value.is_finite():
        raise ValueError(text)
    return value


def _valid(row: dict[str, str]) -> dict[str, Any] | None:
    """The row's values, or None if the program must reject it."""
    try:
        for name in ("fill_id", "order_id", "user_id", "symbol", "market_type", "side", "price", "quantity", "fee",
                     "fee_symbol", "is_maker", "timestamp"):
            if not row[name].strip():
                return None
        price, quantity, fee = _amount(row["price"]), _amount(row["quantity"]), _amount(row["fee"])
        moment = _instant(row["timestamp"])
    except (InvalidOperation, ValueError, KeyError):
        return None
    base, quote = row["symbol"].split("_")[:2]
    broker = int(row["broker_id"]) if row["broker_id"] else None
    if (price <= 0 or quantity <= 0 or row["market_type"] not in ("SPOT", "PERP", "IPERP", "DATED")
            or row["side"] not in ("Bid", "Ask") or (broker is not None and not 1 <= broker <= 65535)
            or quote not in USD or row["fee_symbol"] not in (base, quote, *USD)
            or (row["fill_type"] or "User") not in SYSTEM | {"User"}):
        return None
    if row["fee_symbol"] == quote:
        fee_usd = fee * USD[quote]
    elif row["fee_symbol"] == base:
        fee_usd = fee * price * USD[quote]
    else:
        fee_usd = fee * USD[row["fee_symbol"]]
    return {"broker": broker, "user": row["user_id"], "at": moment, "futures": row["market_type"] != "SPOT",
            "volume": price * quantity * USD[quote], "fee_usd": fee_usd, "via_api": row["via_api"] == "true",
            "fill_type": row["fill_type"] or "User"}


def _status_at(registry: SimRegistry, broker_id: int, moment: datetime) -> str | None:
    for broker in registry.brokers:
        if broker.broker_id == broker_id:
            status = "pending"
            for change in broker.status_changes:
                if change.effective_at <= moment:
                    status = change.status.value
            return status
    return None  # not enrolled


def _affiliate_rate(registry: SimRegistry, code: str | None, moment: datetime) -> Decimal:
    if code is None:
        return Decimal(0)
    (entry,) = [c for c in registry.codes if c.code == code]
    rate = Decimal(0)
    for change in entry.rates:
        if change.effective_from <= moment:
            rate = change.rate
    return rate


def expected_from_file(path: Path, registry: SimRegistry) -> FileOutcome:
    codes = {user.user_id: user.referral_code for user in registry.users}
    registered = {user.user_id for user in registry.registered_users}
    outcome = FileOutcome()
    seen: dict[str, tuple[str, ...]] = {}
    with localcontext(EXACT), path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            fill = _valid(row)
            if fill is None:
                outcome.invalid += 1
                continue
            content = tuple(row[name] for name in sorted(row))
            if row["fill_id"] in seen:
                if seen[row["fill_id"]] == content:
                    outcome.duplicates += 1
                else:
                    outcome.conflicts += 1
                continue
            seen[row["fill_id"]] = content
            outcome.valid += 1
            broker = fill["broker"]
            if (broker is None or fill["fill_type"] != "User" or not fill["via_api"]
                    or _status_at(registry, broker, fill["at"]) != "active"):
                continue
            base = max(fill["fee_usd"], Decimal(0))
            if fill["user"] not in registered:
                outcome.awaiting += 1
                outcome.awaiting_fills.append((broker, fill["user"], fill["at"], base))
                continue
            expected = outcome.brokers[broker]
            expected.fills += 1
            if fill["futures"]:
                expected.futures += fill["volume"]
            else:
                expected.spot += fill["volume"]
            expected.fee_base_by_rate[_affiliate_rate(registry, codes[fill["user"]], fill["at"])] += base
    return outcome


def _cents_down(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


# --- the run ----------------------------------------------------------------------------------------

def _json(result: Any) -> Any:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_a_simulated_month_closes_to_the_independently_computed_statements(bkr: Any, db_url: str, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    admin = bkr("operator", "add", "root", "--role", "admin", "--db", db_url)  # the first admin: no key needed
    assert admin.code == 0, admin.err
    monkeypatch.setenv("BKR_OPERATOR_KEY", admin.out.strip())  # for every command below, and `bkr` processes
    fills_file = tmp_path / "fills.csv"
    simulate = ("simulate", "--month", MONTH, "--fills", str(FILLS), "--seed", str(SEED), "--out", str(fills_file),
                "--db", db_url, "--json")
    summary = _json(bkr(*simulate))
    written = fills_file.read_bytes()
    again = _json(bkr(*simulate))  # registering the same registry twice adds nothing and fails nothing
    assert fills_file.read_bytes() == written
    assert again["registered"] == {"brokers": 0, "status_changes": 0, "affiliates": 0, "rates": 0, "users": 0,
                                   "kept": []}
    assert summary["registered"]["brokers"] == 14 and summary["registered"]["users"] > 0
    registered = _json(bkr("audit", "--action", "broker.add", "--db", db_url, "--json"))["entries"]
    assert len(registered) == 14 and {e["actor"] for e in registered} == {"root"}  # the key's operator

    registry = plan_simulation(Month.parse(MONTH), FILLS, SEED).registry
    expected = expected_from_file(fills_file, registry)
    assert expected.invalid == summary["malformed"] == 9
    assert (expected.duplicates, expected.conflicts) == (summary["duplicates"], summary["conflicts"]) == (2, 1)
    assert expected.awaiting > 0

    imported = _json(bkr("fills", "import", str(fills_file), "--db", db_url, "--json"))
    assert imported == {"accepted": expected.valid, "duplicates": expected.duplicates,
                        "conflicts": expected.conflicts, "rejected": expected.invalid}
    reimported = _json(bkr("fills", "import", str(fills_file), "--db", db_url, "--json"))
    assert reimported == {"accepted": 0, "duplicates": expected.valid + expected.duplicates,
                          "conflicts": expected.conflicts, "rejected": expected.invalid}

    preview = _json(bkr("close", "--month", MONTH, "--db", db_url, "--json", "--dry-run"))
    closing = subprocess.run([str(BKR), "close", "--month", MONTH, "--db", db_url, "--json"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert closing.returncode == 0, closing.stderr
    closed = json.loads(closing.stdout)
    assert closed["statements"] == preview["statements"]
    assert closed["awaiting_user_fills"] == expected.awaiting

    statements = {s["broker_id"]: s for s in closed["statements"]}
    assert sorted(statements) == sorted(expected.brokers)
    assert {s["tier"] for s in statements.values()} == {f"BKR {level}" for level in range(6)}
    with localcontext(EXACT):
        for broker_id, want in expected.brokers.items():
            got = statements[broker_id]
            rate = TIERS[want.level][1]
            payout_exact = want.payout_exact(rate)
            assert got["tier"] == f"BKR {want.level}", broker_id
            assert Decimal(got["broker_rate"]) == rate
            assert Decimal(got["spot_volume"]) == want.spot, broker_id
            assert Decimal(got["futures_volume"]) == want.futures, broker_id
            assert Decimal(got["api_volume"]) == want.api_volume, broker_id
            assert Decimal(got["fee_base"]) == want.fee_base, broker_id
            assert Decimal(got["payout_exact"]) == payout_exact, broker_id
            assert got["payout"] == str(_cents_down(payout_exact)), broker_id

            document = _json(bkr("statement", "--broker", str(broker_id), "--month", MONTH, "--db", db_url))
            assert {k: document[k] for k in got if k != "line_count"} == {k: v for k, v in got.items()
                                                                          if k != "line_count"}
            assert sum(line["fills"] for line in document["lines"]) == want.fills

    # a broker that never counted a fill (it stayed pending) has no statement: one line, exit status 1
    missing = subprocess.run([str(BKR), "statement", "--broker", "7100", "--month", MONTH, "--db", db_url],
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: no statement for broker 7100") and missing.stderr.count("\n") == 1

    # closing again and importing again change nothing
    assert _json(bkr("close", "--month", MONTH, "--db", db_url, "--json"))["statements"] == closed["statements"]
    assert _json(bkr("fills", "import", str(fills_file), "--db", db_url, "--json"))["accepted"] == 0

    # the waiting fills are paid once their users are known: next month, at this month's tier. Their
    # month is closed, so the registration is declared retroactive, with a reason
    for user in registry.unregistered_users:
        added = bkr("user", "add", "--id", user.user_id, "--retroactive", "--reason", "registered after the close",
                    "--db", db_url, *(("--referral-code", user.referral_code) if user.referral_code else ()))
        assert added.code == 0, added.err
    adjusted = _json(bkr("close", "--month", NEXT_MONTH, "--db", db_url, "--json"))
    codes = {user.user_id: user.referral_code for user in registry.users}
    adjustments: dict[int, Decimal] = defaultdict(Decimal)
    with localcontext(EXACT):
        for broker_id, user_id, moment, base in expected.awaiting_fills:
            broker_rate = TIERS[expected.brokers[broker_id].level][1]
            affiliate = _affiliate_rate(registry, codes[user_id], moment)
            adjustments[broker_id] += base * min(broker_rate, max(Decimal(0), CAP - affiliate))
    assert {s["broker_id"] for s in adjusted["statements"]} == set(adjustments)
    for document in adjusted["statements"]:
        want_adjustment = adjustments[document["broker_id"]]
        assert Decimal(document["api_volume"]) == 0 and document["tier"] == "BKR 0"
        assert Decimal(document["adjustment_payout_exact"]) == want_adjustment
        assert Decimal(document["payout_exact"]) == want_adjustment
        assert document["payout"] == str(_cents_down(want_adjustment))
    assert adjusted["awaiting_user_fills"] == 0


def test_demo_loads_an_empty_database_once_and_then_only_prints(bkr: Any, db_url: str) -> None:
    first = bkr("demo", "--db", db_url, "--previous-fills", "1500", "--current-fills", "500")
    assert first.code == 0, first.err
    previous = Month.of(datetime.now(UTC)).previous()
    assert f"Statements of {previous}" in first.out and "What to try next" in first.out
    assert "1400 Meridian Aggregator" in first.out
    assert f"{previous}: closed" in first.err

    second = bkr("demo", "--db", db_url)
    assert second.code == 0, second.err
    assert "imported" not in second.err
    assert second.out == first.out
    # without a key, the demo's generated world is bkr's own: every entry is system's
    trail = _json(bkr("audit", "--db", db_url, "--json", "--limit", "10000"))["entries"]
    assert {e["actor"] for e in trail} == {"system"}
    assert [e["after"]["file"] for e in trail if e["action"] == "fills.import"] == [
        f"fills-{previous}.csv", f"fills-{previous.next()}.csv"]

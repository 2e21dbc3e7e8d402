"""The ends of the bounds, end to end, on both databases and under a hostile decimal context.

Amounts with the most digits `bkr.domain.bounds` allows and the smallest ones, fees exactly at
the plausibility limit and one step beyond it, maker rebates, referral rates, USD rates, caps and
rounding quanta at the ends of their bounds, and the smallest and largest broker ids go through
import, close, every format of a statement, settlement and reconciliation. Every figure must
equal a plain computation in Python's `Fraction`s, and the close must never raise.

Each case runs twice, on a fresh database each time: under Python's default decimal context and
under a hostile one, as a library loaded in the same process leaves it (ccxt sets ROUND_HALF_UP
and traps Underflow on the thread's context), here with a low precision and every rounding and
float mixing trapped besides. Both runs must give the same bytes: money never depends on the
thread's context. The budget (`EXAMPLES` cases per database, and the cases written out below)
keeps the file well under a minute.
"""

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Context, Decimal, Inexact, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from integration_support import MAY, NOW, clock, write_fills
from sqlalchemy import Engine

from bkr.domain.config import DEFAULT_USD_RATES, ProgramConfig
from bkr.domain.periods import parse_instant
from bkr.domain.registry import MAX_BROKER_ID, MIN_BROKER_ID, BrokerStatus
from bkr.domain.statement_signing import StatementKey, new_statement_key, verify_signed_statement
from bkr.domain.tiers import SEED_SCHEDULE, Tier, TierSchedule
from bkr.ledger import journal
from bkr.ledger.postings import broker_payable
from bkr.program import registry, reports, settlement
from bkr.program.close import close_month
from bkr.program.exports import StatementFormat, render_statement
from bkr.program.importer import import_file
from bkr.program.reconcile import reconcile_month
from bkr.program.statement_signing import publish_statement_key
from bkr.store import db
from program_support import use_program

EXAMPLES = 5  # generated cases per database, each run under both contexts (about a second a case)

PLACES = 18
STEP = Decimal("1E-18")
MAX_AMOUNT = Decimal("999999999999999.999999999999999999")  # bounds.AMOUNT: 15 integer digits, 18 places
MAX_USD_RATE = Decimal("999999999.999999999999999999")  # bounds.USD_RATE: 9 integer digits, 18 places
ALMOST_ONE = Decimal("0.999999999999999999")
BROKERS = (MIN_BROKER_ID, 1400, MAX_BROKER_ID)
USERS = ("u-1", "u-2", "=u-3")  # the last one as a spreadsheet would run it
QUOTE = "XQ"  # a quote asset with a configured USD rate
OTHER = "XF"  # a fee asset that is neither the base nor the quote
FIRST_INSTANT, LAST_INSTANT = "2024-05-01T00:00:00Z", "2024-05-31T23:59:59.999999Z"


# --- the cases ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FillCase:
    broker: int
    user: str
    market: str  # SPOT or PERP
    quote: str  # USDC or QUOTE
    fee_asset: str  # quote, base or other
    price: Decimal
    quantity: Decimal
    fee_share: Fraction  # the fee as a share of the largest plausible one; negative: a maker rebate
    beyond: bool  # one step of the fee's last place past that share (past the limit when the share is ±1)
    at: str


@dataclass(frozen=True)
class Case:
    quote_rate: Decimal
    other_rate: Decimal
    max_fee_share: Decimal
    cap: Decimal
    quantum: Decimal
    extreme_tiers: bool  # a schedule whose top threshold is the largest amount, at rate 1
    referral_rates: tuple[Decimal | None, ...]  # per user in USERS; None: signed up without a code
    fills: tuple[FillCase, ...]
    file_format: str

    @property
    def config(self) -> ProgramConfig:
        schedule = SEED_SCHEDULE
        if self.extreme_tiers:
            schedule = TierSchedule(SEED_SCHEDULE.effective_from, (
                Tier(0, Decimal(0), STEP), Tier(1, STEP, Decimal("0.5")), Tier(2, MAX_AMOUNT, Decimal(1))))
        return ProgramConfig(schedules=(schedule,), cap=self.cap, rounding_quantum=self.quantum,
                             usd_rates={**DEFAULT_USD_RATES, QUOTE: self.quote_rate, OTHER: self.other_rate},
                             max_fee_share=self.max_fee_share, review_days=0)


def _decimals(ends: Sequence[Decimal], low: Decimal, high: Decimal) -> st.SearchStrategy[Decimal]:
    return st.one_of(st.sampled_from(ends), st.decimals(min_value=low, max_value=high, places=PLACES))


amounts = _decimals([MAX_AMOUNT, STEP, Decimal(1), Decimal("999999999999999"), ALMOST_ONE], STEP, MAX_AMOUNT)
usd_rates = _decimals([MAX_USD_RATE, STEP, Decimal(1), Decimal("0.000000001")], STEP, MAX_USD_RATE)
fractions = _decimals([Decimal(0), STEP, Decimal("0.5"), ALMOST_ONE, Decimal(1)], Decimal(0), Decimal(1))
shares = _decimals([STEP, Decimal("0.001"), ALMOST_ONE, Decimal(1)], STEP, Decimal(1))
fee_shares = st.one_of(st.sampled_from([Fraction(1), Fraction(-1), Fraction(0)]),
                       st.fractions(min_value=-1, max_value=1, max_denominator=10**6))

fill_cases = st.builds(
    FillCase, broker=st.sampled_from(BROKERS), user=st.sampled_from(USERS), market=st.sampled_from(["SPOT", "PERP"]),
    quote=st.sampled_from(["USDC", QUOTE]), fee_asset=st.sampled_from(["quote", "base", "other"]), price=amounts,
    quantity=amounts, fee_share=fee_shares, beyond=st.booleans(),
    at=st.sampled_from([FIRST_INSTANT, "2024-05-17T09:30:00.5Z", LAST_INSTANT]))

cases = st.builds(
    Case, quote_rate=usd_rates, other_rate=usd_rates, max_fee_share=shares, cap=fractions,
    quantum=st.sampled_from([Decimal("1E-18"), Decimal("0.01"), Decimal(1)]),  # 1 or a power of ten below it
    extreme_tiers=st.booleans(),
    referral_rates=st.tuples(*[st.one_of(st.none(), fractions) for _ in USERS]),
    fills=st.lists(fill_cases, min_size=1, max_size=8).map(tuple), file_format=st.sampled_from([".csv", ".ndjson"]))


# --- the reference: the rules in Fractions ------------------------------------------------------------

def _rate(case: Case, asset: str) -> Fraction:
    return Fraction(case.config.usd_rates[asset])


def _symbol(fill: FillCase) -> str:
    return f"SOL_{fill.quote}" + ("_PERP" if fill.market == "PERP" else "")


def _fee_unit(case: Case, fill: FillCase) -> Fraction:
    """The USD value of one unit of the fill's fee asset."""
    if fill.fee_asset == "quote":
        return _rate(case, fill.quote)
    if fill.fee_asset == "base":
        return Fraction(fill.price) * _rate(case, fill.quote)
    return _rate(case, OTHER)


def _volume(case: Case, fill: FillCase) -> Fraction:
    return Fraction(fill.price) * Fraction(fill.quantity) * _rate(case, fill.quote)


def _text(amount: Fraction) -> str:
    """An amount with at most 18 places as decimal text, without the decimal module."""
    units = amount * 10**PLACES
    assert units.denominator == 1
    sign, whole = ("-" if units < 0 else ""), abs(units.numerator)
    return f"{sign}{whole // 10**PLACES}.{whole % 10**PLACES:018d}"


def fee_of(case: Case, fill: FillCase) -> str:
    """The fee the case asks for: its share of the largest fee plausibility accepts, cut to 18
    places towards zero, then one step further out if `beyond`, and within the bounds."""
    limit = Fraction(case.max_fee_share) * _volume(case, fill) / _fee_unit(case, fill)
    target = fill.fee_share * limit
    units = int(target * 10**PLACES)  # towards zero
    if fill.beyond:
        units += 1 if target >= 0 else -1
    biggest = int(Fraction(MAX_AMOUNT) * 10**PLACES)
    return _text(Fraction(max(-biggest, min(biggest, units)), 10**PLACES))


def row_of(case: Case, index: int, fill: FillCase) -> dict[str, Any]:
    return {"fill_id": f"f-{index}", "order_id": f"o-{index}", "user_id": fill.user, "symbol": _symbol(fill),
            "market_type": fill.market, "side": "Ask" if index % 2 else "Bid", "price": _text(Fraction(fill.price)),
            "quantity": _text(Fraction(fill.quantity)),
            "fee": fee_of(case, fill),
            "fee_symbol": {"quote": fill.quote, "base": "SOL", "other": OTHER}[fill.fee_asset],
            "is_maker": fill.fee_share < 0, "timestamp": fill.at, "broker_id": fill.broker, "via_api": True,
            "fill_type": "User"}


@dataclass
class LineRef:
    fills: int = 0
    volume: Fraction = Fraction(0)
    fee: Fraction = Fraction(0)
    fee_base: Fraction = Fraction(0)


def reference(case: Case) -> tuple[int, dict[int, dict[str, Any]]]:
    """(how many rows are rejected, each broker's statement figures and lines), by the rules."""
    config = case.config
    rejected = 0
    lines: dict[int, dict[tuple[str, str, Fraction], LineRef]] = defaultdict(lambda: defaultdict(LineRef))
    for fill in case.fills:
        fee_usd = Fraction(Decimal(fee_of(case, fill))) * _fee_unit(case, fill)
        volume = _volume(case, fill)
        if abs(fee_usd) > Fraction(case.max_fee_share) * volume:
            rejected += 1
            continue
        rate = case.referral_rates[USERS.index(fill.user)]
        line = lines[fill.broker][(fill.user, fill.market, Fraction(rate or 0))]
        line.fills += 1
        line.volume += volume
        line.fee += fee_usd
        line.fee_base += max(fee_usd, Fraction(0))
    statements = {}
    schedule = config.schedule_for(MAY)
    for broker, by_line in lines.items():
        spot = sum((line.volume for (_, market, _), line in by_line.items() if market == "SPOT"), Fraction(0))
        futures = sum((line.volume for (_, market, _), line in by_line.items() if market != "SPOT"), Fraction(0))
        tier = [t for t in schedule.tiers if spot + futures >= Fraction(t.min_volume)][-1]
        priced = {}
        for key, line in by_line.items():
            effective = min(Fraction(tier.rate), max(Fraction(0), Fraction(config.cap) - key[2]))
            priced[key] = (line, effective, line.fee_base * effective)
        payout_exact = sum((payout for _, _, payout in priced.values()), Fraction(0))
        quantum = Fraction(config.rounding_quantum)
        statements[broker] = {
            "tier": f"BKR {tier.level}", "spot_volume": spot, "futures_volume": futures, "api_volume": spot + futures,
            "fee_base": sum((line.fee_base for line in by_line.values()), Fraction(0)),
            "payout_exact": payout_exact, "payout": (payout_exact // quantum) * quantum, "lines": priced}
    return rejected, statements


# --- one run through bkr -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    tally: dict[str, int]
    closed: str  # the close's answer, every statement with its lines, as canonical JSON
    rendered: dict[tuple[int, str], str]  # (broker, format) -> the body handed out
    verified: tuple[bool, ...]  # each signed statement checked as a broker checks it
    users: dict[int, list[dict[str, str]]]  # each broker's users, as its API and dashboard list them
    reconciled: tuple[str, ...]  # the differences reconcile found after settlement
    balances: dict[tuple[str, str], Decimal]


def _setup(engine: Engine, case: Case, key: StatementKey) -> None:
    with engine.begin() as connection:
        for broker in BROKERS:
            registry.enroll_broker(connection, broker, f"acct-{broker}", f"Broker {broker}", "trading_bot", NOW,
                                   actor="ops")
            registry.change_broker_status(connection, broker, BrokerStatus.ACTIVE,
                                          parse_instant("2024-01-01T00:00:00Z"), NOW, actor="ops")
        registry.enroll_affiliate(connection, "acct-aff", "Affiliate", NOW, actor="ops")
        entries = []
        for user, rate in zip(USERS, case.referral_rates, strict=True):
            code = None
            if rate is not None:
                code = f"code-{user}"
                registry.set_referral_rate(connection, "acct-aff", code, rate, parse_instant("2024-01-01T00:00:00Z"),
                                           NOW, actor="ops")
            entries.append((user, code))
        registry.add_users(connection, entries, NOW, actor="ops")
        publish_statement_key(connection, key, NOW)


def run_case(url: str, case: Case, key: StatementKey, context: Context, directory: Path) -> Run:
    """Import the case's fills, close May 2024, hand out every statement in every format, pay the
    month and reconcile it, all with `context` as the thread's decimal context."""
    config = case.config
    path = write_fills(directory / f"fills{case.file_format}",
                       [row_of(case, index, fill) for index, fill in enumerate(case.fills)])
    with localcontext(context):
        engine = db.open_engine(url)
        try:
            _setup(engine, case, key)
            use_program(engine, config)
            tally = import_file(engine, path, clock=clock, actor="ops")
            closed = close_month(engine, MAY, now=NOW)  # never raises, whatever was accepted
            rendered = {}
            with engine.connect() as connection:
                for statement in closed.statements:
                    for fmt in StatementFormat:
                        rendered[statement.broker_id, fmt.value] = render_statement(
                            connection, statement.broker_id, MAY, fmt, key).body
            verified = tuple(verify_signed_statement(json.loads(body)).ok
                             for (_, fmt), body in sorted(rendered.items()) if fmt == StatementFormat.SIGNED)
            with engine.begin() as connection:
                settlement.approve_month(connection, MAY, "ops-1", NOW)
            settlement.settle_month(engine, MAY, NOW)
            with engine.connect() as connection:
                reconciled = reconcile_month(connection, MAY)
                balances = journal.balances(connection)
                users = {s.broker_id: reports.user_breakdown(connection, s.broker_id, MAY, limit=10,
                                                             offset=0).to_document()["users"]
                         for s in closed.statements}
            document = json.dumps(closed.to_document(with_lines=True), sort_keys=True)
        finally:
            engine.dispose()
    return Run(tally.counts(), document, rendered, verified, users, tuple(str(d) for d in reconciled.differences),
               balances)


def _exact(text: str) -> Fraction:
    return Fraction(Decimal(text))


def check_against_reference(case: Case, run: Run) -> None:
    rejected, expected = reference(case)
    assert run.tally["rejected"] == rejected
    assert run.tally["accepted"] == len(case.fills) - rejected
    assert run.reconciled == ()
    assert run.verified == (True,) * len(expected)
    statements = {s["broker_id"]: s for s in json.loads(run.closed)["statements"]}
    assert sorted(statements) == sorted(expected)
    for broker, want in expected.items():
        got = statements[broker]
        assert got["tier"] == want["tier"]
        for name in ("spot_volume", "futures_volume", "api_volume", "fee_base", "payout_exact", "payout"):
            assert _exact(got[name]) == want[name], name
        # the payout is written with the quantum's decimals
        assert -Decimal(got["payout"]).as_tuple().exponent == max(0, -case.quantum.as_tuple().exponent)  # type: ignore[operator]
        lines = {(line["user_id"], line["market_type"], _exact(line["affiliate_rate"])): line for line in got["lines"]}
        assert sorted(lines) == sorted(want["lines"])
        for key, (line, effective, payout) in want["lines"].items():
            found = lines[key]
            assert (found["fills"], _exact(found["volume_usd"]), _exact(found["fee_usd"]), _exact(found["fee_base"]),
                    _exact(found["effective_rate"]), _exact(found["payout_exact"])) == (
                line.fills, line.volume, line.fee, line.fee_base, effective, payout)
        # every format hands out the same statement
        stored = json.loads(run.rendered[broker, "json"])
        assert {k: v for k, v in stored.items() if k != "lines"} == {k: v for k, v in got.items()
                                                                     if k not in ("lines", "line_count")}
        total_row = list(csv.DictReader(io.StringIO(run.rendered[broker, "csv"])))[-1]
        assert (total_row["kind"], _exact(total_row["volume_usd"]), _exact(total_row["fee_base"]),
                _exact(total_row["payout_exact"]), _exact(total_row["payout"])) == (
            "total", want["api_volume"], want["fee_base"], want["payout_exact"], want["payout"])
        assert "=u-3" not in run.rendered[broker, "csv"].replace("'=u-3", "")  # the cell is neutralised
        assert got["payout"] in run.rendered[broker, "html"]
        by_user = [(_exact(u["fee_base"]), u["user_id"]) for u in run.users[broker]]
        assert by_user == sorted(by_user, key=lambda item: (-item[0], item[1]))  # largest fee base first
        assert sum(fee_base for fee_base, _ in by_user) == want["fee_base"]
        credited = run.balances.get((broker_payable(broker), "USD"), Decimal(0))
        assert -_exact(str(credited)) == want["payout"]


def check_case(fresh_db_url: Callable[[], str], hostile: Context, directory: Path, case: Case) -> None:
    """The case run under the default context and under `hostile` gives the same results, and
    those are the reference's."""
    key = new_statement_key()
    default = run_case(fresh_db_url(), case, key, Context(), directory)
    assert run_case(fresh_db_url(), case, key, hostile, directory) == default
    check_against_reference(case, default)


# --- the tests ------------------------------------------------------------------------------------------

# No shrinking: a case takes about a second, shrinking one would take minutes, and a failing case
# is printed readably as it was generated.
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@PROPERTY
@given(case=cases)
def test_extreme_amounts_close_to_the_reference_under_any_decimal_context(
        fresh_db_url: Callable[[], str], hostile_decimal_context: Context, tmp_path: Path, case: Case) -> None:
    check_case(fresh_db_url, hostile_decimal_context, tmp_path, case)


def _many(fill: FillCase, count: int) -> tuple[FillCase, ...]:
    return tuple(replace(fill, user=USERS[i % len(USERS)], broker=BROKERS[i % len(BROKERS)]) for i in range(count))


LARGEST = Case(quote_rate=MAX_USD_RATE, other_rate=STEP, max_fee_share=Decimal(1), cap=Decimal(1),
               quantum=Decimal("1E-18"), extreme_tiers=True, referral_rates=(None, Decimal(0), STEP),
               fills=_many(FillCase(1400, "u-1", "PERP", QUOTE, "quote", MAX_AMOUNT, MAX_AMOUNT, Fraction(1), False,
                                    LAST_INSTANT), 60), file_format=".csv")
SMALLEST = Case(quote_rate=STEP, other_rate=MAX_USD_RATE, max_fee_share=STEP, cap=STEP, quantum=Decimal(1),
                extreme_tiers=False, referral_rates=(ALMOST_ONE, Decimal(1), None),
                fills=_many(FillCase(1400, "u-1", "SPOT", QUOTE, "base", STEP, STEP, Fraction(-1), False,
                                    FIRST_INSTANT), 12), file_format=".ndjson")


@pytest.mark.parametrize("case", [LARGEST, SMALLEST], ids=["largest", "smallest"])
def test_the_largest_and_the_smallest_amounts_many_times_over(
        fresh_db_url: Callable[[], str], hostile_decimal_context: Context, tmp_path: Path, case: Case) -> None:
    """60 fills each at the largest price, quantity, USD rate and fee make sums of 41 integer
    digits and 54 places; the smallest everything makes a fee of 10^-54 USD."""
    check_case(fresh_db_url, hostile_decimal_context, tmp_path, case)


def test_a_fee_one_step_past_the_plausibility_limit_is_refused_and_the_limit_itself_is_paid(
        fresh_db_url: Callable[[], str], hostile_decimal_context: Context, tmp_path: Path) -> None:
    at_limit = FillCase(1400, "u-1", "SPOT", "USDC", "quote", Decimal("150.25"), Decimal(2), Fraction(1), False,
                        FIRST_INSTANT)
    case = Case(quote_rate=Decimal(1), other_rate=Decimal(1), max_fee_share=Decimal("0.001"), cap=Decimal("0.5"),
                quantum=Decimal("0.01"), extreme_tiers=False, referral_rates=(Decimal("0.1"), None, None),
                fills=(at_limit, replace(at_limit, beyond=True), replace(at_limit, fee_share=Fraction(-1), beyond=True),
                       replace(at_limit, fee_share=Fraction(-1))), file_format=".csv")
    assert [fee_of(case, fill) for fill in case.fills] == [
        "0.300500000000000000", "0.300500000000000001", "-0.300500000000000001", "-0.300500000000000000"]
    assert reference(case)[0] == 2
    check_case(fresh_db_url, hostile_decimal_context, tmp_path, case)


def test_the_hostile_context_is_hostile(hostile_decimal_context: Context) -> None:
    """What the runs above are protected from: the thread's context, as ccxt leaves it, rounds an
    18-place amount of a fill (and, with the traps, raises)."""
    with localcontext(hostile_decimal_context), pytest.raises(Inexact):
        _ = MAX_AMOUNT * MAX_AMOUNT

"""`bkr.simulate` on its own: deterministic, spread over every tier, varied, lazy, one content in
every file format. (Pure tests, no database; they live beside the end-to-end test they feed.)"""

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bkr import simulate
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Fill, parse_fill, price_in_usd
from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus, BrokerType
from bkr.ingest.readers import read_rows
from bkr.simulate import Simulation, plan_simulation, write_fills

MARCH = Month(2025, 3)
THRESHOLDS = (0, 5_000_000, 10_000_000, 20_000_000, 60_000_000, 100_000_000)
USD = {"USDC": Decimal(1), "USDT": Decimal(1), "USD": Decimal(1)}


def _counted_levels(simulation: Simulation) -> dict[int, int]:
    """Tier level per broker from the counted volume of the rows (active broker, API, user fill,
    registered user), computed here from the rules."""
    registered = {u.user_id for u in simulation.registry.registered_users}
    changes = {b.broker_id: b.status_changes for b in simulation.registry.brokers}
    volume: dict[int, Decimal] = defaultdict(Decimal)
    for row in simulation.rows():
        try:
            fill = parse_fill(row)
        except InvalidInput:
            continue
        if (fill.broker_id not in changes or not fill.via_api or fill.fill_type != "User"
                or fill.user_id not in registered):
            continue
        status = [c.status for c in changes[fill.broker_id] if c.effective_at <= fill.timestamp]
        if status and status[-1] is BrokerStatus.ACTIVE:
            volume[fill.broker_id] += fill.price * fill.quantity
    return {b: max(level for level, t in enumerate(THRESHOLDS) if v >= t) for b, v in volume.items()}


@pytest.mark.parametrize("suffix", [".csv", ".ndjson", ".parquet"])
def test_the_same_seed_writes_the_same_bytes(tmp_path: Path, suffix: str) -> None:
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    write_fills(plan_simulation(MARCH, 2_000, 42), first)
    write_fills(plan_simulation(MARCH, 2_000, 42), second)
    assert first.read_bytes() == second.read_bytes()


def test_another_seed_writes_other_fills(tmp_path: Path) -> None:
    write_fills(plan_simulation(MARCH, 500, 1), tmp_path / "a.csv")
    write_fills(plan_simulation(MARCH, 500, 2), tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "b.csv").read_bytes()


@pytest.mark.parametrize(("fills", "seed"), [(400, 1), (3_000, 2), (3_000, 3), (10_000, 4)])
def test_every_tier_is_reached_whatever_the_number_of_fills(fills: int, seed: int) -> None:
    levels = _counted_levels(plan_simulation(MARCH, fills, seed))
    assert set(levels.values()) == set(range(6))
    intended = {b.broker_id: b.intended_tier for b in plan_simulation(MARCH, fills, seed).registry.brokers}
    assert all(levels[b] == tier for b, tier in intended.items() if tier is not None)


def test_a_partial_month_stays_inside_its_span_in_time_order() -> None:
    until = datetime(2025, 3, 10, 12, tzinfo=UTC)
    seen: set[str] = set()
    stamps = []
    for row in plan_simulation(MARCH, 2_000, 5, until).rows():
        if row["fill_id"] not in seen and not row["timestamp"].startswith("2025-03-32"):  # not planted
            stamps.append(row["timestamp"])
        seen.add(row["fill_id"])
    moments = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    assert moments == sorted(moments)
    assert MARCH.start <= moments[0] < datetime(2025, 3, 1, 1, tzinfo=UTC)
    assert datetime(2025, 3, 10, 11, tzinfo=UTC) < moments[-1] < until


def test_the_rows_cover_what_a_real_export_holds() -> None:
    simulation = plan_simulation(MARCH, 5_000, 9)
    registry = simulation.registry
    assert {b.broker_type for b in registry.brokers} == set(BrokerType)
    assert [b.broker_id for b in registry.brokers if not b.status_changes] == [simulate.PENDING_BROKER]
    (suspended,) = [b for b in registry.brokers if b.broker_id == simulate.SUSPENDED_BROKER]
    assert suspended.status_changes[-1].status is BrokerStatus.SUSPENDED
    assert MARCH.start < suspended.status_changes[-1].effective_at < MARCH.end
    rates = {change.rate for code in registry.codes for change in code.rates}
    assert {Decimal(r) for r in ("0", "0.1", "0.2", "0.25", "0.4", "0.5", "0.6")} <= rates
    assert any(len(code.rates) == 2 for code in registry.codes)
    assert any(u.referral_code is None for u in registry.registered_users)
    assert any(u.referral_code is not None for u in registry.registered_users)

    fills: list[Fill] = []
    rejected = 0
    for row in simulation.rows():
        assert all(isinstance(value, str) for value in row.values())
        try:
            fills.append(price_in_usd(parse_fill(row), USD).fill)
        except InvalidInput:
            rejected += 1
    assert rejected == simulation.summary()["malformed"] == len(simulate.MALFORMED_KINDS)
    enrolled = {b.broker_id for b in registry.brokers}
    unregistered = {u.user_id for u in registry.unregistered_users}
    assert {f.market_type.value for f in fills} == {"SPOT", "PERP"}
    assert {f.is_maker for f in fills} == {True, False}
    assert any(f.fee < 0 for f in fills) and any(f.fee > 0 for f in fills)
    assert any(f.quote_asset == "USDT" for f in fills)
    assert any(f.fee_symbol == f.base_asset for f in fills)
    assert any(f.fill_type != "User" and f.broker_id in enrolled for f in fills)
    assert any(not f.via_api and f.broker_id in enrolled for f in fills)
    assert any(f.broker_id in simulate.UNKNOWN_BROKER_IDS for f in fills)
    assert any(f.broker_id is None for f in fills)
    assert any(f.user_id in unregistered and f.broker_id in enrolled for f in fills)
    ids = [f.fill_id for f in fills]
    assert len(ids) - len(set(ids)) == 3  # two duplicates and one conflicting duplicate


def test_every_file_format_carries_the_same_fills(tmp_path: Path) -> None:
    simulation = plan_simulation(MARCH, 1_000, 3)
    contents = []
    for suffix in (".csv", ".ndjson", ".parquet"):
        path = tmp_path / f"fills{suffix}"
        assert write_fills(simulation, path) == 1_000
        parsed: list[str] = []
        for raw in read_rows(path):
            try:
                assert raw.values is not None
                parsed.append(parse_fill(raw.values).content_key())
            except InvalidInput as error:
                parsed.append(f"rejected {str(error).split(':')[0]}")
        contents.append(parsed)
    assert contents[0] == contents[1] == contents[2]
    assert sum(item.startswith("rejected") for item in contents[0]) == 8  # the 9th is rejected when priced


def test_parquet_is_written_in_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setattr(simulate, "PARQUET_ROW_GROUP", 1_000)
    write_fills(plan_simulation(MARCH, 3_500, 1), tmp_path / "fills.parquet")
    parquet = pq.ParquetFile(tmp_path / "fills.parquet")
    assert parquet.metadata.num_row_groups == 4
    assert {str(f.type) for f in parquet.schema_arrow} == {"string"}


def test_rows_are_generated_lazily() -> None:
    rows = plan_simulation(MARCH, 10_000_000, 1).rows()  # planning ten million fills holds none of them
    assert next(rows)["fill_id"].startswith("sim1-202503-")


def test_an_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(done: int) -> None:
        if done >= 1_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_fills(plan_simulation(MARCH, 5_000, 1), tmp_path / "fills.csv", on_progress=interrupted, every=500)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("until", [MARCH.start, datetime(2025, 4, 1, 0, 0, 1, tzinfo=UTC)])
def test_a_span_outside_the_month_is_refused(until: datetime) -> None:
    with pytest.raises(InvalidInput, match="until"):
        plan_simulation(MARCH, 100, 1, until)


def test_months_share_their_users_and_codes() -> None:
    march = plan_simulation(MARCH, 50_000, 1).registry
    april = plan_simulation(MARCH.next(), 20_000, 2).registry
    codes = {u.user_id: u.referral_code for u in march.users}
    assert all(codes[u.user_id] == u.referral_code for u in april.users)

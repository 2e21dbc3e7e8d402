"""The set-based write of a block of fills: the common rows decided in SQL, the rest by the row path.

`write_block` takes a block of a CSV or Parquet file that Arrow read (`bkr.ingest.blocks`) and, in
the caller's transaction:

1. judges its columns (`bkr.ingest.columns.certain_fills`): the records that are certainly valid
   fills, in canonical form, with their content keys;
2. checks them against the program version in force for each one's month, column-wise: the
   month has a version, the quote asset (and a fee asset that is neither side of the symbol) has
   a USD rate, the time is neither before the program's start nor beyond the clock's tolerance;
3. stages them (`bkr.store.staging`) and, one statement each: prices them exactly, sets aside
   those whose fee is more than the allowed share of their notional, finds those already stored
   (the same content: duplicates), routes each month to the open period that pays it (holding
   the periods' shared lock, as the row path does), attributes them against the registry's
   timelines, inserts them and adds the counted ones to the running totals with `GROUP BY`.

Every record it does not accept or find a duplicate of goes, in the block's order, to the row
path (`bkr.program.writer.write_batch`), after the staged ones and in the same transaction: a
rejection, a conflict, a correction, a side of a named trade, a repeated `fill_id`. So the reasons
an operator reads, and what is kept for them, come from one implementation, and the set path
only ever decides what the row path would decide the same way: that is what
`tests/integration/test_set_import.py` checks, store against store, on both databases.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Attribution
from bkr.domain.money import canonical
from bkr.domain.periods import Month
from bkr.domain.program_versions import ProgramTimeline
from bkr.ingest.blocks import ColumnBlock
from bkr.ingest.columns import certain_fills
from bkr.program import webhooks
from bkr.program.periods import lock_open_periods
from bkr.program.writer import RowResult, Tally, write_batch
from bkr.store import staging


@dataclass
class BlockResult:
    """What a block came to: the tally of all its records, and the row path's results for those
    it decided (the set path's own are only counted)."""

    tally: Tally = field(default_factory=Tally)
    results: list[RowResult] = field(default_factory=list)


def write_block(connection: Connection, block: ColumnBlock, program: ProgramTimeline, *, source: str,
                now: datetime, import_id: int | None) -> BlockResult:
    """Store one block of fills as the row path would, deciding the common records in SQL."""
    certain = certain_fills(block.columns)
    staged = _priceable(certain, program, now)
    left = set(range(block.records)) - set(staged.column("position").to_pylist())
    outcome = BlockResult()
    if staged.num_rows:
        months = {Month.parse(month) for month in pc.unique(staged.column("fill_month")).to_pylist()}
        staging.load(connection, staged)
        staging.price_and_attribute(connection, lock_open_periods(connection, months))
        doubtful = set(staging.implausible(connection))  # the row path rejects them before it looks for duplicates
        duplicates: list[int] = []
        conflicting: list[int] = []
        for position, incoming, existing in staging.stored(connection):
            if position not in doubtful:
                (duplicates if incoming == existing else conflicting).append(position)
        staging.drop(connection, [*doubtful, *duplicates, *conflicting])
        left.update(doubtful)
        left.update(conflicting)
        outcome.tally.duplicates += len(duplicates)
        counts = staging.counts(connection)
        accepted, taken = staging.insert(connection, import_id)
        if taken:  # stored by another writer since `stored` looked: the row path says what they are
            staging.drop(connection, taken)
            left.update(taken)
            counts = staging.counts(connection)
        staging.add_counted(connection)
        webhooks.note_tier_crossings(connection, staging.own_month_pairs(connection), now)
        outcome.tally.accepted += accepted
        outcome.tally.counted += counts.get(Attribution.COUNTED.value, 0)
        outcome.tally.awaiting_user += counts.get(Attribution.AWAITING_USER.value, 0)
    if left:
        rows = [block.row(position) for position in sorted(left)]
        outcome.results = write_batch(connection, rows, program, source=source, now=now, import_id=import_id)
        outcome.tally.add(outcome.results)
    return outcome


def _priceable(certain: pa.Table, program: ProgramTimeline, now: datetime) -> pa.Table:
    """The certain fills that the program version of their month can price and finds plausible
    in time, with the columns `bkr.store.staging.load` takes."""
    months = pc.unique(certain.column("fill_month")).to_pylist()
    fill_month, quote = certain.column("fill_month"), certain.column("quote")
    base, fee_symbol, moment = certain.column("base"), certain.column("fee_symbol"), certain.column("ts")
    keep = pa.array([False] * certain.num_rows, pa.bool_())
    quote_rate = pa.nulls(certain.num_rows, pa.string())
    fee_rate = pa.nulls(certain.num_rows, pa.string())
    fee_share = pa.nulls(certain.num_rows, pa.string())
    for month in months:
        try:
            config = program.config_for(Month.parse(month))
        except InvalidInput:  # no version prices this month: the row path says so
            continue
        rates = _rates(config.usd_rates)
        rules = config.plausibility
        mine = pc.equal(fill_month, month)
        known_quote = pc.is_in(quote, rates.assets)
        fee_known = pc.or_(pc.or_(pc.equal(fee_symbol, quote), pc.equal(fee_symbol, base)),
                           pc.is_in(fee_symbol, rates.assets))
        in_time = pc.and_(pc.greater_equal(moment, pa.scalar(rules.earliest, pa.timestamp("us", tz="UTC"))),
                          pc.less_equal(moment, pa.scalar(now + rules.future_tolerance,
                                                          pa.timestamp("us", tz="UTC"))))
        good = pc.and_(pc.and_(mine, known_quote), pc.and_(fee_known, in_time))
        keep = pc.or_(keep, good)
        quote_rate = pc.if_else(mine, pc.take(rates.texts, pc.index_in(quote, rates.assets)), quote_rate)
        fee_rate = pc.if_else(mine, pc.take(rates.texts, pc.index_in(fee_symbol, rates.assets)), fee_rate)
        fee_share = pc.if_else(mine, canonical(rules.max_fee_share), fee_share)
    fee_in = pc.if_else(pc.equal(fee_symbol, quote), "quote", pc.if_else(pc.equal(fee_symbol, base), "base", "other"))
    table = (certain.append_column("fee_in", fee_in).append_column("quote_rate", quote_rate)
             .append_column("fee_rate", pc.if_else(pc.equal(fee_in, "other"), fee_rate, None))
             .append_column("fee_share", fee_share))
    return table.filter(pc.fill_null(keep, False))


@dataclass(frozen=True, slots=True)
class _Rates:
    assets: pa.Array
    texts: pa.Array  # each asset's rate in canonical text


def _rates(usd_rates: Mapping[str, Decimal]) -> _Rates:
    assets = sorted(usd_rates)
    return _Rates(pa.array(assets, pa.string()), pa.array([canonical(usd_rates[a]) for a in assets], pa.string()))

"""Reconcile a lake-fed month: its fills recounted in the lake with Spark, then every link as for
any month (`bkr.program.reconcile`).

The recount runs the month's job again over the files of its last run, with the snapshot of the
rules that run applied (its SHA-256 checked), and compares, per broker, the counted fills the
lake holds now with what the runs added to the totals (`lake_lines`, over every period): a fill
added to the lake, changed or gone since then shows as a difference (`lake fills -> lake lines`),
as do files whose digest is no longer the one recorded. The link `fills -> aggregates` then
takes, for the period, the stored fills (those bkr's own path decided) and the lake's lines paid
in it.
"""

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from pyspark.sql import SparkSession
from sqlalchemy import Connection, select

from bkr.domain.errors import NotFound
from bkr.domain.money import ZERO, add, canonical
from bkr.domain.periods import Month
from bkr.lake.job import file_digests, run_job
from bkr.lake.load import files_digest
from bkr.lake.snapshot import read_snapshot
from bkr.program.reconcile import Difference, Reconciliation, reconcile_month
from bkr.store.tables import lake_lines, lake_runs

Figures = dict[int, dict[str, Decimal]]
_FIGURES = ("fills", "volume_usd", "fee_base")


def reconcile_lake_month(connection: Connection, spark: SparkSession, month: Month) -> Reconciliation:
    """Reconcile closed `month`, whose fills (or some of whose) are in the lake."""
    last = connection.execute(select(lake_runs).where(lake_runs.c.month == month)
                              .order_by(lake_runs.c.run_id.desc()).limit(1)).first()
    if last is None:
        raise NotFound(f"{month} has no lake run: reconcile it with `bkr reconcile --month {month}`")
    differences: list[Difference] = []
    digest = files_digest(file_digests(spark, last.fills_uri))
    if digest != last.files_sha256:
        differences.append(Difference("lake files -> last run", f"files under {last.fills_uri}", last.files_sha256,
                                      digest))
    snapshot = read_snapshot(Path(last.snapshot_path), last.snapshot_sha256)
    recount = run_job(spark, last.fills_uri, snapshot.document)
    in_lake: Figures = {}
    for (broker, *_), (fills, volume, _fee, base) in recount.lines.items():
        _add(in_lake, broker, {"fills": Decimal(fills), "volume_usd": volume, "fee_base": base})
    loaded: Figures = {}
    paid_here: Figures = {}
    for row in connection.execute(select(lake_lines).where(
            (lake_lines.c.month == month) | (lake_lines.c.period == month))):
        figures = {"fills": Decimal(row.fills), "volume_usd": row.volume_usd, "fee_base": row.fee_base_usd}
        if row.month == month:
            _add(loaded, row.broker_id, figures)
        if row.period == month:
            _add(paid_here, row.broker_id, figures)
    for broker in sorted(set(in_lake) | set(loaded)):
        want = in_lake.get(broker, dict.fromkeys(_FIGURES, ZERO))
        have = loaded.get(broker, dict.fromkeys(_FIGURES, ZERO))
        differences += [Difference("lake fills -> lake lines", f"broker {broker} {name}", canonical(want[name]),
                                   canonical(have[name])) for name in _FIGURES if want[name] != have[name]]
    return reconcile_month(connection, month, elsewhere=paid_here, differences_found=differences)


def _add(into: Figures, broker: int, figures: Mapping[str, Decimal]) -> None:
    mine = into.setdefault(broker, dict.fromkeys(_FIGURES, ZERO))
    for name in _FIGURES:
        mine[name] = add(mine[name], figures[name])

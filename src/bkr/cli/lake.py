"""`bkr lake aggregate`: a month's aggregates computed by Apache Spark from the exchange's Parquet
fills, which stay in its data lake (`bkr.lake`).

It needs an operator key with the `operator` role (`--key` or BKR_OPERATOR_KEY), like an import:
the run is recorded with the files' digest and its counts, and on the audit trail. Spark comes
with the optional extra `lake` (`pip install 'bkr[lake]'`) and runs on Java 17 or later.
"""

from pathlib import Path
from typing import Annotated

import typer

from bkr.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    KeyOption,
    err,
    open_program,
    operator_from_key,
    out,
    print_json,
    transaction,
)
from bkr.domain.clock import system_clock
from bkr.domain.operators import Role
from bkr.domain.periods import Month
from bkr.store import db

lake_app = typer.Typer(no_args_is_help=True, help="Months whose fills stay in the exchange's data lake (Spark).")

MasterOption = Annotated[str, typer.Option(
    "--master", envvar="BKR_SPARK_MASTER",
    help="Spark master: local[*] (this machine), spark://host:7077, k8s://https://host, yarn.")]
WorkOption = Annotated[Path, typer.Option(
    "--work", help="Directory for the rules' snapshot the job reads (kept: a recount uses it again).")]


def _step(text: str) -> None:
    err.print(text, markup=False, highlight=False, soft_wrap=True)


@lake_app.command("aggregate")
def lake_aggregate(
    month: Annotated[str, typer.Option("--month", help="The month, YYYY-MM.")],
    fills: Annotated[str, typer.Option(
        "--fills", help="Where the month's Parquet fills are: a directory or URI (file:, s3a:, hdfs:, gs:, abfs:).")],
    master: MasterOption = "local[*]",
    work: WorkOption = Path("bkr-lake"),
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compute MONTH's aggregates from the Parquet fills at FILLS with Spark and load them: bkr's
    rules, exactly; whatever the job does not decide itself (rejections, conflicts, corrections,
    sides of trades, fills of unknown users) goes through bkr's own path. Run it again to replace
    an open month's lake results; after the month's close, fills new in the lake become
    adjustments of the next open month."""
    wanted = Month.parse(month)
    with transaction(db_url) as connection:
        actor = operator_from_key(connection, key, Role.OPERATOR).name
    engine = open_program(db_url, config_path)
    from bkr.lake.job import session  # Spark (and its JVM) only for this command
    from bkr.lake.load import aggregate_month

    spark = session(master)
    try:
        run = aggregate_month(engine, spark, month=wanted, uri=fills, work=work, clock=system_clock, actor=actor,
                              master=master, on_step=None if as_json else _step)
    finally:
        spark.stop()
    tally = run.tally
    figures = {"run": run.run_id, "month": str(run.month), "period": str(run.period), "files": run.files,
               "files_sha256": run.files_sha256, "snapshot": str(run.snapshot), "records": run.records,
               "decided_in_lake": run.decided_in_lake, **tally.counts(), "counted": tally.counted,
               "awaiting_user": tally.awaiting_user, "self_trades": tally.self_trades, "reasons": tally.reasons}
    if as_json:
        print_json(figures)
        return
    where = "" if run.period == run.month else f" (paid in {run.period} as adjustments: {run.month} is closed)"
    out.print(f"lake run {run.run_id}: {run.month}{where}: {run.records:,} records in {run.files} file(s), "
             f"{run.decided_in_lake:,} decided in the lake; accepted {tally.accepted:,}, duplicates "
             f"{tally.duplicates:,}, conflicts {tally.conflicts:,}, rejected {tally.rejected:,}; counted "
             f"{tally.counted:,}, awaiting their user {tally.awaiting_user:,}",
              markup=False, highlight=False, soft_wrap=True)
    out.print(f"files sha256 {run.files_sha256}; snapshot {run.snapshot}", markup=False, highlight=False,
              soft_wrap=True)

"""The Spark job over one month's Parquet fills: bkr's set-based rules, in exact integer arithmetic.

It reads every Parquet file under the month's URI (with each record's file and row index) and
decides, as a set, the records the set-based import (`bkr.program.set_import`) decides in SQL:

1. the column checks of `bkr.ingest.columns.certain_fills`, the same patterns in Spark SQL: only
   a record in the one shape `parse_fill` certainly reads one way, without `corrects` or
   `trade_id`, is taken, in its canonical form;
2. none whose `fill_id` (with what `parse_fill` strips from its ends) appears twice in the month,
   none that a correction names, none the store has claimed already (the snapshot's ids), none
   holding `#` (the form of the ids bkr gives its own reversals): their order decides them, and
   bkr's row path keeps that order;
3. the fill's month is the job's month; its quote (and a fee asset that is neither side of the
   symbol) has a USD rate; its time is in the program's window;
4. pricing, exactly: every amount is split into an integer (`decimal(38,0)`) and a scale, every
   product is an integer product by `try_multiply` (NULL instead of an overflow, never a
   rounding: an integer has no places to round), brought to units of 10⁻¹⁸ USD when it has at most
   18 places, and a record whose product is not exact in those units, or overflows, is left to
   bkr; the fee's share of the notional is compared in integers the same way;
5. attribution at the fill's time against the snapshot's timelines, as `bkr.store.staging`; a
   fill of a user bkr does not know is left to bkr, which keeps it aside as awaiting.

The counted fills are summed per aggregate line and per day with `try_sum` over those integers
(an overflow is a NULL, refused here, never a wrapped or rounded sum). Every record not decided
is returned by (file, row index): `bkr.lake.load` gives it to bkr's row path, so a rejection, a
conflict, a correction or a side of a trade is decided by the one implementation of those rules.
"""

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import FIELDS, FILL_TYPES, MarketType, Side
from bkr.domain.money import MONEY, canonical
from bkr.domain.registry import MAX_BROKER_ID
from bkr.ingest import columns

# the set path's own patterns and words (`bkr.ingest.columns`): Java's regex dialect reads these
# patterns as Python's does, so the lake and the set path hold one definition of a certain record
_ID, _SYMBOL, _ASSET, _DECIMAL = columns._ID, columns._SYMBOL, columns._ASSET, columns._DECIMAL
_NONZERO, _TIME, _BROKER, _ENDS = columns._NONZERO, columns._TIME, columns._BROKER, columns._ENDS
_TRUE, _FALSE, _OPTIONAL = columns._TRUE, columns._FALSE, columns._OPTIONAL
UNITS = 18  # sums are integers of 10⁻¹⁸ USD
_INTEGER = T.DecimalType(38, 0)


@dataclass
class JobResult:
    """What the job found: the records it read and decided, the counted fills' sums, and the
    records left to bkr's row path."""

    records: int = 0
    decided: dict[str, int] = field(default_factory=dict)  # attribution -> fills decided in the lake
    # (broker, user, market type, canonical affiliate rate) -> [fills, volume, fee, fee base] in USD
    lines: dict[tuple[int, str, str, str], list[Any]] = field(default_factory=dict)
    # (broker, day, market type) -> [fills, volume, fee base] in USD
    days: dict[tuple[int, str, str], list[Any]] = field(default_factory=dict)
    left: dict[str, list[int]] = field(default_factory=dict)  # file -> row indexes (from 0) left to bkr

    @property
    def decided_total(self) -> int:
        return sum(self.decided.values())


def session(master: str, app: str = "bkr lake") -> SparkSession:
    """A Spark session whose times are UTC, in ANSI mode (an overflow is an error, not a NULL); on
    one machine (`local[N]`) with few shuffle partitions, on a cluster with Spark's default."""
    builder = SparkSession.builder.master(master).appName(app)
    if master.startswith("local"):
        builder = builder.config("spark.sql.shuffle.partitions", "4")
    return quiet(builder
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.ansi.enabled", "true")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate())


def quiet(spark: SparkSession) -> SparkSession:
    """Spark's own log at errors only: a command's output is bkr's."""
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def read_fills(spark: SparkSession, uri: str) -> DataFrame:
    """Every Parquet file under `uri` (day partitions or not), with each record's file and row index."""
    frame = (spark.read.option("recursiveFileLookup", "true").option("pathGlobFilter", "*.parquet")
             .parquet(uri))
    floats = [f.name for f in frame.schema.fields if f.name in ("price", "quantity", "fee")
              and isinstance(f.dataType, T.FloatType | T.DoubleType)]
    if floats:
        raise InvalidInput(f"{uri}: {', '.join(floats)} in floating point; money must be decimal or text")
    return frame.select("*", F.col("_metadata.file_path").alias("_file"), F.col("_metadata.row_index").alias("_row"))


def _as_text(frame: DataFrame, name: str) -> Column:
    """A column as the text `bkr.ingest.blocks` reads it as (NULL where no text reads the same)."""
    if name not in frame.columns:
        return F.lit(None).cast("string")
    kind = frame.schema[name].dataType
    column = F.col(name)
    if isinstance(kind, T.StringType):
        return column
    if isinstance(kind, T.IntegralType | T.BooleanType | T.DecimalType):
        return column.cast("string")  # a decimal in plain notation, as `bkr.ingest.blocks` writes it
    if isinstance(kind, T.TimestampType | T.TimestampNTZType):
        return F.date_format(column, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
    return F.lit(None).cast("string")


def _canonical(text: Column) -> Column:
    """`bkr.ingest.columns._canonical`: a plain decimal without leading or trailing zeros; '' otherwise."""
    value = F.regexp_replace(text, r"^(-?)0+([0-9])", "$1$2")
    value = F.regexp_replace(value, r"(\.[0-9]*?)0+$", "$1")
    value = F.regexp_replace(value, r"\.$", "")
    value = F.when(value == "-0", F.lit("0")).otherwise(value)
    return F.when(text.rlike(_DECIMAL), value).otherwise(F.lit(""))


def _unscaled(text: Column) -> Column:
    """A canonical decimal's digits as an integer (`decimal(38,0)`; at most 33 digits by the bounds)."""
    return F.regexp_replace(text, r"\.", "").try_cast(_INTEGER)


def _scale(text: Column) -> Column:
    """A canonical decimal's number of places."""
    point = F.instr(text, ".")
    return F.when(point == 0, F.lit(0)).otherwise(F.length(text) - point)


def _power_of_ten(exponent: Column) -> Column:
    """10^exponent as an exact integer, for 0 <= exponent <= 37 (built from its digits, not a float)."""
    return F.concat(F.lit("1"), F.repeat(F.lit("0"), exponent)).try_cast(_INTEGER)


def _times(*factors: Column) -> Column:
    """An integer product, NULL if it overflows `decimal(38,0)` (an integer cannot be rounded)."""
    product = factors[0]
    for factor in factors[1:]:
        product = F.try_multiply(product, factor)
    return product


def _in_units(product: Column, scale: Column) -> Column:
    """An exact product with `scale` places in units of 10⁻¹⁸: NULL if it has more places than that."""
    return F.when(scale <= UNITS, _times(product, _power_of_ten(F.lit(UNITS) - scale)))


def _spans(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, Any, int, int | None]]:
    """(key, value, since) changes as (key, value, since, until) spans, until the key's next change."""
    by_key: dict[Any, list[tuple[Any, int]]] = defaultdict(list)
    for key, value, since in rows:
        by_key[key].append((value, since))
    spans = []
    for key, changes in by_key.items():
        ordered = sorted(changes, key=lambda change: change[1])
        for index, (value, since) in enumerate(ordered):
            until = ordered[index + 1][1] if index + 1 < len(ordered) else None
            spans.append((key, value, since, until))
    return spans


_LITERAL_ROWS = 20_000  # a snapshot's table up to this size is written into the plan itself


def _table(spark: SparkSession, rows: Sequence[Sequence[Any]], schema: str) -> DataFrame:
    """A small table of the snapshot as a DataFrame: written into the query as literals (the JVM
    alone runs it, no Python worker) when small, else sent from the driver."""
    if len(rows) > _LITERAL_ROWS:
        return spark.createDataFrame([tuple(row) for row in rows], schema)
    fields = [field.split() for field in schema.split(", ")]
    literal = [F.struct(*[F.lit(value).cast(kind).alias(name) for value, (name, kind) in zip(row, fields, strict=True)])
               for row in rows]
    return spark.range(1).select(F.inline(F.array(*literal))).select(*[name for name, _ in fields])


def classify(spark: SparkSession, frame: DataFrame, snapshot: Mapping[str, Any]) -> DataFrame:
    """Each record with `_file`, `_row`, `decided` and, decided, what the aggregates take of it."""
    digits, places = snapshot["amount_bounds"]
    bounded = rf"^-?[0-9]{{1,{digits}}}(\.[0-9]{{1,{places}}})?$"
    text = {}
    for name in FIELDS:
        value = _as_text(frame, name)
        text[name] = F.coalesce(value, F.lit("")) if name in _OPTIONAL else value
    price, quantity, fee = (_canonical(text[name]) for name in ("price", "quantity", "fee"))
    is_maker, via_api = F.lower(text["is_maker"]), F.lower(text["via_api"])
    stripped = F.regexp_replace(text["fill_id"], _ENDS, "")
    checks = [
        text["fill_id"].rlike(_ID), text["order_id"].rlike(_ID), text["user_id"].rlike(_ID),
        text["symbol"].rlike(_SYMBOL), text["market_type"].isin([m.value for m in MarketType]),
        text["side"].isin([s.value for s in Side]),
        price.rlike(bounded), price.rlike(_NONZERO), ~price.startswith("-"),
        quantity.rlike(bounded), quantity.rlike(_NONZERO), ~quantity.startswith("-"),
        fee.rlike(bounded), text["fee_symbol"].rlike(_ASSET),
        is_maker.isin(list(_TRUE + _FALSE)), text["timestamp"].rlike(_TIME),
        (text["broker_id"] == "") | text["broker_id"].rlike(_BROKER),
        via_api.isin(["", *_TRUE, *_FALSE]), text["fill_type"].isin(["", *sorted(FILL_TYPES)]),
        text["corrects"] == "", text["trade_id"] == "", ~stripped.contains("#"),
    ]
    certain = checks[0]
    for check in checks[1:]:
        certain = certain & check
    moment = F.regexp_replace(text["timestamp"], "Z$", "").try_cast(T.TimestampType())
    broker = F.when(text["broker_id"] == "", F.lit(None)).otherwise(text["broker_id"].try_cast(T.IntegerType()))
    parts = F.split(text["symbol"], "_")
    records = frame.select(
        "_file", "_row", F.coalesce(certain, F.lit(False)).alias("certain"), stripped.alias("id"),
        F.regexp_replace(text["corrects"], _ENDS, "").alias("corrects"),
        text["user_id"].alias("user_id"), text["market_type"].alias("market_type"),
        price.alias("price"), quantity.alias("quantity"), fee.alias("fee"), text["fee_symbol"].alias("fee_symbol"),
        moment.alias("ts"), broker.alias("broker_id"),
        (via_api == "").alias("api_default"), via_api.isin(list(_TRUE)).alias("api_true"),
        F.when(text["fill_type"] == "", F.lit("User")).otherwise(text["fill_type"]).alias("fill_type"),
        F.try_element_at(parts, F.lit(1)).alias("base"), F.try_element_at(parts, F.lit(2)).alias("quote"))
    # a fill_id seen twice in the month, or named by a correction, or claimed in the store: bkr decides
    repeated = records.groupBy("id").count().where(F.col("count") > 1).select("id", F.lit(True).alias("repeated"))
    targets = (records.where(F.col("corrects") != "").select(F.col("corrects").alias("id")).distinct()
               .select("id", F.lit(True).alias("target")))
    claimed = _table(spark, [(fill_id,) for fill_id in snapshot["claimed"]] or [("",)], "id string")
    claimed = claimed.select("id", F.lit(True).alias("claimed"))
    records = (records.join(repeated, "id", "left").join(targets, "id", "left")
               .join(F.broadcast(claimed), "id", "left"))

    rates = snapshot["usd_rates"]
    rate_of = F.create_map(*[F.lit(item) for asset, rate in sorted(rates.items()) for item in (asset, rate)]) \
        if rates else F.create_map().cast("map<string,string>")
    quote_rate = F.try_element_at(rate_of, F.col("quote"))
    fee_in = (F.when(F.col("fee_symbol") == F.col("quote"), F.lit("quote"))
              .when(F.col("fee_symbol") == F.col("base"), F.lit("base")).otherwise(F.lit("other")))
    fee_rate = F.try_element_at(rate_of, F.col("fee_symbol"))
    p, q, f = (_unscaled(F.col(n)) for n in ("price", "quantity", "fee"))
    sp, sq, sf = (_scale(F.col(n)) for n in ("price", "quantity", "fee"))
    r, sr = _unscaled(quote_rate), _scale(quote_rate)
    fr, sfr = _unscaled(fee_rate), _scale(fee_rate)
    volume = _in_units(_times(p, q, r), sp + sq + sr)
    fee_usd = (F.when(fee_in == "quote", _in_units(_times(f, r), sf + sr))
               .when(fee_in == "base", _in_units(_times(f, p, r), sf + sp + sr))
               .otherwise(_in_units(_times(f, fr), sf + sfr)))
    share = snapshot["max_fee_share"]
    share_scale = len(share.partition(".")[2])
    share_units = F.lit(share.replace(".", "")).try_cast(_INTEGER)
    ts_micros = F.unix_micros(F.col("ts"))
    priced = records.select(
        "*", volume.alias("volume_u"), fee_usd.alias("fee_u"), ts_micros.alias("at"),
        F.date_format("ts", "yyyy-MM").alias("fill_month"), F.date_format("ts", "yyyy-MM-dd").alias("day"))
    magnitude = _times(F.abs(F.col("fee_u")), _power_of_ten(F.lit(share_scale)))
    allowed = _times(share_units, F.col("volume_u"))
    in_window = ((F.col("at") >= F.lit(snapshot["earliest_micros"]))
                 & (F.col("at") <= F.lit(snapshot["now_micros"] + snapshot["future_tolerance_micros"])))

    statuses = _table(
        spark, _spans(snapshot["statuses"]) or [(0, "", 0, None)],
        "s_broker int, status string, s_since long, s_until long")
    users = _table(spark, [tuple(u) for u in snapshot["users"]] or [("", None)],
                   "u_user string, code string").where(F.col("u_user") != "")
    codes = _table(spark, _spans(snapshot["rates"]) or [("", "0", 0, None)],
                   "r_code string, rate string, r_since long, r_until long")
    enrolled = F.col("broker_id").isin(list(snapshot["brokers"])) if snapshot["brokers"] else F.lit(False)
    judged = (priced
              .join(F.broadcast(statuses), (F.col("s_broker") == F.col("broker_id")) & (F.col("s_since") <= F.col("at"))
                    & (F.col("s_until").isNull() | (F.col("at") < F.col("s_until"))), "left")
              .join(users, F.col("u_user") == F.col("user_id"), "left")
              .join(F.broadcast(codes), (F.col("r_code") == F.col("code")) & (F.col("r_since") <= F.col("at"))
                    & (F.col("r_until").isNull() | (F.col("at") < F.col("r_until"))), "left"))
    via = F.col("api_default") | F.col("api_true")
    attribution = (F.when(F.col("broker_id").isNull(), F.lit("no_broker"))
                   .when(F.col("fill_type") != "User", F.lit("system"))
                   .when(~via, F.lit("web"))
                   .when(~enrolled, F.lit("broker_unknown"))
                   .when(F.col("status").isNull() | (F.col("status") != "active"), F.lit("broker_inactive"))
                   .when(F.col("u_user").isNull(), F.lit("awaiting_user"))
                   .otherwise(F.lit("counted")))
    decided = (F.col("certain") & F.col("repeated").isNull() & F.col("target").isNull() & F.col("claimed").isNull()
               & F.col("ts").isNotNull() & (F.col("fill_month") == F.lit(snapshot["month"]))
               & F.coalesce(F.col("broker_id") <= F.lit(MAX_BROKER_ID), F.lit(True))
               & F.col("volume_u").isNotNull() & F.col("fee_u").isNotNull() & in_window
               & magnitude.isNotNull() & allowed.isNotNull() & (magnitude <= allowed)
               & (attribution != "awaiting_user"))
    return judged.select(
        "_file", "_row", F.coalesce(decided, F.lit(False)).alias("decided"), attribution.alias("attribution"),
        "broker_id", "user_id", "market_type", F.coalesce(F.col("rate"), F.lit("0")).alias("affiliate_rate"), "day",
        "volume_u", "fee_u", F.when(F.col("fee_u") > 0, F.col("fee_u")).otherwise(F.lit(0).cast(_INTEGER))
        .alias("fee_base_u"))


def run_job(spark: SparkSession, uri: str, snapshot: Mapping[str, Any]) -> JobResult:
    """Run the month's job over the Parquet files under `uri` with the rules of `snapshot`: the
    records classified once (kept while the job runs), and every output gathered in one action."""
    judged = classify(spark, read_fills(spark, uri), snapshot).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counted = judged.where(F.col("decided") & (F.col("attribution") == "counted"))
        none = F.lit(None).cast("string")
        nothing = F.lit(None).cast(_INTEGER)
        tallies = judged.groupBy("decided", "attribution").agg(F.count(F.lit(1)).alias("n")).select(
            F.lit("tally").alias("kind"), F.col("decided").cast("string").alias("a"), F.col("attribution").alias("b"),
            none.alias("c"), none.alias("d"), "n", nothing.alias("v1"), nothing.alias("v2"), nothing.alias("v3"))
        lines = counted.groupBy("broker_id", "user_id", "market_type", "affiliate_rate").agg(
            F.count(F.lit(1)).alias("n"), F.try_sum("volume_u").alias("v1"), F.try_sum("fee_u").alias("v2"),
            F.try_sum("fee_base_u").alias("v3")).select(
            F.lit("line").alias("kind"), F.col("broker_id").cast("string").alias("a"), F.col("user_id").alias("b"),
            F.col("market_type").alias("c"), F.col("affiliate_rate").alias("d"), "n", "v1", "v2", "v3")
        days = counted.groupBy("broker_id", "day", "market_type").agg(
            F.count(F.lit(1)).alias("n"), F.try_sum("volume_u").alias("v1"),
            F.try_sum("fee_base_u").alias("v3")).select(
            F.lit("day").alias("kind"), F.col("broker_id").cast("string").alias("a"), F.col("day").alias("b"),
            F.col("market_type").alias("c"), none.alias("d"), "n", "v1", nothing.alias("v2"), "v3")
        left = judged.where(~F.col("decided")).select(
            F.lit("left").alias("kind"), F.col("_file").alias("a"), none.alias("b"), none.alias("c"), none.alias("d"),
            F.col("_row").alias("n"), nothing.alias("v1"), nothing.alias("v2"), nothing.alias("v3"))
        result = JobResult()
        rows: dict[str, list[int]] = defaultdict(list)
        for kind, a, b, c, d, n, v1, v2, v3 in tallies.unionAll(lines).unionAll(days).unionAll(left).collect():
            if kind == "tally":
                result.records += n
                if a == "true":
                    result.decided[b] = n
            elif kind == "line":
                result.lines[(int(a), b, c, d)] = [n, _usd(v1), _usd(v2), _usd(v3)]
            elif kind == "day":
                result.days[(int(a), b, c)] = [n, _usd(v1), _usd(v3)]
            else:
                rows[a].append(n)
        result.left = {file: sorted(indexes) for file, indexes in sorted(rows.items())}
        return result
    finally:
        judged.unpersist()


def _usd(units: Decimal | None) -> Decimal:
    """A sum in units of 10⁻¹⁸ USD as an exact amount; NULL is a sum that overflowed."""
    if units is None:
        raise ArithmeticError("a sum of the month's fills overflowed decimal(38,0) in the Spark job")
    return Decimal(canonical(units.scaleb(-UNITS, MONEY)))


def file_digests(spark: SparkSession, uri: str) -> list[tuple[str, int, str]]:
    """(path, bytes, SHA-256) of every Parquet file under `uri`: on this machine for a local
    directory, else by Spark where the files are (each file's bytes read by one task)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        root = Path(unquote(parsed.path))
        found = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
        return [(path.resolve().as_uri(), path.stat().st_size, _sha256(path)) for path in found]
    files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
             .option("pathGlobFilter", "*.parquet").load(uri)
             .select("path", "length", F.sha2(F.col("content"), 256).alias("sha256")))
    return sorted((path, int(size), digest) for path, size, digest in files.collect())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

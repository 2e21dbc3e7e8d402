"""Which records of a block are certainly fills, judged column by column, in their canonical form.

`certain_fills` applies to whole columns of text the checks `bkr.domain.fills.parse_fill` applies
to one row, in a stricter form: a record passes only if every field is in the one shape that
`parse_fill` certainly accepts and reads in one way — ids of printable ASCII without surrounding
spaces, an upper-case `BASE_QUOTE[_KIND]` symbol, amounts as plain decimals within their bounds
(`bkr.domain.bounds.AMOUNT`), a UTC time written `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, a broker id in
range or none, no `corrects` and no `trade_id`. What it returns is what `parse_fill` would return
for those records (amounts in canonical text, the time as a UTC instant, the defaults applied)
and each one's content key, the same digest `Fill.content_key` computes.

A record that does not pass is not judged here: the row path (`parse_fill` and all that follows)
gives it its outcome and its reason, so a rejection says exactly what it says today. Neither is a
record whose `fill_id` appears more than once in the block: which of them is the fill and which
the duplicate or conflict depends on their order, which the row path keeps.
"""

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from bkr.domain.bounds import AMOUNT
from bkr.domain.fills import FILL_TYPES, MarketType, Side
from bkr.domain.registry import MAX_BROKER_ID

_ID = r"^[!-~]([ -~]*[!-~])?$"
_SYMBOL = r"^[A-Z0-9]+(_[A-Z0-9]+)+$"
_ASSET = r"^[A-Z0-9]+$"
_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"
_NONZERO = r"[1-9]"
_BOUNDED = rf"^-?[0-9]{{1,{AMOUNT.integer_digits}}}(\.[0-9]{{1,{AMOUNT.decimal_places}}})?$"
_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$"
_BROKER = r"^[1-9][0-9]{0,4}$"
# What `parse_fill` may strip from an id's ends (Python's whitespace), and more: every character
# but printable ASCII. Two ids the same without these may be one fill_id to the row path, so both
# of their records are left to it; stripping more than it does only leaves more to it.
_ENDS = r"^[^!-~]+|[^!-~]+$"
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")

_OPTIONAL = frozenset({"broker_id", "via_api", "fill_type", "corrects", "trade_id"})
SEPARATOR = "\x1f"  # `Fill.content_key` joins its parts with it


def certain_fills(columns: pa.Table) -> pa.Table:
    """The records of `columns` (text, named by the fill fields) that are certainly valid fills:
    a table with their `position` in `columns` and the fields as `parse_fill` reads them, plus
    `base`, `quote` (the symbol's assets), `ts_text` (the time as `content_key` writes it),
    `fill_month`, `day` and `content_key`."""
    count = columns.num_rows
    names = set(columns.column_names)

    def text(name: str) -> pa.Array:
        if name not in names:
            return pa.array([""] * count, pa.string())
        values = pc.cast(columns.column(name).combine_chunks(), pa.string())
        # an optional field with no value (a Parquet null) is absent, as `parse_fill` reads None
        return pc.fill_null(values, "") if name in _OPTIONAL else values

    def matches(array: pa.Array, pattern: str) -> pa.Array:
        return pc.match_substring_regex(array, pattern)

    fill_id, order_id, user_id = text("fill_id"), text("order_id"), text("user_id")
    symbol, market_type, side = text("symbol"), text("market_type"), text("side")
    price, quantity, fee = (_canonical(text(name)) for name in ("price", "quantity", "fee"))
    fee_symbol, is_maker, timestamp = text("fee_symbol"), pc.utf8_lower(text("is_maker")), text("timestamp")
    broker, via_api, fill_type = text("broker_id"), pc.utf8_lower(text("via_api")), text("fill_type")
    checks = [
        matches(fill_id, _ID), matches(order_id, _ID), matches(user_id, _ID),
        matches(symbol, _SYMBOL), pc.is_in(market_type, pa.array([m.value for m in MarketType])),
        pc.is_in(side, pa.array([s.value for s in Side])),
        matches(price, _BOUNDED), matches(price, _NONZERO), pc.invert(pc.starts_with(price, "-")),
        matches(quantity, _BOUNDED), matches(quantity, _NONZERO), pc.invert(pc.starts_with(quantity, "-")),
        matches(fee, _BOUNDED), matches(fee_symbol, _ASSET),
        pc.is_in(is_maker, pa.array(_TRUE + _FALSE)), matches(timestamp, _TIME),
        pc.or_(pc.equal(broker, ""), matches(broker, _BROKER)),
        pc.is_in(via_api, pa.array(("", *_TRUE, *_FALSE))),
        pc.is_in(fill_type, pa.array(["", *sorted(FILL_TYPES)])),
        pc.equal(text("corrects"), ""), pc.equal(text("trade_id"), ""),
        pc.invert(_repeated(pc.replace_substring_regex(fill_id, _ENDS, ""))),
    ]
    certain = checks[0]
    for check in checks[1:]:
        certain = pc.and_(certain, check)
    certain = pc.fill_null(certain, False)
    position = pc.filter(pa.array(range(count), pa.int64()), certain)
    (fill_id, order_id, user_id, symbol, market_type, side, price, quantity, fee, fee_symbol, is_maker, timestamp,
     broker, via_api, fill_type) = (
        pc.filter(a, certain) for a in (fill_id, order_id, user_id, symbol, market_type, side, price, quantity,
                                        fee, fee_symbol, is_maker, timestamp, broker, via_api, fill_type))
    moment = _instants(timestamp)
    if moment is None:  # a date no calendar has (30 February): the row path names it
        keep = pa.array([_is_instant(t) for t in timestamp.to_pylist()], pa.bool_())
        return certain_fills_of(columns, position, keep)
    broker_id = pc.cast(pc.if_else(pc.equal(broker, ""), None, broker), pa.int32())
    in_range = pc.fill_null(pc.less_equal(broker_id, MAX_BROKER_ID), True)
    maker = pc.is_in(is_maker, pa.array(_TRUE))
    api = pc.or_(pc.equal(via_api, ""), pc.is_in(via_api, pa.array(_TRUE)))
    fill_type = pc.if_else(pc.equal(fill_type, ""), "User", fill_type)
    parts = pc.split_pattern(symbol, "_")
    ts_text = pc.strftime(moment, format="%Y-%m-%dT%H:%M:%S+00:00")
    table = pa.table({
        "position": position, "fill_id": fill_id, "order_id": order_id, "user_id": user_id, "symbol": symbol,
        "market_type": market_type, "side": side, "price": price, "quantity": quantity, "fee": fee,
        "fee_symbol": fee_symbol, "is_maker": maker, "ts": moment, "broker_id": broker_id, "via_api": api,
        "fill_type": fill_type, "base": pc.list_element(parts, 0), "quote": pc.list_element(parts, 1),
        "ts_text": ts_text, "fill_month": pc.utf8_slice_codeunits(ts_text, 0, 7),
        "day": pc.utf8_slice_codeunits(ts_text, 0, 10),
    }).filter(in_range)
    return table.append_column("content_key", _content_keys(table))


def certain_fills_of(columns: pa.Table, position: pa.Array, keep: pa.Array) -> pa.Table:
    """`certain_fills` of the records at `position` that `keep` marks, positions kept as in `columns`."""
    chosen = pc.filter(position, keep)
    table = certain_fills(columns.take(chosen))
    return table.set_column(0, "position", pc.take(chosen, table.column("position")))


def _canonical(amounts: pa.Array) -> pa.Array:
    """Plain decimals in `bkr.domain.money.canonical`'s form (no leading or trailing zeros, no
    point without decimals, no negative zero); anything else comes out unmatched by `_DECIMAL`."""
    plain = pc.match_substring_regex(amounts, _DECIMAL)
    text = pc.replace_substring_regex(amounts, r"^(-?)0+([0-9])", r"\1\2")
    text = pc.replace_substring_regex(text, r"(\.[0-9]*?)0+$", r"\1")
    text = pc.replace_substring_regex(text, r"\.$", "")
    text = pc.if_else(pc.equal(text, "-0"), "0", text)
    return pc.if_else(plain, text, "")


def _repeated(ids: pa.Array) -> pa.Array:
    """Whether each id appears more than once."""
    counts = pa.table({"id": ids}).group_by("id").aggregate([("id", "count")])
    several = pc.filter(counts.column("id"), pc.greater(counts.column("id_count"), 1))
    return pc.is_in(ids, several)


def _instants(timestamps: pa.Array) -> pa.Array | None:
    try:
        return pc.cast(timestamps, pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        return None


def _is_instant(text: str) -> bool:
    try:
        pc.cast(pa.array([text]), pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        return False
    return True


def _content_keys(table: pa.Table) -> pa.Array:
    """`Fill.content_key` of each record: the canonical parts joined in Arrow, digested here."""
    flag = {True: "1", False: "0"}
    parts = [table.column(name) for name in ("fill_id", "order_id", "user_id", "symbol", "market_type", "side",
                                             "price", "quantity", "fee", "fee_symbol")]
    parts += [pc.if_else(table.column("is_maker"), flag[True], flag[False]), table.column("ts_text"),
              pc.fill_null(pc.cast(table.column("broker_id"), pa.string()), ""),
              pc.if_else(table.column("via_api"), flag[True], flag[False]), table.column("fill_type")]
    joined = pc.cast(pc.binary_join_element_wise(*parts, SEPARATOR), pa.binary())
    blake2b = hashlib.blake2b
    return pa.array([blake2b(part, digest_size=16).hexdigest() for part in joined.to_pylist()], pa.string())

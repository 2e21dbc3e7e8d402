"""A synthetic month of the broker program, for demos, tests and benchmarks.

`plan_simulation` decides everything up front that is small (the registry of brokers,
affiliates, referral codes and users, and how many fills of each kind the file holds);
`Simulation.rows` then generates the fills lazily, one at a time, so that writing millions
of them keeps memory flat. The same seed gives the same rows, byte for byte.

What a simulated month exercises:

- brokers of every `BrokerType` whose API volume lands in every tier BKR 0..5: each gets a
  target volume inside its tier's band, and its fills are sized target / fill count, so the
  tiers are spread whatever the number of fills; one broker stays `pending`, one is suspended
  half-way through the simulated span;
- affiliates whose referral codes pay 0 to 0.6, one code changing its rate mid-span;
  users with and without a code, and a few users that are not registered (their fills wait);
- spot (USDC and USDT quoted) and perpetual fills, maker and taker, VIP fee rates with maker
  rebates (negative fees), spot buys paying their fee in the base asset;
- what a real export also holds: system fills (liquidations, ADL, ...) carrying a broker id,
  web fills carrying one, unknown broker ids, fills without a broker, malformed rows, an
  exact duplicate and a conflicting duplicate.

`register_simulated_registry` records the registry through `bkr.program.registry`,
idempotently: what already exists is left as it is.
"""

import csv
import hashlib
import json
import os
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from math import gcd
from pathlib import Path
from typing import Any, TextIO, TypeVar

from sqlalchemy import Connection

from bkr.domain.errors import Conflict, InvalidInput, NotFound
from bkr.domain.fills import FIELDS
from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus, BrokerType, RateChange, StatusChange
from bkr.program import registry

# Rate histories of the simulated referral codes start here, long before any simulated month.
RATES_SINCE = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_T = TypeVar("_T")


# --- the registry -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SimBroker:
    broker_id: int
    account_id: str
    name: str
    broker_type: BrokerType
    intended_tier: int | None  # the tier its counted volume is aimed at; None if it cannot count fully
    weight: int  # its share of the broker fills
    status_changes: tuple[StatusChange, ...]


@dataclass(frozen=True, slots=True)
class SimAffiliate:
    account_id: str
    name: str


@dataclass(frozen=True, slots=True)
class SimCode:
    code: str
    affiliate_account_id: str
    rates: tuple[RateChange, ...]  # ascending by effective_from


@dataclass(frozen=True, slots=True)
class SimUser:
    user_id: str
    referral_code: str | None
    registered: bool
    vip: int  # index into VIP_FEES


@dataclass(frozen=True, slots=True)
class SimRegistry:
    brokers: tuple[SimBroker, ...]
    affiliates: tuple[SimAffiliate, ...]
    codes: tuple[SimCode, ...]
    users: tuple[SimUser, ...]
    unknown_broker_ids: tuple[int, ...]  # ids fills carry that no broker is enrolled under

    @property
    def registered_users(self) -> tuple[SimUser, ...]:
        return tuple(u for u in self.users if u.registered)

    @property
    def unregistered_users(self) -> tuple[SimUser, ...]:
        return tuple(u for u in self.users if not u.registered)


# (broker id, name, type, intended tier, weight). Ids 1400 and 2200 as ccxt's and Hummingbot's.
_BROKERS: tuple[tuple[int, str, BrokerType, int | None, int], ...] = (
    (1400, "Meridian Aggregator", BrokerType.EXCHANGE_AGGREGATOR, 5, 14),
    (2200, "Hummingway Bots", BrokerType.TRADING_BOT, 4, 12),
    (3100, "Vantage Terminal", BrokerType.TRADING_TERMINAL, 3, 10),
    (3300, "Kestrel Algo", BrokerType.ALGORITHMIC_TRADING_PLATFORM, 2, 8),
    (4100, "CopyNest Social", BrokerType.SOCIAL_TRADING_PLATFORM, 1, 6),
    (4200, "Harbor Asset Management", BrokerType.ASSET_MANAGER, 0, 4),
    (5100, "Swiftroute Execution", BrokerType.ORDER_EXECUTION_SERVICE, 3, 10),
    (5200, "Odd Lot Labs", BrokerType.OTHER, 0, 4),
    (6100, "Gridline Bots", BrokerType.TRADING_BOT, 1, 6),
    (6200, "Quanta Desk", BrokerType.ALGORITHMIC_TRADING_PLATFORM, 4, 12),
    (6300, "Bastion Capital", BrokerType.ASSET_MANAGER, 5, 12),
    (8100, "Pebble Aggregator", BrokerType.EXCHANGE_AGGREGATOR, 0, 4),
    (7100, "Nightjar Terminal", BrokerType.TRADING_TERMINAL, None, 3),  # stays pending
    (7200, "Echo Social", BrokerType.SOCIAL_TRADING_PLATFORM, None, 6),  # suspended mid-span
)
PENDING_BROKER = 7100
SUSPENDED_BROKER = 7200
UNKNOWN_BROKER_IDS = (9999, 31337)

# Target API volume bands per tier, inside the tier's thresholds with room for the noise of
# fill sizes, in USD over a whole month.
_TIER_BANDS: tuple[tuple[int, int], ...] = (
    (600_000, 3_500_000), (6_200_000, 8_800_000), (12_000_000, 17_500_000),
    (26_000_000, 50_000_000), (68_000_000, 90_000_000), (115_000_000, 240_000_000),
)
_SUSPENDED_TARGET = (13_000_000, 17_000_000)  # counted for about half the span only

# (account, name, codes with their rate); the code "DELTA-SWITCH" changes its rate mid-span.
_AFFILIATES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("acct-aff-alpha", "Alpha Signals", (("ALPHA-0", "0"), ("ALPHA-10", "0.1"))),
    ("acct-aff-beta", "Beta Crypto Club", (("BETA-20", "0.2"), ("BETA-25", "0.25"))),
    ("acct-aff-gamma", "Gamma Influence", (("GAMMA-40", "0.4"), ("GAMMA-50", "0.5"), ("GAMMA-60", "0.6"))),
    ("acct-aff-delta", "Delta Academy", (("DELTA-SWITCH", "0.1"),)),
)
SWITCHING_CODE = "DELTA-SWITCH"

# VIP fee levels: (maker rate, taker rate). Maker rates below zero are rebates.
VIP_FEES: tuple[tuple[Decimal, Decimal], ...] = tuple((Decimal(m), Decimal(t)) for m, t in (
    ("0.0008", "0.001"), ("0.0006", "0.0009"), ("0.0004", "0.0008"), ("0.0002", "0.0006"),
    ("0", "0.0005"), ("-0.00005", "0.0004"), ("-0.0001", "0.00035"),
))
_VIP_WEIGHTS = (55, 15, 10, 8, 6, 4, 2)

_UNREGISTERED = (("user-new-1", "BETA-25"), ("user-new-2", None), ("user-new-3", "GAMMA-60"))


def _draw(*parts: object) -> int:
    """A stable pseudo-random 64-bit number for a key (unlike `hash`, the same in every process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _pick_weighted(value: int, weights: tuple[int, ...]) -> int:
    point = value % sum(weights)
    for index, weight in enumerate(weights):
        if point < weight:
            return index
        point -= weight
    raise AssertionError("unreachable")


def user_count(fills: int) -> int:
    """Registered users for a month of `fills` fills: one per hundred fills, 24 to 5,000."""
    return max(24, min(5_000, fills // 100))


def switched_rate(month: Month) -> Decimal:
    """The rate DELTA-SWITCH moves to in the middle of `month` (alternating month to month)."""
    return Decimal("0.25") if month.month % 2 else Decimal("0.4")


def simulated_registry(month: Month, until: datetime, users: int) -> SimRegistry:
    """The registry a simulated span [month start, until) runs against.

    It does not depend on the seed, so that months simulated one after the other (the demo)
    share their brokers and users: user k always signed up with the same code. Brokers are
    activated before the month starts (the suspended one exactly at its start, so that a
    later month re-activates it); the suspension and the rate change fall mid-span.
    """
    start = month.start
    middle = start + (until - start) // 2
    brokers = []
    for index, (broker_id, name, kind, tier, weight) in enumerate(_BROKERS):
        if broker_id == PENDING_BROKER:
            changes: tuple[StatusChange, ...] = ()
        elif broker_id == SUSPENDED_BROKER:
            changes = (StatusChange(BrokerStatus.ACTIVE, start), StatusChange(BrokerStatus.SUSPENDED, middle))
        else:
            changes = (StatusChange(BrokerStatus.ACTIVE, start - timedelta(days=20 + 9 * index, hours=index)),)
        brokers.append(SimBroker(broker_id, f"acct-broker-{broker_id}", name, kind, tier, weight, changes))
    affiliates = tuple(SimAffiliate(account, name) for account, name, _ in _AFFILIATES)
    codes = []
    for account, _, entries in _AFFILIATES:
        for code, rate in entries:
            rates = [RateChange(Decimal(rate), RATES_SINCE)]
            if code == SWITCHING_CODE:
                switch_at = start + (until - start) * 2 // 5
                rates.append(RateChange(switched_rate(month), switch_at))
            codes.append(SimCode(code, account, tuple(rates)))
    code_names = [c.code for c in codes]
    people = []
    for k in range(1, users + 1):
        has_code = _draw("user-has-code", k) % 100 >= 45
        signup = code_names[_draw("user-code", k) % len(code_names)] if has_code else None
        people.append(SimUser(f"user-{k:05d}", signup, True, _pick_weighted(_draw("user-vip", k), _VIP_WEIGHTS)))
    for user_id, signup in _UNREGISTERED:
        people.append(SimUser(user_id, signup, False, 0))
    return SimRegistry(tuple(brokers), affiliates, tuple(codes), tuple(people), UNKNOWN_BROKER_IDS)


# --- the fills --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Asset:
    name: str
    price: Decimal  # a typical price in USD
    tick: Decimal  # price increment
    lot: Decimal  # quantity increment


_ASSETS = (_Asset("SOL", Decimal(150), Decimal("0.01"), Decimal("0.01")),
           _Asset("BTC", Decimal(65_000), Decimal("0.1"), Decimal("0.00001")),
           _Asset("ETH", Decimal(3_200), Decimal("0.01"), Decimal("0.0001")),
           _Asset("JUP", Decimal(1), Decimal("0.0001"), Decimal("0.1")))
_SYSTEM_FILL_TYPES = ("Liquidation", "Adl", "Backstop", "CollateralConversion")

# Kinds of planted rows, in the order they appear in the file (the duplicates last, so that
# the fill they repeat was written before them).
MALFORMED_KINDS = ("bad_number", "missing_field", "unknown_market_type", "broker_id_out_of_range", "not_finite",
                   "bad_timestamp", "bad_side", "unpriced_fee_asset", "zero_quantity")
SPECIAL_KINDS = (*MALFORMED_KINDS, "duplicate", "duplicate", "conflict")

# Categories of ordinary rows and their share of them (the brokers' share is split by weight).
BROKER_SHARE = Fraction(72, 100)
_OTHER_SHARES: tuple[tuple[str, Fraction], ...] = (
    ("awaiting_user", Fraction(12, 1000)),  # API fills of an active broker by a user bkr does not know
    ("web", Fraction(4, 100)),  # carry a broker id but came through the web UI
    ("system", Fraction(25, 1000)),  # liquidations, ADL, ... some with a broker id
    ("unknown_broker", Fraction(2, 100)),  # API fills naming a broker id nobody enrolled
)
NO_BROKER = "no_broker"  # the rest


@dataclass(frozen=True, slots=True)
class Simulation:
    month: Month
    fills: int  # rows in the file, planted ones included
    seed: int
    until: datetime  # end (exclusive) of the simulated span
    registry: SimRegistry
    targets: dict[int, Decimal]  # broker id -> volume its fills add up to, about
    categories: tuple[tuple[str, int], ...]  # (category, rows) of the ordinary rows; brokers as "broker:N"
    specials: dict[int, str]  # row index -> planted kind

    @property
    def span(self) -> timedelta:
        return self.until - self.month.start

    def summary(self) -> dict[str, Any]:
        """What the file holds, for the user and for tests."""
        counts = dict(self.categories)
        kinds = list(self.specials.values())
        return {
            "month": str(self.month),
            "seed": self.seed,
            "until": self.until.isoformat().replace("+00:00", "Z"),
            "rows": self.fills,
            "malformed": sum(kind in MALFORMED_KINDS for kind in kinds),
            "duplicates": kinds.count("duplicate"),
            "conflicts": kinds.count("conflict"),
            "by_category": {
                "broker_api": sum(n for c, n in self.categories if c.startswith("broker:")),
                **{name: counts.get(name, 0) for name, _ in _OTHER_SHARES},
                NO_BROKER: counts.get(NO_BROKER, 0),
            },
            "brokers": [
                {"broker_id": b.broker_id, "name": b.name, "type": b.broker_type.value,
                 "intended_tier": None if b.intended_tier is None else f"BKR {b.intended_tier}",
                 "api_fills": counts.get(f"broker:{b.broker_id}", 0),
                 "target_volume": format(self.targets[b.broker_id], "f")}
                for b in self.registry.brokers],
            "users": {"registered": len(self.registry.registered_users),
                      "unregistered": len(self.registry.unregistered_users)},
            "referral_codes": len(self.registry.codes),
        }

    def rows(self) -> Iterator[dict[str, str]]:
        """The fills, in time order, generated one at a time. Every value is a string; a field a
        planted row lacks is absent; a fill without a broker has broker_id ''."""
        return _RowMaker(self).rows()


def plan_simulation(month: Month, fills: int, seed: int, until: datetime | None = None) -> Simulation:
    """Decide a simulated span: [month start, until), `until` being the month's end by default."""
    if fills < 1:
        raise InvalidInput(f"fills: must be at least 1, got {fills}")
    until = month.end if until is None else until
    if not month.start < until <= month.end:
        raise InvalidInput(f"until: {until.isoformat()} is not inside {month}")
    reg = simulated_registry(month, until, user_count(fills))
    fraction = Fraction((until - month.start) // _MICROSECOND, (month.end - month.start) // _MICROSECOND)
    targets: dict[int, Decimal] = {}
    for broker in reg.brokers:
        low, high = _SUSPENDED_TARGET if broker.intended_tier is None else _TIER_BANDS[broker.intended_tier]
        whole_month = low + _draw("target", seed, month, broker.broker_id) % (high - low)
        targets[broker.broker_id] = Decimal(int(whole_month * fraction))  # "so far" when the span is partial
    # A few planted rows, one per 20 rows at most: the malformed ones give way first in a tiny file.
    special_count = min(len(SPECIAL_KINDS), fills // 20)
    kinds = SPECIAL_KINDS[len(SPECIAL_KINDS) - special_count:]
    specials = {(k + 1) * fills // (special_count + 1): kind for k, kind in enumerate(kinds)}
    ordinary = fills - len(specials)
    weights = sum(b.weight for b in reg.brokers)
    shares = [(f"broker:{b.broker_id}", BROKER_SHARE * b.weight / weights) for b in reg.brokers]
    shares += list(_OTHER_SHARES)
    shares.append((NO_BROKER, 1 - sum((share for _, share in shares), Fraction(0))))
    return Simulation(month, fills, seed, until, reg, targets, _apportion(ordinary, shares), specials)


def _apportion(total: int, shares: list[tuple[str, Fraction]]) -> tuple[tuple[str, int], ...]:
    """Split `total` rows by the shares exactly (largest remainder), in the shares' order."""
    exact = [(name, share * total) for name, share in shares]
    counts = {name: int(value) for name, value in exact}
    left = total - sum(counts.values())
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] - int(exact[i][1])), i))
    for index in by_remainder[:left]:
        counts[exact[index][0]] += 1
    return tuple((name, counts[name]) for name, _ in shares)


def _base36(number: int, width: int) -> str:
    digits = ""
    for _ in range(width):
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
    return digits


def _plain(amount: Decimal) -> str:
    """A decimal as plain text, never in exponent notation."""
    return format(amount, "f")


class _RowMaker:
    """Generates the rows of one simulation; holds only the state of the current row."""

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation
        self.rng = random.Random(_draw("rows", simulation.seed, simulation.month, simulation.fills))
        # Fill ids name the simulation (seed, month, size, span): simulating the same again repeats
        # its fills exactly (duplicates), another simulation of the month never collides with them.
        tag = _draw("ids", simulation.fills, simulation.until.isoformat()) % 36**4
        self.prefix = (f"sim{simulation.seed}-{simulation.month.year:04d}{simulation.month.month:02d}"
                       f"-{_base36(tag, 4)}")
        names = [name for name, count in simulation.categories]
        self.bounds = []
        running = 0
        for _, count in simulation.categories:
            running += count
            self.bounds.append(running)
        self.names = names
        self.ordinary = running
        self.stride = _coprime_stride(running)
        self.offset = _draw("offset", simulation.seed) % max(1, running)
        counts = dict(simulation.categories)
        self.unit: dict[int, Decimal] = {
            b.broker_id: simulation.targets[b.broker_id] / max(1, counts[f"broker:{b.broker_id}"])
            for b in simulation.registry.brokers}
        self.registered = simulation.registry.registered_users
        self.unregistered = simulation.registry.unregistered_users
        self.enrolled = tuple(b.broker_id for b in simulation.registry.brokers)
        self.steady = tuple(b.broker_id for b in simulation.registry.brokers
                            if b.broker_id not in (PENDING_BROKER, SUSPENDED_BROKER))
        self.span_us = max(1, simulation.span // _MICROSECOND)
        self.start = simulation.month.start
        self.step = self.span_us // simulation.fills

    def category(self, ordinary_index: int) -> str:
        slot = (ordinary_index * self.stride + self.offset) % self.ordinary
        return self.names[bisect_right(self.bounds, slot)]

    def pick(self, items: tuple[_T, ...]) -> _T:
        return items[int(self.rng.random() * len(items))]

    def timestamp(self, index: int) -> str:
        """Spread evenly over the span, in order: row i falls in the i-th of `fills` equal slices."""
        offset = self.span_us * index // self.sim.fills + int(self.rng.random() * self.step)
        moment = self.start + timedelta(microseconds=min(offset, self.span_us - 1))
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"

    def rows(self) -> Iterator[dict[str, str]]:
        ordinary_index = 0
        last_row: dict[str, str] = {}  # row 0 is never planted, so this is set before it is needed
        last_broker_row: dict[str, str] = {}  # repeated by preference: a duplicate that would count
        for index in range(self.sim.fills):
            kind = self.sim.specials.get(index)
            stamp = self.timestamp(index)
            if kind is None:
                category = self.category(ordinary_index)
                ordinary_index += 1
                last_row = self.ordinary_row(index, stamp, category)
                if category.startswith("broker:"):
                    last_broker_row = last_row
                yield last_row
            elif kind in ("duplicate", "conflict"):
                source = last_broker_row or last_row
                yield dict(source) if kind == "duplicate" else _conflicting(source)
            else:
                yield self.malformed_row(index, stamp, kind)

    def ordinary_row(self, index: int, stamp: str, category: str) -> dict[str, str]:
        rng = self.rng
        user = self.pick(self.registered)
        broker = ""
        via_api = rng.random() < 0.8
        fill_type = "User"
        notional: Decimal | None = None
        if category.startswith("broker:"):
            broker_id = int(category.split(":", 1)[1])
            broker, via_api = str(broker_id), True
            notional = self.unit[broker_id] * (800 + int(rng.random() * 401)) / 1000
        elif category == "awaiting_user":
            user = self.pick(self.unregistered)
            broker, via_api = str(self.pick(self.steady)), True
        elif category == "web":
            broker, via_api = str(self.pick(self.enrolled)), False
        elif category == "system":
            fill_type = self.pick(_SYSTEM_FILL_TYPES)
            if rng.random() < 0.6:
                broker, via_api = str(self.pick(self.enrolled)), True
        elif category == "unknown_broker":
            broker, via_api = str(self.pick(UNKNOWN_BROKER_IDS)), True
        if notional is None:
            notional = Decimal(int(10 ** rng.uniform(1.7, 4.7)))  # 50 to 50,000 USD
        return self.fill(index, stamp, user, notional, broker, via_api, fill_type)

    def fill(self, index: int, stamp: str, user: SimUser, notional: Decimal, broker: str, via_api: bool,
             fill_type: str) -> dict[str, str]:
        rng = self.rng
        asset = _ASSETS[_pick_weighted(int(rng.random() * 100), (40, 30, 20, 10))]
        perp = fill_type in ("Liquidation", "Adl", "Backstop") or rng.random() < 0.45
        quote = "USDC" if perp or rng.random() < 0.75 else "USDT"
        symbol = f"{asset.name}_{quote}_PERP" if perp else f"{asset.name}_{quote}"
        tick, lot = asset.tick, asset.lot
        price = (asset.price * (9_400 + int(rng.random() * 1_201)) / 10_000).quantize(tick)
        quantity = max(lot, (notional / price).quantize(lot, rounding=ROUND_HALF_EVEN))
        side = "Bid" if rng.random() < 0.5 else "Ask"
        is_maker = rng.random() < 0.35
        maker_rate, taker_rate = VIP_FEES[user.vip]
        rate = maker_rate if is_maker else taker_rate
        if not perp and side == "Bid":  # a spot buy pays its fee in the asset it receives
            fee, fee_symbol = (quantity * rate).quantize(Decimal("0.00000001")), asset.name
        else:
            fee, fee_symbol = (price * quantity * rate).quantize(Decimal("0.000001")), quote
        if fee.is_zero():
            fee = abs(fee)  # no "-0"
        return {
            "fill_id": f"{self.prefix}-{index:09d}", "order_id": f"o{self.prefix}-{index:09d}",
            "user_id": user.user_id, "symbol": symbol, "market_type": "PERP" if perp else "SPOT", "side": side,
            "price": _plain(price), "quantity": _plain(quantity), "fee": _plain(fee), "fee_symbol": fee_symbol,
            "is_maker": "true" if is_maker else "false", "timestamp": stamp, "broker_id": broker,
            "via_api": "true" if via_api else "false", "fill_type": fill_type,
        }

    def malformed_row(self, index: int, stamp: str, kind: str) -> dict[str, str]:
        user = self.pick(self.registered)
        row = self.fill(index, stamp, user, Decimal(1_000), "", True, "User")
        row["fill_id"] = f"{self.prefix}-bad-{index:09d}"
        month = self.sim.month
        if kind == "bad_number":
            row["price"] = "1,234.50"
        elif kind == "missing_field":
            del row["fee"]
        elif kind == "unknown_market_type":
            row["market_type"] = "OPTION"
        elif kind == "broker_id_out_of_range":
            row["broker_id"] = "70000"
        elif kind == "not_finite":
            row["quantity"] = "NaN"
        elif kind == "bad_timestamp":
            row["timestamp"] = f"{month.year:04d}-{month.month:02d}-32T12:00:00Z"
        elif kind == "bad_side":
            row["side"] = "Long"
        elif kind == "unpriced_fee_asset":
            row["fee_symbol"] = "BONK"
        elif kind == "zero_quantity":
            row["quantity"] = "0"
        return row


def _conflicting(row: dict[str, str]) -> dict[str, str]:
    """The same fill_id with a fee one unit (of its last place) higher."""
    fee = Decimal(row["fee"])
    places = fee.as_tuple().exponent
    assert isinstance(places, int)
    return dict(row, fee=_plain(fee + Decimal(1).scaleb(places)))


def _coprime_stride(n: int) -> int:
    """A step near n × 0.618 sharing no factor with n: i ↦ i × step mod n visits every slot once,
    spreading each category evenly through the file."""
    if n <= 2:
        return 1
    step = max(1, int(n * 0.6180339887))
    while gcd(step, n) != 1:
        step += 1
    return step


# --- writing --------------------------------------------------------------------------------------------

FORMATS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".parquet": "parquet",
           ".pq": "parquet"}
PARQUET_ROW_GROUP = 65_536


def file_format_of(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            return kind
    raise InvalidInput(f"{path.name}: unknown file type (use .csv, .ndjson/.jsonl or .parquet)")


def write_fills(simulation: Simulation, path: Path, *, on_progress: Callable[[int], None] | None = None,
                every: int = 5_000) -> int:
    """Write the simulation's rows to `path` (format by its name), streamed. The file appears
    whole or not at all: it is written beside and renamed. Returns the number of rows."""
    kind = file_format_of(path)
    partial = path.with_name(path.name + ".partial")
    written = 0

    def progress(count: int) -> None:
        if on_progress is not None and (count % every == 0 or count == simulation.fills):
            on_progress(count)

    try:
        if kind == "parquet":
            written = _write_parquet(simulation.rows(), partial, progress)
        else:
            with partial.open("w", encoding="utf-8", newline="") as handle:
                writer = _write_csv if kind == "csv" else _write_ndjson
                written = writer(simulation.rows(), handle, progress)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return written


def _write_csv(rows: Iterator[dict[str, str]], handle: TextIO, progress: Callable[[int], None]) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(FIELDS)
    count = 0
    for row in rows:
        writer.writerow([row.get(name, "") for name in FIELDS])
        count += 1
        progress(count)
    return count


def _json_value(name: str, value: str) -> Any:
    if name == "broker_id":
        return int(value) if value.isdigit() else (None if value == "" else value)
    if name in ("is_maker", "via_api") and value in ("true", "false"):
        return value == "true"
    return value  # amounts stay strings: JSON numbers would invite floats


def _write_ndjson(rows: Iterator[dict[str, str]], handle: TextIO, progress: Callable[[int], None]) -> int:
    count = 0
    for row in rows:
        record = {name: _json_value(name, row[name]) for name in FIELDS if name in row}
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        count += 1
        progress(count)
    return count


def _write_parquet(rows: Iterator[dict[str, str]], path: Path, progress: Callable[[int], None]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.string()) for name in FIELDS])
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        columns: dict[str, list[str | None]] = {name: [] for name in FIELDS}
        for row in rows:
            for name in FIELDS:
                value = row.get(name)
                columns[name].append(None if value == "" and name == "broker_id" else value)
            count += 1
            progress(count)
            if len(columns["fill_id"]) == PARQUET_ROW_GROUP:
                writer.write_table(pa.table(columns, schema=schema))
                columns = {name: [] for name in FIELDS}
        if columns["fill_id"]:
            writer.write_table(pa.table(columns, schema=schema))
    return count


# --- registering ------------------------------------------------------------------------------------------

@dataclass
class Registration:
    """What registering a simulated registry added, and what it left as it found it."""

    brokers: int = 0
    status_changes: int = 0
    affiliates: int = 0
    rates: int = 0
    users: int = 0
    kept: list[str] = field(default_factory=list)  # planned changes the recorded history made moot

    def to_document(self) -> dict[str, Any]:
        return {"brokers": self.brokers, "status_changes": self.status_changes, "affiliates": self.affiliates,
                "rates": self.rates, "users": self.users, "kept": self.kept}


def register_simulated_registry(connection: Connection, reg: SimRegistry, now: datetime, *,
                                actor: str) -> Registration:
    """Record the simulated brokers (with their status history), affiliates, referral codes with
    their rates, and registered users, within the caller's transaction, as `actor` on the audit
    trail. Idempotent: a broker,
    affiliate or user that exists is kept, a status already in force at a planned change is not
    changed again, and a planned change the recorded history does not allow is skipped (listed
    in `kept`), so registering the same or the next month again never fails."""
    done = Registration()
    for broker in reg.brokers:
        try:
            view = registry.get_broker(connection, broker.broker_id, now)
        except NotFound:
            registry.enroll_broker(connection, broker.broker_id, broker.account_id, broker.name,
                                   broker.broker_type.value, now, actor=actor)
            done.brokers += 1
            view = registry.get_broker(connection, broker.broker_id, now)
        timeline = view.timeline
        for change in broker.status_changes:
            if (any(c.effective_at == change.effective_at for c in timeline.changes)
                    or timeline.status_at(change.effective_at) is change.status):
                continue
            try:
                timeline = timeline.with_change(change)
            except Conflict as error:
                done.kept.append(f"broker {broker.broker_id}: {error}")
                continue
            registry.change_broker_status(connection, broker.broker_id, change.status, change.effective_at, now,
                                          actor=actor)
            done.status_changes += 1
    enrolled = {account for account, _, _ in registry.list_affiliates(connection)}
    for affiliate in reg.affiliates:
        if affiliate.account_id not in enrolled:
            registry.enroll_affiliate(connection, affiliate.account_id, affiliate.name, now, actor=actor)
            done.affiliates += 1
    for code in reg.codes:
        for rate in code.rates:
            recorded = registry.rate_timeline(connection, code.code)
            if any(c.effective_from == rate.effective_from for c in recorded.changes):
                continue  # recorded already (a different rate at that moment is the operator's)
            registry.set_referral_rate(connection, code.affiliate_account_id, code.code, rate.rate,
                                       rate.effective_from, now, actor=actor)
            done.rates += 1
    done.users = registry.add_users(connection, ((u.user_id, u.referral_code) for u in reg.registered_users), now,
                                    actor=actor)
    return done

"""Reading the venue's `[venue]` section of the configuration file into its `VenueConfig`.

The rest of the file (the program, the service, the statement key) is read by `bkr.settings`;
this module uses its TOML reader and its rule for exact amounts, so that both halves refuse a
float in the same words.
"""

import re
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bkr.domain.bounds import AMOUNT, FRACTION, bounded
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D, mul, neg
from bkr.settings import exact_setting, read_toml
from bkr.venue.markets import FeeRates, Market, VenueConfig, market_from_symbol

HALF = D("0.5")


def load_venue_config(path: Path | None) -> VenueConfig:
    return parse_venue_config(read_toml(path).get("venue", {}))


MARKET_KEYS = {"symbol", "tick_size", "step_size", "funding_rate", "funding_interval", "index_price"}
_INTERVAL = re.compile(r"([1-9][0-9]{0,5})([smh])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
DAY_SECONDS = 86_400


def funding_rate(value: Any, where: str) -> Decimal:
    """A funding rate per interval: exact, between -1 and 1 (0.0001 is 0.01%); negative: shorts pay."""
    magnitude = value[1:] if isinstance(value, str) and value.startswith("-") else value
    rate = exact_setting(magnitude, where, FRACTION)
    if rate > 1:
        raise InvalidInput(f"config: {where}: {value} is outside -1..1 (0.0001 is 0.01% per interval)", field=where)
    return neg(rate) if isinstance(value, str) and value.startswith("-") else rate


def funding_interval(value: Any, where: str) -> timedelta:
    """A funding interval written as `1h`, `8h`, `30m` or `10s`, which divides a day evenly (so
    that intervals end at the same times every day, UTC)."""
    found = _INTERVAL.fullmatch(value) if isinstance(value, str) else None
    seconds = int(found.group(1)) * _UNIT_SECONDS[found.group(2)] if found else 0
    if not seconds or DAY_SECONDS % seconds:
        raise InvalidInput(f"config: {where}: {value!r} is not an interval such as \"1h\", \"8h\", \"30m\" or "
                           "\"10s\" that divides a day evenly", field=where)
    return timedelta(seconds=seconds)


def _market(entry: Any, index: int) -> Market:
    where = f"venue.markets[{index}]"
    if not isinstance(entry, dict):
        raise InvalidInput(f"config: {where}: expected a table with symbol, tick_size and step_size")
    unknown = set(entry) - MARKET_KEYS
    if unknown:
        raise InvalidInput(f"config: unknown setting(s) {where}.{', '.join(sorted(unknown))}")
    return market_from_symbol(str(entry.get("symbol", "")), exact_setting(entry.get("tick_size"), where, AMOUNT),
                              exact_setting(entry.get("step_size"), where, AMOUNT))


def _funded(market: Market, entry: dict[str, Any], index: int, rate: Decimal, interval: timedelta) -> Market:
    """The market with its funding settings: its own, else the venue's (perpetuals only)."""
    where = f"venue.markets[{index}]"
    own = {k for k in ("funding_rate", "funding_interval", "index_price") if k in entry}
    if not market.is_futures:
        if own:
            raise InvalidInput(f"config: {where}.{sorted(own)[0]}: {market.symbol} is a spot market; only "
                               "perpetuals are funded and marked")
        return market
    index_price = None
    if "index_price" in entry:
        index_price = exact_setting(entry["index_price"], f"{where}.index_price", AMOUNT)
        if index_price <= 0:
            raise InvalidInput(f"config: {where}.index_price: must be positive")
    return replace(market, index_price=index_price,
                   funding_rate=funding_rate(entry["funding_rate"], f"{where}.funding_rate")
                   if "funding_rate" in entry else rate,
                   funding_interval=funding_interval(entry["funding_interval"], f"{where}.funding_interval")
                   if "funding_interval" in entry else interval)


def parse_venue_config(section: dict[str, Any]) -> VenueConfig:
    known = {"markets", "fee_tiers", "default_fee_tier", "starting_balances", "initial_margin",
             "maintenance_margin", "funding_rate", "funding_interval"}
    unknown = set(section) - known
    if unknown:
        raise InvalidInput(f"config: unknown setting(s) venue.{', venue.'.join(sorted(unknown))}")
    defaults = VenueConfig()
    markets = defaults.markets
    if "markets" in section:
        markets = tuple(_market(m, i) for i, m in enumerate(section["markets"]))
    rate = funding_rate(section.get("funding_rate", "0"), "venue.funding_rate")
    interval = funding_interval(section.get("funding_interval", "1h"), "venue.funding_interval")
    listed = section.get("markets", [{}] * len(markets))
    markets = tuple(_funded(market, listed[i] if isinstance(listed[i], dict) else {}, i, rate, interval)
                    for i, market in enumerate(markets))
    tiers = dict(defaults.fee_tiers)
    for name, rates in section.get("fee_tiers", {}).items():
        where = f"venue.fee_tiers.{name}"
        try:
            tiers[int(name)] = FeeRates(*(exact_setting(rates[k], f"{where}.{k}", FRACTION)
                                          for k in ("spot_maker", "spot_taker", "futures_maker", "futures_taker")))
        except (KeyError, ValueError) as error:
            raise InvalidInput(f"config: {where}: {error} (a tier number with four rates)") from None
    balances = {asset.upper(): exact_setting(amount, f"venue.starting_balances.{asset}", AMOUNT)
                for asset, amount in section.get("starting_balances", defaults.starting_balances).items()}
    default_tier = section.get("default_fee_tier", defaults.default_fee_tier)
    if isinstance(default_tier, bool) or not isinstance(default_tier, int):
        raise InvalidInput(f"config: venue.default_fee_tier: {default_tier!r} is not a tier number")
    initial = exact_setting(section.get("initial_margin", defaults.initial_margin), "venue.initial_margin", FRACTION)
    if "maintenance_margin" in section:
        maintenance = exact_setting(section["maintenance_margin"], "venue.maintenance_margin", FRACTION)
    else:  # half the initial margin, whatever that is
        maintenance = bounded(mul(initial, HALF), FRACTION, "venue.maintenance_margin (half venue.initial_margin)")
    return VenueConfig(markets=markets, fee_tiers=tiers, default_fee_tier=default_tier,
                       starting_balances=balances, initial_margin=initial, maintenance_margin=maintenance)

"""Reading the venue's `[venue]` section of the configuration file into its `VenueConfig`.

The rest of the file (the program, the service, the statement key) is read by `bkr.settings`;
this module uses its TOML reader and its rule for exact amounts, so that both halves refuse a
float in the same words.
"""

from pathlib import Path
from typing import Any

from bkr.domain.bounds import AMOUNT, FRACTION, bounded
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D, mul
from bkr.settings import exact_setting, read_toml
from bkr.venue.markets import FeeRates, VenueConfig, market_from_symbol

HALF = D("0.5")


def load_venue_config(path: Path | None) -> VenueConfig:
    return parse_venue_config(read_toml(path).get("venue", {}))


def parse_venue_config(section: dict[str, Any]) -> VenueConfig:
    known = {"markets", "fee_tiers", "default_fee_tier", "starting_balances", "initial_margin",
             "maintenance_margin"}
    unknown = set(section) - known
    if unknown:
        raise InvalidInput(f"config: unknown setting(s) venue.{', venue.'.join(sorted(unknown))}")
    defaults = VenueConfig()
    markets = defaults.markets
    if "markets" in section:
        markets = tuple(market_from_symbol(str(m.get("symbol", "")),
                                           exact_setting(m.get("tick_size"), f"venue.markets[{i}]", AMOUNT),
                                           exact_setting(m.get("step_size"), f"venue.markets[{i}]", AMOUNT))
                        for i, m in enumerate(section["markets"]))
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

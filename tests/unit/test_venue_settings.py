"""The `[venue]` section of the configuration file: what it sets, and each mistake named."""

from datetime import timedelta

import pytest

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import MarketType
from bkr.domain.money import D
from bkr.settings import parse_config
from bkr.venue.markets import DEFAULT_MARKETS, TIER_1
from bkr.venue.settings import parse_venue_config


def test_an_empty_section_is_backpacks_defaults() -> None:
    config = parse_venue_config({})
    assert config.markets == DEFAULT_MARKETS
    assert config.fees(1) == TIER_1
    assert config.initial_margin == D("0.1")
    assert config.maintenance_margin == D("0.05")


def test_the_maintenance_margin_is_half_the_initial_unless_it_is_set() -> None:
    assert parse_venue_config({"initial_margin": "0.2"}).maintenance_margin == D("0.1")
    config = parse_venue_config({"initial_margin": "0.2", "maintenance_margin": "0.02"})
    assert (config.initial_margin, config.maintenance_margin) == (D("0.2"), D("0.02"))


def test_markets_fee_tiers_and_balances_are_read_exactly() -> None:
    config = parse_venue_config({
        "markets": [{"symbol": "SOL_EUR", "tick_size": "0.01", "step_size": "0.1"},
                    {"symbol": "ETH_USDC_PERP", "tick_size": "0.05", "step_size": "0.001"}],
        "fee_tiers": {"2": {"spot_maker": "0", "spot_taker": "0.0005", "futures_maker": "0",
                            "futures_taker": "0.0002"}},
        "default_fee_tier": 2, "starting_balances": {"eur": "100.5"}, "initial_margin": "0.05"})
    assert [(m.symbol, m.base, m.quote, m.market_type) for m in config.markets] == [
        ("SOL_EUR", "SOL", "EUR", MarketType.SPOT), ("ETH_USDC_PERP", "ETH", "USDC", MarketType.PERP)]
    assert config.fees(2).spot_taker == D("0.0005") and config.fees(7) == config.fees(2)  # unknown: the default
    assert dict(config.starting_balances) == {"EUR": D("100.5")}
    assert config.initial_margin == D("0.05")


@pytest.mark.parametrize(("section", "named"), [
    ({"default_fee_tier": "x"}, "venue.default_fee_tier"),
    ({"default_fee_tier": 3}, "no fee tier 3"),
    ({"markets": [{"symbol": "SOL", "tick_size": "1", "step_size": "1"}]}, "'SOL' is not BASE_QUOTE"),
    ({"markets": [{"symbol": "SOL_USDC", "tick_size": "0", "step_size": "1"}]}, "must be positive"),
    ({"initial_margin": 0.1}, "floats are not exact"),
    ({"initial_margin": "0"}, "venue.initial_margin: 0 is not above 0"),
    ({"initial_margin": "1.5"}, "venue.initial_margin: 1.5 is not above 0 and at most 1"),
    ({"maintenance_margin": "0.2"}, r"venue.maintenance_margin: 0.2 is not above 0 and at most venue.initial_margin"),
    ({"maintenance_margin": "0"}, "venue.maintenance_margin: 0 is not above 0"),
    ({"maintenance_margin": "-0.01"}, "venue.maintenance_margin"),
    ({"initial_margin": "0.000000000000000001"}, r"venue.maintenance_margin \(half venue.initial_margin\)"),
    ({"fee_tiers": {"2": {"spot_maker": "0"}}}, "venue.fee_tiers.2"),
    ({"colour": "blue"}, "venue.colour"),
    ({"funding_rate": 0.0001}, "floats are not exact"),
    ({"funding_rate": "1.5"}, "venue.funding_rate: 1.5 is outside -1..1"),
    ({"funding_rate": "-0.0000000000000000001"}, "venue.funding_rate"),
    ({"funding_interval": "7h"}, "venue.funding_interval: '7h' is not an interval"),
    ({"funding_interval": "1d"}, "venue.funding_interval"),
    ({"funding_interval": 3600}, "venue.funding_interval"),
    ({"markets": [{"symbol": "SOL_USDC", "tick_size": "1", "step_size": "1", "funding_rate": "0.01"}]},
     r"venue.markets\[0\].funding_rate: SOL_USDC is a spot market"),
    ({"markets": [{"symbol": "SOL_USDC_PERP", "tick_size": "1", "step_size": "1", "index_price": "0"}]},
     r"venue.markets\[0\].index_price: must be positive"),
    ({"markets": [{"symbol": "SOL_USDC_PERP", "tick_size": "1", "step_size": "1", "colour": "red"}]},
     r"venue.markets\[0\].colour"),
])
def test_a_mistake_is_refused_with_the_setting_named(section: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        parse_venue_config(section)


def test_perpetuals_are_funded_hourly_at_a_rate_of_zero_unless_configured() -> None:
    perps = [m for m in parse_venue_config({}).markets if m.is_futures]
    assert {(m.funding_rate, m.funding_interval, m.index_price) for m in perps} == {(D(0), timedelta(hours=1), None)}


def test_the_venue_s_funding_settings_apply_to_every_perpetual_that_has_none_of_its_own() -> None:
    config = parse_venue_config({"funding_rate": "0.0001", "funding_interval": "8h", "markets": [
        {"symbol": "SOL_USDC", "tick_size": "0.01", "step_size": "0.01"},
        {"symbol": "SOL_USDC_PERP", "tick_size": "0.01", "step_size": "0.01"},
        {"symbol": "BTC_USDC_PERP", "tick_size": "0.1", "step_size": "0.0001", "funding_rate": "-0.00005",
         "funding_interval": "30m", "index_price": "97000.5"}]})
    spot, sol, btc = config.markets
    assert (spot.funding_rate, spot.index_price) == (D(0), None)
    assert (sol.funding_rate, sol.funding_interval) == (D("0.0001"), timedelta(hours=8))
    assert (btc.funding_rate, btc.funding_interval, btc.index_price) == (D("-0.00005"), timedelta(minutes=30),
                                                                         D("97000.5"))


def test_the_program_configuration_accepts_a_venue_section() -> None:
    assert parse_config({"venue": {"default_fee_tier": 1}}).cap == D("0.5")

"""What the venue trades and what it charges: its markets, fee tiers and a new account's funds.

The defaults follow Backpack: spot and USDC-margined perpetual markets named `BASE_QUOTE` and
`BASE_QUOTE_PERP`, and VIP Tier 1's fees (spot 0.08% maker / 0.10% taker, futures 0.02% /
0.05%); perpetuals are funded every hour, at a rate of 0 unless one is configured. A `[venue]`
section of the configuration file replaces any of them (see `bkr.settings`). A sandbox account
starts with play money so that a broker can trade at once.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import MarketType
from bkr.domain.money import ZERO, D

FUNDING_INTERVAL = timedelta(hours=1)  # Backpack funds its perpetuals every hour


@dataclass(frozen=True, slots=True)
class Market:
    symbol: str
    base: str
    quote: str
    market_type: MarketType
    tick_size: Decimal
    step_size: Decimal
    # perpetuals only (see bkr.venue.perpetuals): the funding rate charged at the end of each
    # interval, and the price the market is marked at before its first trade
    funding_rate: Decimal = ZERO
    funding_interval: timedelta = FUNDING_INTERVAL
    index_price: Decimal | None = None

    @property
    def is_futures(self) -> bool:
        return self.market_type.is_futures


@dataclass(frozen=True, slots=True)
class FeeRates:
    """Fractions of the notional (0.001 = 0.10%)."""

    spot_maker: Decimal
    spot_taker: Decimal
    futures_maker: Decimal
    futures_taker: Decimal

    def rate(self, market: Market, is_maker: bool) -> Decimal:
        if market.is_futures:
            return self.futures_maker if is_maker else self.futures_taker
        return self.spot_maker if is_maker else self.spot_taker


def market_from_symbol(symbol: str, tick_size: Decimal, step_size: Decimal) -> Market:
    """A market named as Backpack names them: `BASE_QUOTE` (spot) or `BASE_QUOTE_PERP`."""
    parts = symbol.split("_")
    if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and parts[2] != "PERP"):
        raise InvalidInput(f"venue.markets: {symbol!r} is not BASE_QUOTE or BASE_QUOTE_PERP")
    if tick_size <= 0 or step_size <= 0:
        raise InvalidInput(f"venue.markets: {symbol}: tick and step sizes must be positive")
    market_type = MarketType.PERP if len(parts) == 3 else MarketType.SPOT
    return Market(symbol, parts[0], parts[1], market_type, tick_size, step_size)


def _market(symbol: str, tick: str, step: str) -> Market:
    return market_from_symbol(symbol, D(tick), D(step))


DEFAULT_MARKETS: tuple[Market, ...] = (
    _market("SOL_USDC", "0.01", "0.01"),
    _market("BTC_USDC", "0.1", "0.00001"),
    _market("ETH_USDC", "0.01", "0.0001"),
    _market("SOL_USDC_PERP", "0.01", "0.01"),
    _market("BTC_USDC_PERP", "0.1", "0.0001"),
    _market("ETH_USDC_PERP", "0.01", "0.001"),
)

INITIAL_MARGIN = D("0.1")  # 10x leverage
MAINTENANCE_MARGIN = D("0.05")  # half the initial margin
TIER_1 = FeeRates(D("0.0008"), D("0.001"), D("0.0002"), D("0.0005"))

DEFAULT_STARTING_BALANCES: Mapping[str, Decimal] = MappingProxyType({
    "USDC": D("1000000"), "SOL": D("10000"), "BTC": D("20"), "ETH": D("500"),
})


@dataclass(frozen=True)
class VenueConfig:
    markets: tuple[Market, ...] = DEFAULT_MARKETS
    fee_tiers: Mapping[int, FeeRates] = field(default_factory=lambda: MappingProxyType({1: TIER_1}))
    default_fee_tier: int = 1
    starting_balances: Mapping[str, Decimal] = field(default_factory=lambda: DEFAULT_STARTING_BALANCES)
    # fractions of a perpetual position's notional (see bkr.venue.margin): what an account needs
    # to open or increase exposure, and below what it may only reduce
    initial_margin: Decimal = INITIAL_MARGIN
    maintenance_margin: Decimal = MAINTENANCE_MARGIN

    def __post_init__(self) -> None:
        if not ZERO < self.initial_margin <= 1:
            raise InvalidInput(f"venue.initial_margin: {self.initial_margin} is not above 0 and at most 1 "
                               "(0.1 is 10x leverage)")
        if not ZERO < self.maintenance_margin <= self.initial_margin:
            raise InvalidInput(f"venue.maintenance_margin: {self.maintenance_margin} is not above 0 and at most "
                               f"venue.initial_margin ({self.initial_margin})")
        if self.default_fee_tier not in self.fee_tiers:
            raise InvalidInput(f"venue.default_fee_tier: no fee tier {self.default_fee_tier} is configured")
        symbols = [m.symbol for m in self.markets]
        if len(set(symbols)) != len(symbols):
            raise InvalidInput("venue.markets: a symbol is listed twice")

    def market(self, symbol: str) -> Market | None:
        return self._by_symbol.get(symbol)

    @property
    def _by_symbol(self) -> Mapping[str, Market]:
        by_symbol: Mapping[str, Market] | None = self.__dict__.get("_markets_by_symbol")
        if by_symbol is None:
            by_symbol = MappingProxyType({m.symbol: m for m in self.markets})
            object.__setattr__(self, "_markets_by_symbol", by_symbol)
        return by_symbol

    def fees(self, tier: int) -> FeeRates:
        return self.fee_tiers.get(tier, self.fee_tiers[self.default_fee_tier])

    def perpetuals(self, collateral: str) -> tuple[Market, ...]:
        """The perpetual markets margined in `collateral` (their quote asset)."""
        return tuple(m for m in self.markets if m.is_futures and m.quote == collateral)

    @property
    def collaterals(self) -> frozenset[str]:
        """The assets that margin perpetual markets: what a spot order may not spend freely."""
        return frozenset(m.quote for m in self.markets if m.is_futures)

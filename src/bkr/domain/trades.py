"""Trades: the two sides of one trade, and when they make a self-trade.

A fill is one side of one trade. When fills name their trade (`Fill.trade_id`, matched within
one symbol: exchanges number trades per market), bkr sees both sides: a trade has at most two,
one buying and one selling, and when both belong to one user it is a *self-trade*, which is
never broker volume (neither side counts, for any broker). Without a trade id a fill says
nothing about its counterparty, and bkr infers none.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from bkr.domain.fills import Fill, Side


@dataclass(frozen=True, slots=True)
class TradeSide:
    """What matching needs of one side of a trade."""

    fill_id: str
    user_id: str
    side: Side


TradeKey = tuple[str, str]  # (symbol, trade_id)


def trade_key(fill: Fill) -> TradeKey | None:
    """The trade a fill is one side of, or None if it does not say. Corrections restate their
    fill's trade and are not sides of their own."""
    if fill.trade_id is None or fill.corrects is not None:
        return None
    return fill.symbol, fill.trade_id


def side_of(fill: Fill) -> TradeSide:
    return TradeSide(fill.fill_id, fill.user_id, fill.side)


def side_problem(key: TradeKey, sides: Sequence[TradeSide], incoming: TradeSide) -> str | None:
    """Why `incoming` cannot join a trade that already has `sides`, or None. The reason starts
    with the field to blame, as every rejection's does."""
    symbol, trade_id = key
    if len(sides) >= 2:
        return (f"trade_id: trade {trade_id!r} of {symbol} already has two sides ({sides[0].fill_id!r} and "
                f"{sides[1].fill_id!r}); a trade has two")
    if sides and sides[0].side is incoming.side:
        return (f"trade_id: trade {trade_id!r} of {symbol} already has its {incoming.side.value} side "
                f"({sides[0].fill_id!r}); the other side of a trade is the opposite one")
    return None


def reversal_id(fill_id: str) -> str:
    """The fill_id of the correction bkr writes to take back what a side of a self-trade was paid
    on a statement issued before its other side arrived. Only bkr writes a correction so named."""
    return f"{fill_id}#self-trade"


def is_self_trade(sides: Sequence[TradeSide]) -> bool:
    """Both sides of one trade are known and belong to one user."""
    return len(sides) == 2 and sides[0].user_id == sides[1].user_id

"""Trades: which sides a trade may have, and when its two sides make a self-trade."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bkr.domain.fills import Fill, Side, parse_fill
from bkr.domain.trades import TradeSide, is_self_trade, reversal_id, side_of, side_problem, trade_key

KEY = ("SOL_USDC", "t-1")
BUY = TradeSide("f-1", "alice", Side.BID)
SELL = TradeSide("f-2", "alice", Side.ASK)


def a_fill(**changes: object) -> Fill:
    row = {"fill_id": "f-1", "order_id": "o-1", "user_id": "alice", "symbol": "SOL_USDC", "market_type": "SPOT",
           "side": "Bid", "price": "100", "quantity": "1", "fee": "0.1", "fee_symbol": "USDC", "is_maker": "false",
           "timestamp": "2024-05-10T12:00:00Z", "trade_id": "t-1"}
    return replace(parse_fill(row), **changes)  # type: ignore[arg-type]


def test_a_fill_s_trade_is_its_trade_id_within_its_symbol() -> None:
    assert trade_key(a_fill()) == KEY
    assert trade_key(a_fill(symbol="SOL_USDT")) != trade_key(a_fill())


def test_a_fill_without_a_trade_id_and_a_correction_are_no_side_of_a_trade() -> None:
    assert trade_key(a_fill(trade_id=None)) is None
    assert trade_key(a_fill(corrects="f-0")) is None


def test_the_first_side_and_the_opposite_second_side_are_accepted() -> None:
    assert side_problem(KEY, [], BUY) is None
    assert side_problem(KEY, [BUY], SELL) is None
    assert side_of(a_fill()) == BUY


def test_a_second_side_on_the_same_side_is_refused_naming_the_first() -> None:
    assert side_problem(KEY, [BUY], TradeSide("f-3", "bob", Side.BID)) == (
        "trade_id: trade 't-1' of SOL_USDC already has its Bid side ('f-1'); the other side of a trade is the "
        "opposite one")


@pytest.mark.parametrize("side", list(Side))
def test_a_third_side_is_refused_whichever_side_it_is(side: Side) -> None:
    assert side_problem(KEY, [BUY, SELL], TradeSide("f-3", "bob", side)) == (
        "trade_id: trade 't-1' of SOL_USDC already has two sides ('f-1' and 'f-2'); a trade has two")


def test_two_sides_of_one_user_are_a_self_trade_and_of_two_users_are_not() -> None:
    assert is_self_trade([BUY, SELL])
    assert not is_self_trade([BUY, replace(SELL, user_id="bob")])


@given(st.lists(st.sampled_from([BUY, SELL]), max_size=3))
def test_sides_of_one_user_are_a_self_trade_exactly_when_there_are_two(sides: list[TradeSide]) -> None:
    assert is_self_trade(sides) == (len(sides) == 2)


def test_a_reversal_is_named_after_the_fill_it_takes_back() -> None:
    assert reversal_id("f-1") == "f-1#self-trade"

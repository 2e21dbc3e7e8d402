"""Response models that more than one router answers with.

A statement is one document wherever it is downloaded (an operator's `/v1/admin/…` or a
broker's `/v1/broker/…`): the canonical JSON the close stored, described here once.
"""

from typing import Literal

from pydantic import BaseModel, Field

from bkr.domain.config import TierBasis


class StatementLineDocument(BaseModel):
    user_id: str
    market_type: str
    kind: Literal["regular", "adjustment"] = Field(
        description="`adjustment`: late fills of an earlier, closed month, priced at that month's tier.")
    fill_month: str = Field(description="The month the fills happened in, YYYY-MM.")
    tier: str
    affiliate_rate: str
    effective_rate: str = Field(description="min(broker rate, max(0, cap − affiliate rate)).")
    fills: int
    volume_usd: str
    fee_usd: str
    fee_base: str = Field(description="The positive fees: a maker rebate adds nothing.")
    payout_exact: str


class StatementFigures(BaseModel):
    """A statement's figures without its lines; decimals are exact strings."""

    month: str
    broker_id: int
    tier: str
    tier_basis: TierBasis
    broker_rate: str
    spot_volume: str
    futures_volume: str
    api_volume: str
    fee_base: str
    adjustment_fee_base: str
    adjustment_payout_exact: str
    payout_exact: str = Field(description="Every line's payout, unrounded.")
    payout: str = Field(description="`payout_exact` rounded down once to the rounding quantum: the amount paid.")


class StatementDocument(StatementFigures):
    """A stored statement, with its lines per user and market type."""

    lines: list[StatementLineDocument]

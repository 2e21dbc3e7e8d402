"""Venue accounts: a registered user's trading account, its fee tier and its balances.

An account is opened once, with the configured play money; opening it again changes nothing.
Every trading account is a user of the broker program too (the registry's `users`), so that
its fills are attributed with its affiliate rate like any other fill.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, select

from bkr.domain.errors import InvalidInput, NotFound
from bkr.domain.signing import KeyPair
from bkr.program import keys
from bkr.program.registry import add_users
from bkr.store.dialect import insert_ignoring
from bkr.store.tables import users, venue_accounts, venue_balances, venue_positions
from bkr.venue.markets import VenueConfig


@dataclass(frozen=True, slots=True)
class Balance:
    """A user's balance of one asset: what it may spend, and what its open orders hold."""

    asset: str
    available: Decimal
    locked: Decimal


@dataclass(frozen=True, slots=True)
class Position:
    """A user's perpetual position in one market: signed quantity, the exact net cost of it (no
    average price is kept), and the PnL realized so far."""

    symbol: str
    net_quantity: Decimal
    net_cost: Decimal
    realized_pnl: Decimal


def open_account(connection: Connection, config: VenueConfig, user_id: str, now: datetime, *, actor: str,
                 referral_code: str | None = None, fee_tier: int | None = None) -> bool:
    """Open `user_id`'s trading account (registering the user if bkr does not know it yet, as
    `actor`). Returns whether it was new."""
    user_id = user_id.strip()
    if not user_id:
        raise InvalidInput("user_id: empty", field="user_id")
    tier = config.default_fee_tier if fee_tier is None else fee_tier
    if tier not in config.fee_tiers:
        raise InvalidInput(f"fee_tier: no fee tier {tier}; configured: {sorted(config.fee_tiers)}", field="fee_tier")
    known = connection.execute(select(users.c.user_id).where(users.c.user_id == user_id)).first() is not None
    if not known or referral_code:
        add_users(connection, [(user_id, referral_code)], now, actor=actor)
    if connection.execute(select(venue_accounts.c.user_id).where(venue_accounts.c.user_id == user_id)).first():
        return False
    insert_ignoring(connection, venue_accounts, [{"user_id": user_id, "fee_tier": tier, "created_at": now}],
                    ["user_id"])
    insert_ignoring(connection, venue_balances,
                    [{"user_id": user_id, "asset": asset, "available": amount, "locked": Decimal(0)}
                     for asset, amount in sorted(config.starting_balances.items())], ["user_id", "asset"])
    return True


def create_user_key(connection: Connection, config: VenueConfig, user_id: str, now: datetime, *, actor: str,
                    referral_code: str | None = None) -> KeyPair:
    """A Backpack-style key pair for `user_id`, opening its account first if needed; `actor`
    (who asked for it) is named on the audit trail."""
    open_account(connection, config, user_id, now, actor=actor, referral_code=referral_code)
    return keys.create_user_key(connection, user_id.strip(), now, actor=actor)


def fee_tier(connection: Connection, user_id: str) -> int:
    tier = connection.execute(select(venue_accounts.c.fee_tier).where(venue_accounts.c.user_id == user_id)).scalar()
    if tier is None:
        raise NotFound(f"user {user_id} has no trading account", code="RESOURCE_NOT_FOUND")
    return int(tier)


def balances(connection: Connection, user_id: str) -> list[Balance]:
    rows = connection.execute(select(venue_balances).where(venue_balances.c.user_id == user_id)
                              .order_by(venue_balances.c.asset))
    return [Balance(row.asset, row.available, row.locked) for row in rows]


def positions(connection: Connection, user_id: str, symbol: str | None = None) -> list[Position]:
    query = select(venue_positions).where(venue_positions.c.user_id == user_id)
    if symbol is not None:
        query = query.where(venue_positions.c.symbol == symbol)
    rows = connection.execute(query.order_by(venue_positions.c.symbol))
    return [Position(row.symbol, row.net_quantity, row.net_cost, row.realized_pnl) for row in rows
            if row.net_quantity != 0]

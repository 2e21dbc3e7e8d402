"""The venue as the program's wallet, in the sandbox (`payout_target = "venue"`): a payout
instruction becomes a USDC credit to the broker's business account on the venue, recorded as a
transfer with the venue's own reference.

The broker's business account is a venue account keyed by its account id (opened, with the
venue's starting balances, if it has none yet). The credit takes the order stream's lock, as order
entry does, so that no order in flight writes back a balance read before it. A transfer is kept
under the instruction's key: the same instruction again answers the same reference and credits
nothing more.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from bkr.domain.money import ZERO, add
from bkr.program.payouts import PayoutInstruction
from bkr.store.tables import venue_balances, venue_transfers
from bkr.venue.accounts import open_account
from bkr.venue.markets import VenueConfig
from bkr.venue.persistence import lock_stream

PAYOUT_ASSET = "USDC"  # the program pays in USD; the venue's dollar is USDC


@dataclass(frozen=True)
class VenueWallet:
    """`bkr.program.payouts.Wallet` for the venue: credits the broker's account in USDC."""

    config: VenueConfig

    def transfer(self, connection: Connection, instruction: PayoutInstruction, now: datetime) -> str:
        done = connection.execute(select(venue_transfers.c.reference).where(
            venue_transfers.c.idempotency_key == instruction.key)).scalar()
        if done is not None:
            return str(done)
        lock_stream(connection)
        account = instruction.account_id
        open_account(connection, self.config, account, now, actor="venue")
        where = (venue_balances.c.user_id == account) & (venue_balances.c.asset == PAYOUT_ASSET)
        balance = connection.execute(select(venue_balances.c.available).where(where)).scalar()
        if balance is None:
            connection.execute(insert(venue_balances).values(user_id=account, asset=PAYOUT_ASSET,
                                                             available=instruction.amount, locked=ZERO))
        else:
            connection.execute(update(venue_balances).where(where)
                               .values(available=add(balance, instruction.amount)))
        transfer_id = connection.execute(insert(venue_transfers).values(
            reference=f"pending-{instruction.key}", idempotency_key=instruction.key, user_id=account,
            asset=PAYOUT_ASSET, amount=instruction.amount, created_at=now).returning(
            venue_transfers.c.transfer_id)).scalar_one()
        reference = f"venue-transfer-{transfer_id}"
        connection.execute(update(venue_transfers).where(venue_transfers.c.transfer_id == transfer_id)
                           .values(reference=reference))
        return reference

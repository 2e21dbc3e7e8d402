"""What is stored against a fill besides itself: the corrections sent for it, a self-trade
reversal, and the retroactive corrections bkr wrote of it (`bkr.program.retroactive`); and so
the rate the fill is paid at now (its standing)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, select

from bkr.domain.fills import Attribution, retroactive_part
from bkr.domain.trades import reversal_id
from bkr.store.tables import fills

_CHUNK = 10_000

FILL_COLUMNS = (fills.c.fill_id, fills.c.order_id, fills.c.user_id, fills.c.symbol, fills.c.market_type,
                 fills.c.side, fills.c.price, fills.c.quantity, fills.c.fee, fills.c.fee_symbol, fills.c.is_maker,
                 fills.c.ts, fills.c.broker_id, fills.c.via_api, fills.c.fill_type, fills.c.trade_id,
                 fills.c.volume_usd, fills.c.fee_usd, fills.c.attribution, fills.c.affiliate_rate, fills.c.fill_month,
                 fills.c.period, fills.c.corrects)


@dataclass
class History:
    """What is stored against one fill besides itself: the corrections sent for it, whether a
    self-trade reversal took it back, and its retroactive rows (the latest entry's)."""

    corrections: list[Row[Any]] = field(default_factory=list)
    reversed: bool = False
    latest_entry: int = 0
    latest_rate: Decimal | None = None  # the latest entry's `-in` rate; None if it only took back

    def standing(self, fill: Row[Any]) -> Decimal | None:
        """The rate the fill is paid at now, or None if it counts for nobody."""
        if self.reversed:
            return None
        if self.latest_entry:
            return self.latest_rate
        return fill.affiliate_rate if fill.attribution == Attribution.COUNTED.value else None


def histories(connection: Connection, fill_ids: Sequence[str]) -> dict[str, History]:
    """The history of each fill in `fill_ids` (every one gets one, empty if nothing is stored)."""
    found = {fill_id: History() for fill_id in fill_ids}
    for start in range(0, len(fill_ids), _CHUNK):
        for row in connection.execute(select(*FILL_COLUMNS).where(
                fills.c.corrects.in_(list(fill_ids[start:start + _CHUNK]))).order_by(fills.c.fill_id)):
            history = found[row.corrects]
            part = retroactive_part(row.fill_id, row.corrects)
            if row.fill_id == reversal_id(row.corrects):
                history.reversed = True
            elif part is None:
                history.corrections.append(row)  # type: ignore[arg-type]
            else:
                entry, taken_back = part
                if entry > history.latest_entry:
                    history.latest_entry, history.latest_rate = entry, None
                if entry == history.latest_entry and not taken_back:
                    history.latest_rate = row.affiliate_rate
    return found

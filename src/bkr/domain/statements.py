"""Statements: a broker's month, from its aggregate lines to the amount to pay.

Lines whose fills belong to the statement's own month are *regular*: they make the month's
API volume and so its tier. Lines whose fills belong to an earlier, already closed month are
*prior-period adjustments*: they do not count towards this month's tier and are priced at the
tier of the month the fills belong to. Lines of *corrections* to fills that were on an earlier
statement (a busted trade, a corrected quantity or fee) are adjustments too, labelled as such:
their fee base is the change, negative for a bust, priced like the fills they correct. Lines of
kind *retroactive* are what a registry change recorded as retroactive moved of fills an earlier
statement paid: the fills taken back at the rate they were paid at (negative), and paid again
at the rate the change gives them, both at the tier of the fills' month.

When corrections outweigh what a statement earns, it pays 0 and carries the difference to the
broker's next statement (`carried_out`, then that one's `carried_in`): nothing paid is taken
back, and nothing overpaid is forgotten.

A statement carries what it was computed with (`ProgramTerms`): the program version in force for
its month, that month's tier schedule, the cap and the rounding quantum, the volume its tier was
decided by (`tier_volume`: its own API volume, or the previous month's under the `previous_month`
basis) and the tier each earlier month of its adjustment lines was paid at (`PriorTier`). From
those and its lines alone, every figure it states can be worked out again
(`bkr.domain.statement_checks`). Documents of format 2 (`STATEMENT_FORMAT`) carry all of it;
earlier ones carry less, and are checked as far as what they carry allows.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from enum import StrEnum
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any, NamedTuple

from bkr.domain.config import ProgramConfig, TierBasis
from bkr.domain.fills import MarketType
from bkr.domain.money import MONEY, ZERO, add, canonical, plain, total
from bkr.domain.payout import effective_rate, line_payout_at, statement_payout
from bkr.domain.periods import Month
from bkr.domain.tiers import Tier, TierSchedule, tier_name


class AggregateLine(NamedTuple):
    """Running totals of counted fills for one (broker, period, fill month, user, market type, rate).

    A named tuple, like `StatementLine`: a month's close makes one per user and market type, two
    million in a large month, and a tuple costs a fraction of a frozen dataclass to make."""

    broker_id: int
    period: Month  # the statement month these fills are paid in
    fill_month: Month  # the month the fills happened in (earlier than `period` for late fills)
    user_id: str
    market_type: MarketType
    affiliate_rate: Decimal
    fills: int
    volume_usd: Decimal
    fee_usd: Decimal
    fee_base_usd: Decimal
    is_correction: bool = False  # corrections of fills paid on an earlier statement
    is_retroactive: bool = False  # what a retroactive registry change moved (bkr's corrections)

    @property
    def is_adjustment(self) -> bool:
        # months are interned (`Month.parse`, `Month.of`): identity settles the common case cheaply
        return self.fill_month is not self.period and self.fill_month != self.period


class LineKind(StrEnum):
    """What a statement line pays for."""

    REGULAR = "regular"  # fills of the statement's own month: they make its volume and tier
    ADJUSTMENT = "adjustment"  # late fills of an earlier, closed month, priced at that month's tier
    CORRECTION = "correction"  # corrections of fills an earlier statement paid, priced as those were
    # what a retroactive registry change (a status, a rate) moved of fills an earlier statement paid:
    # taken back at what they were paid as, paid again as the change decides, at that month's tier
    RETROACTIVE = "retroactive"


_KIND_ORDER = {LineKind.REGULAR: 0, LineKind.ADJUSTMENT: 1, LineKind.CORRECTION: 2, LineKind.RETROACTIVE: 3}


class StatementLine(NamedTuple):
    """One line of a statement: a user's fills of one market type, affiliate rate, fill month and kind.

    A named tuple (immutable, compared by value): a large month's statements hold millions."""

    user_id: str
    market_type: MarketType
    kind: LineKind
    fill_month: Month
    tier_level: int  # the tier the line is priced at (an earlier month's for adjustments and corrections)
    affiliate_rate: Decimal
    effective_rate: Decimal
    fills: int
    volume_usd: Decimal
    fee_usd: Decimal
    fee_base: Decimal
    payout_exact: Decimal

    @property
    def is_adjustment(self) -> bool:
        """Not the month's own fills (a correction is an adjustment too): no volume, no tier."""
        return self.kind is not LineKind.REGULAR

    @property
    def is_correction(self) -> bool:
        return self.kind is LineKind.CORRECTION

    @property
    def tier_name(self) -> str:
        return tier_name(self.tier_level)

    def sort_key(self) -> tuple[int, Month, str, str, Decimal]:
        return (_KIND_ORDER[self.kind], self.fill_month, self.user_id, self.market_type.value, self.affiliate_rate)

    def to_document(self) -> dict[str, Any]:
        # keys in sorted order, the canonical form's: a line just priced and one read back print alike
        return {
            "affiliate_rate": canonical(self.affiliate_rate),
            "effective_rate": canonical(self.effective_rate),
            "fee_base": canonical(self.fee_base),
            "fee_usd": canonical(self.fee_usd),
            "fill_month": str(self.fill_month),
            "fills": self.fills,
            "kind": self.kind.value,
            "market_type": self.market_type.value,
            "payout_exact": canonical(self.payout_exact),
            "tier": self.tier_name,
            "user_id": self.user_id,
            "volume_usd": canonical(self.volume_usd),
        }


def lines_json(lines: Iterable[StatementLine]) -> str:
    """The canonical JSON of a statement's list of lines, `canonical_json([line.to_document() for
    line in lines])`, written directly: a statement of a million lines is stored without making a
    million dicts to sort and encode. Keys in sorted order, no spaces; every value but the user id
    is plain ASCII that JSON leaves as is, and the user id is escaped as `json.dumps` does."""
    # few distinct rates, months and tiers, shared by many lines: their text is made once, found
    # again by the identity of the objects (alive in `lines` while this runs)
    rates: dict[tuple[int, int], str] = {}
    months: dict[int, str] = {}
    tiers: dict[int, str] = {}
    parts: list[str] = []
    for user, market, kind, fill_month, level, affiliate, effective, fills, volume, fee, fee_base, payout in lines:
        pair = (id(affiliate), id(effective))
        rate_text = rates.get(pair)
        if rate_text is None:
            rate_text = rates[pair] = (f'{{"affiliate_rate":"{canonical(affiliate)}",'
                                       f'"effective_rate":"{canonical(effective)}",')
        month_text = months.get(id(fill_month))
        if month_text is None:
            month_text = months[id(fill_month)] = str(fill_month)
        tier_text = tiers.get(level)
        if tier_text is None:
            tier_text = tiers[level] = tier_name(level)
        # kind and market are StrEnums: formatted, they are their values
        parts.append(f'{rate_text}"fee_base":"{canonical(fee_base)}","fee_usd":"{canonical(fee)}",'
                     f'"fill_month":"{month_text}","fills":{int(fills)},"kind":"{kind}",'
                     f'"market_type":"{market}","payout_exact":"{canonical(payout)}",'
                     f'"tier":"{tier_text}","user_id":{encode_basestring(user)},'
                     f'"volume_usd":"{canonical(volume)}"}}')
    return f"[{','.join(parts)}]"


STATEMENT_FORMAT = 2  # `format_version` of a document that carries its tier volume and its earlier months' tiers


@dataclass(frozen=True, slots=True)
class PriorTier:
    """The tier an earlier month was paid at, and that tier's rate under the program version in
    force for that month: what a statement's lines of that month's fills (late fills, corrections,
    retroactive changes) are priced at."""

    month: Month
    tier_level: int
    rate: Decimal

    @property
    def tier_name(self) -> str:
        return tier_name(self.tier_level)

    def to_document(self) -> dict[str, Any]:
        return {"month": str(self.month), "rate": canonical(self.rate), "tier": self.tier_name}


@dataclass(frozen=True, slots=True)
class ProgramTerms:
    """The program's terms a statement was computed under: the number of the program version in
    force for its month, and the tier schedule, cap and rounding quantum it used (the tier basis is
    a field of the statement itself). A statement issued before program versions existed has none.
    `prior_tiers`: the tier of each earlier month the statement has lines of, by month; None for a
    statement issued before statements recorded them (its adjustment lines cannot be checked)."""

    version: int
    tier_schedule: TierSchedule
    cap: Decimal
    rounding_quantum: Decimal
    prior_tiers: tuple[PriorTier, ...] | None = None

    def prior_tier(self, month: Month) -> PriorTier | None:
        for prior in self.prior_tiers or ():
            if prior.month == month:
                return prior
        return None

    def to_document(self) -> dict[str, Any]:
        return {
            "cap": canonical(self.cap),
            **({"prior_tiers": [prior.to_document() for prior in self.prior_tiers]}
               if self.prior_tiers is not None else {}),
            "rounding_quantum": canonical(self.rounding_quantum),
            "tier_schedule": {
                "effective_from": str(self.tier_schedule.effective_from),
                "tiers": [{"min_volume": canonical(tier.min_volume), "rate": canonical(tier.rate), "tier": tier.name}
                          for tier in self.tier_schedule.tiers],
            },
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class BrokerStatement:
    """A broker's statement of a month, as the close issues it and as it is read back from its
    stored document (`bkr.domain.statement_document`): every figure it states, including those
    that follow from others (`api_volume`, `carried_out`, the totals), so that a statement read
    back can be checked against its lines (`bkr.domain.statement_checks`)."""

    broker_id: int
    month: Month
    tier_level: int  # the tier the month is paid at
    broker_rate: Decimal  # that tier's rate, as it was when the month closed
    tier_basis: TierBasis
    spot_volume: Decimal
    futures_volume: Decimal
    api_volume: Decimal  # spot + futures volume of the regular lines
    fee_base: Decimal  # regular lines only
    adjustment_fee_base: Decimal  # adjustment and correction lines
    adjustment_payout_exact: Decimal
    payout_exact: Decimal  # every line, unrounded
    carried_in: Decimal  # the previous statement's carried_out: 0 or negative
    carried_out: Decimal  # min(0, payout_exact + carried_in): what the next statement recovers
    payout: Decimal  # max(0, payout_exact + carried_in) rounded once, down; written with the quantum's decimals
    lines: tuple[StatementLine, ...]
    records_carries: bool = True  # False for a statement issued before carries existed: neither field is written
    program: ProgramTerms | None = None  # None for a statement issued before program versions existed
    # the API volume the tier was decided by: `api_volume` under the same_month basis, the previous
    # month's under previous_month; None for a statement issued before statements recorded it
    tier_volume: Decimal | None = None
    format_version: int | None = None  # STATEMENT_FORMAT; None for the documents issued before it was written

    @property
    def tier_name(self) -> str:
        return tier_name(self.tier_level)

    @property
    def quantum(self) -> Decimal:
        """What the payout was rounded to: a payout rounded to 0.01 is written with two decimals."""
        return quantum_of(self.payout)

    def to_document(self, *, with_lines: bool = True) -> dict[str, Any]:
        """The statement as JSON-ready data: decimals as strings, lines in a fixed order, keys in
        sorted order (the canonical form's, so that a statement just computed and one read back
        print alike). Without its lines, it is the statement's figures."""
        carries = ({"carried_in": canonical(self.carried_in), "carried_out": canonical(self.carried_out)}
                   if self.records_carries else {})
        return {
            "adjustment_fee_base": canonical(self.adjustment_fee_base),
            "adjustment_payout_exact": canonical(self.adjustment_payout_exact),
            "api_volume": canonical(self.api_volume),
            "broker_id": self.broker_id,
            "broker_rate": canonical(self.broker_rate),
            **carries,
            "fee_base": canonical(self.fee_base),
            **({"format_version": self.format_version} if self.format_version is not None else {}),
            "futures_volume": canonical(self.futures_volume),
            **({"lines": [line.to_document() for line in self.lines]} if with_lines else {}),
            "month": str(self.month),
            "payout": plain(self.payout),  # a multiple of the rounding quantum, with its decimals
            "payout_exact": canonical(self.payout_exact),
            **({"program": self.program.to_document()} if self.program is not None else {}),
            "spot_volume": canonical(self.spot_volume),
            "tier": self.tier_name,
            "tier_basis": self.tier_basis.value,
            **({"tier_volume": canonical(self.tier_volume)} if self.tier_volume is not None else {}),
        }


def quantum_of(payout: Decimal) -> Decimal:
    """The rounding quantum a payout is written to: a payout rounded to 0.01 is written with two
    decimals ("1020.05", "0.00"), so its exponent is the quantum's."""
    return Decimal(1).scaleb(min(int(payout.as_tuple().exponent), 0), context=MONEY)


def api_volumes(lines: Iterable[AggregateLine]) -> tuple[Decimal, Decimal]:
    """(spot, futures) volume of the regular lines."""
    spot: list[Decimal] = []
    futures: list[Decimal] = []
    spot_market = MarketType.SPOT
    for line in lines:
        fill_month, period = line.fill_month, line.period
        if fill_month is period or fill_month == period:  # not an adjustment (months are mostly one object)
            (spot if line.market_type is spot_market else futures).append(line.volume_usd)
    return total(spot), total(futures)


def fill_months(lines: Iterable[AggregateLine]) -> set[Month]:
    """The months the lines' fills belong to: their period's, and those of its adjustments."""
    months: set[Month] = set()
    last: Month | None = None
    for line in lines:
        if line.fill_month is not last:  # lines come grouped by month: hash a month once per group
            last = line.fill_month
            months.add(last)
    return months


def tier_volume(tier_basis: TierBasis, own_volume: Decimal, previous_volume: Decimal) -> Decimal:
    """The API volume a month's tier is decided by, under the tier basis."""
    return previous_volume if tier_basis is TierBasis.PREVIOUS_MONTH else own_volume


def paying_tier(config: ProgramConfig, month: Month, own_volume: Decimal, previous_volume: Decimal) -> Tier:
    """The tier month `month` is paid at, under the configured tier basis."""
    return config.schedule_for(month).tier_for_volume(tier_volume(config.tier_basis, own_volume, previous_volume))


def carried_out(payout_exact: Decimal, carried_in: Decimal) -> Decimal:
    """What a statement leaves to recover from the next: the part of its payout below zero."""
    return min(ZERO, add(payout_exact, carried_in))


def payable(payout_exact: Decimal, carried_in: Decimal, quantum: Decimal) -> Decimal:
    """The amount a statement pays: its exact payout with what it carries in, if positive,
    rounded down once to `quantum`."""
    return statement_payout(max(ZERO, add(payout_exact, carried_in)), quantum)


def build_statement(config: ProgramConfig, broker_id: int, month: Month, lines: Iterable[AggregateLine],
                    tier: Tier, prior_tiers: Mapping[Month, Tier], carried_in: Decimal = ZERO, *,
                    version: int | None = None, previous_volume: Decimal | None = None) -> BrokerStatement:
    """Price every line and total the statement. `prior_tiers` holds the tier of each earlier
    month that adjustment lines belong to; `carried_in` is what the broker's previous statement
    left to recover. `config` is the program version numbered `version`, in force for `month`:
    the statement names it and carries what it was computed with (a document of format 2): the
    terms, the tier of each earlier month it has lines of, and its tier volume (under the
    previous_month basis, `previous_volume`, which must then be given)."""
    priced = sort_lines(price_lines(config, lines, tier, prior_tiers))
    if version is None:
        return total_statement(broker_id, month, tier.level, tier.rate, config.tier_basis, priced, carried_in,
                               config.rounding_quantum)
    earlier = sorted({line.fill_month for line in _earlier_months(priced, month)})
    terms = ProgramTerms(version, config.schedule_for(month), config.cap, config.rounding_quantum,
                         tuple(PriorTier(m, prior_tiers[m].level, prior_tiers[m].rate) for m in earlier))
    made = total_statement(broker_id, month, tier.level, tier.rate, config.tier_basis, priced, carried_in,
                           config.rounding_quantum, program=terms, format_version=STATEMENT_FORMAT)
    if config.tier_basis is TierBasis.PREVIOUS_MONTH:
        if previous_volume is None:
            raise ValueError("a statement under the previous_month basis records the previous month's volume")
        return replace(made, tier_volume=previous_volume)
    return replace(made, tier_volume=made.api_volume)


def _earlier_months(lines: Sequence[StatementLine], month: Month) -> Iterator[StatementLine]:
    """One line of each run of lines of a fill month other than `month` (lines come grouped by
    kind and fill month: a statement of a million regular lines costs a pass of comparisons)."""
    last: Month | None = month
    for line in lines:
        if line.fill_month is not last and line.fill_month != month:
            yield line
        last = line.fill_month


def price_lines(config: ProgramConfig, lines: Iterable[AggregateLine], tier: Tier,
                prior_tiers: Mapping[Month, Tier]) -> list[StatementLine]:
    """Each line priced as its statement prices it: a line of the month's own fills at `tier`,
    any other at the tier of its fill month (`prior_tiers`). In the lines' order. A statement is
    these lines totalled (`build_statement`); a page of some users' lines is priced alone.

    A large broker has hundreds of thousands of lines: what is the same for many lines (a kind
    and tier per fill month, an effective rate per pair of rates) is worked out once."""
    priced: list[StatementLine] = []
    # A statement has few (tier, affiliate rate) pairs and few (fill month, stored kind)s, shared
    # by many lines: each is worked out once, and found again by identity (the objects stay alive
    # in the lines while this runs), which spares hashing Decimals and months line after line.
    rates: dict[tuple[int, int], Decimal] = {}
    kinds: dict[tuple[Month, bool, bool], tuple[LineKind, Tier]] = {}
    last_month: Month | None = None
    last_flags = (False, False)
    kind, line_tier = LineKind.REGULAR, tier
    last_affiliate: Decimal | None = None
    last_tier: Tier | None = None
    rate = ZERO
    make = tuple.__new__
    for line in lines:
        fill_month = line.fill_month
        flags = (line.is_correction, line.is_retroactive)
        if fill_month is not last_month or flags != last_flags:
            found = kinds.get((fill_month, *flags))
            if found is None:
                adjustment = line.is_adjustment
                found = kinds[(fill_month, *flags)] = (
                    LineKind.RETROACTIVE if line.is_retroactive else LineKind.CORRECTION if line.is_correction
                    else LineKind.ADJUSTMENT if adjustment else LineKind.REGULAR,
                    prior_tiers[fill_month] if adjustment else tier)
            kind, line_tier = found
            last_month, last_flags = fill_month, flags
        affiliate_rate = line.affiliate_rate
        if affiliate_rate is not last_affiliate or line_tier is not last_tier:
            pair = (id(line_tier), id(affiliate_rate))
            known = rates.get(pair)
            if known is None:
                known = rates[pair] = effective_rate(line_tier.rate, affiliate_rate, config.cap)
            rate, last_affiliate, last_tier = known, affiliate_rate, line_tier
        fee_base = line.fee_base_usd
        # StatementLine(...) field by field, without the keyword-binding of its constructor
        priced.append(make(StatementLine, (
            line.user_id, line.market_type, kind, fill_month, line_tier.level, affiliate_rate, rate, line.fills,
            line.volume_usd, line.fee_usd, fee_base, line_payout_at(fee_base, rate))))
    return priced


_BY_USER_MARKET_RATE = itemgetter(0, 1, 5)  # (user_id, market_type, affiliate_rate) of a StatementLine


def sort_lines(lines: list[StatementLine]) -> list[StatementLine]:
    """The lines in statement order, `StatementLine.sort_key`: by kind, fill month, user, market
    type (a `StrEnum`, so by its value) and affiliate rate. A statement has a few (kind, fill
    month) groups, so lines are grouped by those, in order, and each group sorted by a key made in
    C; lines that come in that order already (as the store reads them) cost one pass."""
    groups: dict[tuple[int, Month], list[StatementLine]] = {}
    last_kind, last_month = None, None
    members: list[StatementLine] = []
    for line in lines:
        kind, fill_month = line.kind, line.fill_month
        if kind is not last_kind or fill_month is not last_month:  # a new group, or back to another
            members = groups.setdefault((_KIND_ORDER[kind], fill_month), [])
            last_kind, last_month = kind, fill_month
        members.append(line)
    ordered: list[StatementLine] = []
    for group in sorted(groups):
        members = groups[group]
        members.sort(key=_BY_USER_MARKET_RATE)
        ordered.extend(members)
    return ordered


def total_statement(broker_id: int, month: Month, tier_level: int, broker_rate: Decimal, tier_basis: TierBasis,
                    lines: Sequence[StatementLine], carried_in: Decimal, quantum: Decimal, *,
                    records_carries: bool = True, program: ProgramTerms | None = None,
                    tier_volume: Decimal | None = None, format_version: int | None = None) -> BrokerStatement:
    """The statement its priced lines make: every total, the carry and the payout. The one place
    these rules are written: the close totals with it, and `statement_checks.check` compares a
    statement read back with what this makes of the same lines."""
    # one pass, summed as it goes in the exact context (Inexact trapped: a sum never rounds)
    regular, spot_market = LineKind.REGULAR, MarketType.SPOT
    with localcontext(MONEY):
        spot = futures = fee_base = adjustment_fee_base = adjustment_payout = payout_exact = ZERO
        for _, market, kind, _, _, _, _, _, volume, _, line_fee_base, line_payout in lines:
            if kind is regular:
                if market is spot_market:
                    spot += volume
                else:
                    futures += volume
                fee_base += line_fee_base
            else:
                adjustment_fee_base += line_fee_base
                adjustment_payout += line_payout
            payout_exact += line_payout
    return BrokerStatement(
        broker_id=broker_id, month=month, tier_level=tier_level, broker_rate=broker_rate, tier_basis=tier_basis,
        spot_volume=spot, futures_volume=futures, api_volume=add(spot, futures),
        fee_base=fee_base, adjustment_fee_base=adjustment_fee_base,
        adjustment_payout_exact=adjustment_payout, payout_exact=payout_exact, carried_in=carried_in,
        carried_out=carried_out(payout_exact, carried_in), payout=payable(payout_exact, carried_in, quantum),
        lines=tuple(lines), records_carries=records_carries, program=program, tier_volume=tier_volume,
        format_version=format_version,
    )

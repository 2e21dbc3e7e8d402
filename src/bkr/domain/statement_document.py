"""A statement's stored form: canonical JSON text, and the one reader that turns it back into a
`BrokerStatement`.

The close stores `statement_json(statement)`, which is `canonical_json(statement.to_document())`
written faster; the statement key signs those very bytes and the API serves them. Everything
after the close reads a statement through `read_statement` (which reports every unreadable field
as a `Problem`, for documents that come from outside, such as a signed statement being verified)
or `parse_statement` (for documents bkr stored itself, where an unreadable one is corrupt
storage and raises). Reading back what `to_document` wrote gives the same statement, and
writing it again gives the same bytes.

A statement issued before carries existed has neither `carried_in` nor `carried_out`: it reads
back as carrying nothing, and writes back without them. One issued before program versions
existed has no `program` (the version and terms it was computed under): it reads back without
them, and writes back without them. One issued before statements recorded their tier volume and
their earlier months' tiers (format 2, `format_version`) has neither `tier_volume` nor
`program.prior_tiers` and no `format_version`: it reads back without them, and writes back
without them. A document of format 2 must carry all three, and its `program`.
"""

import json
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from typing import Any, TypeVar

from bkr.domain.config import TierBasis
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import MarketType
from bkr.domain.money import ZERO, D
from bkr.domain.periods import Month
from bkr.domain.problems import Problem
from bkr.domain.statements import (
    STATEMENT_FORMAT,
    BrokerStatement,
    LineKind,
    PriorTier,
    ProgramTerms,
    StatementLine,
    lines_json,
)
from bkr.domain.tiers import Tier, TierSchedule, tier_level

E = TypeVar("E", bound=Enum)


def canonical_json(value: Any) -> str:
    """The one text form of a statement (and of a signed envelope): keys sorted at every level,
    no spaces, UTF-8 as is. Parsing it and writing it again gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def statement_json(statement: BrokerStatement) -> str:
    """`canonical_json(statement.to_document())`, byte for byte, without a dict per line: the
    figures are encoded as a document, and the lines, written by `lines_json`, take the place of
    its empty list of lines. That text stands once, as the value of `lines`: inside a JSON string
    a quote is always escaped, so no value can hold it."""
    head = canonical_json(statement.to_document(with_lines=False) | {"lines": []})
    before, empty, after = head.partition(_NO_LINES)
    assert empty, head
    return "".join((before, '"lines":', lines_json(statement.lines), after))


_NO_LINES = '"lines":[]'


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """The bytes a statement's signature covers: its canonical JSON in UTF-8."""
    return canonical_json(document).encode("utf-8")


class UnreadableStatement(Exception):
    """A statement bkr stored does not read back: corrupt storage, never a user's mistake."""


def parse_statement(text: str) -> BrokerStatement:
    """A statement bkr stored, read back; raises `UnreadableStatement` naming every problem."""
    statement, problems = read_statement_text(text)
    if statement is None:
        raise UnreadableStatement("stored statement: " + "; ".join(map(str, problems)))
    return statement


def read_statement_text(text: str) -> tuple[BrokerStatement | None, list[Problem]]:
    """`read_statement` of a document's JSON text."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return None, [Problem("", f"not JSON ({error})")]
    return read_statement(document)


def read_statement(document: Any) -> tuple[BrokerStatement | None, list[Problem]]:
    """A statement document read into a `BrokerStatement`, or None and every field that could
    not be read (missing, of the wrong type, not a number, not a known kind or market)."""
    problems: list[Problem] = []
    if not isinstance(document, dict):
        return None, [Problem("", "not a statement: expected a JSON object")]
    raw_lines = document.get("lines")
    lines: list[StatementLine | None] = []
    if isinstance(raw_lines, list) and all(isinstance(raw, dict) for raw in raw_lines):
        lines = [_line(number, raw, problems) for number, raw in enumerate(raw_lines, start=1)]
    else:
        problems.append(Problem("lines", "missing or not a list of lines"))
    fields = _Fields(document, "", problems)
    records_carries = "carried_in" in document or "carried_out" in document
    terms = _terms(document["program"], problems) if "program" in document else None
    format_version = _format_version(document, problems)
    statement = BrokerStatement(
        broker_id=fields.whole("broker_id"), month=fields.month("month"), tier_level=fields.tier("tier"),
        broker_rate=fields.amount("broker_rate"), tier_basis=fields.choice("tier_basis", TierBasis),
        spot_volume=fields.amount("spot_volume"), futures_volume=fields.amount("futures_volume"),
        api_volume=fields.amount("api_volume"), fee_base=fields.amount("fee_base"),
        adjustment_fee_base=fields.amount("adjustment_fee_base"),
        adjustment_payout_exact=fields.amount("adjustment_payout_exact"),
        payout_exact=fields.amount("payout_exact"),
        carried_in=fields.amount("carried_in", default="0"),
        carried_out=fields.amount("carried_out") if records_carries else ZERO,
        payout=fields.amount("payout"),
        lines=tuple(line for line in lines if line is not None), records_carries=records_carries,
        program=terms, tier_volume=fields.amount("tier_volume") if "tier_volume" in document else None,
        format_version=format_version)
    return (None, problems) if problems else (statement, [])


def _format_version(document: dict[str, Any], problems: list[Problem]) -> int | None:
    """The document's format: None for one issued before formats were numbered, else
    `STATEMENT_FORMAT`, whose document must carry what the statement was computed with."""
    if "format_version" not in document:
        return None
    version = document["format_version"]
    if type(version) is not int or version != STATEMENT_FORMAT:
        problems.append(Problem("format_version", f"{version!r} is not a statement format this verifier knows "
                                f"({STATEMENT_FORMAT})"))
        return None
    program = document.get("program")
    missing = [name for name, there in (
        ("program", "program" in document), ("tier_volume", "tier_volume" in document),
        ("program: prior_tiers", not isinstance(program, dict) or "prior_tiers" in program)) if not there]
    if missing:
        problems.append(Problem("format_version", f"a statement of format {STATEMENT_FORMAT} carries what it was "
                                f"computed with, but {', '.join(missing)} is missing"))
    return STATEMENT_FORMAT


def _terms(raw: Any, problems: list[Problem]) -> ProgramTerms | None:
    """The `program` of a statement: the version it names and the terms it carries."""
    if not isinstance(raw, dict):
        problems.append(Problem("program", f"not an object ({raw!r})"))
        return None
    before = len(problems)
    fields = _Fields(raw, "program", problems)
    version, cap, quantum = fields.whole("version"), fields.amount("cap"), fields.amount("rounding_quantum")
    schedule = raw.get("tier_schedule")
    if not isinstance(schedule, dict) or not isinstance(schedule.get("tiers"), list) or not schedule["tiers"]:
        problems.append(Problem("program: tier_schedule", "missing, or without a list of tiers"))
        return None
    effective_from = _Fields(schedule, "program: tier_schedule", problems).month("effective_from")
    tiers = []
    for number, tier in enumerate(schedule["tiers"]):
        where = f"program: tier_schedule: tiers[{number}]"
        if not isinstance(tier, dict):
            problems.append(Problem(where, f"not an object ({tier!r})"))
            continue
        tier_fields = _Fields(tier, where, problems)
        level = tier_fields.tier("tier")
        if level != number:
            problems.append(Problem(where, f"is BKR {level}, not BKR {number}: tiers are listed in order"))
        tiers.append(Tier(level, tier_fields.amount("min_volume"), tier_fields.amount("rate")))
    prior = _prior_tiers(raw["prior_tiers"], problems) if "prior_tiers" in raw else None
    if len(problems) > before:
        return None
    try:
        return ProgramTerms(version, TierSchedule(effective_from, tuple(tiers)), cap, quantum, prior)
    except InvalidInput as error:
        problems.append(Problem("program: tier_schedule", str(error)))
        return None


def _prior_tiers(raw: Any, problems: list[Problem]) -> tuple[PriorTier, ...]:
    """The tier of each earlier month a statement has lines of, by month, each month once."""
    if not isinstance(raw, list):
        problems.append(Problem("program: prior_tiers", f"not a list ({raw!r})"))
        return ()
    prior = []
    for number, entry in enumerate(raw):
        where = f"program: prior_tiers[{number}]"
        if not isinstance(entry, dict):
            problems.append(Problem(where, f"not an object ({entry!r})"))
            continue
        fields = _Fields(entry, where, problems)
        prior.append(PriorTier(fields.month("month"), fields.tier("tier"), fields.amount("rate")))
    months = [entry.month for entry in prior]
    if months != sorted(set(months)):
        problems.append(Problem("program: prior_tiers", "months are not listed once each, in order"))
    return tuple(prior)


def _line(number: int, raw: dict[str, Any], problems: list[Problem]) -> StatementLine | None:
    # A large broker's statement has tens of thousands of lines: a line that reads is read in one
    # go; only one that does not is read again, field by field, to name what is wrong with it.
    try:
        return StatementLine(
            user_id=_text(raw["user_id"]), market_type=_MARKETS[raw["market_type"]], kind=_KINDS[raw["kind"]],
            fill_month=_month(raw["fill_month"]), tier_level=_tier(raw["tier"]),
            affiliate_rate=_exact(raw["affiliate_rate"]), effective_rate=_exact(raw["effective_rate"]),
            fills=_whole(raw["fills"]), volume_usd=_exact(raw["volume_usd"]), fee_usd=_exact(raw["fee_usd"]),
            fee_base=_exact(raw["fee_base"]), payout_exact=_exact(raw["payout_exact"]))
    except (KeyError, TypeError, ValueError, ArithmeticError, InvalidInput):
        pass
    name = (f"line {number} ({raw.get('user_id')} {raw.get('market_type')} {raw.get('fill_month')} "
            f"{raw.get('kind')})")
    before = len(problems)
    fields = _Fields(raw, name, problems)
    fields.text("user_id")
    fields.choice("market_type", MarketType)
    fields.choice("kind", LineKind)
    fields.month("fill_month")
    fields.tier("tier")
    fields.amount("affiliate_rate")
    fields.amount("effective_rate")
    fields.whole("fills")
    for amount in ("volume_usd", "fee_usd", "fee_base", "payout_exact"):
        fields.amount(amount)
    if len(problems) == before:  # the two readings disagree: never silently drop a line
        problems.append(Problem(name, "does not read"))
    return None


_MARKETS = {market.value: market for market in MarketType}
_KINDS = {kind.value: kind for kind in LineKind}


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(value)
    return value


def _whole(value: Any) -> int:
    if type(value) is not int:  # not a bool either
        raise TypeError(value)
    return value


def _exact(value: Any) -> Decimal:
    """A decimal string as `D` reads it, without its checks of what is not a string."""
    if type(value) is not str or "_" in value:
        raise TypeError(value)
    amount = Decimal(value)  # exact, whatever the context; text that is not a number raises or is NaN
    if not amount.is_finite():
        raise ValueError(value)
    return amount


def _month(value: Any) -> Month:
    return Month.parse(_text(value))


@lru_cache(maxsize=64)
def _tier(name: Any) -> int:
    level = tier_level(_text(name))
    if level is None:
        raise ValueError(name)
    return level


class _Fields:
    """Typed reads of one JSON object's fields. A field that cannot be read is a `Problem`
    (named `<where>: <field>`, or the field alone at the top) and reads as a placeholder, so
    that one pass finds every problem; a caller that found any discards what it read."""

    def __init__(self, raw: Mapping[str, Any], where: str, problems: list[Problem]) -> None:
        self.raw, self.where, self.problems = raw, where, problems

    def _problem(self, name: str, what: str) -> None:
        self.problems.append(Problem(f"{self.where}: {name}" if self.where else name, what))

    def amount(self, name: str, default: str | None = None) -> Decimal:
        value = self.raw.get(name, default)
        if not isinstance(value, str):
            self._problem(name, f"missing or not a decimal string ({value!r})")
            return ZERO
        try:
            return D(value)
        except InvalidInput:
            self._problem(name, f"{value!r} is not a number")
            return ZERO

    def whole(self, name: str) -> int:
        value = self.raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            self._problem(name, f"missing or not a whole number ({value!r})")
            return 0
        return value

    def text(self, name: str) -> str:
        value = self.raw.get(name)
        if not isinstance(value, str):
            self._problem(name, f"missing or not a string ({value!r})")
            return ""
        return value

    def month(self, name: str) -> Month:
        value = self.raw.get(name)
        if isinstance(value, str):
            try:
                return Month.parse(value)
            except InvalidInput:
                pass
        self._problem(name, f"{value!r} is not a month (YYYY-MM)")
        return Month(1, 1)

    def tier(self, name: str) -> int:
        value = self.raw.get(name)
        level = tier_level(value) if isinstance(value, str) else None
        if level is None:
            self._problem(name, f"{value!r} is not a tier name (BKR 0, BKR 1, …)")
            return 0
        return level

    def choice(self, name: str, kind: type[E]) -> E:
        value = self.raw.get(name)
        for member in kind:
            if member.value == value:
                return member
        # a line's kind was named so before it was read: keep the wording verifiers already know
        self.problems.append(Problem(self.where, f"{name} {value!r} is not {_one_of(kind)}") if self.where
                             else Problem(name, f"{value!r} is not {_one_of(kind)}"))
        return next(iter(kind))


def _one_of(kind: type[Enum]) -> str:
    names = [str(member.value) for member in kind]
    return ", ".join(names[:-1]) + " or " + names[-1]

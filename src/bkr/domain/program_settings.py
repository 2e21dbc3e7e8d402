"""The program's settings as data: the one reader that validates them, and the document they are
stored as.

A settings document has the shape of the program's sections of a TOML config file — `program`
(the policies and plausibility bounds), `usd_rates` and `tier_schedules` — whether it comes from
a file (`bkr program apply FILE.toml`, or a first `--config` imported), from a request body, or
from a stored program version (`bkr.program.settings_versions`). `read_program` is the one
validator for all of them: every amount exact (a TOML float is refused) and within its bounds,
every whole number within its range, no key it does not know. `program_document` writes a
`ProgramConfig` back as the complete document a version stores (every setting, every tier
schedule, every USD rate; amounts as canonical decimal strings), which `read_program` reads back
into the same `ProgramConfig`.

Amounts are written as strings or integers (`cap = "0.5"`). The seed's tier schedule applies
from its month (2000-01) unless the document gives a schedule that takes effect on or before it.
"""

from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, TypeVar

from bkr.domain.bounds import AMOUNT, FRACTION, QUANTUM, USD_RATE, Bounds, bounded
from bkr.domain.config import DEFAULT_USD_RATES, PayoutTarget, ProgramConfig, TierBasis, UnknownBrokerPolicy
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D, canonical
from bkr.domain.periods import Month
from bkr.domain.tiers import SEED_SCHEDULE, Tier, TierSchedule

PROGRAM_SECTIONS = ("program", "usd_rates", "tier_schedules")
PROGRAM_KEYS = ("tier_basis", "unknown_broker_policy", "cap", "rounding_quantum", "review_days",
                "approvals_required", "start", "future_tolerance_seconds", "max_fee_share", "payout_target")
SCHEDULE_KEYS = ("effective_from", "tiers")

# The ranges of the whole-number settings: generous, and stated.
REVIEW_DAYS = (0, 365)
APPROVALS = (1, 20)
FUTURE_TOLERANCE_SECONDS = (0, 86_400)
MAX_TIERS = 1000  # tier names go up to BKR 999
MAX_USD_RATES = 1000

E = TypeVar("E", TierBasis, UnknownBrokerPolicy, PayoutTarget)


def exact_setting(value: Any, where: str, bounds: Bounds) -> Decimal:
    """A setting's amount: exact (a float is refused) and within `bounds`."""
    if isinstance(value, float):
        raise InvalidInput(f"{where}: write {value!r} as a string, e.g. \"{value}\" (floats are not exact)",
                           field=where)
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidInput(f"{where}: {value!r} is not a decimal (write it as a string, e.g. \"0.5\")", field=where)
    try:
        amount = D(value)
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error}", field=where) from None
    return bounded(amount, bounds, where)


def read_program(data: Mapping[str, Any]) -> ProgramConfig:
    """The program's settings from the program sections of a document, validated whole.
    Raises `InvalidInput` naming the setting to blame (`program.cap`, `tier_schedules[1].tiers[2]`)."""
    unknown = set(data) - set(PROGRAM_SECTIONS)
    if unknown:
        raise InvalidInput(f"settings: unknown section(s) {', '.join(sorted(unknown))} "
                           f"(the program's are {', '.join(PROGRAM_SECTIONS)})", field=sorted(unknown)[0])
    program = _table(data.get("program", {}), "program")
    unknown = set(program) - set(PROGRAM_KEYS)
    if unknown:
        raise InvalidInput(f"program: unknown setting(s) {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(PROGRAM_KEYS)})", field=f"program.{sorted(unknown)[0]}")
    defaults = ProgramConfig()
    cap = exact_setting(program.get("cap", defaults.cap), "program.cap", FRACTION)
    if cap > 1:
        raise InvalidInput(f"program.cap: {canonical(cap)} is above 1 (the cap is a fraction of the fee)",
                           field="program.cap")
    max_fee_share = exact_setting(program.get("max_fee_share", defaults.max_fee_share), "program.max_fee_share",
                                  FRACTION)
    if not 0 < max_fee_share <= 1:
        raise InvalidInput(f"program.max_fee_share: {canonical(max_fee_share)} is not in (0, 1]",
                           field="program.max_fee_share")
    config = ProgramConfig(
        schedules=_schedules(data.get("tier_schedules", [])),
        cap=cap,
        tier_basis=_choice(program.get("tier_basis", defaults.tier_basis.value), TierBasis, "program.tier_basis"),
        unknown_broker_policy=_choice(program.get("unknown_broker_policy", defaults.unknown_broker_policy.value),
                                      UnknownBrokerPolicy, "program.unknown_broker_policy"),
        rounding_quantum=_quantum(program.get("rounding_quantum", defaults.rounding_quantum)),
        usd_rates=_usd_rates(data.get("usd_rates", {})),
        review_days=_whole(program.get("review_days", defaults.review_days), "program.review_days", REVIEW_DAYS),
        approvals_required=_whole(program.get("approvals_required", defaults.approvals_required),
                                  "program.approvals_required", APPROVALS),
        start=None if "start" not in program else _month(program["start"], "program.start"),
        future_tolerance=timedelta(seconds=_whole(
            program.get("future_tolerance_seconds", int(defaults.future_tolerance.total_seconds())),
            "program.future_tolerance_seconds", FUTURE_TOLERANCE_SECONDS)),
        max_fee_share=max_fee_share,
        payout_target=_choice(program.get("payout_target", defaults.payout_target.value), PayoutTarget,
                              "program.payout_target"),
    )
    try:
        config.schedule_for(config.first_month)
    except InvalidInput:
        raise InvalidInput(f"tier_schedules: none is in force at the program's start ({config.first_month}); "
                           "give one that takes effect then or earlier", field="tier_schedules") from None
    return config


def program_document(config: ProgramConfig) -> dict[str, Any]:
    """`config` as the complete settings document a program version stores: JSON-ready, amounts as
    canonical decimal strings, every schedule (the seed's too) and every USD rate written out."""
    program: dict[str, Any] = {
        "approvals_required": config.approvals_required,
        "cap": canonical(config.cap),
        "future_tolerance_seconds": int(config.future_tolerance.total_seconds()),
        "max_fee_share": canonical(config.max_fee_share),
        "review_days": config.review_days,
        "rounding_quantum": canonical(config.rounding_quantum),
        "tier_basis": config.tier_basis.value,
        "unknown_broker_policy": config.unknown_broker_policy.value,
    }
    if config.start is not None:
        program["start"] = str(config.start)
    if config.payout_target is not PayoutTarget.WALLET:  # the default stays unwritten: older versions read alike
        program["payout_target"] = config.payout_target.value
    return {
        "program": program,
        "tier_schedules": [{"effective_from": str(schedule.effective_from),
                            "tiers": [[canonical(tier.min_volume), canonical(tier.rate)] for tier in schedule.tiers]}
                           for schedule in sorted(config.schedules, key=lambda s: s.effective_from)],
        "usd_rates": {asset: canonical(rate) for asset, rate in sorted(config.usd_rates.items())},
    }


def changed_settings(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The settings two documents differ in, by name (`program.cap`, `usd_rates.EUR`,
    `tier_schedules`), sorted."""
    flat_before, flat_after = _flat(before), _flat(after)
    return sorted(name for name in flat_before.keys() | flat_after.keys()
                  if flat_before.get(name) != flat_after.get(name))


def _flat(document: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, value in document.items():
        if isinstance(value, Mapping):
            flat.update({f"{section}.{name}": item for name, item in value.items()})
        else:
            flat[section] = value
    return flat


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: expected a table of settings, not {value!r}", field=where)
    return value


def _schedules(value: Any) -> tuple[TierSchedule, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidInput("tier_schedules: expected a list of schedules ([[tier_schedules]] in TOML)",
                           field="tier_schedules")
    given: dict[Month, TierSchedule] = {}
    for index, entry in enumerate(value):
        where = f"tier_schedules[{index}]"
        entry = _table(entry, where)
        unknown = set(entry) - set(SCHEDULE_KEYS)
        if unknown:
            raise InvalidInput(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: effective_from, tiers)",
                               field=where)
        effective_from = _month(entry.get("effective_from", ""), f"{where}.effective_from")
        if effective_from in given:
            raise InvalidInput(f"{where}.effective_from: another schedule already takes effect in {effective_from}",
                               field=f"{where}.effective_from")
        tiers = entry.get("tiers")
        if not isinstance(tiers, list | tuple) or not tiers or len(tiers) > MAX_TIERS:
            raise InvalidInput(f"{where}.tiers: expected a list of 1 to {MAX_TIERS} [threshold, rate] pairs",
                               field=f"{where}.tiers")
        levels = []
        for level, pair in enumerate(tiers):
            at = f"{where}.tiers[{level}]"
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise InvalidInput(f"{at}: expected [threshold, rate], such as [\"5000000\", \"0.30\"]", field=at)
            levels.append(Tier(level, exact_setting(pair[0], at, AMOUNT), exact_setting(pair[1], at, FRACTION)))
        try:
            given[effective_from] = TierSchedule(effective_from, tuple(levels))
        except InvalidInput as error:
            raise InvalidInput(f"{where}: {error}", field=where) from None
    schedules = list(given.values())
    if not any(s.effective_from <= SEED_SCHEDULE.effective_from for s in schedules):
        schedules.append(SEED_SCHEDULE)
    return tuple(sorted(schedules, key=lambda s: s.effective_from))


def _usd_rates(value: Any) -> Mapping[str, Decimal]:
    table = _table(value, "usd_rates")
    if len(table) > MAX_USD_RATES:
        raise InvalidInput(f"usd_rates: at most {MAX_USD_RATES} assets", field="usd_rates")
    rates: dict[str, Decimal] = dict(DEFAULT_USD_RATES)
    for asset, rate in table.items():
        where = f"usd_rates.{asset}"
        if not isinstance(asset, str) or not asset.isascii() or not asset.isalnum() or len(asset) > 32:
            raise InvalidInput(f"{where}: an asset is named by up to 32 letters and digits", field="usd_rates")
        amount = exact_setting(rate, where, USD_RATE)
        if amount <= 0:
            raise InvalidInput(f"{where}: {canonical(amount)} is not a positive rate", field=where)
        rates[asset.upper()] = amount
    return MappingProxyType(rates)  # a version's settings are shared (cached) and never change


def _quantum(value: Any) -> Decimal:
    where = "program.rounding_quantum"
    quantum = exact_setting(value, where, QUANTUM)
    power = Decimal(1).scaleb(quantum.adjusted()) if quantum > 0 else None
    if power is None or quantum != power or quantum > 1:
        raise InvalidInput(f"{where}: {canonical(quantum)} is not 1 or a power of ten below it (0.01, 0.0001, …): "
                           "a payout is rounded down to a number of decimal places", field=where)
    return power  # 0.010 is 0.01: the quantum's exponent is the number of decimal places kept


def _choice(value: Any, kind: type[E], where: str) -> E:
    for member in kind:
        if member.value == value:
            return member
    raise InvalidInput(f"{where}: {value!r} is not {' or '.join(repr(m.value) for m in kind)}", field=where)


def _whole(value: Any, where: str, limits: tuple[int, int]) -> int:
    low, high = limits
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{where}: {value!r} is not a whole number", field=where)
    if not low <= value <= high:
        raise InvalidInput(f"{where}: {value} is not in {low}..{high}", field=where)
    return value


def _month(value: Any, where: str) -> Month:
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: {value!r} is not a month (write it as a string, \"YYYY-MM\")", field=where)
    try:
        return Month.parse(value)
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error}", field=where) from None

"""Reading the program's configuration from a TOML file into the one `ProgramConfig`.

Amounts must be written as strings or integers (`rate = "0.35"`): TOML floats are binary
and bkr refuses them rather than guess. Example:

    [program]
    tier_basis = "same_month"          # or "previous_month"
    unknown_broker_policy = "ignore"   # or "reject"
    cap = "0.5"
    rounding_quantum = "0.01"

    [usd_rates]                        # USDC, USDT and USD are 1 unless set here
    EUR = "1.08"

    [[tier_schedules]]
    effective_from = "2027-01"
    tiers = [["0", "0.20"], ["5000000", "0.30"], ["10000000", "0.35"]]
"""

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from bkr.domain.config import DEFAULT_USD_RATES, ProgramConfig, TierBasis, UnknownBrokerPolicy
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.domain.tiers import SEED_SCHEDULE, Tier, TierSchedule


def _exact(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        raise InvalidInput(f"{where}: write {value!r} as a string, e.g. \"{value}\" (floats are not exact)")
    try:
        return D(value)
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error}") from None


def load_config(path: Path | None) -> ProgramConfig:
    if path is None:
        return ProgramConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"config: {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidInput(f"config: {path}: {error}") from None
    return parse_config(data)


def parse_config(data: dict[str, Any]) -> ProgramConfig:
    unknown = set(data) - {"program", "usd_rates", "tier_schedules"}
    if unknown:
        raise InvalidInput(f"config: unknown section(s) {', '.join(sorted(unknown))}")
    program = data.get("program", {})
    defaults = ProgramConfig()
    try:
        tier_basis = TierBasis(program.get("tier_basis", defaults.tier_basis.value))
        policy = UnknownBrokerPolicy(program.get("unknown_broker_policy", defaults.unknown_broker_policy.value))
    except ValueError as error:
        raise InvalidInput(f"config: {error}") from None
    rates = dict(DEFAULT_USD_RATES)
    for asset, rate in data.get("usd_rates", {}).items():
        rates[asset.upper()] = _exact(rate, f"usd_rates.{asset}")
    schedules = [SEED_SCHEDULE]
    for index, entry in enumerate(data.get("tier_schedules", [])):
        where = f"tier_schedules[{index}]"
        tiers = tuple(Tier(level, _exact(threshold, f"{where}.tiers[{level}]"), _exact(rate, f"{where}.tiers[{level}]"))
                      for level, (threshold, rate) in enumerate(entry.get("tiers", [])))
        schedules.append(TierSchedule(Month.parse(str(entry.get("effective_from", ""))), tiers))
    return ProgramConfig(
        schedules=tuple(schedules), cap=_exact(program.get("cap", defaults.cap), "program.cap"),
        tier_basis=tier_basis, unknown_broker_policy=policy,
        rounding_quantum=_exact(program.get("rounding_quantum", defaults.rounding_quantum), "program.rounding_quantum"),
        usd_rates=rates,
    )

"""Reading the program's configuration from a TOML file into the one `ProgramConfig`.

Amounts must be written as strings or integers (`rate = "0.35"`): TOML floats are binary
and bkr refuses them rather than guess. Example:

    [program]
    tier_basis = "same_month"          # or "previous_month"
    unknown_broker_policy = "ignore"   # or "reject"
    cap = "0.5"
    rounding_quantum = "0.01"
    review_days = 3                    # a draft statement is final after this, or with approvals
    approvals_required = 1             # distinct operators (2: four eyes)
    start = "2024-01"                  # the first month; default: the earliest tier schedule's
    future_tolerance_seconds = 300     # a fill may be this far ahead of bkr's clock
    max_fee_share = "1"                # a fill's fee at most this share of its notional

    [usd_rates]                        # USDC, USDT and USD are 1 unless set here
    EUR = "1.08"

    [[tier_schedules]]
    effective_from = "2027-01"
    tiers = [["0", "0.20"], ["5000000", "0.30"], ["10000000", "0.35"]]

    [service]                          # `bkr serve`; each also BKR_<NAME> in the environment
    host = "127.0.0.1"
    port = 8000
    workers = 1
    max_batch = 10000                  # fills per POST /v1/fills; more is refused with 413
    max_body_bytes = 67108864          # bytes per POST /v1/fills (64 MiB); more is refused with 413
    close_grace_minutes = 30           # the previous month is closed this long after 00:00 UTC on the 1st
    scheduled_close = true
    schedule_interval_seconds = 30
    dashboard_secret = "…"             # signs dashboard session cookies; random at each start if unset

    [statements]                       # or BKR_STATEMENT_KEY_FILE in the environment
    signing_key_file = "statement-key.key"   # from `bkr statement-key create`; relative to this file

    [venue]                            # the sandbox exchange (read by bkr.venue.settings)
    default_fee_tier = 1
    initial_margin = "0.1"             # equity must cover 10% of the perpetual notional (10x)
    maintenance_margin = "0.05"        # below 5%, an account may only reduce (default: half)
    starting_balances = { USDC = "1000000", SOL = "10000" }
    markets = [{ symbol = "SOL_USDC", tick_size = "0.01", step_size = "0.01" }]
    [venue.fee_tiers.1]                # fractions: 0.001 = 0.10% = 10 bps
    spot_maker = "0.0008"
    spot_taker = "0.001"
    futures_maker = "0.0002"
    futures_taker = "0.0005"

Flags given to `bkr serve` win over the environment, which wins over the file.
"""

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bkr.domain.bounds import AMOUNT, FRACTION, QUANTUM, USD_RATE, Bounds, bounded
from bkr.domain.config import DEFAULT_USD_RATES, ProgramConfig, TierBasis, UnknownBrokerPolicy
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.domain.tiers import SEED_SCHEDULE, Tier, TierSchedule


def exact_setting(value: Any, where: str, bounds: Bounds) -> Decimal:
    """A setting's amount: exact (a TOML float is refused) and within `bounds`."""
    if isinstance(value, float):
        raise InvalidInput(f"{where}: write {value!r} as a string, e.g. \"{value}\" (floats are not exact)")
    try:
        amount = D(value)
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error}") from None
    return bounded(amount, bounds, where)


def read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"config: {path} does not exist") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"config: {path}: not UTF-8 text") from None
    except OSError as error:
        raise InvalidInput(f"config: {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidInput(f"config: {path}: {error}") from None


def load_config(path: Path | None) -> ProgramConfig:
    return parse_config(read_toml(path))


def parse_config(data: dict[str, Any]) -> ProgramConfig:
    unknown = set(data) - {"program", "usd_rates", "tier_schedules", "service", "venue", "statements"}
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
        rates[asset.upper()] = exact_setting(rate, f"usd_rates.{asset}", USD_RATE)
    schedules = [SEED_SCHEDULE]
    for index, entry in enumerate(data.get("tier_schedules", [])):
        where = f"tier_schedules[{index}]"
        tiers = tuple(Tier(level, exact_setting(threshold, f"{where}.tiers[{level}]", AMOUNT),
                           exact_setting(rate, f"{where}.tiers[{level}]", FRACTION))
                      for level, (threshold, rate) in enumerate(entry.get("tiers", [])))
        schedules.append(TierSchedule(Month.parse(str(entry.get("effective_from", ""))), tiers))
    return ProgramConfig(
        schedules=tuple(schedules), cap=exact_setting(program.get("cap", defaults.cap), "program.cap", FRACTION),
        tier_basis=tier_basis, unknown_broker_policy=policy,
        rounding_quantum=exact_setting(program.get("rounding_quantum", defaults.rounding_quantum),
                                       "program.rounding_quantum", QUANTUM),
        usd_rates=rates,
        review_days=_whole(program.get("review_days", defaults.review_days), "program.review_days", 3_650),
        approvals_required=_whole(program.get("approvals_required", defaults.approvals_required),
                                  "program.approvals_required", 100),
        start=None if "start" not in program else _month(program["start"], "program.start"),
        future_tolerance=timedelta(seconds=_whole(
            program.get("future_tolerance_seconds", int(defaults.future_tolerance.total_seconds())),
            "program.future_tolerance_seconds", 86_400)),
        max_fee_share=exact_setting(program.get("max_fee_share", defaults.max_fee_share), "program.max_fee_share",
                                    FRACTION),
    )


def _month(value: Any, where: str) -> Month:
    try:
        return Month.parse(str(value))
    except InvalidInput as error:
        raise InvalidInput(f"config: {where}: {error}") from None


def _whole(value: Any, where: str, largest: int) -> int:
    """A whole number of the settings, at most `largest` (a larger one is a typo, and would not fit
    the dates it is added to)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"config: {where}: {value!r} is not a whole number")
    if value > largest:
        raise InvalidInput(f"config: {where}: {value} is more than {largest}")
    return value


@dataclass(frozen=True)
class ServiceSettings:
    """How `bkr serve` runs. Validated when built: a bad value stops the server before it starts."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch: int = 10_000
    max_body_bytes: int = 64 << 20  # the largest body POST /v1/fills reads; more is refused with 413
    close_grace_minutes: int = 30
    scheduled_close: bool = True
    schedule_interval_seconds: int = 30
    # The key that signs the dashboard's session cookies (HMAC-SHA256). Empty: `bkr serve` makes a
    # random one at start, so sessions end when the server restarts. Never shown in a repr.
    dashboard_secret: str = field(default="", repr=False)

    @property
    def close_grace(self) -> timedelta:
        return timedelta(minutes=self.close_grace_minutes)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InvalidInput(f"service.port: {self.port} is not a TCP port (1..65535)", field="port")
        for name in ("workers", "max_batch", "max_body_bytes", "schedule_interval_seconds"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"service.{name}: must be at least 1, not {getattr(self, name)}", field=name)
        for name, largest in _LARGEST.items():  # a larger value is a typo; some would not fit a date
            if getattr(self, name) > largest:
                raise InvalidInput(f"service.{name}: {getattr(self, name)} is more than {largest}", field=name)
        if self.dashboard_secret and len(self.dashboard_secret) < 32:
            raise InvalidInput("service.dashboard_secret: at least 32 characters (make one with "
                               "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
                               field="dashboard_secret")
        if self.close_grace_minutes < 0:
            raise InvalidInput(f"service.close_grace_minutes: {self.close_grace_minutes} is negative",
                               field="close_grace_minutes")


_LARGEST = {"workers": 256, "close_grace_minutes": 31 * 24 * 60, "schedule_interval_seconds": 86_400}


def _coerce(name: str, value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InvalidInput(f"{where}: {value!r} is not true or false", field=name)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InvalidInput(f"{where}: {value!r} is not a whole number", field=name)
        try:
            return int(value)
        except ValueError:
            raise InvalidInput(f"{where}: {value!r} is not a whole number", field=name) from None
    return str(value)


def load_service_settings(path: Path | None, environ: Mapping[str, str],
                          overrides: Mapping[str, Any | None]) -> ServiceSettings:
    """The file's [service] section, then BKR_<NAME> variables, then flags (None = not given)."""
    section = read_toml(path).get("service", {})
    kinds = {f.name: f.type if isinstance(f.type, type) else {"str": str, "int": int, "bool": bool}[str(f.type)]
             for f in fields(ServiceSettings)}
    unknown = set(section) - set(kinds)
    if unknown:
        raise InvalidInput(f"config: unknown setting(s) service.{', service.'.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, kind in kinds.items():
        if name in section:
            values[name] = _coerce(name, section[name], kind, f"config service.{name}")
        variable = f"BKR_{name.upper()}"
        if environ.get(variable, "") != "":
            values[name] = _coerce(name, environ[variable], kind, variable)
        if overrides.get(name) is not None:
            values[name] = _coerce(name, overrides[name], kind, f"--{name.replace('_', '-')}")
    return replace(ServiceSettings(), **values)


STATEMENT_KEY_ENV = "BKR_STATEMENT_KEY_FILE"


def statement_key_file(path: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file of the key that signs statements: BKR_STATEMENT_KEY_FILE, else the config's
    `[statements] signing_key_file` (a relative path is read from the config file's directory);
    None when neither is set."""
    if environ.get(STATEMENT_KEY_ENV, "") != "":
        return Path(environ[STATEMENT_KEY_ENV])
    section = read_toml(path).get("statements", {})
    unknown = set(section) - {"signing_key_file"}
    if unknown:
        raise InvalidInput(f"config: unknown setting(s) statements.{', statements.'.join(sorted(unknown))}")
    configured = section.get("signing_key_file")
    if configured is None:
        return None
    if not isinstance(configured, str) or not configured.strip():
        raise InvalidInput(f"config: statements.signing_key_file: {configured!r} is not a file name")
    file = Path(configured).expanduser()
    return file if file.is_absolute() or path is None else path.parent / file

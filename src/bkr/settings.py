"""The config file (`--config FILE.toml`, or BKR_CONFIG): what a process needs to run.

Its [service], [statements] and [venue] sections belong to the process: ports, workers, key
files, the sandbox venue. The program's rules ([program], [usd_rates], [[tier_schedules]]) live
in the database as program versions (`bkr.program.settings_versions`): a database that has none
yet imports the file's program sections (or the defaults) as its first version, and from then on
`bkr program apply FILE.toml --from YYYY-MM --reason TEXT` changes them; a file whose program
sections differ from the stored version is ignored with a warning. The program sections are read
by `bkr.domain.program_settings.read_program`, the one validator of a version, wherever it
comes from.

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
    future_tolerance_seconds = 300     # a fill may be this far ahead of bkr's clock (0..86400)
    max_fee_share = "1"                # a fill's fee at most this share of its notional
    payout_target = "wallet"           # or "venue": the sandbox credits payouts on its own venue
    # review_days 0..365, approvals_required 1..20, rounding_quantum 1 or a power of ten below it

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
from pathlib import Path
from typing import Any

from bkr.domain.config import ProgramConfig
from bkr.domain.errors import InvalidInput
from bkr.domain.program_settings import PROGRAM_SECTIONS, exact_setting, read_program

PROCESS_SECTIONS = ("service", "venue", "statements")

__all__ = ["PROCESS_SECTIONS", "ServiceSettings", "exact_setting", "load_config", "load_service_settings",
           "parse_config", "program_sections", "read_toml", "statement_key_file"]


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


def program_sections(data: Mapping[str, Any]) -> dict[str, Any]:
    """The program's sections of a config file's data ([program], [usd_rates], [[tier_schedules]]),
    after refusing a section bkr does not know; the other sections are the process's."""
    unknown = set(data) - {*PROGRAM_SECTIONS, *PROCESS_SECTIONS}
    if unknown:
        raise InvalidInput(f"config: unknown section(s) {', '.join(sorted(unknown))}")
    return {name: data[name] for name in PROGRAM_SECTIONS if name in data}


def load_config(path: Path | None) -> ProgramConfig:
    """The program settings a config file gives (the defaults for what it leaves out): what a
    database without a program version imports as its first (`bkr.program.settings_versions`)."""
    return parse_config(read_toml(path))


def parse_config(data: dict[str, Any]) -> ProgramConfig:
    return read_program(program_sections(data))


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
    webhooks: bool = True  # deliver brokers' webhook events (bkr.program.webhook_delivery) in a thread
    webhook_interval_seconds: int = 5
    # The key that signs the dashboard's session cookies (HMAC-SHA256). Empty: `bkr serve` makes a
    # random one at start, so sessions end when the server restarts. Never shown in a repr.
    dashboard_secret: str = field(default="", repr=False)

    @property
    def close_grace(self) -> timedelta:
        return timedelta(minutes=self.close_grace_minutes)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InvalidInput(f"service.port: {self.port} is not a TCP port (1..65535)", field="port")
        for name in ("workers", "max_batch", "max_body_bytes", "schedule_interval_seconds", "webhook_interval_seconds"):
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


_LARGEST = {"workers": 256, "close_grace_minutes": 31 * 24 * 60, "schedule_interval_seconds": 86_400,
            "webhook_interval_seconds": 3600}


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

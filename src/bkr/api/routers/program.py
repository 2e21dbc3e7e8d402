"""The program's settings over the operator API, `/v1/admin/program`: the version in force for a
month, every version since the first, and applying a new one.

A version's settings travel in the shape of a config file's program sections (`program`,
`usd_rates`, `tier_schedules`), decimals as strings: what `GET` answers can be edited and sent
back to `POST`. The request's shape is checked here; its values by the program's one validator
(`bkr.domain.program_settings.read_program`), which names the setting at fault.
"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, StringConstraints

from bkr.api.deps import ConnectionDep, OperatorDep, ServicesDep, SnapshotDep, ViewerDep
from bkr.api.errors import responses
from bkr.api.schemas import RequestModel
from bkr.domain.config import TierBasis, UnknownBrokerPolicy
from bkr.domain.errors import InvalidInput
from bkr.domain.money import canonical
from bkr.domain.periods import Month, month_field
from bkr.domain.program_settings import APPROVALS, FUTURE_TOLERANCE_SECONDS, MAX_TIERS, REVIEW_DAYS, program_document
from bkr.domain.program_versions import ProgramVersion
from bkr.domain.tiers import TierSchedule
from bkr.program import settings_versions

router = APIRouter(prefix="/v1/admin/program", tags=["operators"])

READ = responses(401, 422, 503)
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
DecimalText = Annotated[str, StringConstraints(pattern=r"^-?\d{1,40}(\.\d{1,40})?$"),
                    Field(description="An exact decimal as a string.", examples=["0.5"])]
MonthText = Annotated[str, StringConstraints(pattern=MONTH_PATTERN),
                      Field(description="A calendar month in UTC, YYYY-MM.", examples=["2026-12"])]
Asset = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,32}$")]
TierPair = tuple[DecimalText, DecimalText]

# --- the settings, in and out ----------------------------------------------------------------------


class ProgramRulesIn(RequestModel):
    """The program's policies and bounds; each one left out takes its default."""

    tier_basis: TierBasis | None = None
    unknown_broker_policy: UnknownBrokerPolicy | None = None
    cap: DecimalText | None = Field(None, description="The cap on broker rate + affiliate rate, in [0, 1].")
    rounding_quantum: DecimalText | None = Field(None, description="What a payout is rounded down to: 1 or a power of "
                                                               "ten below it (0.01).")
    review_days: int | None = Field(None, ge=REVIEW_DAYS[0], le=REVIEW_DAYS[1],
                                    description="A draft statement is final after this many days (0: by "
                                                "approvals only).")
    approvals_required: int | None = Field(None, ge=APPROVALS[0], le=APPROVALS[1],
                                           description="Distinct operators whose approvals make a draft final.")
    start: MonthText | None = Field(None, description="The program's first month; fixed by version 1 (a later "
                                                      "version may only repeat it).")
    future_tolerance_seconds: int | None = Field(None, ge=FUTURE_TOLERANCE_SECONDS[0],
                                                 le=FUTURE_TOLERANCE_SECONDS[1],
                                                 description="How far ahead of bkr's clock a fill's time may be.")
    max_fee_share: DecimalText | None = Field(None, description="A fill's fee at most this share of its notional, "
                                                            "in (0, 1].")


class TierScheduleIn(RequestModel):
    effective_from: MonthText
    tiers: list[TierPair] = Field(min_length=1, max_length=MAX_TIERS,
                                  description="[threshold (monthly API volume, USD), broker rate] from BKR 0 up; the "
                                              "first threshold is 0.", examples=[[["0", "0.2"], ["5000000", "0.3"]]])


class ProgramSettingsIn(RequestModel):
    """A whole version: what it leaves out takes the defaults (not the previous version's)."""

    program: ProgramRulesIn = Field(default_factory=lambda: ProgramRulesIn.model_validate({}))
    usd_rates: dict[Asset, DecimalText] = Field(default_factory=dict, description="USD value of one unit of each fee "
                                                                              "or quote asset; USDC, USDT and USD "
                                                                              "are 1 unless set.")
    tier_schedules: list[TierScheduleIn] = Field(default_factory=list, description="Tier schedules by the month they "
                                                 "take effect; the seed's applies from 2000-01 unless one given "
                                                 "takes effect then or earlier.")


class ProgramApplyIn(RequestModel):
    from_month: MonthText = Field(description="The first month the version applies to: not a closed month, not "
                                              "before the latest version's.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=settings_versions.MAX_REASON,
                                             pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]+$")]
    settings: ProgramSettingsIn


class ProgramRulesOut(BaseModel):
    tier_basis: TierBasis
    unknown_broker_policy: UnknownBrokerPolicy
    cap: str
    rounding_quantum: str
    review_days: int
    approvals_required: int
    start: str = Field(description="The program's first month.")
    future_tolerance_seconds: int
    max_fee_share: str


class TierScheduleOut(BaseModel):
    effective_from: str
    tiers: list[tuple[str, str]] = Field(description="[threshold, broker rate] from BKR 0 up.")


class ProgramSettingsOut(BaseModel):
    program: ProgramRulesOut
    usd_rates: dict[str, str]
    tier_schedules: list[TierScheduleOut]


class ProgramVersionOut(BaseModel):
    version: int = Field(description="1, 2, 3…: the order versions were applied in.")
    from_month: str = Field(description="The first month the version applies to (until a later version's).")
    reason: str
    created_at: datetime
    created_by: str = Field(description="The operator who applied it (`system`: a first version imported "
                                        "from the config).")
    changes: list[str] = Field(description="The settings it changes from the version before (none for version 1).")
    settings: ProgramSettingsOut


class TierOut(BaseModel):
    tier: str
    min_volume: str
    rate: str


class ProgramInForceOut(ProgramVersionOut):
    month: str = Field(description="The month asked about.")
    tier_schedule: list[TierOut] = Field(description="The tiers in force that month.")


def _version_out(version: ProgramVersion, previous: ProgramVersion | None) -> ProgramVersionOut:
    return ProgramVersionOut(version=version.number, from_month=str(version.from_month), reason=version.reason,
                             created_at=version.created_at, created_by=version.created_by,
                             changes=settings_versions.changes(previous, version),
                             settings=ProgramSettingsOut.model_validate(program_document(version.config)))


# --- endpoints ------------------------------------------------------------------------------------


@router.get("", response_model=ProgramInForceOut, summary="The program version in force", responses=READ)
def program_in_force(_key: ViewerDep, services: ServicesDep, connection: SnapshotDep,
                     month: Annotated[str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM (UTC); default: "
                                                        "the current month.")] = None) -> ProgramInForceOut:
    """The version whose rules govern `month`: its settings, who applied it, when and why."""
    target = month_field(month) if month is not None else Month.of(services.clock())
    versions = settings_versions.history(connection)
    version = settings_versions.load_timeline(connection).in_force(target)
    previous = versions[version.number - 2] if version.number > 1 else None
    try:
        schedule: TierSchedule | None = version.config.schedule_for(target)
    except InvalidInput:  # a month before every tier schedule: no program then
        schedule = None
    return ProgramInForceOut(
        **_version_out(version, previous).model_dump(), month=str(target),
        tier_schedule=[] if schedule is None else [TierOut(tier=t.name, min_volume=canonical(t.min_volume),
                                                           rate=canonical(t.rate)) for t in schedule.tiers])


@router.get("/history", response_model=list[ProgramVersionOut], summary="Every program version",
            responses=READ)
def program_history(_key: ViewerDep, connection: SnapshotDep) -> list[ProgramVersionOut]:
    """Every version, oldest first, with the settings each changed."""
    versions = settings_versions.history(connection)
    return [_version_out(version, versions[index - 1] if index else None) for index, version in enumerate(versions)]


@router.post("", status_code=201, response_model=ProgramVersionOut, summary="Apply a program version",
             responses=responses(401, 403, 409, 422, 503))
def apply_program(body: ProgramApplyIn, key: OperatorDep, services: ServicesDep,
                  connection: ConnectionDep) -> ProgramVersionOut:
    """Store a new version of the program's settings, applying from `from_month`, as this operator
    key. The whole version is validated first, and nothing is stored if any of it is invalid (422,
    naming the setting). A `from_month` already closed is a 409 `period_closed`; one before the
    latest version's is a 422; other USD rates from a month that already holds fills is a 409
    `fills_priced`."""
    previous = settings_versions.history(connection)
    version = settings_versions.apply_version(connection, body.settings.model_dump(exclude_none=True),
                                              month_field(body.from_month, "from_month"), body.reason,
                                              key.name, services.clock())
    return _version_out(version, previous[-1] if previous else None)

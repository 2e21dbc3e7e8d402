"""The FastAPI application: `create_app` wires the routers, the dashboard, errors, observability,
the scheduled close and the webhook deliverer around one set of services (engine, settings, clock). The program's
rules are not among them: every use case reads the program version in force from the database."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bkr import __version__
from bkr.api import dashboard, observability
from bkr.api.deps import Services
from bkr.api.errors import install_error_handlers
from bkr.api.funding_tick import FundingTick
from bkr.api.limits import BodyLimit, route_limits
from bkr.api.routers import (
    admin,
    audit,
    broker,
    ingest,
    operators,
    ops,
    payouts,
    program,
    statement_keys,
    streams,
    venue,
    venue_perp,
    webhooks,
)
from bkr.api.routers.not_served import router as not_served_router
from bkr.api.stream_hub import StreamHub
from bkr.domain.clock import Clock, system_clock
from bkr.domain.config import ProgramConfig
from bkr.domain.errors import StoreNotReady
from bkr.domain.statement_signing import StatementKey
from bkr.program.settings_versions import import_first_version
from bkr.settings import ServiceSettings
from bkr.venue.exchange import Venue
from bkr.venue.markets import VenueConfig
from bkr.venue.payouts import VenueWallet

log = logging.getLogger("bkr.api")

DESCRIPTION = """bkr runs an exchange's API Broker Program.

* **Ingest** (`/v1/fills`): the exchange's fill feed posts fills; each is accepted, a duplicate,
  a conflict or rejected with its reason.
* **Operators** (`/v1/admin/…`): brokers, affiliates, referral codes, users, rejected fills,
  periods, closes, approvals and settlement; operators and keys. `Authorization: Bearer <operator
  key>`; the key's operator has a role: `viewer` reads, `operator` also changes the program,
  `approver` also approves and settles, `admin` does everything and manages operators and keys.
* **Brokers** (`/v1/broker/…`): a broker's own figures, signed with its ED25519 key exactly as
  Backpack's API is signed. Each operation's `x-instruction` is the instruction to sign.
  Statements come signed by the exchange's statement key on request (`format=signed`).
* **Statement keys** (`/v1/statement-keys`): the public keys signed statements are checked
  against; no credentials needed.

Errors are JSON `{"code", "message", "field", "request_id"}`; `code` is stable.

The same server is also a Backpack-compatible sandbox exchange under `/api/v1/…` and
`/wapi/v1/…` (see docs/brokers.md); those routes follow Backpack's API and are not listed here.
"""


def _import_first_program(engine: Engine, config: ProgramConfig, source: str, clock: Clock) -> None:
    """Import `config` as the first program version if the database has none. A database that does
    not answer, or whose schema is behind, is left alone: the app starts, and /readyz says why."""
    try:
        with engine.begin() as connection:
            import_first_version(connection, config, source, "system", clock())
    except (SQLAlchemyError, StoreNotReady) as error:
        log.warning("program settings not checked at start: %s", error)


def create_app(engine: Engine, first_program: ProgramConfig | None = None, settings: ServiceSettings | None = None,
               *, clock: Clock = system_clock, run_scheduler: bool = False,
               venue_config: VenueConfig | None = None, statement_key: StatementKey | None = None,
               program_source: str = "defaults") -> FastAPI:
    """The app over `engine`. A database without a program version imports `first_program` (the
    defaults if None; `program_source` names where it came from) as version 1; one with versions
    keeps them (`bkr serve` has already imported the config file's, and said so)."""
    services = Services(engine, settings or ServiceSettings(), clock, statement_key)
    _import_first_program(engine, first_program or ProgramConfig(), program_source, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from bkr.api.scheduler import CloseScheduler
        from bkr.program.webhook_delivery import Deliverer

        scheduler = CloseScheduler(services) if run_scheduler and services.settings.scheduled_close else None
        app.state.scheduler = scheduler
        deliverer = (Deliverer(engine, clock, services.settings.webhook_interval_seconds)
                     if run_scheduler and services.settings.webhooks else None)
        app.state.webhook_deliverer = deliverer
        funding_tick = FundingTick(app.state.venue) if run_scheduler else None
        for background in (scheduler, deliverer, funding_tick):
            if background is not None:
                background.start()
        try:
            yield
        finally:
            await app.state.streams.stop()
            for background in (scheduler, deliverer, funding_tick):
                if background is not None:
                    background.stop()

    app = FastAPI(title="bkr", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.services = services
    app.state.venue = Venue(engine, venue_config or VenueConfig(), clock)
    app.state.streams = StreamHub(engine, app.state.venue.config, clock)
    app.state.wallet = VenueWallet(venue_config or VenueConfig())  # used when the program pays to the venue
    install_error_handlers(app)
    observability.install(app)
    app.add_middleware(BodyLimit, limit_of=route_limits(ingest.PATH, services.settings.max_body_bytes))
    for module in (ops, ingest, admin, operators, program, audit, broker, payouts, statement_keys, venue_perp, venue,
                   streams):
        app.include_router(module.router)
    app.include_router(webhooks.router)
    app.include_router(webhooks.admin_router)
    dashboard.install(app, services.settings.dashboard_secret)
    app.include_router(not_served_router)  # last: it matches every venue path the routes above do not
    return app

"""What every endpoint depends on, declared once: the services, a transaction, the caller.

Operators authenticate with `Authorization: Bearer bkr_op_…` (a key from `bkr operator add` or
`bkr key create`), checked by `bkr.program.keys.authenticate_operator` as the `bkr` command checks
its `--key`; the operator's role must allow what the endpoint needs (`Role.allows`). Brokers sign
each request with their ED25519 key exactly as Backpack's API is signed (see
`bkr.domain.signing`); each broker endpoint names its instruction, which is also in its OpenAPI
entry as `x-instruction`. Every request reads its key's row, so a key revoked or expired is
refused at its next request in every process.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from weakref import WeakKeyDictionary

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from bkr.api.observability import identify
from bkr.domain.clock import Clock
from bkr.domain.errors import BkrError, Forbidden, Unauthenticated
from bkr.domain.operators import Role
from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import check_timing, parse_timing, public_key, verify_request
from bkr.domain.statement_signing import StatementKey
from bkr.program import keys
from bkr.program.registry import BrokerView, get_broker
from bkr.settings import ServiceSettings
from bkr.store import db

T = TypeVar("T")


@dataclass(frozen=True)
class Services:
    engine: Engine
    settings: ServiceSettings
    clock: Clock
    statement_key: StatementKey | None = None  # signs statements (`format=signed`); None: not configured


async def get_services(request: Request) -> Services:  # async: no thread for a field read
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def get_connection(services: ServicesDep) -> Iterator[Connection]:
    """One transaction per request, committed when the endpoint returns without error. It begins
    at the endpoint's first statement, not before: on SQLite a transaction takes the write lock as
    it begins, and the caller's dependencies (which may record a key's use in a transaction of
    their own) are resolved before the endpoint runs."""
    with services.engine.connect() as connection:
        yield connection
        if connection.in_transaction():
            connection.commit()


ConnectionDep = Annotated[Connection, Depends(get_connection)]


def get_snapshot(services: ServicesDep) -> Iterator[Connection]:
    """For a request that only reads: one read-only snapshot (`bkr.store.db.snapshot`), so that
    its figures are of one moment and, on SQLite, it never waits for or holds up a writer."""
    with db.snapshot(services.engine) as connection:
        yield connection


SnapshotDep = Annotated[Connection, Depends(get_snapshot)]

# --- operators -----------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, scheme_name="OperatorKey",
                     description="An operator key (`bkr operator add`, `bkr key create`); its operator's role "
                                 "(viewer, operator, approver, admin) decides what it may do.")


def record_use(services: Services, key_id: str, last_used_at: datetime | None, now: datetime) -> None:
    """Record a key's use, in a short transaction of its own, when the last one recorded is a
    minute old or more: at most one write a minute per key, whatever the number of reads. A read
    never waits for it: on SQLite, while another writer holds the database, it is left to a later
    request."""
    if not keys.use_is_stale(last_used_at, now):
        return
    try:
        with db.write_if_free(services.engine) as connection:
            keys.record_use(connection, key_id, now)
    except OperationalError:
        pass  # the database is busy with a writer: the key's next request records its use


def _operator(role: Role) -> Callable[..., keys.Operator]:
    def authenticate(request: Request, services: ServicesDep,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> keys.Operator:
        if credentials is None:
            raise Unauthenticated("operator key missing: send Authorization: Bearer bkr_op_…",
                                  code="credentials_missing", field="Authorization")
        now = services.clock()
        try:
            with db.snapshot(services.engine) as connection:
                operator = keys.authenticate_operator(connection, credentials.credentials, role, now)
        except BkrError as error:
            error.field = error.field or "Authorization"
            raise
        identify(request, operator_key_id=operator.key_id, operator=operator.name)
        record_use(services, operator.key_id, operator.key_last_used_at, now)
        return operator

    return authenticate


ViewerDep = Annotated[keys.Operator, Depends(_operator(Role.VIEWER))]
OperatorDep = Annotated[keys.Operator, Depends(_operator(Role.OPERATOR))]
ApproverDep = Annotated[keys.Operator, Depends(_operator(Role.APPROVER))]
AdminDep = Annotated[keys.Operator, Depends(_operator(Role.ADMIN))]

# --- brokers -------------------------------------------------------------------------------------

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="BrokerKey",
                        description="The broker's ED25519 public key, base64 (from `bkr broker key create N`). "
                                    "Send X-Signature, X-Timestamp and X-Window with it, signed as Backpack's API "
                                    "is: `instruction=<x-instruction>&<sorted params>&timestamp=<ms>&window=<ms>`.")

BROKER_INSTRUCTIONS: set[str] = set()  # every broker endpoint's instruction, to name a wrong one


@dataclass(frozen=True, slots=True)
class BrokerSignature:
    """A broker request whose signature checked out, before any database read: its key, and the
    time it was checked at (which the key's and the broker's standing are then judged at)."""

    api_key: str
    now: datetime


def broker_signature(instruction: str) -> Callable[..., Awaitable[BrokerSignature]]:
    """The dependency of a broker endpoint: the request must carry a key and be signed for
    `instruction` within its window. Checked in the event loop (no database, no thread); the
    key's broker is read with the endpoint's own figures, in one snapshot (`signed_broker`)."""
    BROKER_INSTRUCTIONS.add(instruction)

    async def check(request: Request, services: ServicesDep,
                    api_key: Annotated[str | None, Depends(_api_key)]) -> BrokerSignature:
        if not api_key:
            raise Unauthenticated("X-API-Key is missing", code="credentials_missing", field="X-API-Key")
        headers = request.headers
        timestamp, window = parse_timing(headers.get("x-timestamp"), headers.get("x-window"))
        now = services.clock()
        check_timing(timestamp, window, int(now.timestamp() * 1000))
        verify_request(public_key(api_key), headers.get("x-signature"), instruction, signed_params(request),
                       timestamp, window, other_instructions=sorted(BROKER_INSTRUCTIONS))
        return BrokerSignature(api_key, now)

    return check


class BrokerAccess(StrEnum):
    """What a broker endpoint does, which decides whether a suspended or terminated broker may use it.

    READ: it only reads the broker's own figures (its statements, payouts, per-fill audit, the
    orders it sent while inactive): a broker keeps reading its own past whatever its status.
    WRITE: it changes something bkr holds for the broker: refused while the broker is suspended or
    terminated, with 403 `broker_suspended` / `broker_terminated`. A broker endpoint says which it
    is; one that does not is a WRITE, so that a new endpoint is refused to an inactive broker
    until it is declared a read."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class SignedBroker:
    broker_id: int
    api_key: str
    broker: BrokerView  # its registry entry, status at the request's time
    key_last_used_at: datetime | None

    def check_standing(self, access: BrokerAccess = BrokerAccess.WRITE) -> None:
        """A suspended or terminated broker's keys are refused for anything but reading its own
        figures (`BrokerAccess.READ`) until it is active again."""
        status = self.broker.status
        if access is BrokerAccess.WRITE and status in (BrokerStatus.SUSPENDED, BrokerStatus.TERMINATED):
            raise Forbidden(f"broker {self.broker_id} is {status.value}; its keys may only read its own figures "
                            "until it is active again", code=f"broker_{status.value}")


def signed_broker(connection: Connection, request: Request, signature: BrokerSignature) -> SignedBroker:
    """The broker whose key signed the request, read in `connection` (the request's snapshot):
    refused unless the key exists and is neither revoked nor expired."""
    holder = keys.broker_key(connection, signature.api_key, signature.now)
    if holder is None or holder.broker_id is None:
        raise Unauthenticated("unknown, revoked or expired broker key", code="unknown_key", field="X-API-Key")
    identify(request, broker_id=holder.broker_id)
    return SignedBroker(holder.broker_id, signature.api_key, get_broker(connection, holder.broker_id, signature.now),
                        holder.last_used_at)


READ_THREADS = 8  # broker reads at once per process: more only queue for the GIL and the connections
_read_limiters: "WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter]" = WeakKeyDictionary()


async def in_read_thread(work: Callable[[], T]) -> T:
    """Run a read's blocking work (its snapshot, from the key to the response's JSON) in one
    worker thread: one hand-off per request, under a limit of its own, so that reads neither
    take the threads of other endpoints nor crowd the event loop's."""
    loop = asyncio.get_running_loop()
    limiter = _read_limiters.get(loop)
    if limiter is None:  # one per event loop: a test client runs several, one after another
        limiter = _read_limiters[loop] = anyio.CapacityLimiter(READ_THREADS)
    return await anyio.to_thread.run_sync(work, limiter=limiter)


def signed_params(request: Request) -> dict[str, Any]:
    """The parameters a client signs: the query string (broker endpoints are all reads)."""
    return dict(request.query_params)


def instruction(name: str) -> dict[str, Any]:
    """The OpenAPI extension naming an endpoint's signing instruction."""
    return {"x-instruction": name}

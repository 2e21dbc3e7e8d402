"""What every endpoint depends on, declared once: the services, a transaction, the caller.

Operators authenticate with `Authorization: Bearer bkr_op_…` (a key from `bkr operator add` or
`bkr key create`), checked by `bkr.program.keys.authenticate_operator` as the `bkr` command checks
its `--key`; the operator's role must allow what the endpoint needs (`Role.allows`). Brokers sign
each request with their ED25519 key exactly as Backpack's API is signed (see
`bkr.domain.signing`); each broker endpoint names its instruction, which is also in its OpenAPI
entry as `x-instruction`. Every request reads its key's row, so a key revoked or expired is
refused at its next request in every process.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

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
from bkr.program.registry import get_broker
from bkr.settings import ServiceSettings
from bkr.store import db


@dataclass(frozen=True)
class Services:
    engine: Engine
    settings: ServiceSettings
    clock: Clock
    statement_key: StatementKey | None = None  # signs statements (`format=signed`); None: not configured


def get_services(request: Request) -> Services:
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
class SignedBroker:
    broker_id: int
    api_key: str


def signed_by_broker(instruction: str) -> Callable[..., SignedBroker]:
    """The dependency of a broker endpoint: the request must be signed for `instruction` by a
    key of an active (or pending) broker."""
    BROKER_INSTRUCTIONS.add(instruction)

    def authenticate(request: Request, services: ServicesDep,
                     api_key: Annotated[str | None, Depends(_api_key)]) -> SignedBroker:
        if not api_key:
            raise Unauthenticated("X-API-Key is missing", code="credentials_missing", field="X-API-Key")
        headers = request.headers
        timestamp, window = parse_timing(headers.get("x-timestamp"), headers.get("x-window"))
        now = services.clock()
        check_timing(timestamp, window, int(now.timestamp() * 1000))
        verify_request(public_key(api_key), headers.get("x-signature"), instruction, signed_params(request),
                       timestamp, window, other_instructions=sorted(BROKER_INSTRUCTIONS))
        with db.snapshot(services.engine) as connection:
            holder = keys.broker_key(connection, api_key, now)
            if holder is None or holder.broker_id is None:
                raise Unauthenticated("unknown, revoked or expired broker key", code="unknown_key", field="X-API-Key")
            broker_id = holder.broker_id
            identify(request, broker_id=broker_id)
            status = get_broker(connection, broker_id, now).status
        record_use(services, api_key, holder.last_used_at, now)
        if status in (BrokerStatus.SUSPENDED, BrokerStatus.TERMINATED):
            raise Forbidden(f"broker {broker_id} is {status.value}; its keys are refused until it is active again",
                            code=f"broker_{status.value}")
        return SignedBroker(broker_id, api_key)

    return authenticate


def signed_params(request: Request) -> dict[str, Any]:
    """The parameters a client signs: the query string (broker endpoints are all reads)."""
    return dict(request.query_params)


def instruction(name: str) -> dict[str, Any]:
    """The OpenAPI extension naming an endpoint's signing instruction."""
    return {"x-instruction": name}

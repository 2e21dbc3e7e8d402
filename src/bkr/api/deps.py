"""What every endpoint depends on, declared once: the services, a transaction, the caller.

Operators authenticate with `Authorization: Bearer bkr_op_…` (a key from `bkr admin-key
create`), and hold a role. Brokers sign each request with their ED25519 key exactly as
Backpack's API is signed (see `bkr.domain.signing`); each broker endpoint names its
instruction, which is also in its OpenAPI entry as `x-instruction`.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine

from bkr.api.observability import identify
from bkr.domain.clock import Clock
from bkr.domain.errors import Forbidden, Unauthenticated
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
    """One transaction per request, committed when the endpoint returns without error."""
    with services.engine.begin() as connection:
        yield connection


ConnectionDep = Annotated[Connection, Depends(get_connection)]


def get_snapshot(services: ServicesDep) -> Iterator[Connection]:
    """For a request that only reads: one read-only snapshot (`bkr.store.db.snapshot`), so that
    its figures are of one moment and, on SQLite, it never waits for or holds up a writer."""
    with db.snapshot(services.engine) as connection:
        yield connection


SnapshotDep = Annotated[Connection, Depends(get_snapshot)]

# --- operators -----------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, scheme_name="OperatorKey",
                     description="An operator key from `bkr admin-key create --role viewer|operator`.")


def _operator(role: keys.Role) -> Callable[..., keys.OperatorKey]:
    def authenticate(request: Request, services: ServicesDep,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> keys.OperatorKey:
        if credentials is None:
            raise Unauthenticated("operator key missing: send Authorization: Bearer bkr_op_…",
                                  code="credentials_missing", field="Authorization")
        with db.snapshot(services.engine) as connection:
            key = keys.operator_for_token(connection, credentials.credentials)
        if key is None:
            raise Unauthenticated("unknown or revoked operator key", code="unknown_key", field="Authorization")
        identify(request, operator_key_id=key.key_id)
        if not key.role.allows(role):
            raise Forbidden(f"this needs the {role.value} role; key {key.key_id} is a {key.role.value}",
                            code="role_insufficient")
        return key

    return authenticate


ViewerDep = Annotated[keys.OperatorKey, Depends(_operator(keys.Role.VIEWER))]
OperatorDep = Annotated[keys.OperatorKey, Depends(_operator(keys.Role.OPERATOR))]

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
            broker_id = keys.broker_for_api_key(connection, api_key)
            if broker_id is None:
                raise Unauthenticated("unknown or revoked broker key", code="unknown_key", field="X-API-Key")
            identify(request, broker_id=broker_id)
            status = get_broker(connection, broker_id, now).status
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

"""The OpenAPI document is the contract: every operation is exercised with generated requests
(Schemathesis) on SQLite and PostgreSQL, and no answer may be a 5xx or differ from the document.

The database is seeded first (a registry, fills, a closed month, keys), and requests carry real
credentials: an operator key, and for `/v1/broker/…` a signature over the operation's
`x-instruction` and the query the request really sends. Known ids are put in place of some
generated ones, so that operations are explored past their 401s and 404s.

The operations are read from the document, never listed here: a route added later is covered
as soon as it exists.
"""

import json
import traceback
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import schemathesis
from api_support import MovableClock, signed_headers
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig
from bkr.domain.operators import Role
from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import KeyPair
from bkr.domain.statement_signing import new_statement_key
from bkr.ingest.readers import parse_json_record
from bkr.program import keys, operators, registry
from bkr.program.close import close_month
from bkr.program.importer import import_rows
from bkr.program.statement_signing import publish_statement_key
from bkr.settings import ServiceSettings
from bkr.store import db
from program_support import use_program

BROKER = 1400  # the broker whose signed requests are explored; never touched by admin operations
OTHER_BROKER = 2200  # the broker admin operations may change (suspend, terminate, make keys)
CLOSED = Month(2026, 9)
CODE, AFFILIATE = "CODE10", "aff-acct-1"

# Requests per operation: valid ones, and ones the document says are invalid (answered, like the
# valid ones, with a status the document lists and never a 5xx).
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
EXAMPLES = {POSITIVE: 15, NEGATIVE: 6}
ANONYMOUS_EVERY = 7  # one request in this many is sent without credentials
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@dataclass
class Seeded:
    app: FastAPI
    clock: MovableClock
    operator: dict[str, str]
    broker_pair: KeyPair


def _fill(fill_id: str, at: str, *, user: str = "alice", broker: int | None = BROKER, market: str = "SPOT",
          fee: str = "0.1") -> dict[str, Any]:
    symbol = "SOL_USDC" if market == "SPOT" else f"SOL_USDC_{market}"
    return {"fill_id": fill_id, "order_id": f"order-{fill_id}", "user_id": user, "symbol": symbol,
            "market_type": market, "side": "Bid", "price": "150.25", "quantity": "2", "fee": fee,
            "fee_symbol": "USDC", "is_maker": False, "timestamp": at, "broker_id": broker, "via_api": True,
            "fill_type": "User"}


def seed(url: str, clock: MovableClock) -> tuple[dict[str, str], KeyPair]:
    """A small program: two active brokers, an affiliate with a code, users, fills in a closed
    month and in the current one (one rejected, one of an unknown user), and keys."""
    engine = db.open_engine(url)
    use_program(engine)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    now = clock()
    with engine.begin() as connection:
        for broker_id in (BROKER, OTHER_BROKER):
            registry.enroll_broker(connection, broker_id, f"acct-{broker_id}", f"Broker {broker_id}", "trading_bot",
                                   since, actor="ops")
            registry.change_broker_status(connection, broker_id, BrokerStatus.ACTIVE, since, since, actor="ops")
        registry.enroll_affiliate(connection, AFFILIATE, "Affiliate One", since, actor="ops")
        registry.set_referral_rate(connection, AFFILIATE, CODE, Decimal("0.10"), since, since, actor="ops")
        registry.add_users(connection, [("alice", CODE), ("bob", None)], since, actor="ops")
        operator = operators.add_operator(connection, "olga", Role.ADMIN, now, created_by=None)
        pair = keys.create_broker_key(connection, BROKER, now, actor="ops")
        keys.create_broker_key(connection, OTHER_BROKER, now, actor="ops")
    fills = [
        _fill("f-1", "2026-09-03T10:00:00Z"),
        _fill("f-2", "2026-09-20T15:30:00Z", user="bob", market="PERP"),
        _fill("f-3", "2026-09-21T08:00:00Z", broker=OTHER_BROKER),
        _fill("f-4", "2026-10-02T09:00:00Z"),
        _fill("f-5", "2026-10-05T11:00:00Z", user="carol"),  # a user bkr does not know yet
        _fill("f-6", "2026-10-06T11:00:00Z", broker=9999),  # an unknown broker id
        {**_fill("f-7", "2026-10-07T11:00:00Z"), "price": "not a number"},  # rejected
    ]
    rows = [parse_json_record(index, json.dumps(fill)) for index, fill in enumerate(fills, start=1)]
    import_rows(engine, rows, source="seed", clock=clock, actor="ops")
    close_month(engine, CLOSED, now=now)
    engine.dispose()
    return {"Authorization": f"Bearer {operator.token}"}, pair


@pytest.fixture
def seeded(db_url: str) -> Iterator[Seeded]:
    clock = MovableClock(datetime(2026, 10, 15, 12, 0, tzinfo=UTC))
    operator, pair = seed(db_url, clock)
    engine = db.open_engine(db_url)
    statement_key = new_statement_key()  # so that signed statements are explored too
    with engine.begin() as connection:
        publish_statement_key(connection, statement_key, clock())
    app = create_app(engine, ProgramConfig(), ServiceSettings(max_batch=50), clock=clock, statement_key=statement_key)
    yield Seeded(app, clock, operator, pair)
    engine.dispose()


def _known(name: str, broker_path: bool) -> Any:
    """A value the seeded database knows, for a parameter of this name, or None."""
    return {"broker_id": BROKER if broker_path else OTHER_BROKER, "month": str(CLOSED), "user_id": "alice",
            "code": CODE}.get(name)


def _half(value: Any) -> bool:
    """A stable choice, so that a derandomized run stays the same run."""
    return zlib.crc32(repr(value).encode()) % 2 == 0


def use_known_values(case: schemathesis.Case, broker_path: bool) -> None:
    """Put the seeded ids in place of about half of the generated ones (always the broker's own
    id on a broker path: another id is only ever a 403)."""
    for container in (case.path_parameters, case.query):
        if not isinstance(container, dict):
            continue
        for name, value in list(container.items()):
            known = _known(name, broker_path)
            if known is not None and ((broker_path and name == "broker_id") or _half(value)):
                container[name] = known


def wire_query(case: schemathesis.Case) -> dict[str, str]:
    """The query as the server will read it (the last value of a repeated key wins, as in
    Starlette's `dict(request.query_params)`): what a broker signs."""
    sent = case.as_transport_kwargs(base_url="http://testserver")
    url = requests.Request("GET", sent["url"], params=sent.get("params")).prepare().url or ""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def authorize(case: schemathesis.Case, seeded: Seeded, *, credentials: bool = True) -> None:
    """Sign or authenticate the request as its operation needs (unless `credentials` is false:
    the 401 is then what is checked against the document)."""
    instruction = case.operation.definition.raw.get("x-instruction")
    broker_path = case.path.startswith("/v1/broker/")
    use_known_values(case, broker_path)
    headers = dict(case.headers or {})
    if credentials and instruction:
        headers.update(signed_headers(seeded.broker_pair, instruction, wire_query(case), timestamp=seeded.clock.ms()))
    elif credentials:
        headers.update(seeded.operator)
    case.headers = headers


def explore(operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode, seeded: Seeded,
            session: requests.Session) -> None:
    """Send generated requests to one operation and check every answer against the document.
    Hypothesis shrinks a failure to its simplest request, which the error then shows."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES[mode], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    def run(case: schemathesis.Case) -> None:
        sent[0] += 1
        authorize(case, seeded, credentials=sent[0] % ANONYMOUS_EVERY != 0)
        case.call_and_validate(session=session, checks=CHECKS)  # a failure's report shows the request

    sent = [0]

    run()


def describe(error: BaseException) -> str:
    """Each distinct failure: what went wrong and, in its notes, the request that did it."""
    if isinstance(error, BaseExceptionGroup) and not isinstance(error, FailureGroup):
        return "\n".join(describe(inner) for inner in error.exceptions)
    return "".join(traceback.format_exception_only(error)).strip()


def test_every_operation_answers_as_documented(seeded: Seeded) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", seeded.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/healthz", "/readyz", "/metrics"} <= {operation.path for operation in operations}
    failures = []
    with asgi.get_client(seeded.app) as session:  # one client: the app starts once, not per request
        for operation in operations:
            raw = operation.definition.raw
            modes = list(EXAMPLES) if raw.get("parameters") or raw.get("requestBody") else [POSITIVE]
            for mode in modes:
                try:
                    explore(operation, mode, seeded, session)
                except Exception as error:  # every operation is explored; all failures are reported
                    failures.append(f"{operation.label} ({mode.value} data):\n{describe(error)}")
    assert not failures, "\n\n".join(failures)


# --- the document itself -------------------------------------------------------------------------

@pytest.fixture
def document(seeded: Seeded) -> dict[str, Any]:
    return seeded.app.openapi()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, operation


def test_every_operation_is_documented_with_its_errors(document: dict[str, Any]) -> None:
    problems = []
    for path, method, operation in _operations(document):
        where = f"{method.upper()} {path}"
        statuses = set(operation.get("responses", {}))
        if not operation.get("summary"):
            problems.append(f"{where}: no summary")
        success = [status for status in statuses if status.startswith("2")]
        if not success:
            problems.append(f"{where}: no success response")
        for status in success:
            content = operation["responses"][status].get("content", {})
            if status != "204" and not any(media.get("schema") for media in content.values()):
                problems.append(f"{where}: response {status} has no schema")
        if operation.get("security") and "401" not in statuses:
            problems.append(f"{where}: authenticated but no 401")
        if (operation.get("parameters") or operation.get("requestBody")) and "422" not in statuses:
            problems.append(f"{where}: has parameters but no 422")
        for status in statuses - set(success):
            schema_ref = operation["responses"][status].get("content", {}).get("application/json", {}) \
                .get("schema", {}).get("$ref", "")
            if not schema_ref.endswith("/ErrorBody"):
                problems.append(f"{where}: error {status} is not an ErrorBody")
        if path.startswith("/v1/broker/") and not operation.get("x-instruction"):
            problems.append(f"{where}: no x-instruction")
    assert not problems, "\n".join(problems)


def test_the_document_lists_the_operations_endpoints(document: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "get" in document["paths"][path]
    assert "503" in document["paths"]["/readyz"]["get"]["responses"]

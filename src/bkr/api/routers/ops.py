"""Operations: liveness, readiness and metrics, for load balancers, orchestrators and Prometheus.

None of them needs credentials: they reveal no program data (readiness names the schema
revisions, metrics count requests and fills by outcome)."""

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from bkr.api import observability
from bkr.api.deps import ServicesDep
from bkr.api.errors import ApiError, responses
from bkr.store import db

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    database: str  # the backend: sqlite or postgresql
    revision: str  # the schema's migration, which is the code's head


@router.get("/healthz", response_model=Health, summary="Liveness",
            description="Answers while the process serves requests. It does not touch the database, so a "
                        "database outage does not make an orchestrator restart healthy processes.")
def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness, summary="Readiness",
            description="Ready when the database answers and its schema is at the code's latest migration. "
                        "Otherwise 503 with `code` `database_unavailable` or `store_not_ready` and the reason.",
            responses=responses(503))
def readyz(services: ServicesDep) -> Readiness:
    engine = services.engine
    try:
        current = db.current_revision(engine)
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error  # the driver's message when there is one
        reason = str(cause).strip().splitlines()
        raise ApiError(503, "database_unavailable", f"database: {reason[0] if reason else type(error).__name__}") \
            from None
    head = db.head_revision(engine)
    if current != head or head is None:
        raise ApiError(503, "store_not_ready", f"database schema is at {current or 'nothing'}, "
                                               f"code needs {head}: run `bkr db upgrade`")
    return Readiness(database=engine.dialect.name, revision=head)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            description="Prometheus text exposition: `bkr_requests_total` and `bkr_request_seconds` by method, "
                        "route template and status; `bkr_fills_total` by outcome and reason; "
                        "`bkr_ingest_seconds`; `bkr_closes_total` by trigger and result. With several worker "
                        "processes (`PROMETHEUS_MULTIPROC_DIR` set) the figures are summed over all of them.",
            responses={200: {"description": "The metrics", "content": {"text/plain": {
                "schema": {"type": "string"}}}}})
def metrics() -> Response:
    return Response(observability.metrics_text(), media_type=observability.METRICS_CONTENT_TYPE)

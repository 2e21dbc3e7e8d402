"""`/v1/admin/audit`: the audit trail for operators, and the check of its hash chain."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bkr.api.deps import SnapshotDep, ViewerDep
from bkr.api.errors import responses
from bkr.api.schemas import Instant
from bkr.program import audit

router = APIRouter(prefix="/v1/admin/audit", tags=["operators"])


class AuditEntryOut(BaseModel):
    id: int = Field(description="1, 2, 3, …: consecutive; pass the last one as `after` for the next page.")
    at: datetime
    actor: str = Field(description="The operator who made the change, or `system` (the scheduled close).")
    action: str = Field(description="What was done, e.g. `broker.status`, `program.apply`, `month.close`.")
    subject: str = Field(description="What it was done to, e.g. `broker 1400`, `2026-11`.")
    before: dict[str, Any] | None = Field(description="The values before the change (exact decimals as strings).")
    after: dict[str, Any] | None = Field(description="The values after the change.")
    reason: str | None
    previous_hash: str = Field(description="The hash of the entry before (64 zeros for the first).")
    hash: str = Field(description="SHA-256 over this entry's content and `previous_hash`, hex.")


class AuditPageOut(BaseModel):
    entries: list[AuditEntryOut]
    next_after: int | None = Field(description="The `after` of the next page; null on the last page.")


class AuditCheckOut(BaseModel):
    ok: bool
    entries: int
    head: str = Field(description="The last entry's hash: note it elsewhere to detect entries removed from the end.")
    problems: list[str] = Field(description="Every entry edited, removed or out of the chain.")


@router.get("", response_model=AuditPageOut, summary="The audit trail", responses=responses(401, 422, 503))
def list_entries(
        _key: ViewerDep, connection: SnapshotDep,
        since: Annotated[Instant | None, Query(description="Entries from this instant.")] = None,
        actor: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
        action: Annotated[str | None, Query(min_length=1, max_length=256,
                                            description="An action, or a family: `broker` matches `broker.status`.")]
        = None,
        after: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="Entries after this id.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditPageOut:
    """Who changed what, when, from which values to which, and why: in the order it happened."""
    found = audit.entries(connection, audit.AuditQuery(since, actor, action, after, limit))
    return AuditPageOut(entries=[AuditEntryOut.model_validate(entry.to_document()) for entry in found],
                        next_after=found[-1].entry_id if len(found) == limit else None)


@router.get("/verify", response_model=AuditCheckOut, summary="Check the audit trail",
            responses=responses(401, 503))
def verify_entries(_key: ViewerDep, connection: SnapshotDep) -> AuditCheckOut:
    """Recompute every entry's hash and link: an entry edited or removed in the database is listed."""
    head, problems = audit.verify(connection)
    return AuditCheckOut(ok=not problems, entries=head.entries, head=head.hash,
                         problems=[str(problem) for problem in problems])

"""`/v1/statement-keys`: the public keys that signed statements are checked against.

Anyone may read them (no credentials): a broker, an auditor or a bank needs nothing but these
keys to check a signed statement it was handed. Retired keys stay listed, since what they
signed still verifies.
"""

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from bkr.api.deps import SnapshotDep
from bkr.api.errors import responses
from bkr.program.statement_signing import published_keys

router = APIRouter(tags=["statement keys"])


class StatementKeyOut(BaseModel):
    key_id: str = Field(description="The first 16 hex digits of the SHA-256 of the raw public key.")
    algorithm: Literal["ed25519"] = "ed25519"
    public_key: str = Field(description="The raw 32-byte ED25519 public key, base64.")
    created_at: datetime
    retired_at: datetime | None = Field(description="When the key stopped signing; null while it signs. What it "
                                                    "signed before stays valid.")


class StatementKeysOut(BaseModel):
    keys: list[StatementKeyOut] = Field(description="Every key the exchange has published, oldest first.")


@router.get("/v1/statement-keys", response_model=StatementKeysOut, summary="Statement keys",
            description="The exchange's public statement keys, with their ids: a signed statement "
                        "(`/v1/broker/{broker_id}/statements/{month}?format=signed`) is genuine when its signature "
                        "verifies with the listed key of its `key_id`. No credentials needed.",
            responses=responses(503))
def list_statement_keys(connection: SnapshotDep) -> StatementKeysOut:
    return StatementKeysOut(keys=[StatementKeyOut(key_id=k.key_id, public_key=k.public_key, created_at=k.created_at,
                                                  retired_at=k.retired_at) for k in published_keys(connection)])

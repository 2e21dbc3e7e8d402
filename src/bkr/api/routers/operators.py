"""Operators and keys in the operator API, `/v1/admin/operators…` and `/v1/admin/keys…`: an
admin adds operators (each with its first key), makes more keys, lists every key bkr issued
(operators', brokers', venue users') and revokes any of them. Every route needs the `admin` role;
a key revoked here is refused at its next request in every process.
"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, StringConstraints

from bkr.api.deps import AdminDep, ConnectionDep, ServicesDep, SnapshotDep
from bkr.api.errors import responses
from bkr.api.schemas import RequestModel
from bkr.domain.errors import InvalidInput
from bkr.domain.operators import MAX_KEY_DAYS, Role, check_expiry
from bkr.domain.periods import as_utc
from bkr.program import keys, operators

router = APIRouter(prefix="/v1/admin", tags=["operators and keys"])

READ = responses(401, 403, 422, 503)
WRITE = responses(401, 403, 404, 409, 422, 503)

OperatorName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._@-]*$")]
OperatorPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._@-]*$",
                                   description="The operator's name.")]
EXPIRES = (f"When the key stops working (ISO 8601, UTC without an offset), at most {MAX_KEY_DAYS} days ahead; "
           "none: until revoked.")


class OperatorIn(RequestModel):
    name: OperatorName = Field(description="1 to 64 of a-z 0-9 . _ @ -, starting with a letter or digit; never "
                                           "reused.")
    role: Role
    expires_at: datetime | None = Field(None, description=f"Of its first key. {EXPIRES}")


class KeyIn(RequestModel):
    expires_at: datetime | None = Field(None, description=EXPIRES)


class RevokeIn(RequestModel):
    key_id: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="The key's id, as `GET /v1/admin/keys` lists it (a broker's or user's key: its public key).")


class OperatorOut(BaseModel):
    name: str
    role: Role
    created_at: datetime
    created_by: str | None = Field(description="The admin who added it; null for the first admin and for the "
                                               "operators made from earlier versions' keys.")
    disabled_at: datetime | None
    active_keys: int = Field(description="Keys neither revoked nor expired (0 once disabled).")


class NewKeyOut(BaseModel):
    operator: str
    role: Role
    key_id: str
    token: str = Field(description="The key, to send as `Authorization: Bearer …`. Shown once: bkr keeps only its "
                                   "SHA-256.")
    expires_at: datetime | None


class KeyOut(BaseModel):
    key_id: str
    kind: keys.KeyKind
    owner: str = Field(description="The operator's name, the broker's id or the venue user's id.")
    role: Role | None = Field(description="An operator key's role (its operator's); null for other keys.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Recorded at most once a minute.")
    expires_at: datetime | None
    revoked_at: datetime | None
    status: keys.KeyStatus


def _operator_out(view: operators.OperatorView) -> OperatorOut:
    return OperatorOut(name=view.name, role=view.role, created_at=view.created_at, created_by=view.created_by,
                       disabled_at=view.disabled_at, active_keys=view.active_keys)


def _new_key_out(key: keys.NewOperatorKey) -> NewKeyOut:
    return NewKeyOut(operator=key.operator, role=key.role, key_id=key.key_id, token=key.token,
                     expires_at=key.expires_at)


def key_out(view: keys.KeyView) -> KeyOut:
    return KeyOut(key_id=view.key_id, kind=view.kind, owner=view.owner, role=view.role, created_at=view.created_at,
                  last_used_at=view.last_used_at, expires_at=view.expires_at, revoked_at=view.revoked_at,
                  status=view.status)


def _expiry(value: datetime | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    try:
        return check_expiry(as_utc(value), now)
    except InvalidInput as error:
        raise InvalidInput(str(error).replace("expires:", "expires_at:", 1), field="expires_at") from None


@router.get("/operators", response_model=list[OperatorOut], summary="List operators", responses=READ)
def list_operators(_admin: AdminDep, services: ServicesDep, connection: SnapshotDep) -> list[OperatorOut]:
    """Every operator, by name, with its role and how many working keys it holds."""
    return [_operator_out(view) for view in operators.list_operators(connection, services.clock())]


@router.post("/operators", status_code=201, response_model=NewKeyOut, summary="Add an operator", responses=WRITE)
def add_operator(body: OperatorIn, admin: AdminDep, services: ServicesDep, connection: ConnectionDep) -> NewKeyOut:
    """Add a named operator with a role, and make its first key (in this answer only). A name
    taken already, by an operator disabled or not, is a 409 `operator_exists`."""
    now = services.clock()
    return _new_key_out(operators.add_operator(connection, body.name, body.role, now, created_by=admin.name,
                                               expires_at=_expiry(body.expires_at, now)))


@router.post("/operators/{name}/disable", response_model=OperatorOut, summary="Disable an operator",
             responses=WRITE)
def disable_operator(name: OperatorPath, admin: AdminDep, services: ServicesDep,
                     connection: ConnectionDep) -> OperatorOut:
    """Disable an operator: each of its keys is refused from its next request on. Its name stays taken."""
    now = services.clock()
    operators.disable_operator(connection, name, now, actor=admin.name)
    (view,) = operators.list_operators(connection, now, name=name)
    return _operator_out(view)


@router.post("/operators/{name}/keys", status_code=201, response_model=NewKeyOut, summary="Make an operator key",
             responses=WRITE)
def create_key(name: OperatorPath, admin: AdminDep, services: ServicesDep, connection: ConnectionDep,
               body: KeyIn | None = None) -> NewKeyOut:
    """Another key for an operator (to rotate one: make the new key, then revoke the old)."""
    now = services.clock()
    return _new_key_out(keys.create_operator_key(connection, name, now,
                                                 _expiry(body.expires_at if body else None, now), actor=admin.name))


@router.get("/keys", response_model=list[KeyOut], summary="List keys", responses=READ)
def list_keys(_admin: AdminDep, services: ServicesDep, connection: SnapshotDep) -> list[KeyOut]:
    """Every key bkr issued, operators', brokers' and venue users', revoked and expired ones
    included, with when each was made, last used, expires and was revoked. Never a secret."""
    return [key_out(view) for view in keys.list_keys(connection, services.clock())]


@router.post("/keys/revoke", response_model=KeyOut, summary="Revoke a key", responses=WRITE)
def revoke_key(body: RevokeIn, admin: AdminDep, services: ServicesDep, connection: ConnectionDep) -> KeyOut:
    """Revoke a key of any kind: it is refused from its next request on, in every process. A key
    revoked already is a 409 `already_revoked`. (The id is in the body: a broker's key id is its
    base64 public key, which may hold a `/`.)"""
    now = services.clock()
    keys.revoke_key(connection, body.key_id, now, actor=admin.name)
    (view,) = keys.list_keys(connection, now, key_id=body.key_id)
    return key_out(view)

"""API keys: operators' bearer tokens with a role, ED25519 key pairs for brokers and for the
venue's users (the accounts that trade).

bkr keeps only what verifies a key: the SHA-256 of an operator token, the public half of a
key pair. Both are shown once, when created, and cannot be read back.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, insert, select, update

from bkr.domain.errors import InvalidInput, NotFound
from bkr.domain.signing import KeyPair, new_key_pair
from bkr.program.registry import get_broker
from bkr.store.tables import api_keys

TOKEN_PREFIX = "bkr_op_"


class Role(StrEnum):
    VIEWER = "viewer"  # reads everything an operator can see
    OPERATOR = "operator"  # and changes the program: enroll, activate, close

    def allows(self, needed: "Role") -> bool:
        return self is Role.OPERATOR or needed is Role.VIEWER


@dataclass(frozen=True, slots=True)
class OperatorKey:
    key_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class NewOperatorKey:
    key_id: str
    role: Role
    token: str  # shown once


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_operator_key(connection: Connection, role: str, now: datetime) -> NewOperatorKey:
    try:
        kind = Role(role)
    except ValueError:
        raise InvalidInput(f"role: {role!r} is not one of {', '.join(r.value for r in Role)}", field="role") from None
    key_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    connection.execute(insert(api_keys).values(key_id=key_id, kind="operator", role=kind.value,
                                               token_sha256=_digest(token), created_at=now))
    return NewOperatorKey(key_id, kind, token)


def operator_for_token(connection: Connection, token: str) -> OperatorKey | None:
    """The operator key a bearer token belongs to, if it exists and is not revoked."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id = token[len(TOKEN_PREFIX):].split("_", 1)[0]
    row = connection.execute(select(api_keys.c.role, api_keys.c.token_sha256).where(
        (api_keys.c.key_id == key_id) & (api_keys.c.kind == "operator") & api_keys.c.revoked_at.is_(None))).first()
    if row is None or not hmac.compare_digest(row.token_sha256, _digest(token)):
        return None
    return OperatorKey(key_id, Role(row.role))


def operator_key(connection: Connection, key_id: str) -> OperatorKey | None:
    """An operator key by its id, if it is not revoked: how a dashboard session, which keeps the
    key's id and never its token, finds out that its key was revoked."""
    role = connection.execute(select(api_keys.c.role).where(
        (api_keys.c.key_id == key_id) & (api_keys.c.kind == "operator") & api_keys.c.revoked_at.is_(None))).scalar()
    return None if role is None else OperatorKey(key_id, Role(role))


def create_broker_key(connection: Connection, broker_id: int, now: datetime) -> KeyPair:
    get_broker(connection, broker_id, now)  # NotFound for an unknown broker
    pair = new_key_pair()
    connection.execute(insert(api_keys).values(key_id=pair.api_key, kind="broker", broker_id=broker_id,
                                               created_at=now))
    return pair


def broker_for_api_key(connection: Connection, api_key: str) -> int | None:
    """The broker a public key belongs to, if it exists and is not revoked."""
    return connection.execute(select(api_keys.c.broker_id).where(
        (api_keys.c.key_id == api_key) & (api_keys.c.kind == "broker") & api_keys.c.revoked_at.is_(None))).scalar()


def create_user_key(connection: Connection, user_id: str, now: datetime) -> KeyPair:
    """A key pair for a venue user (its account must be open: `bkr.venue.accounts`)."""
    pair = new_key_pair()
    connection.execute(insert(api_keys).values(key_id=pair.api_key, kind="user", user_id=user_id, created_at=now))
    return pair


def user_for_api_key(connection: Connection, api_key: str) -> str | None:
    """The venue user a public key belongs to, if it exists and is not revoked."""
    return connection.execute(select(api_keys.c.user_id).where(
        (api_keys.c.key_id == api_key) & (api_keys.c.kind == "user") & api_keys.c.revoked_at.is_(None))).scalar()


def revoke_key(connection: Connection, key_id: str, now: datetime) -> None:
    done = connection.execute(update(api_keys).where((api_keys.c.key_id == key_id) & api_keys.c.revoked_at.is_(None))
                              .values(revoked_at=now)).rowcount
    if not done:
        raise NotFound(f"no active key {key_id}")

"""API keys: operators' bearer tokens, ED25519 key pairs for brokers and for the venue's users
(the accounts that trade); their list, expiry, revocation and last use.

bkr keeps only what verifies a key: the SHA-256 of an operator token, the public half of a
key pair. Both are shown once, when created, and cannot be read back.

Every request reads its key's row: a key revoked or expired, or an operator disabled, is refused
at its next request in every process, with no cache in between. `authenticate_operator` is the
one check of an operator's key, whichever door it comes through (the operator API, the `bkr`
command's `--key`, a dashboard session). A key's last use is recorded at most once a minute
(`record_use`), so that reading with a key does not turn every read into a write.

Making and revoking a key are on the audit trail (`key.create`, `key.revoke`), naming `actor`:
whose key it is, its role and expiry; never its token or secret.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from bkr.domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from bkr.domain.operators import Role
from bkr.domain.periods import as_utc
from bkr.program import audit
from bkr.program.registry import get_broker
from bkr.store.tables import api_keys, operators

if TYPE_CHECKING:
    from bkr.domain.signing import KeyPair

TOKEN_PREFIX = "bkr_op_"
USE_RESOLUTION = timedelta(minutes=1)  # a key's last use is recorded at most this often


class KeyKind(StrEnum):
    OPERATOR = "operator"
    BROKER = "broker"
    USER = "user"  # a venue user's trading key


class KeyStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    DISABLED = "disabled"  # an operator key whose operator is disabled


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator, as authenticated by one of its keys."""

    name: str
    role: Role
    key_id: str  # the key it came with
    key_last_used_at: datetime | None  # that key's last recorded use before this one


@dataclass(frozen=True, slots=True)
class NewOperatorKey:
    key_id: str
    operator: str
    role: Role
    token: str  # shown once
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """What a broker's or a venue user's key belongs to, with its last recorded use."""

    key_id: str
    broker_id: int | None
    user_id: str | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyView:
    """One key as `bkr key list` and `GET /v1/admin/keys` show it (never its secret)."""

    key_id: str
    kind: KeyKind
    owner: str  # the operator's name, the broker's id, or the venue user's id
    role: Role | None  # an operator key's: its operator's role
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    status: KeyStatus


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _status(revoked_at: datetime | None, expires_at: datetime | None, disabled_at: datetime | None,
            now: datetime) -> KeyStatus:
    if revoked_at is not None:
        return KeyStatus.REVOKED
    if expires_at is not None and as_utc(expires_at) <= as_utc(now):
        return KeyStatus.EXPIRED
    if disabled_at is not None:
        return KeyStatus.DISABLED
    return KeyStatus.ACTIVE


# --- operators' keys ---------------------------------------------------------------------------


def create_operator_key(connection: Connection, operator: str, now: datetime,
                        expires_at: datetime | None = None, *, actor: str) -> NewOperatorKey:
    """A new key for an operator that exists and is not disabled."""
    row = connection.execute(select(operators.c.role, operators.c.disabled_at)
                             .where(operators.c.name == operator)).first()
    if row is None:
        raise NotFound(f"no operator named {operator!r} (bkr operator list)", field="operator")
    if row.disabled_at is not None:
        raise Conflict(f"operator {operator} is disabled: it gets no new keys", code="operator_disabled")
    key_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    connection.execute(insert(api_keys).values(key_id=key_id, kind=KeyKind.OPERATOR.value, operator=operator,
                                               token_sha256=_digest(token), created_at=now, expires_at=expires_at))
    _record_created(connection, actor, key_id, KeyKind.OPERATOR, operator, now, role=Role(row.role),
                    expires_at=expires_at)
    return NewOperatorKey(key_id, operator, Role(row.role), token, expires_at)


def _record_created(connection: Connection, actor: str, key_id: str, kind: KeyKind, owner: str, now: datetime, *,
                    role: Role | None = None, expires_at: datetime | None = None) -> None:
    """The `key.create` entry of a new key: whose it is, its role and expiry (never its token or
    secret; a key pair's id is its public key)."""
    audit.record(connection, actor=actor, action="key.create", subject=f"key {key_id}", at=now,
                 after={"kind": kind, "owner": owner, "role": role, "expires_at": expires_at})


def _operator_key_row(connection: Connection, key_id: str) -> Row | None:  # type: ignore[type-arg]
    return connection.execute(
        select(api_keys.c.key_id, api_keys.c.token_sha256, api_keys.c.revoked_at, api_keys.c.expires_at,
               api_keys.c.last_used_at, operators.c.name, operators.c.role, operators.c.disabled_at)
        .join(operators, operators.c.name == api_keys.c.operator)
        .where((api_keys.c.key_id == key_id) & (api_keys.c.kind == KeyKind.OPERATOR.value))).first()


def _checked(row: Row | None, needed: Role, now: datetime) -> Operator:  # type: ignore[type-arg]
    """The operator of a key row, or why the key is refused: unknown, revoked, expired, its
    operator disabled (401), or a role that does not allow `needed` (403)."""
    if row is None:
        raise Unauthenticated("unknown operator key", code="unknown_key")
    status = _status(row.revoked_at, row.expires_at, row.disabled_at, now)
    if status is KeyStatus.REVOKED:
        raise Unauthenticated(f"operator key {row.key_id} was revoked", code="key_revoked")
    if status is KeyStatus.EXPIRED:
        raise Unauthenticated(f"operator key {row.key_id} expired at {as_utc(row.expires_at).isoformat()}",
                              code="key_expired")
    if status is KeyStatus.DISABLED:
        raise Unauthenticated(f"operator {row.name} is disabled", code="operator_disabled")
    return require_role(Operator(row.name, Role(row.role), row.key_id, row.last_used_at), needed)


def require_role(operator: Operator, needed: Role) -> Operator:
    """`operator`, if its role allows what needs `needed` (`Role.allows`); else `Forbidden`."""
    if not operator.role.allows(needed):
        raise Forbidden(f"this needs the {needed.value} role; {operator.name} (key {operator.key_id}) is "
                        f"{'an' if operator.role.value[0] in 'aeiou' else 'a'} {operator.role.value}",
                        code="role_insufficient")
    return operator


def authenticate_operator(connection: Connection, token: str, needed: Role, now: datetime) -> Operator:
    """The operator a bearer token belongs to, if the key is known, neither revoked nor expired,
    its operator not disabled and its role allows `needed`; else `Unauthenticated` or `Forbidden`
    with the reason. The one check of an operator key, at every door."""
    text = token.strip()
    if not text.startswith(TOKEN_PREFIX):
        raise Unauthenticated("not an operator key: an operator key starts with bkr_op_", code="unknown_key")
    row = _operator_key_row(connection, text[len(TOKEN_PREFIX):].split("_", 1)[0])
    if row is not None and not hmac.compare_digest(row.token_sha256, _digest(text)):
        row = None
    return _checked(row, needed, now)


def operator_of_key_id(connection: Connection, key_id: str, needed: Role, now: datetime) -> Operator:
    """`authenticate_operator` for a dashboard session, which keeps the key's id and never its
    token: the same checks, on the key the session was opened with."""
    return _checked(_operator_key_row(connection, key_id), needed, now)


# --- brokers' and venue users' keys --------------------------------------------------------------


def create_broker_key(connection: Connection, broker_id: int, now: datetime, *, actor: str) -> "KeyPair":
    from bkr.domain.signing import new_key_pair  # lazy: cryptography, which only key pairs need

    get_broker(connection, broker_id, now)  # NotFound for an unknown broker
    pair = new_key_pair()
    connection.execute(insert(api_keys).values(key_id=pair.api_key, kind=KeyKind.BROKER.value, broker_id=broker_id,
                                               created_at=now))
    _record_created(connection, actor, pair.api_key, KeyKind.BROKER, str(broker_id), now)
    return pair


def create_user_key(connection: Connection, user_id: str, now: datetime, *, actor: str) -> "KeyPair":
    """A key pair for a venue user (its account must be open: `bkr.venue.accounts`)."""
    from bkr.domain.signing import new_key_pair

    pair = new_key_pair()
    connection.execute(insert(api_keys).values(key_id=pair.api_key, kind=KeyKind.USER.value, user_id=user_id,
                                               created_at=now))
    _record_created(connection, actor, pair.api_key, KeyKind.USER, user_id, now)
    return pair


# built once: every signed request reads its key
_HOLDER = select(api_keys.c.broker_id, api_keys.c.user_id, api_keys.c.revoked_at, api_keys.c.expires_at,
                 api_keys.c.last_used_at).where((api_keys.c.key_id == bindparam("key_id"))
                                                & (api_keys.c.kind == bindparam("kind")))


def _holder(connection: Connection, api_key: str, kind: KeyKind, now: datetime) -> KeyHolder | None:
    row = connection.execute(_HOLDER, {"key_id": api_key, "kind": kind.value}).first()
    if row is None or _status(row.revoked_at, row.expires_at, None, now) is not KeyStatus.ACTIVE:
        return None
    return KeyHolder(api_key, row.broker_id, row.user_id, row.last_used_at)


def broker_key(connection: Connection, api_key: str, now: datetime) -> KeyHolder | None:
    """The broker key with this public key, if it exists and is neither revoked nor expired."""
    return _holder(connection, api_key, KeyKind.BROKER, now)


def user_key(connection: Connection, api_key: str, now: datetime) -> KeyHolder | None:
    """The venue user's key with this public key, if it exists and is neither revoked nor expired."""
    return _holder(connection, api_key, KeyKind.USER, now)


# --- every key -------------------------------------------------------------------------------------


def use_is_stale(last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a key's recorded last use is old enough to record this one."""
    return last_used_at is None or as_utc(now) - as_utc(last_used_at) >= USE_RESOLUTION


def record_use(connection: Connection, key_id: str, now: datetime) -> None:
    """Record that a key was used now, unless a use less than a minute ago is recorded (by this
    process or another): a guarded write, which concurrent requests do not repeat."""
    connection.execute(update(api_keys).where(
        (api_keys.c.key_id == key_id)
        & (api_keys.c.last_used_at.is_(None) | (api_keys.c.last_used_at <= now - USE_RESOLUTION)))
        .values(last_used_at=now))


def list_keys(connection: Connection, now: datetime, *, key_id: str | None = None) -> list[KeyView]:
    """Every key bkr issued (or the one with `key_id`), operators' first (by operator), then
    brokers', then venue users'."""
    query = (select(api_keys, operators.c.role, operators.c.disabled_at)
             .outerjoin(operators, operators.c.name == api_keys.c.operator)
             .order_by(api_keys.c.kind, api_keys.c.operator, api_keys.c.broker_id, api_keys.c.user_id,
                       api_keys.c.created_at, api_keys.c.key_id))
    rows = connection.execute(query if key_id is None else query.where(api_keys.c.key_id == key_id))
    order = {KeyKind.OPERATOR: 0, KeyKind.BROKER: 1, KeyKind.USER: 2}
    views = [KeyView(row.key_id, KeyKind(row.kind), _owner(row), None if row.role is None else Role(row.role),
                     row.created_at, row.last_used_at, row.expires_at, row.revoked_at,
                     _status(row.revoked_at, row.expires_at, row.disabled_at, now)) for row in rows]
    return sorted(views, key=lambda view: order[view.kind])  # stable: the query's order within a kind


def _owner(row: Row) -> str:  # type: ignore[type-arg]
    if row.kind == KeyKind.OPERATOR.value:
        return str(row.operator)
    return str(row.broker_id) if row.kind == KeyKind.BROKER.value else str(row.user_id)


def revoke_key(connection: Connection, key_id: str, now: datetime, *, actor: str) -> None:
    """Revoke any key (an operator's, a broker's, a venue user's): refused from its next request on."""
    done = connection.execute(update(api_keys).where((api_keys.c.key_id == key_id) & api_keys.c.revoked_at.is_(None))
                              .values(revoked_at=now)).rowcount
    if not done:
        known = connection.execute(select(api_keys.c.key_id).where(api_keys.c.key_id == key_id)).first()
        if known is None:
            raise NotFound(f"no key {key_id} (bkr key list)", field="key_id")
        raise Conflict(f"key {key_id} is already revoked", code="already_revoked")
    (view,) = list_keys(connection, now, key_id=key_id)
    audit.record(connection, actor=actor, action="key.revoke", subject=f"key {key_id}", at=now,
                 before={"kind": view.kind, "owner": view.owner, "role": view.role, "expires_at": view.expires_at})

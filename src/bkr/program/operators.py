"""Operators: add one (with its first key), list them, disable one; and the bootstrap rule.

Managing operators needs an admin. The first admin is the exception: while no admin holds a key
that works (none yet, or every admin key revoked or expired), `bkr operator add NAME --role admin`
is accepted without a key, from a shell that can reach the database (which could change anything
in it anyway). A database upgraded from a version without operators holds keys of the `viewer`
and `operator` roles only, so its first admin is added the same way.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bkr.domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from bkr.domain.operators import Role, operator_name
from bkr.program import audit, keys
from bkr.store.tables import api_keys, operators


@dataclass(frozen=True, slots=True)
class OperatorView:
    name: str
    role: Role
    created_at: datetime
    created_by: str | None  # the admin who added it; None: the first admin, or an operator made on upgrade
    disabled_at: datetime | None
    active_keys: int


def admin_key_exists(connection: Connection, now: datetime) -> bool:
    """Whether an enabled admin holds a key that is neither revoked nor expired."""
    found = connection.execute(select(api_keys.c.key_id).join(operators, operators.c.name == api_keys.c.operator)
                               .where((operators.c.role == Role.ADMIN.value) & operators.c.disabled_at.is_(None)
                                      & api_keys.c.revoked_at.is_(None)
                                      & (api_keys.c.expires_at.is_(None) | (api_keys.c.expires_at > now)))
                               .limit(1)).first()
    return found is not None


def check_bootstrap(connection: Connection, role: Role, now: datetime) -> None:
    """Adding an operator without an admin key: only the first admin, only while no admin key works."""
    if admin_key_exists(connection, now):
        raise Unauthenticated("an admin's key is needed to add an operator: pass --key or set BKR_OPERATOR_KEY",
                              code="credentials_missing")
    if role is not Role.ADMIN:
        raise Forbidden(f"no admin holds a working key yet: add the first admin (--role admin) and then {role.value}s "
                        "with its key", code="bootstrap_admin_only")


def add_operator(connection: Connection, name: str, role: Role, now: datetime, *, created_by: str | None,
                 expires_at: datetime | None = None) -> keys.NewOperatorKey:
    """A new operator and its first key. Names are never reused: a disabled operator keeps its name.
    The trail records `operator.add` and then the first key's `key.create`, both by `created_by`
    (the first admin, added without a key, by itself)."""
    checked = operator_name(name)
    try:
        with connection.begin_nested():
            connection.execute(insert(operators).values(name=checked, role=role.value, created_at=now,
                                                        created_by=created_by))
    except IntegrityError:
        raise Conflict(f"an operator named {checked} exists already (bkr operator list)",
                       code="operator_exists", field="name") from None
    actor = created_by or checked
    audit.record(connection, actor=actor, action="operator.add", subject=f"operator {checked}",
                 at=now, after={"role": role, "expires_at": expires_at},
                 reason=None if created_by else "the first admin, added without a key")
    return keys.create_operator_key(connection, checked, now, expires_at, actor=actor)


def list_operators(connection: Connection, now: datetime, *, name: str | None = None) -> list[OperatorView]:
    """Every operator (or the one named `name`), by name."""
    active = (select(api_keys.c.operator, func.count().label("n")).where(
        api_keys.c.revoked_at.is_(None) & (api_keys.c.expires_at.is_(None) | (api_keys.c.expires_at > now)))
        .group_by(api_keys.c.operator).subquery())
    query = select(operators, active.c.n).outerjoin(active, active.c.operator == operators.c.name)
    rows = connection.execute((query if name is None else query.where(operators.c.name == name))
                              .order_by(operators.c.name))
    return [OperatorView(row.name, Role(row.role), row.created_at, row.created_by, row.disabled_at,
                         0 if row.disabled_at is not None else int(row.n or 0)) for row in rows]


def disable_operator(connection: Connection, name: str, now: datetime, *, actor: str) -> None:
    """Disable an operator: every key of it is refused from its next request on. Its name and
    history stay."""
    found = list_operators(connection, now, name=name)
    done = connection.execute(update(operators).where((operators.c.name == name) & operators.c.disabled_at.is_(None))
                              .values(disabled_at=now)).rowcount
    if not done:
        if not found:
            raise NotFound(f"no operator named {name!r} (bkr operator list)", field="name")
        raise Conflict(f"operator {name} is already disabled", code="already_disabled")
    (was,) = found
    audit.record(connection, actor=actor, action="operator.disable", subject=f"operator {name}", at=now,
                 before={"role": was.role, "working_keys": was.active_keys}, after={"disabled_at": now})

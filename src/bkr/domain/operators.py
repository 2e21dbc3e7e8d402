"""Operators: who may do what (the role matrix), what a name and a key's expiry may be, and
four-eyes (who may approve a statement).

An operator is a named person with one role and any number of keys. The matrix is written
once, in `Role.allows`; every door (the operator API, the dashboard, the `bkr` command) asks it.
"""

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from bkr.domain.errors import Forbidden, InvalidInput
from bkr.domain.periods import as_utc, parse_instant

SYSTEM = "system"  # the actor of what bkr does by itself (the scheduled close); no operator has this name
NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MAX_KEY_DAYS = 3650  # a key lives at most about ten years


class Role(StrEnum):
    VIEWER = "viewer"  # reads everything an operator can see
    OPERATOR = "operator"  # reads, and changes the program: enroll, activate, import, close
    APPROVER = "approver"  # reads, approves statements and settles them
    ADMIN = "admin"  # everything, and manages operators and keys

    def allows(self, needed: "Role") -> bool:
        """Whether this role may do what needs `needed`: the role matrix, the one place it is written."""
        return needed in _MATRIX[self]


# A role may do what needs each role listed beside it. Changing the program and paying it are
# apart on purpose: an operator cannot approve what it closed by role alone, an approver cannot
# change what it approves.
_MATRIX: Mapping[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.OPERATOR: frozenset({Role.VIEWER, Role.OPERATOR}),
    Role.APPROVER: frozenset({Role.VIEWER, Role.APPROVER}),
    Role.ADMIN: frozenset(Role),
}


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip())
    except ValueError:
        raise InvalidInput(f"role: {text!r} is not one of {', '.join(r.value for r in Role)}", field="role") from None


def operator_name(text: str) -> str:
    """An operator's name: 1 to 64 characters of a-z, 0-9, `.`, `_`, `@`, `-`, starting with a letter
    or digit (lower case only, so that `Alice` and `alice` cannot be two approvers); not `system`."""
    name = text.strip()
    if not NAME.fullmatch(name):
        raise InvalidInput(f"name: {text!r} is not an operator name (1 to 64 of a-z 0-9 . _ @ -, starting with a "
                           "letter or digit)", field="name")
    if name == SYSTEM:
        raise InvalidInput(f"name: {SYSTEM!r} names bkr itself, not an operator", field="name")
    return name


def key_expiry(text: str, now: datetime) -> datetime:
    """When a new key expires: a number of days from `now` (1 to 3650), or an ISO 8601 time after
    `now` and at most 3650 days ahead."""
    value = text.strip()
    if value.isdigit():
        days = int(value)
        if not 1 <= days <= MAX_KEY_DAYS:
            raise InvalidInput(f"expires: {days} days is outside 1..{MAX_KEY_DAYS}", field="expires")
        return as_utc(now) + timedelta(days=days)
    try:
        moment = parse_instant(value)
    except InvalidInput:
        raise InvalidInput(f"expires: {text!r} is neither a number of days nor an ISO 8601 time",
                           field="expires") from None
    return check_expiry(moment, now)


def check_expiry(moment: datetime, now: datetime) -> datetime:
    if moment <= now:
        raise InvalidInput(f"expires: {moment.isoformat()} is not in the future", field="expires")
    if moment > as_utc(now) + timedelta(days=MAX_KEY_DAYS):
        raise InvalidInput(f"expires: {moment.isoformat()} is more than {MAX_KEY_DAYS} days ahead", field="expires")
    return moment


def check_may_approve(approver: str, required: int, barred: Mapping[str, str]) -> None:
    """Separation of duties: when a statement needs two approvals or more, an operator named in
    `barred` (with what it did, e.g. "closed 2026-10") may not be one of them."""
    reason = barred.get(approver)
    if required >= 2 and reason is not None:
        raise Forbidden(f"{approver} {reason}, so may not approve its statements: with {required} approvals "
                        "required, the approvers must be other operators (separation of duties)",
                        code="separation_of_duties")

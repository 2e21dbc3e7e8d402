"""Operators: the role matrix, names, key expiry and separation of duties, as pure rules."""

from datetime import UTC, datetime, timedelta

import pytest

from bkr.domain.errors import Forbidden, InvalidInput
from bkr.domain.operators import MAX_KEY_DAYS, Role, check_may_approve, key_expiry, operator_name, parse_role

NOW = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)

# who may do what needs each role: the table docs/operators.md shows
MATRIX = {
    #                 viewer  operator  approver  admin   <- what is needed
    Role.VIEWER:   (True, False, False, False),
    Role.OPERATOR: (True, True, False, False),
    Role.APPROVER: (True, False, True, False),
    Role.ADMIN:    (True, True, True, True),
}


@pytest.mark.parametrize("holder", list(Role))
@pytest.mark.parametrize("needed", list(Role))
def test_the_role_matrix(holder: Role, needed: Role) -> None:
    assert holder.allows(needed) is MATRIX[holder][list(Role).index(needed)]


def test_changing_the_program_and_paying_it_are_apart_and_only_an_admin_does_both() -> None:
    both = [role for role in Role if role.allows(Role.OPERATOR) and role.allows(Role.APPROVER)]
    assert both == [Role.ADMIN]


@pytest.mark.parametrize("text", ["alice", "ops.team-1", "a", "bob@example.com", "x" * 64, "  carol  "])
def test_an_operator_name_is_lower_case_printable_and_short(text: str) -> None:
    assert operator_name(text) == text.strip()


@pytest.mark.parametrize("text", ["", "Alice", "-alice", "al ice", "x" * 65, "système", "a\x00b", "system"])
def test_other_names_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        operator_name(text)
    assert refused.value.field == "name"


def test_a_role_is_one_of_four() -> None:
    assert parse_role(" approver ") is Role.APPROVER
    with pytest.raises(InvalidInput, match="'root' is not one of viewer, operator, approver, admin"):
        parse_role("root")


@pytest.mark.parametrize(("text", "expires"), [
    ("1", NOW + timedelta(days=1)), (str(MAX_KEY_DAYS), NOW + timedelta(days=MAX_KEY_DAYS)),
    ("2026-12-31T00:00:00Z", datetime(2026, 12, 31, tzinfo=UTC)),
    ("2026-10-15T12:00:01", datetime(2026, 10, 15, 12, 0, 1, tzinfo=UTC)),
])
def test_a_key_expires_after_some_days_or_at_a_time(text: str, expires: datetime) -> None:
    assert key_expiry(text, NOW) == expires


@pytest.mark.parametrize(("text", "reason"), [
    ("0", "0 days is outside 1..3650"), (str(MAX_KEY_DAYS + 1), "outside 1..3650"), ("-3", "neither"),
    ("soon", "neither a number of days nor an ISO 8601 time"), ("2026-10-15T12:00:00Z", "is not in the future"),
    ("2040-01-01T00:00:00Z", "more than 3650 days ahead"),
])
def test_an_expiry_in_the_past_or_too_far_or_unreadable_is_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        key_expiry(text, NOW)


def test_with_four_eyes_an_operator_who_made_the_month_may_not_approve_it() -> None:
    barred = {"carol": "closed 2026-10"}
    check_may_approve("alice", 2, barred)
    check_may_approve("carol", 1, barred)  # one approval: nobody else may be there to give it
    with pytest.raises(Forbidden, match=r"^carol closed 2026-10, so may not approve") as refused:
        check_may_approve("carol", 2, barred)
    assert refused.value.code == "separation_of_duties"

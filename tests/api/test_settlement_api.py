"""Settlement over the operator API: approvals by distinct, authenticated operators (four eyes that
hold), settling with the approver role, and the ledger it writes."""

from collections.abc import Iterator

import pytest
from api_support import Api, MovableClock
from fastapi.testclient import TestClient
from feed_support import closed_october

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig
from bkr.settings import ServiceSettings
from bkr.store import db

APPROVE = "/v1/admin/periods/2026-10/statements/1400/approve"


@pytest.fixture
def four_eyes(db_url: str, clock: MovableClock) -> Iterator[Api]:
    """The API of a program that asks two approvals of each statement, and no review window."""
    engine = db.open_engine(db_url)
    app = create_app(engine, ProgramConfig(approvals_required=2, review_days=0), ServiceSettings(), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, engine, clock)
    engine.dispose()


def _status(api: Api) -> str:
    statements = api.client.get("/v1/admin/periods/2026-10", headers=api.operator_key("viewer")).json()["statements"]
    return str(statements[0]["status"])


def test_an_approved_statement_is_paid_once_and_shows_in_the_ledger(api: Api) -> None:
    closed_october(api)
    first, second = api.operator_key("approver"), api.operator_key("approver")
    approved = api.client.post(APPROVE, headers=first)
    assert approved.status_code == 200 and approved.json()["status"] == "final"
    again = api.client.post(APPROVE, headers=second)
    assert again.status_code == 409 and again.json()["code"] == "statement_final"
    settled = api.client.post("/v1/admin/periods/2026-10/settle", headers=first).json()
    repeated = api.client.post("/v1/admin/periods/2026-10/settle", headers=second).json()
    assert (settled["paid"], repeated["paid"], repeated["already_paid"]) == ([1400], [], [1400])
    balances = api.client.get("/v1/admin/ledger/balances", headers=api.operator_key("viewer")).json()
    assert balances == [{"account": "broker:1400:payable", "currency": "USD", "balance": "-2.5"},  # 20% of 12.5
                        {"account": "program:rebate_expense", "currency": "USD", "balance": "2.5"}]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_an_approver_or_an_admin_approves_and_settles(api: Api, role: str) -> None:
    closed_october(api)
    key = api.operator_key(role)
    for path in (APPROVE, "/v1/admin/periods/2026-10/settle"):
        refused = api.client.post(path, headers=key)
        assert refused.status_code == 403 and refused.json()["code"] == "role_insufficient", refused.text
        assert f"needs the approver role; {role}-" in refused.json()["message"]
    settled = api.client.post("/v1/admin/periods/2026-10/settle", headers=api.operator_key("admin")).json()
    assert (settled["paid"], settled["not_final"]) == ([], [1400])  # closed today, not approved: in review
    assert _status(api) == "draft"


def test_the_same_operator_approving_twice_leaves_the_statement_draft(four_eyes: Api) -> None:
    closed_october(four_eyes)
    alice = four_eyes.operator_key("approver", "alice")
    first = four_eyes.client.post(APPROVE, headers=alice).json()
    with_another_key = four_eyes.operator_key("admin", "root")  # an admin makes alice a second key
    second_key = four_eyes.client.post("/v1/admin/operators/alice/keys", headers=with_another_key).json()
    second = four_eyes.client.post(APPROVE, headers={"Authorization": f"Bearer {second_key['token']}"}).json()

    assert (first["status"], first["approvals"], first["already_approved"]) == ("draft", 1, False)
    assert (second["status"], second["approvals"], second["approvals_required"], second["already_approved"]) == \
        ("draft", 1, 2, True)
    assert _status(four_eyes) == "draft"
    settled = four_eyes.client.post("/v1/admin/periods/2026-10/settle", headers=alice).json()
    assert (settled["paid"], settled["not_final"]) == ([], [1400])
    bob = four_eyes.client.post(APPROVE, headers=four_eyes.operator_key("approver", "bob")).json()
    assert (bob["status"], bob["approvals"]) == ("final", 2)
    period = four_eyes.client.get("/v1/admin/periods/2026-10", headers=alice).json()
    assert period["statements"][0]["approved_by"] == ["alice", "bob"]


def test_the_operator_who_closed_the_month_cannot_be_an_approver_with_four_eyes(four_eyes: Api) -> None:
    closer = four_eyes.operator_key("admin", "carol")  # an admin may approve, but not what it closed
    closed_october(four_eyes, closer)
    first = four_eyes.client.post(APPROVE, headers=four_eyes.operator_key("approver", "alice"))
    refused = four_eyes.client.post(APPROVE, headers=closer)

    assert first.json()["status"] == "draft"
    assert refused.status_code == 403 and refused.json()["code"] == "separation_of_duties"
    assert "carol closed 2026-10" in refused.json()["message"]
    period = four_eyes.client.get("/v1/admin/periods/2026-10", headers=closer).json()
    assert (period["closed_by"], period["statements"][0]["approved_by"], _status(four_eyes)) == \
        ("carol", ["alice"], "draft")
    second = four_eyes.client.post(APPROVE, headers=four_eyes.operator_key("approver", "bob")).json()
    assert second["status"] == "final"


def test_with_one_approval_required_the_closer_may_approve(api: Api) -> None:
    closer = api.operator_key("admin", "carol")
    closed_october(api, closer)
    approved = api.client.post(APPROVE, headers=closer).json()
    assert (approved["status"], approved["approvals"], approved["approvals_required"]) == ("final", 1, 1)

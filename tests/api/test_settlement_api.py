"""Settlement over the operator API: approve as distinct operator keys, settle, read the ledger."""


from api_support import Api
from feed_support import closed_october


def test_an_approved_statement_is_paid_once_and_shows_in_the_ledger(api: Api) -> None:
    closed_october(api)
    first, second = api.operator_key(), api.operator_key()
    approved = api.client.post("/v1/admin/periods/2026-10/statements/1400/approve", headers=first)
    assert approved.status_code == 200 and approved.json()["status"] == "final"
    again = api.client.post("/v1/admin/periods/2026-10/statements/1400/approve", headers=second)
    assert again.status_code == 409 and again.json()["code"] == "statement_final"
    settled = api.client.post("/v1/admin/periods/2026-10/settle", headers=first).json()
    repeated = api.client.post("/v1/admin/periods/2026-10/settle", headers=second).json()
    assert (settled["paid"], repeated["paid"], repeated["already_paid"]) == ([1400], [], [1400])
    balances = api.client.get("/v1/admin/ledger/balances", headers=api.operator_key("viewer")).json()
    assert balances == [{"account": "broker:1400", "currency": "USD", "balance": "-2.5"},  # 20% of 12.5
                        {"account": "program:rebate_expense", "currency": "USD", "balance": "2.5"}]


def test_a_viewer_cannot_settle_and_a_draft_is_not_paid(api: Api) -> None:
    closed_october(api)
    refused = api.client.post("/v1/admin/periods/2026-10/settle", headers=api.operator_key("viewer"))
    assert refused.status_code == 403
    settled = api.client.post("/v1/admin/periods/2026-10/settle", headers=api.operator_key()).json()
    assert (settled["paid"], settled["not_final"]) == ([], [1400])  # closed today: still in review

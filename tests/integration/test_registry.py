"""The registry through the `bkr` command: one program per account, broker ids, status
transitions and signup codes, each refused with exit status 1 and a one-line reason. The
commands run as an operator (BKR_OPERATOR_KEY), as an operator's shell would."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from integration_support import NOW, operator_key
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from bkr.domain.registry import BrokerStatus
from bkr.program import registry
from bkr.store.tables import brokers, enrollments


@pytest.fixture(autouse=True)
def operator(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BKR_OPERATOR_KEY", operator_key(engine, "operator", "ops"))


def add_broker_cli(bkr: Any, db_url: str, broker_id: str = "1400", account: str = "acct-1") -> Any:
    return bkr("broker", "add", "--id", broker_id, "--account", account, "--name", "ccxt",
               "--type", "exchange_aggregator", "--db", db_url)


def add_affiliate_cli(bkr: Any, db_url: str, account: str = "acct-1") -> Any:
    return bkr("affiliate", "add", "--account", account, "--name", "Crypto Weekly", "--db", db_url)


def broker_list(bkr: Any, db_url: str) -> list[dict[str, Any]]:
    result = bkr("broker", "list", "--db", db_url, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def test_an_account_enrolled_as_a_broker_cannot_enroll_as_an_affiliate(engine: Engine, db_url: str,
                                                                       bkr: Any) -> None:
    assert add_broker_cli(bkr, db_url).code == 0

    result = add_affiliate_cli(bkr, db_url)

    assert (result.code, result.err) == (1, "error: account acct-1 is already enrolled in the broker program; the "
                                            "broker and affiliate programs are mutually exclusive\n")
    assert json.loads(bkr("affiliate", "list", "--db", db_url, "--json").out) == []


def test_an_account_is_one_account_whatever_its_case(engine: Engine, db_url: str, bkr: Any) -> None:
    assert add_broker_cli(bkr, db_url, account="Acct-1").code == 0

    result = add_affiliate_cli(bkr, db_url, account="ACCT-1")

    assert (result.code, result.err) == (1, "error: account ACCT-1 is already enrolled in the broker program; the "
                                            "broker and affiliate programs are mutually exclusive\n")


def test_an_account_enrolled_as_an_affiliate_cannot_enroll_as_a_broker(engine: Engine, db_url: str,
                                                                       bkr: Any) -> None:
    assert add_affiliate_cli(bkr, db_url).code == 0

    result = add_broker_cli(bkr, db_url)

    assert (result.code, result.err) == (1, "error: account acct-1 is already enrolled in the affiliate program; "
                                            "the broker and affiliate programs are mutually exclusive\n")
    assert broker_list(bkr, db_url) == []


def test_the_database_itself_refuses_a_second_enrollment_of_an_account(engine: Engine, db_url: str,
                                                                      bkr: Any) -> None:
    assert add_affiliate_cli(bkr, db_url).code == 0

    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(enrollments).values(account_id="acct-1", program="broker", enrolled_at=NOW))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(brokers).values(broker_id=1400, account_id="acct-1", name="ccxt", type="other",
                                                  created_at=NOW))


@pytest.mark.parametrize("broker_id", ["0", "65536"])
def test_a_broker_id_outside_the_16_bit_range_is_refused(engine: Engine, db_url: str, bkr: Any,
                                                         broker_id: str) -> None:
    result = add_broker_cli(bkr, db_url, broker_id)

    assert (result.code, result.err) == (1, f"error: broker id: {broker_id} is outside 1..65535 (X-Broker-Id is an "
                                            "unsigned 16-bit number)\n")
    assert broker_list(bkr, db_url) == []


def test_the_16_bit_range_ends_are_accepted(engine: Engine, db_url: str, bkr: Any) -> None:
    assert add_broker_cli(bkr, db_url, "1", "acct-1").code == 0
    assert add_broker_cli(bkr, db_url, "65535", "acct-2").code == 0

    assert [b["broker_id"] for b in broker_list(bkr, db_url)] == [1, 65535]


def test_a_taken_broker_id_is_refused(engine: Engine, db_url: str, bkr: Any) -> None:
    assert add_broker_cli(bkr, db_url, "1400", "acct-1").code == 0
    assert bkr("broker", "terminate", "1400", "--db", db_url).code == 0

    result = add_broker_cli(bkr, db_url, "1400", "acct-2")

    assert (result.code, result.err) == (1, "error: broker id 1400 is already taken (account acct-1); ids are never "
                                            "reused\n")
    assert [(b["broker_id"], b["account"], b["status"]) for b in broker_list(bkr, db_url)] == [
        (1400, "acct-1", "terminated")]


@pytest.mark.parametrize(("steps", "refused", "reason"), [
    (["activate", "terminate"], "activate", "cannot go from terminated to active"),
    (["activate", "terminate"], "suspend", "cannot go from terminated to suspended"),
    ([], "suspend", "cannot go from pending to suspended"),
], ids=["terminated to active", "terminated to suspended", "pending to suspended"])
def test_a_forbidden_status_transition_is_refused(engine: Engine, db_url: str, bkr: Any, steps: list[str],
                                                  refused: str, reason: str) -> None:
    assert add_broker_cli(bkr, db_url).code == 0
    for number, step in enumerate(steps, start=1):
        assert bkr("broker", step, "1400", "--at", f"2024-0{number}-01T00:00:00Z", "--db", db_url).code == 0

    result = bkr("broker", refused, "1400", "--at", "2024-09-01T00:00:00Z", "--db", db_url)

    assert result.code == 1
    assert result.err == f"error: {reason} at 2024-09-01T00:00:00+00:00\n"
    assert len(json.loads(bkr("broker", "show", "1400", "--db", db_url, "--json").out)["history"]) == len(steps)


def test_a_suspended_broker_can_be_reactivated(engine: Engine, db_url: str, bkr: Any) -> None:
    assert add_broker_cli(bkr, db_url).code == 0
    for step, at in (("activate", "2024-01-01"), ("suspend", "2024-02-01"), ("activate", "2024-03-01")):
        assert bkr("broker", step, "1400", "--at", f"{at}T00:00:00Z", "--db", db_url).code == 0

    shown = json.loads(bkr("broker", "show", "1400", "--db", db_url, "--json").out)

    assert shown["status"] == "active"
    assert [h["status"] for h in shown["history"]] == ["active", "suspended", "active"]


def test_a_users_signup_code_cannot_change(engine: Engine, db_url: str, bkr: Any) -> None:
    assert add_affiliate_cli(bkr, db_url).code == 0
    for code in ("CODE-A", "CODE-B"):
        assert bkr("referral", "add", "--affiliate", "acct-1", "--code", code, "--rate", "0.1",
                   "--db", db_url).code == 0
    assert bkr("user", "add", "--id", "alice", "--referral-code", "CODE-A", "--db", db_url).code == 0
    assert bkr("user", "add", "--id", "bob", "--db", db_url).code == 0

    changed = bkr("user", "add", "--id", "alice", "--referral-code", "CODE-B", "--db", db_url)
    given_late = bkr("user", "add", "--id", "bob", "--referral-code", "CODE-A", "--db", db_url)
    repeated = bkr("user", "add", "--id", "alice", "--referral-code", "CODE-A", "--db", db_url)

    assert (changed.code, changed.err) == (1, "error: user alice signed up with code CODE-A; a signup code never "
                                              "changes\n")
    assert (given_late.code, given_late.err) == (1, "error: user bob signed up with code (none); a signup code "
                                                    "never changes\n")
    assert repeated.code == 0  # the same registration again is harmless


def test_the_broker_list_tells_each_brokers_history_as_showing_it_alone_does(engine: Engine) -> None:
    steps = {1400: [BrokerStatus.ACTIVE, BrokerStatus.SUSPENDED, BrokerStatus.ACTIVE], 2200: [],
             3100: [BrokerStatus.ACTIVE, BrokerStatus.TERMINATED]}
    with engine.begin() as connection:
        for broker_id in (3100, 1400, 2200):
            registry.enroll_broker(connection, broker_id, f"acct-{broker_id}", f"B{broker_id}", "trading_bot", NOW,
                                   actor="ops")
            for day, status in enumerate(steps[broker_id], 1):
                registry.change_broker_status(connection, broker_id, status, NOW + timedelta(days=day), NOW,
                                              actor="ops")
        listed = registry.list_brokers(connection, NOW + timedelta(days=2))
        alone = [registry.get_broker(connection, b, NOW + timedelta(days=2)) for b in (1400, 2200, 3100)]
    assert listed == alone
    assert [view.status for view in listed] == [BrokerStatus.SUSPENDED, BrokerStatus.PENDING,
                                                BrokerStatus.TERMINATED]


def test_a_scheduled_status_change_can_be_cancelled_and_one_in_effect_cannot(engine: Engine, db_url: str,
                                                                              bkr: Any) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    later, much_later = now + timedelta(days=10), now + timedelta(days=20)
    assert add_broker_cli(bkr, db_url).code == 0
    assert bkr("broker", "activate", "1400", "--at", (now - timedelta(days=1)).isoformat(), "--db", db_url).code == 0
    assert bkr("broker", "suspend", "1400", "--at", later.isoformat(), "--db", db_url).code == 0
    assert bkr("broker", "activate", "1400", "--at", much_later.isoformat(), "--db", db_url).code == 0

    refused = bkr("broker", "cancel", "1400", "--at", later.isoformat(), "--db", db_url)
    assert refused.code == 1
    assert refused.err == (f"error: cancelling it would leave active followed by active at {much_later.isoformat()}; "
                           "cancel that change first\n")
    assert bkr("broker", "cancel", "1400", "--at", much_later.isoformat(), "--db", db_url).code == 0
    assert bkr("broker", "cancel", "1400", "--at", later.isoformat(), "--db", db_url).code == 0

    with engine.connect() as connection:
        timeline = registry.get_broker(connection, 1400, now).timeline
    assert [(c.status, c.effective_at) for c in timeline.changes] == [(BrokerStatus.ACTIVE, now - timedelta(days=1))]
    in_effect = bkr("broker", "cancel", "1400", "--at", (now - timedelta(days=1)).isoformat(), "--db", db_url)
    assert (in_effect.code, in_effect.err.startswith("error: the status change at ")) == (1, True)
    assert "is already in effect; record a new change instead" in in_effect.err
    missing = bkr("broker", "cancel", "1400", "--at", later.isoformat(), "--db", db_url)
    assert (missing.code, missing.err) == (1, f"error: no status change at {later.isoformat()}\n")


def test_a_scheduled_rate_can_be_cancelled(engine: Engine, db_url: str, bkr: Any) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    assert add_affiliate_cli(bkr, db_url).code == 0
    for rate, start in (("0.1", now - timedelta(days=3)), ("0.3", now + timedelta(days=5))):
        assert bkr("referral", "add", "--affiliate", "acct-1", "--code", "CW", "--rate", rate,
                   "--from", start.isoformat(), "--db", db_url).code == 0

    assert bkr("referral", "cancel", "--code", "CW", "--from", (now + timedelta(days=5)).isoformat(),
               "--db", db_url).code == 0

    with engine.connect() as connection:
        assert [(c.rate, c.effective_from) for c in registry.rate_timeline(connection, "CW").changes] == [
            (Decimal("0.1"), now - timedelta(days=3))]
    past = bkr("referral", "cancel", "--code", "CW", "--from", (now - timedelta(days=3)).isoformat(), "--db", db_url)
    assert past.code == 1 and "is already in effect" in past.err

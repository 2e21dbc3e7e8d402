"""Every change to the registry, every key and every import through `bkr` is an authenticated
operator's: refused without a key or with a role that may not, changing nothing; done with an
operator's key, it lands and the audit trail names that operator, with the values before and
after. A change reaching a closed month must be declared retroactive, with a reason."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    add_broker,
    add_code,
    add_users,
    close,
    fill,
    import_rows,
    operator_key,
    write_csv,
)
from sqlalchemy import Engine, func, select

from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus
from bkr.program import registry
from bkr.program.importer import import_file
from bkr.program.writer import RowResult, Tally
from bkr.store.tables import (
    affiliates,
    api_keys,
    audit_entries,
    broker_status_changes,
    brokers,
    fills,
    imports,
    operators,
    referral_codes,
    referral_rates,
    users,
)
from program_support import use_program

CREDENTIALS = ("error: this command needs an operator key with the operator role: pass --key or set "
               "BKR_OPERATOR_KEY\n")
MONTH_START = "2024-06-01T00:00:00Z"
AT = "2024-06-01T00:00:00+00:00"
LATER = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)  # a change scheduled in the future


@dataclass(frozen=True)
class World:
    engine: Engine
    db_url: str
    directory: Path
    olga: str  # an operator's key
    vera: str  # a viewer's key

    def key_id(self, token: str) -> str:
        return token.removeprefix("bkr_op_").split("_")[0]


@pytest.fixture
def world(engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """Broker 1400 active, 2200 pending, 4100 active with a suspension scheduled; affiliate
    acct-aff's code C at 20% with 30% scheduled; a users file and a fill file; an operator (olga)
    and a viewer (vera). No key in the environment."""
    monkeypatch.delenv("BKR_OPERATOR_KEY", raising=False)
    use_program(engine)
    add_broker(engine, 1400)
    add_broker(engine, 2200, status=None)
    add_broker(engine, 4100)
    add_code(engine, "C", "0.2")
    add_users(engine, "alice")
    with engine.begin() as connection:
        now = datetime.now(UTC)
        registry.change_broker_status(connection, 4100, BrokerStatus.SUSPENDED, LATER, now, actor="ops")
        registry.set_referral_rate(connection, "acct-aff", "C", Decimal("0.3"), LATER, now, actor="ops")
    (tmp_path / "users.csv").write_text("user_id,referral_code\nxavier,C\nyves,\n", encoding="utf-8")
    write_csv(tmp_path / "fills.csv", [fill("f-1", fee="1"), fill("f-2", price="abc"), fill("f-1", fee="1")])
    return World(engine, db_url, tmp_path, operator_key(engine, "operator", "olga"),
                 operator_key(engine, "viewer", "vera"))


def snapshot(engine: Engine) -> dict[str, int]:
    """How many rows each table a command of these could change holds."""
    tables = (brokers, broker_status_changes, affiliates, referral_codes, referral_rates, users, api_keys, fills,
              imports, operators, audit_entries)
    with engine.connect() as connection:
        return {table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for table in tables}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def users_digest(*lines: str) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def new_key(output: str) -> str:
    return f"key {json.loads(output)['api_key']}"


# Each command: its arguments, and the entries (action, subject, before, after) it should append,
# given the world and what it printed.
Expected = Callable[[World, str], list[tuple[str, str, Any, Any]]]
COMMANDS: dict[str, tuple[list[str], Expected]] = {
    "broker add": (["broker", "add", "--id", "3100", "--account", "acct-3100", "--name", "Terminal", "--type",
                    "trading_terminal"],
                   lambda w, out: [("broker.add", "broker 3100", None,
                                    {"account": "acct-3100", "name": "Terminal", "type": "trading_terminal"})]),
    "broker activate": (["broker", "activate", "2200", "--at", MONTH_START],
                        lambda w, out: [("broker.status", "broker 2200", {"status": "pending"},
                                         {"status": "active", "effective_at": AT})]),
    "broker suspend": (["broker", "suspend", "1400", "--at", MONTH_START],
                       lambda w, out: [("broker.status", "broker 1400", {"status": "active"},
                                        {"status": "suspended", "effective_at": AT})]),
    "broker terminate": (["broker", "terminate", "1400", "--at", MONTH_START],
                         lambda w, out: [("broker.status", "broker 1400", {"status": "active"},
                                          {"status": "terminated", "effective_at": AT})]),
    "broker cancel": (["broker", "cancel", "4100", "--at", LATER.isoformat()],
                      lambda w, out: [("broker.cancel", "broker 4100",
                                       {"status": "suspended", "effective_at": LATER.isoformat()}, None)]),
    "broker key create": (["broker", "key", "create", "1400", "--json"],
                          lambda w, out: [("key.create", new_key(out), None,
                                           {"kind": "broker", "owner": "1400", "role": None, "expires_at": None})]),
    "affiliate add": (["affiliate", "add", "--account", "acct-aff-2", "--name", "Second"],
                      lambda w, out: [("affiliate.add", "affiliate acct-aff-2", None, {"name": "Second"})]),
    "referral add": (["referral", "add", "--affiliate", "acct-aff", "--code", "C", "--rate", "0.25", "--from",
                      MONTH_START],
                     lambda w, out: [("referral.rate", "code C", {"rate": "0.2"},
                                      {"affiliate": "acct-aff", "rate": "0.25", "effective_from": AT})]),
    "referral cancel": (["referral", "cancel", "--code", "C", "--from", LATER.isoformat()],
                        lambda w, out: [("referral.cancel", "code C",
                                         {"rate": "0.3", "effective_from": LATER.isoformat()}, None)]),
    "user add": (["user", "add", "--id", "zed", "--referral-code", "C"],
                 lambda w, out: [("user.add", "user zed", None, {"users": 1, "with_code": 1, "first": ["zed"],
                                                                 "digest": users_digest("zed,C")})]),
    "user import": (["user", "import", "{dir}/users.csv"],
                    lambda w, out: [("user.add", "2 users", None,
                                     {"users": 2, "with_code": 1, "first": ["xavier", "yves"], "source": "users.csv",
                                      "digest": users_digest("xavier,C", "yves,")})]),
    "user key create": (["user", "key", "create", "sandbox-alice", "--json"],
                        lambda w, out: [("user.add", "user sandbox-alice", None,
                                         {"users": 1, "with_code": 0, "first": ["sandbox-alice"],
                                          "digest": users_digest("sandbox-alice,")}),
                                        ("key.create", new_key(out), None,
                                         {"kind": "user", "owner": "sandbox-alice", "role": None,
                                          "expires_at": None})]),
    "fills import": (["fills", "import", "{dir}/fills.csv", "--json"],
                     lambda w, out: [("fills.import", "import 1", None,
                                      {"file": "fills.csv", "sha256": sha256(w.directory / "fills.csv"),
                                       "bytes": (w.directory / "fills.csv").stat().st_size, "import_id": 1,
                                       "accepted": 1, "duplicates": 1, "conflicts": 0, "rejected": 1})]),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_change_needs_an_operators_key_and_is_on_the_trail_as_that_operators(world: World, bkr: Any,
                                                                               name: str) -> None:
    arguments, expected = COMMANDS[name]
    command = [argument.replace("{dir}", str(world.directory)) for argument in arguments] + ["--db", world.db_url]
    before = snapshot(world.engine)

    without = bkr(*command)
    assert (without.code, without.err) == (1, CREDENTIALS)
    as_viewer = bkr(*command, "--key", world.vera)
    assert (as_viewer.code, as_viewer.err) == (1, f"error: this needs the operator role; vera (key "
                                                  f"{world.key_id(world.vera)}) is a viewer\n")
    assert snapshot(world.engine) == before  # refused: nothing changed, not even the trail

    last = json.loads(bkr("audit", "--db", world.db_url, "--json", "--limit", "10000").out)["entries"][-1]["id"]
    done = bkr(*command, "--key", world.olga)
    assert done.code == 0, done.err

    entries = json.loads(bkr("audit", "--after", str(last), "--db", world.db_url, "--json").out)["entries"]
    assert [(e["actor"], e["action"], e["subject"], e["before"], e["after"]) for e in entries] == [
        ("olga", *entry) for entry in expected(world, done.out)]
    verified = json.loads(bkr("audit", "verify", "--db", world.db_url, "--json").out)
    assert (verified["ok"], verified["problems"]) == (True, [])


def test_revoking_a_key_and_disabling_an_operator_are_on_the_trail_with_their_actor(world: World, bkr: Any) -> None:
    root = operator_key(world.engine, "admin", "root")
    common = ("--db", world.db_url)
    made = json.loads(bkr("key", "create", "--operator", "vera", "--json", "--key", root, *common).out)
    assert bkr("key", "revoke", made["key_id"], *common).code == 1  # no key: refused
    assert bkr("key", "revoke", made["key_id"], "--key", root, *common).code == 0
    assert bkr("operator", "disable", "olga", "--key", world.olga, *common).code == 1  # not an admin
    assert bkr("operator", "disable", "olga", "--key", root, *common).code == 0

    entries = json.loads(bkr("audit", "--actor", "root", *common, "--json").out)["entries"]
    assert [(e["action"], e["subject"], e["before"], e["after"]) for e in entries] == [
        ("operator.add", "operator root", None, {"role": "admin", "expires_at": None}),
        ("key.create", f"key {world.key_id(root)}", None,
         {"kind": "operator", "owner": "root", "role": "admin", "expires_at": None}),
        ("key.create", f"key {made['key_id']}", None,
         {"kind": "operator", "owner": "vera", "role": "viewer", "expires_at": None}),
        ("key.revoke", f"key {made['key_id']}", {"kind": "operator", "owner": "vera", "role": "viewer",
                                                 "expires_at": None}, None),
        ("operator.disable", "operator olga", {"role": "operator", "working_keys": 1},
         {"disabled_at": entries[-1]["after"]["disabled_at"]}),
    ]
    disabled_at = datetime.fromisoformat(entries[-1]["after"]["disabled_at"])
    assert disabled_at == datetime.fromisoformat(entries[-1]["at"].replace("Z", "+00:00"))
    assert "token" not in json.dumps(entries) and made["token"] not in json.dumps(entries)
    verified = json.loads(bkr("audit", "verify", *common, "--json").out)
    assert (verified["ok"], verified["entries"], verified["problems"]) == (True, entries[-1]["id"], [])


def test_a_file_import_records_its_digest_size_and_counts_and_an_interrupted_one_nothing(
        world: World, bkr: Any) -> None:
    path = world.directory / "fills.csv"
    first = json.loads(bkr("fills", "import", str(path), "--json", "--key", world.olga, "--db", world.db_url).out)
    again = json.loads(bkr("fills", "import", str(path), "--json", "--key", world.olga, "--db", world.db_url).out)

    imported = json.loads(bkr("audit", "--action", "fills.import", "--db", world.db_url, "--json").out)["entries"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert [(e["actor"], e["subject"], e["after"]) for e in imported] == [
        ("olga", "import 1", {"file": "fills.csv", "sha256": digest, "bytes": len(path.read_bytes()),
                              "import_id": 1, **first}),
        ("olga", "import 2", {"file": "fills.csv", "sha256": digest, "bytes": len(path.read_bytes()),
                              "import_id": 2, **again}),
    ]
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (1, 0, 2)

    class Interrupted(Exception):
        pass

    def stop(_tally: Tally, _results: list[RowResult]) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        import_file(world.engine, path, clock=lambda: datetime.now(UTC), actor="olga", batch_size=1, on_batch=stop)
    entries = json.loads(bkr("audit", "--action", "fills.import", "--db", world.db_url, "--json").out)["entries"]
    assert len(entries) == 2  # the interrupted import is in `imports`, unfinished, and not on the trail


def test_a_status_change_reaching_a_closed_month_needs_retroactive_and_a_reason(world: World, bkr: Any,
                                                                               tmp_path: Path) -> None:
    import_rows(world.engine, tmp_path / "may.csv", [fill("f-may", fee="1")])
    close(world.engine, Month(2024, 5))
    suspend = ("broker", "suspend", "1400", "--at", "2024-05-20T00:00:00Z", "--key", world.olga,
               "--db", world.db_url)
    before = snapshot(world.engine)

    undeclared = bkr(*suspend)
    assert undeclared.code == 1
    assert undeclared.err.startswith("error: broker 1400 suspended from 2024-05-20T00:00:00+00:00 reaches 2024-05, "
                                     "which is closed")
    assert "--retroactive --reason TEXT" in undeclared.err and undeclared.err.count("\n") == 1
    no_reason = bkr(*suspend, "--retroactive")
    assert (no_reason.code, no_reason.err) == (1, "error: reason: a retroactive change needs a reason "
                                                  "(--reason TEXT)\n")
    assert snapshot(world.engine) == before

    declared = bkr(*suspend, "--retroactive", "--reason", "terms breached from the 20th")
    assert declared.code == 0, declared.err
    assert "recorded as retroactive (terms breached from the 20th)" in declared.err
    [entry] = json.loads(bkr("audit", "--action", "broker.status", "--actor", "olga", "--db", world.db_url,
                             "--json").out)["entries"]
    assert (entry["before"], entry["after"], entry["reason"]) == (
        {"status": "active"},
        {"status": "suspended", "effective_at": "2024-05-20T00:00:00+00:00", "retroactive_to": "2024-05"},
        "terms breached from the 20th")


def test_users_whose_fills_wait_in_a_closed_month_are_registered_only_declared_retroactive(
        world: World, bkr: Any, tmp_path: Path) -> None:
    import_rows(world.engine, tmp_path / "may.csv", [fill("f-may", user="walt", fee="1")])
    close(world.engine, Month(2024, 5))
    users_file = tmp_path / "late.csv"
    users_file.write_text("user_id\nwalt\n", encoding="utf-8")
    common = ("--key", world.olga, "--db", world.db_url)

    for command in (("user", "add", "--id", "walt"), ("user", "import", str(users_file))):
        undeclared = bkr(*command, *common)
        assert undeclared.code == 1
        assert undeclared.err.startswith("error: these users have fills waiting in closed months (1 of 2024-05)")
        assert "--retroactive --reason TEXT" in undeclared.err
        assert bkr(*command, "--retroactive", *common).code == 1  # no reason
    assert json.loads(bkr("fills", "awaiting", "--db", world.db_url, "--json").out)["awaiting_user_fills"] == 1

    declared = bkr("user", "import", str(users_file), "--retroactive", "--reason", "signed up in May", *common)
    assert declared.code == 0, declared.err
    [entry] = json.loads(bkr("audit", "--action", "user.add", "--actor", "olga", "--db", world.db_url,
                             "--json").out)["entries"]
    assert (entry["subject"], entry["after"]["source"], entry["after"]["retroactive_to"], entry["reason"]) == (
        "user walt", "late.csv", "2024-05", "signed up in May")

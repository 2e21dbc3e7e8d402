"""Named operators and their keys at the command line, on SQLite and PostgreSQL: the first admin,
`--key` checked as the API checks it (one line and exit status 1 when it is missing, wrong,
revoked, expired or of a role that may not), the key list, four eyes that hold, the keys of
earlier versions, and a key revoked at the command line refused by a running server."""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from integration_support import (
    MAY,
    NOW,
    add_broker,
    add_users,
    close,
    fill,
    import_rows,
    operator_key,
)
from sqlalchemy import Engine, column, insert, select, table, update

from bkr.domain.config import DEFAULT_CONFIG, ProgramConfig
from bkr.domain.errors import Unauthenticated
from bkr.domain.operators import Role
from bkr.program import keys, settlement
from bkr.program.close import close_month
from bkr.store import db
from bkr.store.tables import api_keys, periods, statement_approvals
from bkr.store.types import UtcTimestamp
from program_support import use_program
from serve_support import start_bkr_serve

FOUR_EYES = replace(DEFAULT_CONFIG, review_days=0, approvals_required=2)


def ok(result: Any) -> Any:
    assert result.code == 0, result.err
    return result


def refused(result: Any, message: str) -> None:
    """A refusal as every command gives one: exit status 1 and one line on stderr, nothing on stdout."""
    assert result.code == 1, (result.out, result.err)
    assert result.err.count("\n") == 1 and result.err.startswith("error: "), result.err
    assert message in result.err, result.err
    assert result.out == ""


def _closed_may(engine: Engine, tmp_path: Path, *, actor: str | None = None,
                config: ProgramConfig | None = None) -> None:
    use_program(engine, config)
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [fill("f-1", fee="10")])
    if actor is None:
        close(engine, MAY)
    else:
        close_month(engine, MAY, now=NOW, actor=actor)


# --- the first admin, and every operator after it ----------------------------------------------------


def test_the_first_admin_needs_no_key_and_every_operator_after_it_needs_an_admins(db_url: str, bkr: Any) -> None:
    first = ok(bkr("operator", "add", "root", "--role", "admin", "--db", db_url))
    root = first.out.strip()
    assert root.startswith(keys.TOKEN_PREFIX) and "first admin, added without a key" in first.err

    refused(bkr("operator", "add", "eve", "--role", "admin", "--db", db_url), "an admin's key is needed")
    refused(bkr("operator", "add", "alice", "--role", "approver", "--key", "bkr_op_x_y", "--db", db_url),
            "unknown operator key")
    added = json.loads(ok(bkr("operator", "add", "alice", "--role", "approver", "--key", root, "--json",
                              "--db", db_url)).out)
    assert (added["operator"], added["role"], added["expires_at"]) == ("alice", "approver", None)
    refused(bkr("operator", "add", "bob", "--role", "viewer", "--key", added["token"], "--db", db_url),
            "this needs the admin role; alice (key")
    refused(bkr("operator", "add", "alice", "--role", "viewer", "--key", root, "--db", db_url),
            "an operator named alice exists already")

    listed = json.loads(ok(bkr("operator", "list", "--json", "--key", root, "--db", db_url)).out)
    assert [(o["name"], o["role"], o["created_by"], o["active_keys"]) for o in listed] == [
        ("alice", "approver", "root", 1), ("root", "admin", None, 1)]


def test_the_first_operator_added_without_a_key_must_be_an_admin(db_url: str, bkr: Any) -> None:
    refused(bkr("operator", "add", "olga", "--role", "operator", "--db", db_url),
            "add the first admin (--role admin)")


def test_once_no_admin_key_works_an_admin_may_be_added_without_a_key_again(db_url: str, engine: Engine,
                                                                         bkr: Any) -> None:
    root = operator_key(engine, "admin", "root")
    operator_key(engine, "operator", "olga")  # working keys of other roles do not count
    ok(bkr("key", "revoke", root.removeprefix(keys.TOKEN_PREFIX).split("_")[0], "--key", root, "--db", db_url))
    again = ok(bkr("operator", "add", "root2", "--role", "admin", "--db", db_url))
    assert "first admin" in again.err


# --- --key: checked as the API checks it ----------------------------------------------------------------


COMMANDS = {  # each command that takes --key, and the role it needs
    "close": (["close", "--month", "2024-05"], Role.OPERATOR),
    "approve": (["approve", "--month", "2024-05"], Role.APPROVER),
    "settle": (["settle", "--month", "2024-05"], Role.APPROVER),
    "operator list": (["operator", "list"], Role.ADMIN),
    "key list": (["key", "list"], Role.ADMIN),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_without_a_working_key_a_command_says_why_in_one_line(db_url: str, engine: Engine, bkr: Any,
                                                              name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args, needed = COMMANDS[name]
    monkeypatch.delenv("BKR_OPERATOR_KEY", raising=False)
    good = operator_key(engine, "admin", "root")
    with engine.begin() as connection:
        revoked = keys.create_operator_key(connection, "root", NOW, actor="ops")
        keys.revoke_key(connection, revoked.key_id, NOW, actor="ops")
        past = datetime.now(UTC) - timedelta(days=2)
        expired = keys.create_operator_key(connection, "root", past, expires_at=past + timedelta(days=1), actor="ops")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")

    for key, message in (
            (None, f"this command needs an operator key with the {needed.value} role: pass --key or set "
                   "BKR_OPERATOR_KEY"),
            ("hunter2", "not an operator key: an operator key starts with bkr_op_"),
            ("bkr_op_000000000000_nothing", "unknown operator key"),
            (forged, "unknown operator key"),
            (revoked.token, f"operator key {revoked.key_id} was revoked"),
            (expired.token, f"operator key {expired.key_id} expired at {expired.expires_at.isoformat()}")):
        refused(bkr(*args, "--db", db_url, *(["--key", key] if key else [])), message)
    monkeypatch.setenv("BKR_OPERATOR_KEY", revoked.token)  # the environment is checked the same way
    refused(bkr(*args, "--db", db_url), "was revoked")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_role_may_run_what_the_matrix_allows(db_url: str, engine: Engine, bkr: Any, tmp_path: Path,
                                                  name: str) -> None:
    _closed_may(engine, tmp_path)
    args, needed = COMMANDS[name]
    for role in Role:
        result = bkr(*args, "--db", db_url, "--key", operator_key(engine, role.value))
        if role.allows(needed):
            ok(result)
        else:
            refused(result, f"this needs the {needed.value} role; {role.value}-")


def test_a_disabled_operators_keys_are_refused(db_url: str, engine: Engine, bkr: Any) -> None:
    root = operator_key(engine, "admin", "root")
    olga = operator_key(engine, "operator", "olga")
    ok(bkr("operator", "disable", "olga", "--key", root, "--db", db_url))
    refused(bkr("close", "--month", "2024-05", "--key", olga, "--db", db_url), "operator olga is disabled")
    refused(bkr("key", "create", "--operator", "olga", "--key", root, "--db", db_url), "olga is disabled")


# --- keys: listed, made, revoked ----------------------------------------------------------------------


def test_key_list_shows_every_key_with_its_owner_role_and_life(db_url: str, engine: Engine, bkr: Any) -> None:
    root = operator_key(engine, "admin", "root")
    add_broker(engine)
    with engine.begin() as connection:
        pair = keys.create_broker_key(connection, 1400, NOW, actor="ops")
    made = json.loads(ok(bkr("key", "create", "--operator", "root", "--expires", "30", "--json", "--key", root,
                             "--db", db_url)).out)
    ok(bkr("key", "revoke", pair.api_key, "--key", root, "--db", db_url))

    listed = {key["key_id"]: key for key in json.loads(ok(bkr("key", "list", "--json", "--key", root,
                                                              "--db", db_url)).out)}
    first = listed[root.removeprefix(keys.TOKEN_PREFIX).split("_")[0]]
    assert (first["kind"], first["owner"], first["role"], first["status"], first["expires_at"]) == \
        ("operator", "root", "admin", "active", None)
    assert first["last_used_at"] is not None  # the commands above used it
    second = listed[made["key_id"]]
    expires = datetime.fromisoformat(second["expires_at"])
    assert (second["owner"], second["last_used_at"], second["status"]) == ("root", None, "active")
    assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)
    broker = listed[pair.api_key]
    assert (broker["kind"], broker["owner"], broker["role"], broker["status"]) == ("broker", "1400", None, "revoked")
    assert broker["revoked_at"] is not None
    assert [key["kind"] for key in listed.values()] == ["operator", "operator", "broker"]
    refused(bkr("key", "revoke", pair.api_key, "--key", root, "--db", db_url), "is already revoked")
    refused(bkr("key", "revoke", "nothing", "--key", root, "--db", db_url), "no key nothing")
    refused(bkr("key", "create", "--operator", "root", "--expires", "0", "--key", root, "--db", db_url),
            "expires: 0 days is outside 1..3650")
    table = ok(bkr("key", "list", "--key", root, "--db", db_url)).out
    assert "revoked" in table and "root" in table


def test_a_keys_use_is_recorded_at_most_once_a_minute(engine: Engine) -> None:
    token = operator_key(engine, "viewer", "vera")
    moments = [NOW, NOW + timedelta(seconds=59), NOW + timedelta(minutes=1)]
    recorded = []
    for moment in moments:
        with engine.begin() as connection:
            operator = keys.authenticate_operator(connection, token, Role.VIEWER, moment)
            if keys.use_is_stale(operator.key_last_used_at, moment):
                keys.record_use(connection, operator.key_id, moment)
            recorded.append(connection.execute(select(api_keys.c.last_used_at)
                                               .where(api_keys.c.key_id == operator.key_id)).scalar())
    assert recorded == [NOW, NOW, NOW + timedelta(minutes=1)]


# --- four eyes that hold -----------------------------------------------------------------------------


def test_the_same_operator_approving_twice_leaves_the_statement_draft_and_says_so(
        db_url: str, engine: Engine, bkr: Any, tmp_path: Path) -> None:
    _closed_may(engine, tmp_path, config=FOUR_EYES)
    alice = operator_key(engine, "approver", "alice")
    with engine.begin() as connection:
        alices_other_key = keys.create_operator_key(connection, "alice", NOW, actor="ops").token
    common = ("--month", "2024-05", "--db", db_url)

    ok(bkr("approve", *common, "--key", alice))
    again = ok(bkr("approve", *common, "--key", alices_other_key))

    assert "broker 1400: alice had approved this statement already; it stays draft (1 of 2 approvals" in again.err
    assert "0 statement(s) approved by alice; 0 now final" in again.err
    settled = json.loads(ok(bkr("settle", *common, "--json", "--key", alice)).out)
    assert (settled["paid"], settled["not_final"]) == ([], [1400])
    with engine.connect() as connection:
        assert settlement.approvers(connection, MAY) == {1400: ["alice"]}
    assert "1 now final" in ok(bkr("approve", *common, "--key", operator_key(engine, "approver", "bob"))).err


def test_the_operator_who_closed_the_month_cannot_be_its_second_approver(db_url: str, engine: Engine, bkr: Any,
                                                                         tmp_path: Path) -> None:
    use_program(engine, FOUR_EYES)
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [fill("f-1", fee="10")])
    carol = operator_key(engine, "admin", "carol")  # an admin: a role that may both close and approve
    common = ("--month", "2024-05", "--db", db_url)
    ok(bkr("close", *common, "--key", carol))
    with engine.connect() as connection:
        assert connection.execute(select(periods.c.closed_by).where(periods.c.month == MAY)).scalar() == "carol"

    ok(bkr("approve", *common, "--key", operator_key(engine, "approver", "alice")))
    refused(bkr("approve", *common, "--key", carol),
            "carol closed 2024-05, so may not approve its statements: with 2 approvals required")

    with engine.connect() as connection:
        assert settlement.approvers(connection, MAY) == {1400: ["alice"]}
    assert "1 now final" in ok(bkr("approve", *common, "--key", operator_key(engine, "approver", "bob"))).err


def test_the_scheduled_close_bars_nobody(engine: Engine, tmp_path: Path) -> None:
    _closed_may(engine, tmp_path, config=FOUR_EYES)  # closed as `system`
    with engine.begin() as connection:
        assert settlement.barred_from_approving(connection, MAY) == {}
        assert settlement.approve(connection, 1400, MAY, "alice", NOW).status == "draft"


# --- keys of earlier versions ------------------------------------------------------------------------


def test_the_keys_of_an_earlier_version_keep_working_as_operators_named_after_their_role(
        db_url: str, engine: Engine, bkr: Any, tmp_path: Path) -> None:
    """A database of the version before operators: keys with a role, approvals by `key:<id>`. After
    the upgrade each key belongs to the operator named after its role, and approvals too."""
    _closed_may(engine, tmp_path)
    config = db._alembic_config(engine)
    command.downgrade(config, "0013")
    tokens = {"k0operator01": "bkr_op_k0operator01_secret-one", "k0viewer0001": "bkr_op_k0viewer0001_secret-two",
              "k0operator02": "bkr_op_k0operator02_secret-three"}
    old_keys = table("api_keys", column("key_id"), column("kind"), column("role"), column("token_sha256"),
                     column("created_at", UtcTimestamp()))
    with engine.begin() as connection:
        connection.execute(insert(old_keys), [
            {"key_id": key_id, "kind": "operator", "role": "viewer" if "viewer" in key_id else "operator",
             "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "created_at": NOW}
            for key_id, token in tokens.items()])
        connection.execute(insert(statement_approvals), [  # one operator now: counted once
            {"broker_id": 1400, "month": MAY, "approver": approver, "approved_at": NOW + timedelta(minutes=n)}
            for n, approver in enumerate(("key:k0operator01", "key:k0operator02"))])
    db.upgrade(engine)

    with engine.connect() as connection:
        found = {key_id: keys.authenticate_operator(connection, token, Role.VIEWER, NOW)
                 for key_id, token in tokens.items()}
        approvals = connection.execute(select(statement_approvals.c.approver)).scalars().all()
    assert {key_id: (o.name, o.role) for key_id, o in found.items()} == {
        "k0operator01": ("operator", Role.OPERATOR), "k0viewer0001": ("viewer", Role.VIEWER),
        "k0operator02": ("operator", Role.OPERATOR)}
    assert approvals == ["operator"]
    root = ok(bkr("operator", "add", "root", "--role", "admin", "--db", db_url)).out.strip()  # no admin yet
    listed = json.loads(ok(bkr("operator", "list", "--json", "--key", root, "--db", db_url)).out)
    assert [(o["name"], o["role"], o["active_keys"]) for o in listed] == [
        ("operator", "operator", 2), ("root", "admin", 1), ("viewer", "viewer", 1)]
    refused(bkr("close", "--month", "2024-06", "--key", tokens["k0viewer0001"], "--db", db_url),
            "this needs the operator role; viewer (key k0viewer0001) is a viewer")
    ok(bkr("key", "revoke", "k0operator01", "--key", root, "--db", db_url))  # until revoked
    with engine.connect() as connection, pytest.raises(Unauthenticated, match="was revoked"):
        keys.authenticate_operator(connection, tokens["k0operator01"], Role.VIEWER, NOW)


# --- a running server, and a key revoked at the command line --------------------------------------------


@pytest.mark.slow
def test_a_key_revoked_at_the_command_line_is_refused_by_a_running_server_at_its_next_request(
        db_url: str, engine: Engine, tmp_path: Path) -> None:
    root = operator_key(engine, "admin", "root")
    with engine.begin() as connection:
        viewer = keys.create_operator_key(connection, "root", NOW, actor="ops")
        expiring = keys.create_operator_key(connection, "root", NOW, expires_at=datetime.now(UTC) + timedelta(days=1),
                                            actor="ops")
    server = start_bkr_serve(db_url, tmp_path, "--no-scheduled-close")
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            def status(token: str) -> tuple[int, str]:
                answer = client.get("/v1/admin/periods", headers={"Authorization": f"Bearer {token}"})
                return answer.status_code, answer.json()["code"] if answer.status_code != 200 else "ok"

            assert status(viewer.token) == (200, "ok")
            assert status(expiring.token) == (200, "ok")
            revoked = subprocess.run([sys.executable, "-m", "bkr.cli", "key", "revoke", viewer.key_id, "--db", db_url],
                                     capture_output=True, text=True, timeout=120,
                                     env={**os.environ, "BKR_OPERATOR_KEY": root})
            assert revoked.returncode == 0, revoked.stderr
            assert status(viewer.token) == (401, "key_revoked")
            assert status(root) == (200, "ok")
            with engine.begin() as connection:  # its expiry reached, as the clock would reach it
                connection.execute(update(api_keys).where(api_keys.c.key_id == expiring.key_id)
                                   .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
            assert status(expiring.token) == (401, "key_expired")
    finally:
        server.stop()

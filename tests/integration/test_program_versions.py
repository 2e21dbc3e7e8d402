"""Program versions on both databases: the program's settings stored version by version, each from
a month; what a close, an import and settlement take from them; what is refused; and the first
version imported from `--config`."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    MAY,
    NOW,
    add_broker,
    add_users,
    close,
    count,
    fill,
    import_rows,
    operator_key,
)
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from bkr.domain.config import ProgramConfig
from bkr.domain.errors import Conflict, InvalidInput, PeriodClosed
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.program import settings_versions, settlement
from bkr.store.tables import fills, program_versions
from program_support import use_program


@pytest.fixture(autouse=True)
def operator(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands below run as an admin (BKR_OPERATOR_KEY), as an operator's shell would."""
    monkeypatch.setenv("BKR_OPERATOR_KEY", operator_key(engine, "admin", "root"))

JUNE = MAY.next()
RICHER_TERMS = """\
[program]
cap = "0.45"
rounding_quantum = "1"

[[tier_schedules]]
effective_from = "2024-05"
tiers = [["0", "0.25"], ["1000", "0.4"]]
"""


def write(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def test_a_close_after_program_apply_uses_the_stored_version_with_no_flag_and_names_it(
        engine: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    use_program(engine)  # version 1: the defaults
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "fills.csv", [
        fill("f-april", at="2024-04-10T00:00:00Z", price="1000", fee="10"),
        fill("f-may", price="1000", fee="10")])
    terms = write(tmp_path / "terms.toml", RICHER_TERMS)

    applied = bkr("program", "apply", str(terms), "--from", "2024-05", "--reason", "richer terms", "--db", db_url)
    april = bkr("close", "--month", "2024-04", "--db", db_url, "--json")  # no --config, either time
    may = bkr("close", "--month", "2024-05", "--db", db_url, "--json")

    assert applied.code == 0, applied.err
    assert "program version 2 applies from 2024-05" in applied.err
    assert "program.cap, program.rounding_quantum, tier_schedules" in applied.err
    (april_statement,) = json.loads(april.out)["statements"]
    (may_statement,) = json.loads(may.out)["statements"]
    assert (april_statement["program"]["version"], april_statement["broker_rate"], april_statement["payout"]) == (
        1, "0.2", "2.00")
    assert (may_statement["program"]["version"], may_statement["tier"], may_statement["broker_rate"]) == (
        2, "BKR 1", "0.4")
    assert may_statement["payout"] == "4"  # 10 USD × 0.4, rounded down to the version's quantum of 1
    document = json.loads(bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url).out)
    assert (document["format_version"], document["tier_volume"]) == (2, "1000")
    assert document["program"] == {
        "version": 2, "cap": "0.45", "rounding_quantum": "1", "prior_tiers": [],
        "tier_schedule": {"effective_from": "2024-05", "tiers": [
            {"tier": "BKR 0", "min_volume": "0", "rate": "0.25"}, {"tier": "BKR 1", "min_volume": "1000",
                                                                   "rate": "0.4"}]}}
    reconciled = bkr("reconcile", "--month", "2024-05", "--db", db_url)
    assert reconciled.code == 0, reconciled.out + reconciled.err


def test_a_version_for_a_closed_month_is_refused_and_nothing_is_stored(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [fill("f-1")])
    close(engine, MAY)

    with engine.begin() as connection, pytest.raises(PeriodClosed) as refused:
        settings_versions.apply_config(connection, ProgramConfig(review_days=5), MAY, "too late", "ops", NOW)

    assert str(refused.value) == ("from_month: 2024-05 is closed and its statements were issued under version 1; a "
                                  "new version applies from 2024-06 at the earliest")
    assert count(engine, program_versions) == 1
    with engine.begin() as connection:
        assert settings_versions.apply_config(connection, ProgramConfig(review_days=5), JUNE, "from June", "ops",
                                              NOW).number == 2


def test_a_version_before_the_latest_versions_month_is_refused(engine: Engine) -> None:
    use_program(engine)
    with engine.begin() as connection:
        settings_versions.apply_config(connection, ProgramConfig(cap=D("0.4")), JUNE, "June on", "ops", NOW)
    with engine.begin() as connection, pytest.raises(InvalidInput, match=r"^from_month: 2024-05 is before 2024-06"):
        settings_versions.apply_config(connection, ProgramConfig(cap=D("0.3")), MAY, "May on", "ops", NOW)
    assert count(engine, program_versions) == 2


def test_an_invalid_version_is_refused_whole_and_nothing_is_stored(engine: Engine, db_url: str, bkr: Any,
                                                                    tmp_path: Path) -> None:
    use_program(engine)
    bad = write(tmp_path / "bad.toml", '[program]\ncap = "0.45"\nreview_days = 2\n\n[[tier_schedules]]\n'
                                       'effective_from = "2024-06"\ntiers = [["0", "0.25"], ["1000", "1.5"]]\n')
    floats = write(tmp_path / "floats.toml", "[program]\ncap = 0.45\n")

    refused = bkr("program", "apply", str(bad), "--from", "2024-06", "--reason", "typo", "--db", db_url)
    float_refused = bkr("program", "apply", str(floats), "--from", "2024-06", "--reason", "typo", "--db", db_url)

    assert (refused.code, refused.err) == (1, "error: tier_schedules[0]: tier rate out of [0, 1]: 1.5\n")
    assert float_refused.code == 1
    assert float_refused.err == 'error: program.cap: write 0.45 as a string, e.g. "0.45" (floats are not exact)\n'
    history = json.loads(bkr("program", "history", "--db", db_url, "--json").out)
    assert [version["version"] for version in history] == [1]
    assert history[0]["settings"]["program"]["cap"] == "0.5"


def test_the_first_command_imports_the_config_as_version_1_and_says_so_once(db_url: str, bkr: Any,
                                                                             tmp_path: Path) -> None:
    config = write(tmp_path / "bkr.toml", '[program]\ncap = "0.4"\nstart = "2024-01"\n\n[service]\nport = 8123\n')

    first = bkr("program", "show", "--month", "2024-05", "--db", db_url, "--config", str(config), "--json")
    second = bkr("program", "show", "--month", "2024-05", "--db", db_url, "--config", str(config), "--json")

    assert first.err == (f"program settings: none were stored yet; imported {config} as program version 1, in force "
                         "from 2024-01 (see them with `bkr program show`; change them with `bkr program apply`)\n")
    assert second.err == ""  # said once; the file's settings are the stored ones
    shown = json.loads(first.out)
    assert (shown["version"], shown["from_month"], shown["reason"], shown["created_by"]) == (
        1, "2024-01", f"imported from {config}", "system")
    assert (shown["settings"]["program"]["cap"], shown["settings"]["program"]["start"]) == ("0.4", "2024-01")
    assert json.loads(second.out) == shown


def test_without_a_config_the_defaults_are_imported(db_url: str, bkr: Any) -> None:
    shown = bkr("program", "show", "--db", db_url, "--json")
    assert "imported defaults as program version 1, in force from 2000-01" in shown.err
    assert json.loads(shown.out)["reason"] == "imported from defaults"


def test_a_config_whose_program_differs_from_the_stored_version_is_ignored_with_a_warning(
        engine: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [fill("f-1", fee="10")])  # version 1: the defaults
    config = write(tmp_path / "bkr.toml", '[program]\ncap = "0.1"\n')

    closed = bkr("close", "--month", "2024-05", "--db", db_url, "--config", str(config), "--json")

    assert closed.code == 0
    assert closed.err == (f"warning: the program settings in {config} differ from program version 1 (in force from "
                          f"2000-01), which bkr uses: the file's are ignored. To use them: bkr program apply "
                          f"{config} --from YYYY-MM --reason TEXT\n")
    (statement,) = json.loads(closed.out)["statements"]
    assert (statement["program"]["version"], statement["payout"]) == (1, "2.00")  # 20%, not capped at 10%
    same = write(tmp_path / "same.toml", "[program]\nreview_days = 3\n\n[service]\nport = 8123\n")
    assert bkr("close", "--month", "2024-05", "--db", db_url, "--config", str(same)).err == ""
    moved = write(tmp_path / "moved.toml", '[program]\nstart = "2024-01"\n')  # the program began in 2000-01
    assert bkr("close", "--month", "2024-05", "--db", db_url, "--config", str(moved)).err.startswith("warning: ")


def test_a_usd_rate_change_from_a_month_applies_only_from_that_month(engine: Engine, tmp_path: Path) -> None:
    use_program(engine, ProgramConfig(usd_rates={"USDC": D(1), "EUR": D("1.08")}))
    with engine.begin() as connection:
        settings_versions.apply_config(connection, ProgramConfig(usd_rates={"USDC": D(1), "EUR": D("1.10")}), JUNE,
                                       "the euro from June", "ops", NOW)
    add_broker(engine)
    add_users(engine, "alice")

    import_rows(engine, tmp_path / "fills.csv", [
        fill("f-may-end", at="2024-05-31T23:59:59Z", fee="10", fee_symbol="EUR"),
        fill("f-june", at="2024-06-01T00:00:00Z", fee="10", fee_symbol="EUR")])

    with engine.connect() as connection:
        fee_usd = dict(connection.execute(select(fills.c.fill_id, fills.c.fee_usd)).all())
    assert fee_usd == {"f-may-end": D("10.8"), "f-june": D("11")}
    with engine.begin() as connection, pytest.raises(Conflict) as refused:  # June holds fills priced at 1.10
        settings_versions.apply_config(connection, ProgramConfig(usd_rates={"USDC": D(1), "EUR": D("1.2")}), JUNE,
                                       "again", "ops", NOW)
    assert (refused.value.code, refused.value.field) == ("fills_priced", "usd_rates")
    assert str(refused.value).startswith("usd_rates: fills of 2024-06 are already stored, priced at version 2's "
                                         "rates; a change of USD rates applies from a month without fills (2024-07 ")


def test_approvals_and_review_days_are_the_months_version(engine: Engine, tmp_path: Path) -> None:
    use_program(engine, ProgramConfig(review_days=0, approvals_required=2))
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [fill("f-1")])
    close(engine, MAY)
    use_program(engine, ProgramConfig(review_days=1, approvals_required=1), from_month=JUNE)

    with engine.begin() as connection:
        (approval,) = settlement.approve_month(connection, MAY, "alice", NOW)
        required = settlement.approvals_required(connection, MAY)
    later = settlement.settle_month(engine, MAY, NOW.replace(year=NOW.year + 1))

    assert (approval.status, approval.approvals, required) == ("draft", 1, 2)  # May's version, not the latest
    assert later.not_final == [1400]  # and no review window: approvals only


def test_program_versions_are_append_only(engine: Engine) -> None:
    use_program(engine)
    for statement in ("UPDATE program_versions SET reason = 'rewritten'", "DELETE FROM program_versions"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    with engine.connect() as connection:
        assert connection.execute(select(program_versions.c.reason)).scalars().all() == ["imported from tests"]


def test_a_month_before_the_first_version_is_judged_by_it(engine: Engine, tmp_path: Path) -> None:
    use_program(engine, ProgramConfig(start=Month(2024, 5)))
    add_broker(engine)
    add_users(engine, "alice")

    tally = import_rows(engine, tmp_path / "april.csv", [fill("f-april", at="2024-04-30T23:59:59Z")])

    assert tally.rejected == 1
    assert count(engine, fills) == 0
    with engine.begin() as connection, pytest.raises(InvalidInput, match="cannot move its start"):
        settings_versions.apply_config(connection, ProgramConfig(start=Month(2024, 4)), JUNE, "earlier", "ops",
                                       datetime(2024, 6, 1, tzinfo=UTC))

"""The command line refuses what it cannot use in one line on stderr, with exit status 1, and never a
traceback: text the registry refuses (the API's rule), numbers past any bound, files that are not
what they should be, databases that are not databases, addresses a server cannot listen on.

Each case here once ended in a traceback, or in something other than a refusal: they were found by
running every command with hostile arguments."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from integration_support import operator_key
from sqlalchemy import Engine

# Text the registry refuses wherever it comes from: control characters (C0, DEL, C1), a line
# separator, a bidirectional override, a byte that is not UTF-8 (how the shell hands it over), too long.
HOSTILE_TEXT = {"escape": "a\x1b[31mred", "newline": "a\nb", "tab": "a\tb", "DEL": "a\x7f", "C1": "a\x85b",
                "line separator": "a\u2028b", "RTL override": "abc\u202e", "not UTF-8": os.fsdecode(b"a\xffb"),
                "257 characters": "x" * 257}


@pytest.fixture(autouse=True)
def operator(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test on a database runs its commands as an operator (BKR_OPERATOR_KEY), so that what they
    refuse is the input and not the missing key."""
    if "db_url" in request.fixturenames:
        engine = request.getfixturevalue("engine")
        monkeypatch.setenv("BKR_OPERATOR_KEY", operator_key(engine, "operator", "ops"))


def refused(result: Any) -> str:
    """The one line a refusal prints, once it is checked to be one line and status 1."""
    lines = result.err.splitlines()
    assert (result.code, len(lines)) == (1, 1), (result.code, result.err)
    assert lines[0].startswith("error: ") and "Traceback" not in result.err + result.out
    return str(lines[0])


@pytest.mark.parametrize("kind", HOSTILE_TEXT)
def test_the_registry_commands_refuse_the_text_the_api_refuses(bkr: Any, db_url: str, kind: str) -> None:
    text = HOSTILE_TEXT[kind]
    assert bkr("affiliate", "add", "--account", "aff-1", "--name", "Aff", "--db", db_url).code == 0
    for field, command in [
        ("name", ("broker", "add", "--id", "1400", "--account", "acct-1", "--name", text, "--type", "trading_bot")),
        ("account", ("broker", "add", "--id", "1400", "--account", text, "--name", "ccxt", "--type", "trading_bot")),
        ("account", ("affiliate", "add", "--account", text, "--name", "n")),
        ("name", ("affiliate", "add", "--account", "aff-2", "--name", text)),
        ("code", ("referral", "add", "--affiliate", "aff-1", "--code", text, "--rate", "0.1")),
        ("affiliate", ("referral", "add", "--affiliate", text, "--code", "C", "--rate", "0.1")),
        ("user_id", ("user", "add", "--id", text)),
        ("referral_code", ("user", "add", "--id", "alice", "--referral-code", text)),
        ("user_id", ("user", "key", "create", text)),
    ]:
        line = refused(bkr(*command, "--db", db_url))
        assert line.startswith(f"error: {field}: "), line
    assert json.loads(bkr("broker", "list", "--json", "--db", db_url).out) == []
    assert json.loads(bkr("affiliate", "list", "--json", "--db", db_url).out) == [
        {"account": "aff-1", "name": "Aff", "codes": []}]


def test_user_import_refuses_a_row_the_registry_refuses_and_reads_a_byte_order_mark(
        bkr: Any, db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "users.csv"
    bad.write_bytes(b"user_id,referral_code\nalice,\nb\x1bob,\n")
    assert refused(bkr("user", "import", str(bad), "--db", db_url)) == (
        "error: user_id: a control character (U+001B) at character 2; names, accounts, codes and ids are "
        "printable text")
    marked = tmp_path / "marked.csv"
    marked.write_bytes("\ufeffuser_id,referral_code\nalice,\nbob,\n".encode())
    imported = bkr("user", "import", str(marked), "--db", db_url, "--json")
    assert (imported.code, json.loads(imported.out)) == (0, {"users": 2, "new": 2})


def test_names_are_printed_as_they_are_written(bkr: Any, db_url: str) -> None:
    """`[/]` once stopped `bkr broker list` (the console read it as markup); `[bold]` styled the text."""
    for broker_id, name in (("1400", "[/]ccxt"), ("2200", "[bold]hb[/]")):
        assert bkr("broker", "add", "--id", broker_id, "--account", f"acct-{broker_id}", "--name", name,
                   "--type", "trading_bot", "--db", db_url).code == 0
    listed = bkr("broker", "list", "--db", db_url)
    shown = bkr("broker", "show", "1400", "--db", db_url)
    added = bkr("affiliate", "add", "--account", "[/]aff", "--name", "n", "--db", db_url)
    assert (listed.code, shown.code, added.code) == (0, 0, 0)
    assert "[/]ccxt" in listed.out and "[bold]hb[/]" in listed.out
    assert shown.out.startswith("[/]ccxt (broker 1400")
    assert added.err == "affiliate [/]aff enrolled\n"


@pytest.mark.parametrize("number", [str(2**63), str(2**64), "65536", "0"])
def test_a_broker_id_out_of_range_is_refused_before_the_database(bkr: Any, db_url: str, number: str) -> None:
    """2^63 reached SQLite, which cannot even compare it: an OverflowError and a traceback."""
    expected = f"error: broker id: {number} is outside 1..65535"
    for command in (("broker", "activate", number), ("broker", "suspend", number), ("broker", "terminate", number),
                    ("broker", "show", number), ("broker", "key", "create", number),
                    ("approve", "--month", "2024-05", "--broker", number),
                    ("statement", "--broker", number, "--month", "2024-05")):
        assert refused(bkr(*command, "--db", db_url)) == expected, command


def test_numbers_past_their_bounds_are_refused_naming_the_flag(bkr: Any, db_url: str, tmp_path: Path) -> None:
    fills = tmp_path / "fills.csv"
    fills.write_text("fill_id\n")
    for size in ("0", "-1", str(2**63)):  # 0 once imported nothing, and said so as a success
        assert refused(bkr("fills", "import", str(fills), "--batch-size", size, "--db", db_url)) == (
            f"error: --batch-size: {size} is outside 1..1000000")
    assert refused(bkr("fills", "rejected", "--limit", str(2**63), "--db", db_url)) == (
        f"error: limit: {2**63} is outside 1..100000")


def test_a_rate_or_a_time_that_is_not_one_is_refused_naming_the_flag(bkr: Any, db_url: str) -> None:
    assert bkr("affiliate", "add", "--account", "aff-1", "--name", "Aff", "--db", db_url).code == 0
    assert bkr("broker", "add", "--id", "1400", "--account", "acct-1", "--name", "ccxt", "--type", "trading_bot",
               "--db", db_url).code == 0
    referral = ("referral", "add", "--affiliate", "aff-1", "--code", "C")
    assert refused(bkr(*referral, "--rate", "abc", "--db", db_url)) == "error: --rate: not a number: 'abc'"
    assert refused(bkr(*referral, "--rate", "0.1", "--from", "0001-01-01T00:00:00+00:01", "--db", db_url)) == (
        "error: --from: not a time bkr can hold: '0001-01-01T00:00:00+00:01'")
    assert refused(bkr("broker", "activate", "1400", "--at", "2026-02-30T00:00:00Z", "--db", db_url)) == (
        "error: --at: not an ISO 8601 time: '2026-02-30T00:00:00Z'")


def test_a_month_in_other_digits_is_not_a_month(bkr: Any, db_url: str) -> None:
    """`int()` reads "２０２６" as 2026: the full-width month closed 2026-01."""
    assert refused(bkr("close", "--month", "\uff12\uff10\uff12\uff16-01", "--db", db_url)) == (
        "error: not a month (YYYY-MM): '２０２６-01'")


def test_files_that_are_not_what_a_command_reads_are_refused_in_one_line(bkr: Any, db_url: str,
                                                                        tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("user_id,referral_code\nj\xe9r\xf4me,\n".encode("latin-1"))
    wide = tmp_path / "wide.csv"
    wide.write_bytes(b"user_id,referral_code\n" + b"a" * 200_000 + b",\n")
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert refused(bkr("user", "import", str(tmp_path), "--db", db_url)) == (
        f"error: {tmp_path}: is a directory, not a file")
    assert refused(bkr("user", "import", str(latin1), "--db", db_url)) == "error: latin1.csv: line 2: not UTF-8 text"
    assert refused(bkr("user", "import", str(wide), "--db", db_url)).startswith(
        "error: wide.csv: not a CSV of users (field larger than field limit")
    assert refused(bkr("user", "import", "/dev/null", "--db", db_url)) == "error: /dev/null: not a regular file"
    assert refused(bkr("fills", "import", str(tmp_path), "--db", db_url)) == (
        f"error: {tmp_path}: is a directory, not a file")
    assert refused(bkr("statement", "verify", str(deep))) == (
        f"error: {deep}: not a signed statement (its JSON is nested too deeply)")


def test_a_file_name_that_is_not_utf8_is_imported_and_named_with_its_bytes_escaped(
        bkr: Any, db_url: str, tmp_path: Path) -> None:
    name = os.fsdecode(b"fills-\xff.csv")
    (tmp_path / name).write_text("fill_id,order_id,user_id,symbol,market_type,side,price,quantity,fee,fee_symbol,"
                                 "is_maker,timestamp\nf-1,o-1,alice,SOL_USDC,SPOT,Bid,100,1,0.1,USDC,false,"
                                 "2024-05-10T12:00:00Z\n")
    imported = bkr("fills", "import", str(tmp_path / name), "--json", "--db", db_url)
    assert (imported.code, json.loads(imported.out)["accepted"]) == (0, 1)


def test_a_config_file_that_cannot_be_read_is_refused_in_one_line(bkr: Any, db_url: str, engine: Engine,
                                                                  tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes("[program]\n# caf\xe9\n".encode("latin-1"))
    huge = tmp_path / "huge.toml"
    huge.write_text("[program]\nfuture_tolerance_seconds = 99999999999999999999\n")
    command = ("close", "--month", "2024-05", "--db", db_url, "--key", operator_key(engine, "operator"), "--config")
    assert refused(bkr(*command, str(latin1))) == f"error: config: {latin1}: not UTF-8 text"
    assert refused(bkr(*command, str(tmp_path))) == f"error: config: {tmp_path}: Is a directory"
    assert refused(bkr(*command, str(huge))) == (
        "error: program.future_tolerance_seconds: 99999999999999999999 is not in 0..86400")


def test_a_database_url_on_a_file_that_is_no_database_is_refused_in_one_line(bkr: Any, tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    other.write_text("not a database\n" * 100)
    for command in (("broker", "list"), ("db", "upgrade")):
        assert refused(bkr(*command, "--db", f"sqlite:///{other}")) == "error: database: file is not a database"


def test_serve_refuses_an_address_it_cannot_listen_on_before_it_announces_itself(bkr: Any, db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert refused(bkr("serve", "--port", port, "--db", db_url)).startswith(
            f"error: --port: cannot listen on 127.0.0.1:{port} (")
    assert refused(bkr("serve", "--host", "not a host!", "--db", db_url)).startswith(
        "error: --host: cannot listen on 'not a host!' (")
    assert refused(bkr("serve", "--close-grace-minutes", str(2**63), "--db", db_url)) == (
        f"error: service.close_grace_minutes: {2**63} is more than 44640")


def test_a_venue_url_that_is_not_one_is_refused_in_one_line(bkr: Any, db_url: str) -> None:
    assert refused(bkr("simulate", "--live", "--url", "http://[::1", "--db", db_url)).startswith(
        "error: --url: not a URL: 'http://[::1'")
    assert refused(bkr("simulate", "--live", "--url", "ftp://venue", "--db", db_url)) == (
        "error: --url: 'ftp://venue' is not http(s)://HOST[:PORT], the address of a running `bkr serve`")


def test_an_argument_that_is_not_utf8_is_refused_in_one_line_by_the_real_command(db_url: str) -> None:
    """The shell hands `bkr` bytes: one that is not UTF-8 reached the database, which cannot store it."""
    done = subprocess.run([sys.executable, "-m", "bkr.cli", "user", "add", "--id", b"al\xffce", "--db", db_url],
                          capture_output=True, timeout=120)
    assert (done.returncode, done.stderr) == (
        1, b"error: user_id: a byte that is not UTF-8 (U+DCFF) at character 3; names, accounts, codes and ids are "
           b"printable text\n")


def test_a_file_the_command_may_not_read_is_refused_in_one_line(db_url: str, tmp_path: Path) -> None:
    """Not Typer's usage error (status 2 and a box) but a refusal like any other. As root, the command
    runs without the capabilities that let root read any file."""
    secret = tmp_path / "users.csv"
    secret.write_text("user_id\nalice\n")
    secret.chmod(0)
    as_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    for command in (("user", "import"), ("fills", "import")):
        done = subprocess.run([*as_user, sys.executable, "-m", "bkr.cli", *command, str(secret), "--db", db_url],
                              capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stderr) == (1, f"error: {secret}: cannot be read (Permission denied)\n")


def test_a_lookup_by_text_that_is_not_utf8_is_refused_in_one_line(bkr: Any, db_url: str) -> None:
    """A name to look up (not to store) is not held to the registry's rule, but a byte the shell could not
    decode still cannot reach the database: it once did, and the driver's encoding error was a traceback."""
    name = os.fsdecode(b"a\xffb")
    expected = "error: not UTF-8 text: b'a\\xffb'; names, codes and ids are UTF-8"
    assert refused(bkr("fills", "awaiting", "--after", name, "--db", db_url)) == expected
    assert refused(bkr("referral", "cancel", "--code", name, "--from", "2099-01-01T00:00:00Z", "--db", db_url)) == (
        expected)

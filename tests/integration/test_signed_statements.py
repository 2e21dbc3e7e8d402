"""Signed statements through the command line, on SQLite and PostgreSQL: the statement key, the
signed envelope over the stored bytes, `bkr statement verify`, and the HTML and older formats."""

import base64
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from integration_support import MAY, add_broker, add_code, add_users, close, fill, import_rows
from sqlalchemy import Engine, select

from bkr.domain.statement_document import parse_statement
from bkr.domain.statement_signing import new_statement_key, sign_statement
from bkr.program.close import stored_statement
from bkr.program.exports import StatementFormat, render_statement, statement_csv
from bkr.program.statement_signing import load_signing_key
from bkr.store.tables import statement_keys

ODD_USER = 'zoë <script>alert("x")</script> & co'  # not ASCII, not HTML-safe


@pytest.fixture(autouse=True)
def no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the shell running the tests may have set does not reach these commands."""
    for name in ("BKR_DATABASE_URL", "BKR_STATEMENT_KEY_FILE", "BKR_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_may(engine: Engine, tmp_path: Path) -> Engine:
    """May 2024 closed with three brokers: 1400 (alice spot, bob perpetuals with a 15% code, a user
    whose id is not HTML-safe), 2200 and 3100 with one fill each."""
    for broker_id in (1400, 2200, 3100):
        add_broker(engine, broker_id)
    add_code(engine, "BOB-CODE", "0.15")
    add_users(engine, "alice", ODD_USER)
    add_users(engine, "bob", code="BOB-CODE")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", user="alice", price="150", quantity="60000", fee="900.1"),
        fill("f-2", user="bob", market="PERP", price="100", quantity="60000", fee="1200.00999"),
        fill("f-3", user=ODD_USER, price="10", quantity="3", fee="0.0123"),
        fill("f-4", user="alice", broker=2200, price="20", quantity="5", fee="0.05"),
        fill("f-5", user="bob", broker=3100, market="PERP", price="30", quantity="7", fee="0.21"),
    ])
    close(engine, MAY)
    return engine


@pytest.fixture
def key_file(bkr: Any, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A statement key made with `bkr statement-key create`, configured through BKR_STATEMENT_KEY_FILE."""
    path = tmp_path / "statement.key"
    result = bkr("statement-key", "create", "--out", str(path), "--db", db_url)
    assert result.code == 0, result.err
    monkeypatch.setenv("BKR_STATEMENT_KEY_FILE", str(path))
    return path


def signed(bkr: Any, db_url: str, broker: int = 1400, *flags: str) -> dict[str, Any]:
    result = bkr("statement", "--broker", str(broker), "--month", "2024-05", "--format", "signed", "--db", db_url,
                 *flags)
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def stored(engine: Engine, broker: int = 1400) -> str:
    with engine.connect() as connection:
        return stored_statement(connection, broker, MAY)


def write(path: Path, envelope: dict[str, Any]) -> Path:
    path.write_text(json.dumps(envelope, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


# --- the statement key ------------------------------------------------------------------------------


def test_a_new_statement_key_is_a_file_only_its_owner_reads_and_a_published_public_key(
        bkr: Any, engine: Engine, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "statement.key"

    result = bkr("statement-key", "create", "--out", str(path), "--db", db_url, "--json")

    assert result.code == 0, result.err
    made = json.loads(result.out)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with engine.connect() as connection:
        rows = connection.execute(select(statement_keys.c.key_id, statement_keys.c.public_key,
                                         statement_keys.c.retired_at)).all()
    assert [tuple(r) for r in rows] == [(made["key_id"], made["public_key"], None)]
    from bkr.domain.statement_signing import statement_key_from_seed
    assert statement_key_from_seed(path.read_text()).public_key == made["public_key"]
    assert "seed" not in result.out and path.read_text().strip() not in result.out + result.err


def test_an_existing_key_file_is_never_overwritten(bkr: Any, engine: Engine, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "statement.key"
    path.write_text("precious\n")

    result = bkr("statement-key", "create", "--out", str(path), "--db", db_url)

    assert result.code == 1 and "exists" in result.err
    assert path.read_text() == "precious\n"
    with engine.connect() as connection:
        assert connection.execute(select(statement_keys)).all() == []


# --- signing ----------------------------------------------------------------------------------------


def test_the_signed_statement_is_the_stored_document_signed_over_its_exact_bytes(
        bkr: Any, closed_may: Engine, db_url: str, key_file: Path) -> None:
    envelope = signed(bkr, db_url)
    stored_text = stored(closed_may)

    reserialized = json.dumps(envelope["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert reserialized.encode("utf-8") == stored_text.encode("utf-8")  # the bytes stored, byte for byte
    assert json.dumps(ODD_USER, ensure_ascii=False) in stored_text  # UTF-8 as is, not \u escapes
    signature = envelope["signature"]
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"]))
    public.verify(base64.b64decode(signature["value"]), stored_text.encode("utf-8"))  # raises if not
    assert set(signature) == {"algorithm", "key_id", "public_key", "value"}


def test_an_untouched_statement_verifies_and_prints_its_figures(
        bkr: Any, closed_may: Engine, db_url: str, key_file: Path, tmp_path: Path) -> None:
    envelope = signed(bkr, db_url)
    path = write(tmp_path / "statement.json", envelope)
    document = envelope["statement"]

    with_db = bkr("statement", "verify", str(path), "--db", db_url)
    alone = bkr("statement", "verify", str(path))

    assert with_db.code == 0, with_db.out + with_db.err
    assert with_db.out.startswith("OK: the statement of broker 1400 for 2024-05 is signed")
    assert f"key {envelope['signature']['key_id']}: one of the exchange's published statement keys" in with_db.out
    assert f"their payouts sum to {document['payout_exact']} = payout_exact" in with_db.out
    assert f"payout     {document['payout']} = {document['payout_exact']} rounded down to 0.01" in with_db.out
    assert alone.code == 0 and "not checked against the exchange's published keys" in alone.out


@pytest.mark.parametrize(("where", "named"), [
    ("line", "line 1 (alice SPOT 2024-05 regular): payout_exact"),
    ("total", "payout: "),
])
def test_a_statement_with_one_digit_changed_fails_and_names_the_problem(
        bkr: Any, closed_may: Engine, db_url: str, key_file: Path, tmp_path: Path, where: str, named: str) -> None:
    envelope = signed(bkr, db_url)
    figures = envelope["statement"]["lines"][0] if where == "line" else envelope["statement"]
    name = "payout_exact" if where == "line" else "payout"
    figures[name] = figures[name][:-1] + str((int(figures[name][-1]) + 1) % 10)  # its last digit
    path = write(tmp_path / "tampered.json", envelope)

    result = bkr("statement", "verify", str(path), "--db", db_url)

    assert result.code == 1
    assert result.out.startswith("FAILED: the statement of broker 1400 for 2024-05 does not verify")
    assert "  - signature: does not verify" in result.out
    assert f"  - {named}" in result.out


def test_a_statement_signed_with_a_key_the_exchange_did_not_publish_is_not_an_exchange_key(
        bkr: Any, closed_may: Engine, db_url: str, key_file: Path, tmp_path: Path) -> None:
    stranger = new_statement_key()
    path = write(tmp_path / "forged.json", sign_statement(stored(closed_may), stranger))

    with_db = bkr("statement", "verify", str(path), "--db", db_url)
    alone = bkr("statement", "verify", str(path))

    assert with_db.code == 1
    assert f"  - key: {stranger.key_id} is not an exchange key" in with_db.out
    assert alone.code == 0  # the signature itself is sound: only the published keys tell it apart


def test_verify_json_prints_the_figures_and_problems(
        bkr: Any, closed_may: Engine, db_url: str, key_file: Path, tmp_path: Path) -> None:
    envelope = signed(bkr, db_url, 2200)
    path = write(tmp_path / "statement.json", envelope)

    result = bkr("statement", "verify", str(path), "--db", db_url, "--json")

    assert result.code == 0
    report = json.loads(result.out)
    assert (report["ok"], report["broker_id"], report["key"], report["problems"]) == (True, 2200, "published", [])
    assert (report["payout"], report["quantum"]) == (envelope["statement"]["payout"], "0.01")


def test_verify_reads_standard_input_and_refuses_what_is_not_json(
        bkr: Any, closed_may: Engine, db_url: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("not json")

    assert bkr("statement", "verify", str(junk)).code == 1
    missing = bkr("statement", "verify", str(tmp_path / "nothing.json"))
    assert missing.code == 1 and "no such file" in missing.err
    nowhere = bkr("statement", "verify", str(junk), "--db", f"sqlite:///{tmp_path / 'absent.db'}")
    assert nowhere.code == 1 and not (tmp_path / "absent.db").exists()


def test_without_a_statement_key_the_signed_format_says_how_to_make_one(
        bkr: Any, closed_may: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BKR_STATEMENT_KEY_FILE", raising=False)

    result = bkr("statement", "--broker", "1400", "--month", "2024-05", "--format", "signed", "--db", db_url)

    assert result.code == 1
    assert "no statement key is configured" in result.err and "bkr statement-key create" in result.err
    assert "BKR_STATEMENT_KEY_FILE" in result.err and "signing_key_file" in result.err


def test_the_key_file_may_be_named_in_the_config_relative_to_it(
        bkr: Any, closed_may: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BKR_STATEMENT_KEY_FILE", raising=False)
    keys = tmp_path / "keys"
    keys.mkdir()
    assert bkr("statement-key", "create", "--out", str(keys / "current.key"), "--db", db_url).code == 0
    config = keys / "bkr.toml"
    config.write_text('[statements]\nsigning_key_file = "current.key"\n')

    envelope = signed(bkr, db_url, 1400, "--config", str(config))

    assert envelope["statement"]["broker_id"] == 1400


def test_a_key_file_open_to_other_users_is_refused(
        bkr: Any, closed_may: Engine, db_url: str, key_file: Path) -> None:
    os.chmod(key_file, 0o644)

    result = bkr("statement", "--broker", "1400", "--month", "2024-05", "--format", "signed", "--db", db_url)

    assert result.code == 1 and "chmod 600" in result.err


def test_a_key_missing_from_the_database_or_retired_signs_nothing_but_its_statements_still_verify(
        bkr: Any, closed_may: Engine, db_url: str, key_file: Path, tmp_path: Path) -> None:
    envelope = signed(bkr, db_url)
    path = write(tmp_path / "statement.json", envelope)
    key_id = envelope["signature"]["key_id"]

    retired = bkr("statement-key", "retire", key_id, "--db", db_url)
    refused = bkr("statement", "--broker", "1400", "--month", "2024-05", "--format", "signed", "--db", db_url)
    still = bkr("statement", "verify", str(path), "--db", db_url)
    listed = json.loads(bkr("statement-key", "list", "--db", db_url, "--json").out)

    assert retired.code == 0
    assert refused.code == 1 and f"statement key {key_id} was retired" in refused.err
    assert still.code == 0 and "retired since" in still.out
    assert [k["key_id"] for k in listed] == [key_id] and listed[0]["retired_at"] is not None
    with closed_may.begin() as connection:
        connection.execute(statement_keys.delete())
    unpublished = bkr("statement", "--broker", "1400", "--month", "2024-05", "--format", "signed", "--db", db_url)
    assert unpublished.code == 1 and "is not published" in unpublished.err


# --- the command's shapes and the other formats ----------------------------------------------------------


def test_the_json_and_csv_formats_are_as_before(bkr: Any, closed_may: Engine, db_url: str) -> None:
    stored_text = stored(closed_may)

    default = bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url)
    as_json = bkr("statement", "--broker", "1400", "--month", "2024-05", "--format", "json", "--db", db_url)
    as_csv = bkr("statement", "--month", "2024-05", "--broker", "1400", "--db", db_url, "--format", "csv")

    assert default.code == as_json.code == as_csv.code == 0
    assert json.loads(default.out) == json.loads(as_json.out) == json.loads(stored_text)
    assert as_csv.out == statement_csv(parse_statement(stored_text))


@pytest.mark.parametrize("fmt", ["json", "csv", "signed", "html"])
def test_the_command_prints_what_every_other_door_hands_out(bkr: Any, closed_may: Engine, db_url: str,
                                                           key_file: Path, fmt: str) -> None:
    """`bkr statement` writes the body `render_statement` gives the broker API and the dashboard:
    the stored JSON byte for byte (not re-indented), the same CSV, envelope and page."""
    result = bkr("statement", "--broker", "1400", "--month", "2024-05", "--format", fmt, "--db", db_url)
    with closed_may.connect() as connection:
        rendered = render_statement(connection, 1400, MAY, StatementFormat(fmt), load_signing_key(key_file))

    assert result.code == 0, result.err
    assert result.out == rendered.body
    if fmt == "json":
        assert result.out == stored(closed_may)


def test_statement_options_are_required_without_a_subcommand_and_refused_with_one(
        bkr: Any, closed_may: Engine, db_url: str, tmp_path: Path) -> None:
    missing = bkr("statement", "--month", "2024-05", "--db", db_url)
    unknown = bkr("statement", "--broker", "1400", "--month", "2024-05", "--format", "xml", "--db", db_url)
    misplaced = bkr("statement", "--broker", "1400", "verify", str(tmp_path / "x.json"))

    assert missing.code == 2 and "--broker" in missing.err
    assert unknown.code == 1 and "xml" in unknown.err
    assert misplaced.code == 1 and "not to `bkr statement verify`" in misplaced.err


def test_the_html_statement_is_self_contained_escaped_and_carries_the_signature(
        bkr: Any, closed_may: Engine, db_url: str, key_file: Path) -> None:
    envelope = signed(bkr, db_url)
    document = envelope["statement"]

    result = bkr("statement", "--broker", "1400", "--month", "2024-05", "--format", "html", "--db", db_url)

    assert result.code == 0, result.err
    page = result.out
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page)  # nothing fetched from elsewhere
    assert "<script>" not in page and "zoë &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in page
    for figure in ("Broker 1400", document["tier"], document["broker_rate"], document["api_volume"],
                   document["payout_exact"], document["payout"], envelope["signature"]["key_id"],
                   envelope["signature"]["value"]):
        assert figure in page, figure
    assert page.count("<tr class=\"regular\">") == len(document["lines"])


def test_without_a_key_the_html_statement_says_it_is_not_signed(
        bkr: Any, closed_may: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BKR_STATEMENT_KEY_FILE", raising=False)

    result = bkr("statement", "--broker", "2200", "--month", "2024-05", "--format", "html", "--db", db_url)

    assert result.code == 0
    assert "Not signed" in result.out and "not signed" in result.err

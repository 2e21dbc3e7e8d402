"""docs/statements.md, run as a broker would run it, against statements bkr really signed.

An operator closes a month with three brokers through `bkr` (in process), makes a statement key
and hands out signed statements; the exchange's keys are read from `GET /v1/statement-keys`. The
guide's one ```python block is then saved as a file and run as its own process, with nothing of
bkr imported: it must say OK, with the statement's figures, for every genuine statement, and
FAILED, naming the problem, for a copy with one digit changed, for a copy whose payout was
changed, for a statement signed by a key the exchange never published, and for a statement with
one altered rate signed with the exchange's own key (whose signature is valid: only the full
recomputation catches it), as `bkr statement verify` does.
"""

import ast
import json
import re
import subprocess
import sys
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from venue_support import run_bkr

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig
from bkr.domain.statement_signing import StatementKey, new_statement_key, sign_statement, statement_key_from_seed
from bkr.store import db

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "statements.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BROKERS = (1400, 2200, 3100, 4100)
FILLS = """\
fill_id,order_id,user_id,symbol,market_type,side,price,quantity,fee,fee_symbol,is_maker,timestamp,broker_id,\
via_api,fill_type
f-1,o-1,alice,SOL_USDC,SPOT,Bid,150,60000,900.1,USDC,false,2024-05-10T12:00:00Z,1400,true,User
f-1b,o-1b,alice,SOL_USDC,SPOT,Bid,150,40000,600.023456,USDC,false,2024-05-31T23:59:59.999999Z,1400,true,User
f-2,o-2,bob,SOL_USDC_PERP,PERP,Ask,100,60000,1200.00999,USDC,false,2024-05-11T12:00:00Z,1400,true,User
f-3,o-3,bob,SOL_USDC_PERP,PERP,Bid,100,1,-0.01,USDC,true,2024-05-12T12:00:00Z,1400,true,User
f-4,o-4,alice,SOL_USDC,SPOT,Bid,20,5,0.05,USDC,false,2024-05-13T12:00:00Z,2200,true,User
f-5,o-5,bob,SOL_USDC_PERP,PERP,Ask,30,7,0.21,USDC,false,2024-05-14T12:00:00Z,3100,true,User
f-8,o-8,carol,SOL_USDC,SPOT,Bid,150,40000,600.5,USDC,false,2024-05-15T12:00:00Z,4100,true,User
"""
# Broker 2200's May fill is busted in June, where it earns less than that took back: June pays 0
# and carries the rest to July.
LATER_FILLS = """\
fill_id,order_id,user_id,symbol,market_type,side,price,quantity,fee,fee_symbol,is_maker,timestamp,broker_id,corrects
f-4-bust,o-4,alice,SOL_USDC,SPOT,Bid,20,-5,-0.05,USDC,false,2024-05-13T12:00:00Z,2200,f-4
f-6,o-6,alice,SOL_USDC,SPOT,Bid,20,1,0.01,USDC,false,2024-06-13T12:00:00Z,2200,
f-7,o-7,alice,SOL_USDC,SPOT,Bid,20,1,1,USDC,false,2024-07-13T12:00:00Z,2200,
"""


EXAMPLE_KEY_ID = "3f9a0c1b2d4e5f60"  # the key id the guide's examples show


def guide_blocks(language: str) -> list[str]:
    return [body for kind, body in FENCE.findall(GUIDE.read_text(encoding="utf-8")) if kind == language]


def guide_script() -> str:
    blocks = guide_blocks("python")
    assert len(blocks) == 1, "the guide has one complete script"
    return blocks[0]


def guide_outputs(key_id: str) -> tuple[list[str], list[str], list[str]]:
    """The guide's three example outputs (genuine, one digit changed, a rate altered and signed
    again with the exchange's key), with the real key id."""
    genuine, tampered, lying = guide_blocks("text")
    return genuine.replace(EXAMPLE_KEY_ID, key_id).splitlines(), tampered.splitlines(), lying.splitlines()


def test_the_script_needs_nothing_but_the_standard_library_and_cryptography() -> None:
    imported = set()
    for node in ast.walk(ast.parse(guide_script())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"cryptography"}


@pytest.fixture(scope="module")
def handed_out(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """May 2024 closed through the command line; each broker's signed statement saved to a file,
    and the exchange's published keys to keys.json, as a broker would fetch them. Once per module,
    on SQLite: what is checked here is the guide's script (the signing itself is checked on both
    databases in tests/integration/test_signed_statements.py)."""
    directory = tmp_path_factory.mktemp("statements-doc")
    db_url = f"sqlite:///{directory / 'bkr.db'}"

    def run(*args: str) -> str:
        return run_bkr(*args, "--db", db_url)

    admin = run("operator", "add", "root", "--role", "admin").strip()  # the first admin: no key needed

    def change(*args: str) -> str:
        return run(*args, "--key", admin)

    for broker_id in BROKERS:
        change("broker", "add", "--id", str(broker_id), "--account", f"acct-{broker_id}", "--name",
               f"Broker {broker_id}", "--type", "trading_bot")
        change("broker", "activate", str(broker_id), "--at", "2024-01-01T00:00:00Z")
    change("affiliate", "add", "--account", "acct-aff", "--name", "Affiliate")
    change("referral", "add", "--affiliate", "acct-aff", "--code", "BOB-CODE", "--rate", "0.15", "--from", "2024-01-01")
    change("user", "add", "--id", "alice")
    change("user", "add", "--id", "bob", "--referral-code", "BOB-CODE")
    change("user", "add", "--id", "carol")
    (directory / "may.csv").write_text(FILLS)
    change("fills", "import", str(directory / "may.csv"))
    change("close", "--month", "2024-05")
    (directory / "later.csv").write_text(LATER_FILLS)
    change("fills", "import", str(directory / "later.csv"))
    change("close", "--month", "2024-06")
    change("close", "--month", "2024-07")
    run("statement-key", "create", "--out", str(directory / "statement.key"))
    config = directory / "bkr.toml"  # the operator's config names the key file (relative to itself)
    config.write_text('[statements]\nsigning_key_file = "statement.key"\n')
    files = {}
    with pytest.MonkeyPatch.context() as environment:
        environment.delenv("BKR_STATEMENT_KEY_FILE", raising=False)  # the config's key, whatever the shell says
        for broker_id in BROKERS:
            files[broker_id] = directory / f"statement-{broker_id}.json"
            files[broker_id].write_text(run("statement", "--broker", str(broker_id), "--month", "2024-05",
                                            "--format", "signed", "--config", str(config)), encoding="utf-8")
        for month in ("2024-06", "2024-07"):
            (directory / f"statement-2200-{month}.json").write_text(
                run("statement", "--broker", "2200", "--month", month, "--format", "signed", "--config", str(config)),
                encoding="utf-8")
    engine = db.open_engine(db_url)
    with TestClient(create_app(engine, ProgramConfig())) as client:
        (directory / "keys.json").write_text(client.get("/v1/statement-keys").text)
    engine.dispose()
    return files


def run_script(tmp_path: Path, *args: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "verify_statement.py"
    script.write_text(guide_script(), encoding="utf-8")
    return subprocess.run([sys.executable, "-I", str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


def tampered(source: Path, target: Path, change: Any) -> Path:
    envelope = json.loads(source.read_text(encoding="utf-8"))
    change(envelope["statement"])
    target.write_text(json.dumps(envelope, indent=2, ensure_ascii=False), encoding="utf-8")
    return target


def bump_last_digit(text: str) -> str:
    return text[:-1] + str((int(text[-1]) + 1) % 10)


def test_the_guides_script_accepts_every_genuine_statement(handed_out: dict[int, Path], tmp_path: Path) -> None:
    keys = handed_out[1400].parent / "keys.json"
    for broker_id, path in handed_out.items():
        envelope = json.loads(path.read_text(encoding="utf-8"))
        statement = envelope["statement"]

        result = run_script(tmp_path, path, keys)

        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            f"OK: statement of broker {broker_id} for 2024-05",
            f"  signed by key {envelope['signature']['key_id']}: one of the exchange's published keys",
            f"  program version {statement['program']['version']}: {statement['tier']} for a volume of "
            f"{statement['tier_volume']} (same_month) at {statement['broker_rate']}, cap 0.5",
            f"  {len(statement['lines'])} line{'' if len(statement['lines']) == 1 else 's'}, each at its tier's "
            "rate under the cap; payout_exact "
            f"{statement['payout_exact']} = the sum of their payouts",
            f"  payout {statement['payout']} = payout_exact rounded down to 0.01",
        ]
    key_id = json.loads(handed_out[1400].read_text(encoding="utf-8"))["signature"]["key_id"]
    assert run_script(tmp_path, handed_out[1400], keys).stdout.splitlines() == guide_outputs(key_id)[0]


def test_the_guides_script_follows_a_bust_carried_from_one_statement_into_the_next(
        handed_out: dict[int, Path], tmp_path: Path) -> None:
    directory = handed_out[2200].parent
    june, july = (json.loads((directory / f"statement-2200-{m}.json").read_text(encoding="utf-8"))["statement"]
                  for m in ("2024-06", "2024-07"))
    assert [line["kind"] for line in june["lines"]] == ["regular", "correction"]
    assert Decimal(june["payout_exact"]) < 0 and june["payout"] == "0.00"
    assert (june["carried_out"], july["carried_in"]) == (june["payout_exact"], june["payout_exact"])
    july_payout = (Decimal(july["payout_exact"]) + Decimal(july["carried_in"])).quantize(Decimal("0.01"), ROUND_DOWN)
    assert Decimal(july["payout"]) == july_payout > 0

    results = [run_script(tmp_path, directory / f"statement-2200-{m}.json", directory / "keys.json")
               for m in ("2024-06", "2024-07")]

    assert [r.returncode for r in results] == [0, 0], results[0].stdout + results[1].stdout
    assert results[1].stdout.splitlines()[-1] == (
        f"  payout {july['payout']} = payout_exact with carried_in {july['carried_in']}, at least 0, "
        "rounded down to 0.01")


def test_the_guides_script_rejects_a_copy_with_one_digit_changed_in_a_line(
        handed_out: dict[int, Path], tmp_path: Path) -> None:
    def change(statement: dict[str, Any]) -> None:
        statement["lines"][0]["fee_base"] = bump_last_digit(statement["lines"][0]["fee_base"])

    result = run_script(tmp_path, tampered(handed_out[1400], tmp_path / "one-digit.json", change),
                        handed_out[1400].parent / "keys.json")

    assert result.returncode == 1
    assert result.stdout.splitlines() == guide_outputs("")[1]  # what the guide shows, line for line


def test_the_guides_script_rejects_a_copy_whose_payout_was_changed(
        handed_out: dict[int, Path], tmp_path: Path) -> None:
    def change(statement: dict[str, Any]) -> None:
        statement["payout"] = bump_last_digit(statement["payout"])

    result = run_script(tmp_path, tampered(handed_out[2200], tmp_path / "payout.json", change))

    assert result.returncode == 1
    assert any(line.startswith("  - payout: ") for line in result.stdout.splitlines())


def test_the_guides_script_rejects_a_statement_signed_by_a_key_the_exchange_did_not_publish(
        handed_out: dict[int, Path], tmp_path: Path) -> None:
    genuine = json.loads(handed_out[3100].read_text(encoding="utf-8"))
    stored = json.dumps(genuine["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    stranger = new_statement_key()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(sign_statement(stored, stranger)), encoding="utf-8")

    with_keys = run_script(tmp_path, forged, handed_out[1400].parent / "keys.json")
    alone = run_script(tmp_path, forged)

    assert with_keys.returncode == 1
    assert f"  - key: {stranger.key_id} is not an exchange key (not in the exchange's published keys)" in \
        with_keys.stdout.splitlines()
    assert alone.returncode == 0 and "compare it with the exchange's keys" in alone.stdout


def exchange_key(handed_out: dict[int, Path]) -> StatementKey:
    """The exchange's own statement key: what signs genuine statements, and here a lying one."""
    return statement_key_from_seed((handed_out[1400].parent / "statement.key").read_text(encoding="ascii"))


def signed_again(document: dict[str, Any], key: StatementKey, target: Path) -> Path:
    stored = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    target.write_text(json.dumps(sign_statement(stored, key), indent=2, ensure_ascii=False), encoding="utf-8")
    return target


def test_the_guides_script_rejects_a_statement_with_one_altered_rate_signed_with_the_exchanges_key(
        handed_out: dict[int, Path], tmp_path: Path) -> None:
    """The issue's case: a line of affiliate rate 0 at BKR 1 paid at 0.1 instead of 0.3, its payout
    and the totals made to agree, signed with the exchange's key. The signature is valid; the
    figures, worked out again from the statement's own terms, are not."""
    statement = json.loads(handed_out[4100].read_text(encoding="utf-8"))["statement"]
    line = statement["lines"][0]
    assert (statement["tier"], line["affiliate_rate"], line["effective_rate"]) == ("BKR 1", "0", "0.3")
    line.update(effective_rate="0.1", payout_exact="60.05")
    statement.update(payout_exact="60.05", payout="60.05")
    lying = signed_again(statement, exchange_key(handed_out), tmp_path / "lying.json")

    result = run_script(tmp_path, lying, handed_out[1400].parent / "keys.json")
    verified = cli_verify(lying)

    assert result.returncode == 1
    assert result.stdout.splitlines() == guide_outputs("")[2]  # what the guide shows, line for line
    assert verified.returncode == 1 and "line 1 (carol SPOT 2024-05 regular): effective_rate 0.1 is not" in \
        verified.stdout


def test_the_guides_script_checks_an_older_statement_for_its_sums_and_says_what_it_did_not_check(
        handed_out: dict[int, Path], tmp_path: Path) -> None:
    statement = json.loads(handed_out[2200].read_text(encoding="utf-8"))["statement"]
    for name in ("program", "format_version", "tier_volume"):  # as statements were issued before they carried them
        del statement[name]

    result = run_script(tmp_path, signed_again(statement, exchange_key(handed_out), tmp_path / "older.json"))

    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == ("  not checked: the tier and the rates (the statement carries no "
                                              "program version): only its sums")


def cli_verify(path: Path) -> subprocess.CompletedProcess[str]:
    """`bkr statement verify FILE`, as its own process."""
    return subprocess.run([sys.executable, "-m", "bkr.cli", "statement", "verify", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)

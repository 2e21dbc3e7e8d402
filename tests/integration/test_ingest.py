"""Importing fill files: each row's outcome with its line and reason, idempotent re-imports, and
the same result from CSV, NDJSON and Parquet. `bkr fills import` runs as an operator
(BKR_OPERATOR_KEY), as an operator's shell would."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    MAY,
    add_broker,
    add_users,
    count,
    fill,
    import_rows,
    operator_key,
    preview,
    stored_state,
    write_csv,
    write_fills,
    write_ndjson,
    write_parquet,
)
from sqlalchemy import Engine, select

from bkr.domain.fills import FIELDS
from bkr.program.importer import import_file
from bkr.program.overview import has_fills
from bkr.store.tables import fill_conflicts, fill_rejections, fills, imports, periods
from program_support import use_program


@pytest.fixture(autouse=True)
def operator(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BKR_OPERATOR_KEY", operator_key(engine, "operator", "ops"))


@pytest.fixture
def registry(engine: Engine) -> Engine:
    """Broker 1400 active all year; alice and bob known, without a referral code; the program at its
    defaults."""
    use_program(engine)
    add_broker(engine)
    add_users(engine, "alice", "bob")
    return engine


def import_json(bkr: Any, path: Path, db_url: str) -> dict[str, int]:
    result = bkr("fills", "import", str(path), "--db", db_url, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def rejected_json(bkr: Any, db_url: str) -> dict[str, Any]:
    result = bkr("fills", "rejected", "--db", db_url, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def mixed_file(path: Path) -> Path:
    """One row of each outcome, on known lines (the header is line 1)."""
    write_csv(path, [
        fill("f-1"),                                       # 2: accepted
        fill("f-2", price="abc"),                          # 3: rejected
        fill("f-1"),                                       # 4: duplicate of line 2
        fill("f-stored", fee="0.2"),                       # 5: conflict with the stored f-stored
        fill("f-3", quantity="-1"),                        # 6: rejected
        fill("f-4", fee_symbol="BTC"),                     # 7: rejected: no USD rate for BTC
        fill("f-5", market="OPTION", symbol="SOL_USDC"),   # 8: rejected
        fill("f-1", quantity="2"),                         # 9: conflict with line 2
        fill("f-6", at="yesterday"),                       # 10: rejected
        fill("f-7", user="bob", market="PERP"),            # 11: accepted
    ])
    with path.open("a", encoding="utf-8") as handle:
        handle.write("f-8,order-f-8,alice\n")             # 12: rejected: too few fields
    return path


def test_every_row_is_accepted_duplicate_conflict_or_rejected_with_its_line_and_reason(
        registry: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    import_rows(registry, tmp_path / "earlier.csv", [fill("f-stored")])

    counts = import_json(bkr, mixed_file(tmp_path / "fills.csv"), db_url)

    assert counts == {"accepted": 2, "duplicates": 1, "conflicts": 2, "rejected": 6}
    review = rejected_json(bkr, db_url)
    assert [(r["source"], r["line"], r["fill_id"], r["reason"]) for r in review["rejected"]] == [
        ("fills.csv", 3, "f-2", "price: not a number: 'abc'"),
        ("fills.csv", 6, "f-3", "quantity: must be positive, got -1"),
        ("fills.csv", 7, "f-4", "fee_symbol: no USD rate configured for fee asset BTC"),
        ("fills.csv", 8, "f-5", "market_type: not one of SPOT, PERP, IPERP, DATED: 'OPTION'"),
        ("fills.csv", 10, "f-6", "timestamp: not an ISO 8601 time: 'yesterday'"),
        ("fills.csv", 12, None, f"row has 3 fields, the header has {len(FIELDS)}"),
    ]
    assert review["rejected"][0]["raw"].startswith("f-2,order-f-2,alice,SOL_USDC,SPOT,Bid,abc,")
    assert sorted((c["line"], c["fill_id"]) for c in review["conflicts"]) == [(5, "f-stored"), (9, "f-1")]
    assert review["counts"] == {"rejected": 6, "conflicts": 2, "awaiting_user": 0, "self_trades": 0}
    # a conflict is never applied: the stored fills keep their first content
    statement = preview(registry, MAY)[1400]
    assert (statement["spot_volume"], statement["futures_volume"], statement["fee_base"]) == ("200", "100", "0.3")


def test_a_database_has_fills_once_one_is_accepted_not_when_rows_were_only_rejected(
        registry: Engine, tmp_path: Path) -> None:
    def stored() -> bool:
        with registry.connect() as connection:
            return has_fills(connection)

    assert not stored()
    import_rows(registry, tmp_path / "bad.csv", [fill("f-bad", price="abc")])
    assert not stored()
    import_rows(registry, tmp_path / "waiting.csv", [fill("f-waiting", user="carol")])  # kept, awaiting its user
    assert stored()


def test_ndjson_rows_that_cannot_be_read_are_reported_with_their_line(
        registry: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "fills.ndjson", [fill("f-1")])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"fill_id": "f-2", "price": \n')
        handle.write("\n")  # blank lines are skipped but still counted
        handle.write('["f-3"]\n')
        handle.write(json.dumps({k: v for k, v in fill("f-4").items() if k != "user_id"}) + "\n")
        handle.write(json.dumps(fill("f-5", price=0.1)) + "\n")  # a JSON number is read exactly, not as a float

    counts = import_json(bkr, path, db_url)

    assert counts == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 3}
    assert [(r["line"], r["fill_id"], r["reason"]) for r in rejected_json(bkr, db_url)["rejected"]] == [
        (2, None, "not valid JSON: Expecting value at column 28"),
        (4, None, "not a JSON object"),
        (5, "f-4", "user_id: missing"),
    ]
    assert preview(registry, MAY)[1400]["spot_volume"] == "100.1"


def test_import_json_prints_exactly_the_four_counts(registry: Engine, db_url: str, bkr: Any,
                                                     tmp_path: Path) -> None:
    path = write_csv(tmp_path / "fills.csv", [fill("f-1"), fill("f-2", fee="x")])

    result = bkr("fills", "import", str(path), "--db", db_url, "--json")

    assert result.code == 0
    assert list(json.loads(result.out)) == ["accepted", "duplicates", "conflicts", "rejected"]
    assert json.loads(result.out) == {"accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": 1}


def test_reimporting_the_same_file_changes_nothing(registry: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    import_rows(registry, tmp_path / "earlier.csv", [fill("f-stored")])
    path = mixed_file(tmp_path / "fills.csv")
    first = import_json(bkr, path, db_url)
    state, statements, review = stored_state(registry), preview(registry, MAY), rejected_json(bkr, db_url)

    again = import_json(bkr, path, db_url)

    assert again == {"accepted": 0, "duplicates": first["accepted"] + first["duplicates"],
                     "conflicts": first["conflicts"], "rejected": first["rejected"]}
    assert stored_state(registry) == state
    assert preview(registry, MAY) == statements
    assert rejected_json(bkr, db_url) == review  # rejected rows and conflicts are not stored twice
    assert (count(registry, fill_rejections), count(registry, fill_conflicts)) == (6, 2)
    assert count(registry, imports) == 3  # but each import is recorded


# Fills that exercise every conversion a reader does: 18 decimals, a negative (maker) fee, a fee in
# the base asset, futures, a time with an offset, no broker, a UI fill.
FORMAT_ROWS = [
    fill("f-1", price="142.123456789012345678", quantity="3.000000000000000001", fee="0.000000000000000007"),
    fill("f-2", price="150", quantity="2", fee="-0.06", is_maker=True),
    fill("f-3", user="bob", price="150", quantity="2", fee="0.001", fee_symbol="SOL"),
    fill("f-4", user="bob", market="PERP", price="151.5", quantity="10", fee="0.7575", side="Ask"),
    fill("f-5", at="2024-05-31T23:30:00-02:00", price="100", quantity="1"),  # June in UTC
    fill("f-6", broker=None),
    fill("f-7", via_api=False),
]


@pytest.mark.parametrize("suffix", [".csv", ".ndjson", ".parquet"])
def test_csv_ndjson_and_parquet_give_the_same_statement(registry: Engine, tmp_path: Path, suffix: str) -> None:
    tally = import_rows(registry, tmp_path / f"fills{suffix}", FORMAT_ROWS)

    assert tally.counts() == {"accepted": 7, "duplicates": 0, "conflicts": 0, "rejected": 0}
    assert (tally.counted, count(registry, fills)) == (5, 7)
    statement = preview(registry, MAY)[1400]
    assert {k: statement[k] for k in ("spot_volume", "futures_volume", "fee_base", "payout_exact", "payout")} == {
        "spot_volume": "1026.370370367037037176123456789012345678",  # 426.37… + 300 + 300
        "futures_volume": "1515",
        "fee_base": "0.907500000000000007",  # 0.15 + 0.7575 + 7e-18; the maker rebate counts 0
        "payout_exact": "0.1815000000000000014",
        "payout": "0.18",
    }


def test_a_fill_sent_again_in_another_format_is_a_duplicate(registry: Engine, tmp_path: Path) -> None:
    import_rows(registry, tmp_path / "fills.csv", FORMAT_ROWS)
    state = stored_state(registry)

    for path in (write_ndjson(tmp_path / "fills.ndjson", FORMAT_ROWS),
                 write_parquet(tmp_path / "decimal.parquet", FORMAT_ROWS, money="decimal"),
                 write_parquet(tmp_path / "string.parquet", FORMAT_ROWS, money="string")):
        tally = import_rows(registry, path, FORMAT_ROWS)
        assert tally.counts() == {"accepted": 0, "duplicates": 7, "conflicts": 0, "rejected": 0}, path.name

    assert stored_state(registry) == state


def test_a_parquet_file_with_float_money_columns_is_refused(registry: Engine, db_url: str, bkr: Any,
                                                            tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "export.parquet", [fill("f-1"), fill("f-2")], money="float")

    result = bkr("fills", "import", str(path), "--db", db_url)

    assert result.code == 1
    assert result.err == ("error: export.parquet: columns price, quantity, fee are floating point, which is not "
                          "exact; write them as decimal or string\n")
    assert (count(registry, fills), count(registry, imports)) == (0, 0)


def test_a_csv_file_without_the_fill_columns_is_refused_before_anything_is_written(
        registry: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "trades.csv", [fill("f-1")], columns=("fill_id", "order_id", "user_id", "symbol"))

    result = bkr("fills", "import", str(path), "--db", db_url)

    assert result.code == 1
    assert result.err.startswith("error: trades.csv: header lacks price, quantity, fee, timestamp (columns are ")
    assert (count(registry, fills), count(registry, imports)) == (0, 0)


def test_an_unknown_file_type_is_refused_before_anything_is_written(registry: Engine, db_url: str, bkr: Any,
                                                                     tmp_path: Path) -> None:
    path = write_fills(tmp_path / "fills.csv", [fill("f-1")]).rename(tmp_path / "fills.xlsx")

    result = bkr("fills", "import", str(path), "--db", db_url)

    assert (result.code, result.err) == (1, "error: fills.xlsx: unknown file type (use .csv, .ndjson/.jsonl or "
                                            ".parquet)\n")
    assert count(registry, imports) == 0


def test_a_nul_character_in_a_csv_row_is_a_rejection_kept_visibly_on_both_databases(
        engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    path.write_text(
        "fill_id,order_id,user_id,symbol,market_type,side,price,quantity,fee,fee_symbol,is_maker,timestamp,"
        "broker_id,via_api,fill_type\n"
        "f\x001,o1,u1,SOL_USDC,SPOT,Bid,1,1,0.01,USDC,true,2026-10-01T00:00:00Z,1400,true,User\n"
        "f2,o1,u\x001,SOL_USDC,SPOT,Bid,1,1,0.01,USDC,true,2026-10-01T00:00:00Z,1400,true,User\n")
    use_program(engine)
    tally = import_file(engine, path, clock=lambda: datetime(2026, 10, 2, tzinfo=UTC), actor="ops")
    assert tally.counts() == {"accepted": 0, "duplicates": 0, "conflicts": 0, "rejected": 2}
    with engine.connect() as connection:
        rows = connection.execute(select(fill_rejections.c.line, fill_rejections.c.fill_id, fill_rejections.c.reason,
                                         fill_rejections.c.raw).order_by(fill_rejections.c.line)).all()
    assert [(r.line, r.fill_id, r.reason) for r in rows] == [
        (2, "f\\u00001", "fill_id: contains a NUL character"), (3, "f2", "user_id: contains a NUL character")]
    assert rows[1].raw.startswith("f2,o1,u\\u00001,")


def test_a_row_with_too_many_digits_is_rejected_and_the_rest_of_its_batch_is_imported(
        registry: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    """Its price × quantity would need more digits than the money context keeps: once, it failed the
    whole batch (and every rerun the same way); now the row is refused where it is read."""
    path = write_csv(tmp_path / "fills.csv", [
        fill("f-1"),
        fill("f-long", price="1." + "3" * 43, quantity="1." + "7" * 43),
        fill("f-tiny", quantity="1e-72"),
        fill("f-2"),
    ])

    assert import_json(bkr, path, db_url) == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 2}
    assert [(r["line"], r["fill_id"], r["reason"]) for r in rejected_json(bkr, db_url)["rejected"]] == [
        (3, "f-long", "price: 1." + "3" * 38 + "… has 43 decimal places; at most 15 integer digits and 18 "
                      "decimal places are accepted"),
        (4, "f-tiny", "quantity: 1E-72 has 72 decimal places; at most 15 integer digits and 18 decimal places "
                      "are accepted"),
    ]
    closed = bkr("close", "--month", str(MAY), "--db", db_url, "--json", "--key", operator_key(registry, "operator"))
    assert closed.code == 0, closed.err
    assert [s["spot_volume"] for s in json.loads(closed.out)["statements"]] == ["200"]


def test_a_csv_with_a_byte_order_mark_is_read_like_one_without(registry: Engine, db_url: str, bkr: Any,
                                                               tmp_path: Path) -> None:
    plain = write_csv(tmp_path / "plain.csv", [fill("f-1")])
    marked = tmp_path / "marked.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"f-1", b"f-2"))

    assert import_json(bkr, marked, db_url)["accepted"] == 1


def test_unreadable_records_are_rejected_one_by_one_and_the_others_imported(registry: Engine, db_url: str, bkr: Any,
                                                                           tmp_path: Path) -> None:
    """A byte that is not UTF-8, a field over the CSV reader's limit, JSON nested beyond any
    parser's depth: each is its record's rejection, with its line; the file goes on."""
    path = write_csv(tmp_path / "fills.csv", [fill("f-1"), fill("f-latin"), fill("f-huge"), fill("f-2")])
    data = path.read_bytes().replace(b"f-latin,order-f-latin,alice", b"f-latin,order-f-latin,jos\xe9")
    path.write_bytes(data.replace(b"f-huge,order-f-huge", b"f-huge," + b"o" * 200_000))
    nested = tmp_path / "fills.ndjson"
    nested.write_text(json.dumps(fill("f-3")) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n" + json.dumps(fill("f-4"))
                      + "\n", encoding="utf-8")

    assert import_json(bkr, path, db_url) == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 2}
    assert import_json(bkr, nested, db_url) == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 1}
    rejected = rejected_json(bkr, db_url)["rejected"]
    assert [(r["source"], r["line"], r["reason"]) for r in rejected] == [
        ("fills.csv", 3, "not UTF-8 text: byte 0xe9 (write the file in UTF-8; other encodings are not read)"),
        ("fills.csv", 4, "not a CSV record: field larger than field limit (131072)"),
        ("fills.ndjson", 2, "not a fill: JSON nested too deeply"),
    ]
    assert "jos\\xe9" in rejected[0]["raw"]


def test_a_file_that_is_not_parquet_is_refused_in_one_line(registry: Engine, db_url: str, bkr: Any,
                                                           tmp_path: Path) -> None:
    path = tmp_path / "fills.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file PAR1")

    result = bkr("fills", "import", str(path), "--db", db_url)

    assert result.code == 1
    assert result.err.startswith("error: fills.parquet: not a readable Parquet file (")
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_with_a_column_that_is_not_a_fill_field_is_refused_in_one_line(
        registry: Engine, db_url: str, bkr: Any, tmp_path: Path, kind: str) -> None:
    """A misspelled column would otherwise be read as absent: the fills would lose their broker."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {k: v for k, v in fill("f-1").items() if k != "broker_id"} | {"brokerid": "1400"}
    columns = [*(c for c in FIELDS if c in row), "brokerid"]
    path = tmp_path / f"fills.{kind}"
    if kind == "csv":
        write_csv(path, [row], columns)
    else:
        pq.write_table(pa.Table.from_pylist([{c: str(row[c]) for c in columns}]), path)

    result = bkr("fills", "import", str(path), "--db", db_url)

    assert result.code == 1
    assert result.err == f"error: {path.name}: column brokerid: not a fill field; did you mean broker_id?\n"
    assert count(registry, fills) == 0


def test_fills_out_of_time_or_with_a_fee_beyond_their_trade_are_rejected_with_the_reason(
        registry: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    """Once counted in 2099's month, opening 1970's, or paying a fee 100 times the trade."""
    path = write_csv(tmp_path / "fills.csv", [
        fill("f-1"), fill("f-future", at="2099-01-01T00:00:00Z"), fill("f-epoch", at="1970-01-01T00:00:00Z"),
        fill("f-fee", fee="10000"), fill("f-rebate", fee="-100", is_maker=True)])

    assert import_json(bkr, path, db_url) == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 3}
    assert [(r["fill_id"], r["reason"].split(" (")[0]) for r in rejected_json(bkr, db_url)["rejected"]] == [
        ("f-future", "timestamp: 2099-01-01T00:00:00+00:00 is in the future"),
        ("f-epoch", "timestamp: 1970-01-01T00:00:00+00:00 is before the program's start"),
        ("f-fee", "fee: 10000 USD is more than 1 × the fill's notional of 100 USD"),
    ]
    assert count(registry, periods) == 1  # only May: no month was opened for 1970 or 2099

"""An interrupted import keeps the batches it committed and nothing of the one in flight; running it
again finishes the file without counting anything twice."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    MAY,
    add_broker,
    add_code,
    add_users,
    clock,
    close,
    count,
    fill,
    operator_key,
    preview,
    write_csv,
)
from sqlalchemy import Engine, select

from bkr.program import writer
from bkr.program.importer import import_file
from bkr.program.writer import RowResult, Tally
from bkr.store import db, staging
from bkr.store.tables import fills, imports
from program_support import use_program


class Interrupted(Exception):
    """Stands for Ctrl-C or a crash between two batches."""


def ten_fills() -> list[dict[str, Any]]:
    return [fill(f"f-{n:02d}", user="alice" if n % 2 else "bob", market="SPOT" if n % 3 else "PERP",
                 price=f"{100 + n}.5", quantity="2", fee=f"0.{n:02d}1") for n in range(1, 11)]


def reference_figures(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(API volume, fee base) of rows that all count, summed at 100 digits."""
    with localcontext() as context:
        context.prec = 100
        volume = sum((Decimal(r["price"]) * Decimal(r["quantity"]) for r in rows), Decimal(0))
        fee_base = sum((Decimal(r["fee"]) for r in rows), Decimal(0))
    return format(volume.normalize(), "f"), format(fee_base.normalize(), "f")


def figures(engine: Engine) -> tuple[str, str]:
    statement = preview(engine, MAY)[1400]
    return statement["api_volume"], statement["fee_base"]


@pytest.fixture
def registry(engine: Engine) -> Engine:
    use_program(engine)
    add_broker(engine)
    add_users(engine, "alice", "bob")
    return engine


def test_an_import_interrupted_after_two_batches_keeps_them_and_a_rerun_counts_each_fill_once(
        registry: Engine, tmp_path: Path) -> None:
    rows = ten_fills()
    path = write_csv(tmp_path / "fills.csv", rows)

    def stop_after_second_batch(tally: Tally, _results: list[RowResult]) -> None:
        if tally.accepted == 6:
            raise Interrupted

    with pytest.raises(Interrupted):
        import_file(registry, path, clock=clock, batch_size=3, on_batch=stop_after_second_batch, actor="ops")

    assert count(registry, fills) == 6
    assert figures(registry) == reference_figures(rows[:6])

    tally = import_file(registry, path, clock=clock, batch_size=3, actor="ops")

    assert tally.counts() == {"accepted": 4, "duplicates": 6, "conflicts": 0, "rejected": 0}
    assert figures(registry) == reference_figures(rows)
    assert import_file(registry, path, clock=clock, batch_size=4, actor="ops").accepted == 0
    assert figures(registry) == reference_figures(rows)


@pytest.mark.parametrize("set_based", [True, False], ids=["set path", "row path"])
def test_a_batch_that_fails_midway_leaves_nothing_of_itself(registry: Engine, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, set_based: bool) -> None:
    rows = ten_fills()
    path = write_csv(tmp_path / "fills.csv", rows)
    module, name = (staging, "add_counted") if set_based else (writer, "add_to_aggregates")
    add_to_totals = getattr(module, name)
    calls = []

    def fail_in_third_batch(*args: Any) -> None:
        calls.append(1)
        add_to_totals(*args)  # the third batch's fills are written, then the transaction fails
        if len(calls) == 3:
            raise Interrupted

    monkeypatch.setattr(module, name, fail_in_third_batch)
    with pytest.raises(Interrupted):
        import_file(registry, path, clock=clock, batch_size=3, actor="ops", set_based=set_based)
    monkeypatch.undo()

    assert count(registry, fills) == 6
    assert figures(registry) == reference_figures(rows[:6])
    assert import_file(registry, path, clock=clock, batch_size=3, actor="ops", set_based=set_based).accepted == 4
    assert figures(registry) == reference_figures(rows)


# --- killing the real command ------------------------------------------------------------------

BIG_FILE_ROWS = 50_000
KILL_BATCH = 1_000


def big_registry(engine: Engine) -> None:
    """Brokers 1400 and 2200; fifty users, every fifth with a referral code at 0.1; the program at its
    defaults."""
    use_program(engine)
    add_broker(engine, 1400)
    add_broker(engine, 2200)
    add_code(engine, "CODE", "0.1")
    add_users(engine, *(f"u{n:02d}" for n in range(50) if n % 5))
    add_users(engine, *(f"u{n:02d}" for n in range(50) if not n % 5), code="CODE")


def big_rows() -> Iterator[dict[str, Any]]:
    """Fills of May 2024 over two brokers, some unattributed, spot and perpetuals, 18-decimal prices."""
    for n in range(BIG_FILE_ROWS):
        yield fill(f"fill-{n:06d}", user=f"u{n % 50:02d}", broker=(1400, 2200, None)[n % 3],
                   market="PERP" if n % 4 == 0 else "SPOT", price=f"{140 + n % 17}.{n:018d}",
                   quantity=f"{1 + n % 9}.5", fee=f"0.{n % 997:03d}25" if n % 11 else "-0.001",
                   is_maker=not n % 11, at=f"2024-05-{1 + n % 31:02d}T{n % 24:02d}:{n % 60:02d}:00Z")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory this test run's processes share (each xdist worker has its own basetemp below it)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@contextmanager
def run_once(run_dir: Path, name: str) -> Iterator[Path | None]:
    """Yield the path of `name` if another worker already made it, else None while holding the lock."""
    with (run_dir / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = run_dir / name
        yield done if done.exists() else None


@pytest.fixture(scope="session")
def big_file(run_dir: Path) -> Path:
    with run_once(run_dir, "big-may.csv") as done:
        return done or write_csv(run_dir / "big-may.csv", big_rows())


@pytest.fixture(scope="session")
def clean_import_statements(big_file: Path, sqlite_template: Path, run_dir: Path,
                            tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """May's statements after one uninterrupted import of the big file, made once per test run (on
    SQLite: the close's documents are the same bytes on either database)."""
    with run_once(run_dir, "big-may-statements.json") as done:
        if done:
            return json.loads(done.read_text())  # type: ignore[no-any-return]
        path = tmp_path_factory.mktemp("clean") / "bkr.db"
        path.write_bytes(sqlite_template.read_bytes())
        engine = db.open_engine(f"sqlite:///{path}")
        big_registry(engine)
        tally = import_file(engine, big_file, clock=clock, actor="ops")
        assert tally.accepted == BIG_FILE_ROWS
        statements = list(close(engine, MAY).values())
        engine.dispose()
        (run_dir / "big-may-statements.json").write_text(json.dumps(statements))
        return statements


def bkr_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bkr.cli", *args]


def committed_fills(engine: Engine) -> int:
    """What the running import has committed, read in a snapshot: a reader that took SQLite's write
    lock would queue behind the import's batches and might first see it when it has finished."""
    with db.snapshot(engine) as connection:
        return int(connection.execute(select(imports.c.accepted)).scalar() or 0)


@pytest.mark.slow
def test_a_killed_fills_import_run_again_gives_the_statements_of_a_clean_import(
        engine: Engine, db_url: str, big_file: Path, clean_import_statements: list[dict[str, Any]]) -> None:
    big_registry(engine)
    command = bkr_command("fills", "import", str(big_file), "--db", db_url, "--batch-size", str(KILL_BATCH),
                          "--json", "--key", operator_key(engine, "operator"))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while committed_fills(engine) < 3 * KILL_BATCH:
        assert process.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline, "no batch committed within two minutes"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL

    kept = count(engine, fills)
    assert 3 * KILL_BATCH <= kept < BIG_FILE_ROWS
    assert kept % KILL_BATCH == 0  # whole batches: nothing of the one in flight

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)

    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout) == {"accepted": BIG_FILE_ROWS - kept, "duplicates": kept, "conflicts": 0,
                                        "rejected": 0}
    statements = close(engine, MAY)
    assert list(statements.values()) == clean_import_statements
    counted = sum(line["fills"] for statement in statements.values() for line in statement["lines"])
    assert counted == sum(1 for n in range(BIG_FILE_ROWS) if n % 3 != 2)  # every fill of 1400 and 2200, once

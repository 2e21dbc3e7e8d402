"""`bkr simulate --live` against a real `bkr serve`: its makers and takers trade over HTTP, and the
broker program counts exactly the volume of the fills whose orders carried an active broker's id.

The expected figure is computed independently of the program: straight from the venue's own
tables, each fill's price × quantity summed over the fills whose order was sent with the broker's
X-Broker-Id (`venue_fills` joined with `venue_orders.broker_id`).
"""

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from venue_support import free_port, run_bkr, venue_world

from bkr import cli
from bkr.domain.money import mul, total
from bkr.store.tables import aggregates, venue_fills, venue_orders

pytestmark = pytest.mark.slow

ACTIVE, OTHER_ACTIVE, PENDING = 1400, 2200, 3300


def _venue_volume_by_broker(db_url: str) -> tuple[int, dict[int | None, Decimal]]:
    """(fills in the venue, exact quote volume of the fills by their order's broker id)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(venue_orders.c.broker_id, venue_fills.c.price, venue_fills.c.quantity)
                                      .join(venue_orders, venue_orders.c.order_id == venue_fills.c.order_id)).all()
    finally:
        engine.dispose()
    by_broker: dict[int | None, list[Decimal]] = {}
    for broker_id, price, quantity in rows:
        by_broker.setdefault(broker_id, []).append(mul(Decimal(price), Decimal(quantity)))
    return len(rows), {broker_id: total(volumes) for broker_id, volumes in by_broker.items()}


def _counted_volume(db_url: str, broker_id: int) -> Decimal:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            counted = connection.execute(select(aggregates.c.volume_usd)  # summed here: SQL's SUM is a float
                                         .where(aggregates.c.broker_id == broker_id)).scalars().all()
    finally:
        engine.dispose()
    return total(Decimal(volume) for volume in counted)


def test_live_simulation_trades_on_the_venue_and_the_program_counts_each_brokers_fills(tmp_path: Path) -> None:
    with venue_world(tmp_path) as world:
        world.active_broker(ACTIVE)
        world.active_broker(OTHER_ACTIVE)
        run_bkr("broker", "add", "--id", str(PENDING), "--account", "biz-pending", "--name", "Pending",
                "--type", "trading_bot", "--key", world.operator_key, "--db", world.db_url)
        server = world.serve()

        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "bkr.cli", "simulate", "--live", "--duration", "5",
                                 "--rate", "40", "--seed", "3", "--url", server.base, "--db", world.db_url],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        seconds = time.monotonic() - started

        assert result.returncode == 0, result.stderr + result.stdout
        assert seconds < 60
        assert "Traceback" not in result.stderr
        assert f"taker-1 → {ACTIVE} Broker {ACTIVE}" in result.stdout  # the active brokers, round-robin
        assert f"taker-2 → {OTHER_ACTIVE} Broker {OTHER_ACTIVE}" in result.stdout
        assert "taker-3 → no broker" in result.stdout
        assert "volume (USDC)" in result.stdout

        fill_count, venue_volume = _venue_volume_by_broker(world.db_url)
        assert fill_count > 0
        assert PENDING not in venue_volume  # only active brokers' ids are handed out
        assert venue_volume[ACTIVE] > 0
        assert _counted_volume(world.db_url, ACTIVE) == venue_volume[ACTIVE]
        assert _counted_volume(world.db_url, OTHER_ACTIVE) == venue_volume.get(OTHER_ACTIVE, Decimal(0))
        # and the broker sees the same figure through its own API, the month-to-date summary
        api_volume, _fee_base = world.broker_figures(server, ACTIVE)
        assert api_volume == venue_volume[ACTIVE]


def test_live_simulation_says_so_when_no_venue_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_url = f"sqlite:///{tmp_path / 'bkr.db'}"

    code = cli.run(["simulate", "--live", "--duration", "1", "--url", f"http://127.0.0.1:{free_port()}",
                    "--db", db_url])

    stderr = capsys.readouterr().err
    assert code == 1
    assert stderr.startswith("error: cannot reach the venue at http://127.0.0.1:") and stderr.count("\n") == 1
    assert "bkr serve" in stderr
    assert not (tmp_path / "bkr.db").exists()  # refused before it touched the database

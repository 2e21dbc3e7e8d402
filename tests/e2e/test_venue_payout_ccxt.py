"""A program that pays to the venue (`payout_target = "venue"`), seen by a broker with ccxt's own
Backpack client: settling a month credits the broker's business account on the venue in USDC by
exactly the statement's payout, and acknowledges the payout instruction with the venue's transfer
reference. Everything an operator does goes through `bkr`'s command line; the broker's balance is
read over a real socket from a real `bkr serve` with the pinned ccxt.
"""

import csv
import json
from decimal import Decimal
from pathlib import Path

import ccxt
import pytest
from venue_support import run_bkr, venue_world

from bkr.domain.fills import FIELDS

pytestmark = pytest.mark.slow

MONTH = "2026-11"


def _fills(path: Path) -> Path:
    """Three fills of alice's through broker 1400 in November 2026, fees with 18 decimals."""
    with path.open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=FIELDS)
        writer.writeheader()
        for n, fee in enumerate(("12.345678901234567891", "0.000000000000000001", "7.5"), start=1):
            writer.writerow({"fill_id": f"f-{n}", "order_id": f"o-{n}", "user_id": "alice", "symbol": "SOL_USDC",
                             "market_type": "SPOT", "side": "Bid", "price": "150.25", "quantity": "3", "fee": fee,
                             "fee_symbol": "USDC", "is_maker": "false", "timestamp": f"2026-11-0{n}T10:00:00Z",
                             "broker_id": "1400", "via_api": "true", "fill_type": "User"})
    return path


def test_a_settled_payout_grows_the_brokers_usdc_balance_seen_through_ccxt_by_exactly_the_payout(
        tmp_path: Path) -> None:
    with venue_world(tmp_path) as world:
        as_root = ("--key", world.admin_key, "--db", world.db_url)
        run_bkr("broker", "add", "--id", "1400", "--account", "biz-1400", "--name", "Broker 1400", "--type",
                "exchange_aggregator", *as_root)
        run_bkr("broker", "activate", "1400", "--at", "2026-01-01T00:00:00Z", *as_root)
        run_bkr("user", "add", "--id", "alice", *as_root)
        venue = tmp_path / "venue.toml"
        venue.write_text('[program]\npayout_target = "venue"\n')
        run_bkr("program", "apply", str(venue), "--from", MONTH, "--reason", "the sandbox pays to its venue",
                *as_root)
        run_bkr("fills", "import", str(_fills(tmp_path / "november.csv")), *as_root)
        statement = json.loads(run_bkr("close", "--month", MONTH, "--json", *as_root))["statements"][0]
        payout = Decimal(statement["payout"])
        assert payout > 0

        broker = world.user("biz-1400")  # the broker's business account, as a venue account with a key
        server = world.serve()
        exchange = ccxt.backpack({"apiKey": broker.api_key, "secret": broker.secret})
        exchange.urls["api"] = {"public": server.base, "private": server.base}

        def usdc() -> Decimal:
            balance = exchange.fetch_balance()
            raw = exchange.privateGetApiV1Capital()["USDC"]
            exact = Decimal(raw["available"]) + Decimal(raw["locked"]) + Decimal(raw["staked"])
            assert Decimal(repr(balance["USDC"]["total"])) == exact  # ccxt's float is the venue's figure
            return exact

        before = usdc()
        run_bkr("approve", "--month", MONTH, *as_root)
        settled = json.loads(run_bkr("settle", "--month", MONTH, "--json", *as_root))
        assert (settled["paid"], settled["transferred"]) == ([1400], [1400])
        after = usdc()
        assert after - before == payout

        again = json.loads(run_bkr("settle", "--month", MONTH, "--json", *as_root))
        assert (again["already_paid"], again["transferred"]) == ([1400], [])
        assert usdc() == after  # paid once

        [instruction] = json.loads(run_bkr("payouts", "list", "--month", MONTH, "--json", "--db",
                                           world.db_url))["payouts"]
        assert (instruction["account_id"], Decimal(instruction["amount"]), instruction["state"]) == (
            "biz-1400", payout, "acknowledged")
        assert instruction["reference"].startswith("venue-transfer-")
        run_bkr("reconcile", "--month", MONTH, "--db", world.db_url)  # exits 1, failing the test, if anything differs


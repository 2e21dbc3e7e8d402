"""Test data of the fill feed: fills as the exchange posts them, and the stored state to compare."""

import json
import shutil
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from api_support import Api
from fastapi.testclient import TestClient
from sqlalchemy import Engine, Row, func, select

from bkr.program import registry
from bkr.store import db
from bkr.store.tables import aggregates, fills

BROKER = 1400


def fill(fill_id: str, *, at: str = "2026-10-15T12:00:00Z", user: str = "alice", broker: int | None = BROKER,
         price: str = "100", quantity: str = "1", fee: str = "0.1", market: str = "SPOT") -> dict[str, Any]:
    """One ordinary API fill of broker 1400 (money as decimal strings, as the feed sends it)."""
    return {
        "fill_id": fill_id, "order_id": f"order-{fill_id}", "user_id": user,
        "symbol": "SOL_USDC" if market == "SPOT" else f"SOL_USDC_{market}", "market_type": market, "side": "Bid",
        "price": price, "quantity": quantity, "fee": fee, "fee_symbol": "USDC", "is_maker": False,
        "timestamp": at, "broker_id": broker, "via_api": True, "fill_type": "User",
    }


def ndjson(items: Iterable[Any]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


def post_fills(client: TestClient | httpx.Client, headers: Mapping[str, str], items: list[Any], *,
               as_ndjson: bool = False) -> httpx.Response:
    if as_ndjson:
        return client.post("/v1/fills", content=ndjson(items),
                           headers={**headers, "Content-Type": "application/x-ndjson"})
    return client.post("/v1/fills", json=items, headers=dict(headers))


def register_users(engine: Engine, users: Iterable[str], now: Any) -> None:
    with engine.begin() as connection:
        registry.add_users(connection, [(user, None) for user in users], now, actor="ops")


def stored_aggregates(engine: Engine) -> list[Row[Any]]:
    """The running aggregates, in a fixed order, as exact values (rows compare as tuples)."""
    with engine.connect() as connection:
        return list(connection.execute(select(aggregates).order_by(*aggregates.primary_key.columns)).all())


def fill_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(fills)).scalar_one()  # type: ignore[no-any-return]


def reference_engine(sqlite_template: Path, tmp_path: Path) -> Engine:
    """A second, empty SQLite database: where the file import of the same fills is done to compare."""
    path = tmp_path / "reference.db"
    shutil.copy(sqlite_template, path)
    return db.open_engine(f"sqlite:///{path}")


def closed_october(api: Api, operator: dict[str, str] | None = None) -> dict[str, str]:
    """Broker 1400 with one fill of alice in October 2026 (fee 12.5 USD, `fill("f-1")`), the clock
    moved to November and October closed over the operator API by `operator` (default: a new
    operator with the `operator` role); the closing key's headers."""
    api.broker(1400)
    with api.engine.begin() as connection:
        registry.add_users(connection, [("alice", None)], api.clock(), actor="ops")
    operator = operator or api.operator_key()
    assert api.client.post("/v1/fills", json=[fill("f-1", fee="12.5")], headers=operator).status_code == 200
    api.clock.set(datetime(2026, 11, 2, tzinfo=UTC))
    assert api.client.post("/v1/admin/periods/2026-10/close", headers=operator).status_code == 200
    return operator

"""Helpers of the API tests: a movable clock, operator keys, requests signed as Backpack signs."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from bkr.domain.operators import Role
from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import KeyPair, sign, signing_string
from bkr.program import keys, operators, registry


@dataclass
class MovableClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 10, 15, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def set(self, moment: datetime) -> None:
        self.now = moment

    def ms(self) -> int:
        return int(self.now.timestamp() * 1000)


def signed_headers(pair: KeyPair, instruction: str, params: dict[str, Any], *, timestamp: int,
                   window: int = 5_000) -> dict[str, str]:
    """The four headers of a request signed exactly as Backpack's API documentation describes."""
    message = signing_string(instruction, params, timestamp, window)
    return {"X-API-Key": pair.api_key, "X-Signature": sign(pair.secret, message), "X-Timestamp": str(timestamp),
            "X-Window": str(window)}


@dataclass
class Api:
    client: TestClient
    engine: Engine
    clock: MovableClock

    made: list[str] = field(default_factory=list)  # the operators operator_key added, in order

    def operator_key(self, role: str = "operator", name: str | None = None) -> dict[str, str]:
        """The headers of a new operator's key: `name`, else `<role>-<n>` (each call a new operator)."""
        name = name or f"{role}-{len(self.made) + 1}"
        with self.engine.begin() as connection:
            key = operators.add_operator(connection, name, Role(role), self.clock(), created_by=None)
        self.made.append(name)
        return {"Authorization": f"Bearer {key.token}"}

    def broker(self, broker_id: int, *, active_since: datetime | None = None) -> KeyPair:
        """Enroll and activate a broker (from `active_since`, default 2026-01-01) and make it a key."""
        since = active_since or datetime(2026, 1, 1, tzinfo=UTC)
        with self.engine.begin() as connection:
            registry.enroll_broker(connection, broker_id, f"acct-{broker_id}", f"Broker {broker_id}",
                                   "trading_bot", since, actor="ops")
            registry.change_broker_status(connection, broker_id, BrokerStatus.ACTIVE, since, since, actor="ops")
            return keys.create_broker_key(connection, broker_id, self.clock(), actor="ops")

    def signed_get(self, pair: KeyPair, path: str, instruction: str, params: dict[str, Any] | None = None,
                   *, window: int = 5_000, timestamp: int | None = None) -> httpx.Response:
        params = params or {}
        headers = signed_headers(pair, instruction, params,
                                 timestamp=self.clock.ms() if timestamp is None else timestamp, window=window)
        return self.client.get(path, params=params, headers=headers)


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a response that has `status`."""
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx.Response, status: int) -> tuple[str, str | None]:
    """The error code and field of a refusal that has `status`."""
    assert response.status_code == status, response.text
    body = response.json()
    return body["code"], body["field"]

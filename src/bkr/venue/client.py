"""A small Backpack API client over httpx: what `bkr simulate --live` and the venue benchmark
trade with. It signs as Backpack documents; any Backpack client (ccxt, Hummingbot) works too."""

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from bkr.domain.signing import DEFAULT_WINDOW_MS, batch_signing_string, sign, signing_string

INSTRUCTIONS = {
    ("GET", "/api/v1/account"): "accountQuery", ("GET", "/api/v1/capital"): "balanceQuery",
    ("GET", "/api/v1/order"): "orderQuery", ("POST", "/api/v1/order"): "orderExecute",
    ("DELETE", "/api/v1/order"): "orderCancel", ("GET", "/api/v1/orders"): "orderQueryAll",
    ("POST", "/api/v1/orders"): "orderExecute", ("DELETE", "/api/v1/orders"): "orderCancelAll",
    ("GET", "/api/v1/position"): "positionQuery", ("GET", "/wapi/v1/history/fills"): "fillHistoryQueryAll",
    ("GET", "/wapi/v1/history/orders"): "orderHistoryQueryAll",
    ("GET", "/wapi/v1/history/funding"): "fundingHistoryQueryAll",
    ("GET", "/wapi/v1/history/position"): "positionHistoryQueryAll",
}


class BackpackError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.code = body.get("code") if isinstance(body, dict) else None
        super().__init__(f"{status} {body}")


class BackpackClient:
    def __init__(self, base_url: str, api_key: str | None = None, secret: str | None = None, *,
                 broker_id: int | str | None = None, window: int = DEFAULT_WINDOW_MS,
                 http: httpx.Client | None = None) -> None:
        self.api_key, self.secret, self.window = api_key, secret, window
        self.broker_id = broker_id
        self.http = http or httpx.Client(base_url=base_url, timeout=30)

    def close(self) -> None:
        self.http.close()

    def public(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        return self._answer(response)

    def signed(self, method: str, path: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
               ) -> Any:
        assert self.api_key and self.secret, "a signed request needs an API key and its secret"
        instruction = INSTRUCTIONS[(method, path)]
        stamp = int(time.time() * 1000)
        if isinstance(params, Sequence) and not isinstance(params, Mapping):
            message = batch_signing_string(instruction, params, stamp, self.window)
        else:
            message = signing_string(instruction, params or {}, stamp, self.window)
        headers = {"X-API-Key": self.api_key, "X-Timestamp": str(stamp), "X-Window": str(self.window),
                   "X-Signature": sign(self.secret, message)}
        if self.broker_id is not None:
            headers["X-Broker-Id"] = str(self.broker_id)
        if method == "GET":
            query = dict(params) if isinstance(params, Mapping) else {}
            response = self.http.get(path, params=query, headers=headers)
        else:
            headers["Content-Type"] = "application/json"
            response = self.http.request(method, path, content=json.dumps(params or {}), headers=headers)
        return self._answer(response)

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        body = response.json() if "json" in response.headers.get("content-type", "") else response.text
        if response.status_code >= 400:
            raise BackpackError(response.status_code, body)
        return body

    # the calls a trading client makes most
    def order(self, **order: Any) -> Any:
        return self.signed("POST", "/api/v1/order", order)

    def orders(self, orders: Sequence[Mapping[str, Any]]) -> Any:
        return self.signed("POST", "/api/v1/orders", orders)

    def cancel_all(self, symbol: str) -> Any:
        return self.signed("DELETE", "/api/v1/orders", {"symbol": symbol})

    def depth(self, symbol: str) -> Any:
        return self.public("/api/v1/depth", symbol=symbol)

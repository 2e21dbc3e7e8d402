"""A Backpack REST client written from Backpack's API documentation alone (its "Authentication"
section), with httpx and cryptography and nothing of bkr's: if the venue answers it, the venue
follows the documentation rather than merely agreeing with bkr's own signing code.

What the documentation says, and this client does:
- signed requests carry `X-API-Key` (base64 ED25519 verifying key), `X-Signature` (base64),
  `X-Timestamp` (Unix ms) and `X-Window` (ms, default 5000);
- the signed text is `instruction=<instruction>&` + the body's keys/values, or the query's
  parameters, ordered alphabetically in query-string format + `&timestamp=<ms>&window=<ms>`;
  with no parameters, only `instruction=…&timestamp=…&window=…`;
- a batch (POST /api/v1/orders) signs each order's sorted keys behind its own
  `instruction=orderExecute`, joined by `&`, with the timestamp and window once at the end;
- the broker is named by a header (`X-Broker-Id`), which is not signed, or by an order's own
  `brokerId` (an unsigned 16-bit integer, "Broker ID of the order" in Execute order's body), which
  is signed as every body key is.
"""

import base64
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DEFAULT_WINDOW = 5000

# Each endpoint's instruction, from its "Instruction:" line in the documentation.
INSTRUCTIONS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/account"): "accountQuery",
    ("GET", "/api/v1/capital"): "balanceQuery",
    ("GET", "/api/v1/order"): "orderQuery",
    ("POST", "/api/v1/order"): "orderExecute",
    ("DELETE", "/api/v1/order"): "orderCancel",
    ("GET", "/api/v1/orders"): "orderQueryAll",
    ("POST", "/api/v1/orders"): "orderExecute",
    ("DELETE", "/api/v1/orders"): "orderCancelAll",
    ("GET", "/api/v1/position"): "positionQuery",
    ("GET", "/wapi/v1/history/fills"): "fillHistoryQueryAll",
    ("GET", "/wapi/v1/history/orders"): "orderHistoryQueryAll",
    ("GET", "/wapi/v1/history/funding"): "fundingHistoryQueryAll",
    ("GET", "/wapi/v1/history/position"): "positionHistoryQueryAll",
}

Params = Mapping[str, Any]


def _query_string(params: Params) -> str:
    """Keys in alphabetical order, `key=value` joined by `&`."""
    return "&".join(f"{key}={_value(params[key])}" for key in sorted(params))


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def signing_text(instruction: str, params: Params | Sequence[Params], timestamp: int, window: int) -> str:
    if isinstance(params, Mapping):
        parts = [f"instruction={instruction}"] + ([_query_string(params)] if params else [])
    else:  # a batch: every order behind its own instruction
        parts = [f"instruction={instruction}&{_query_string(order)}" for order in params]
    return "&".join([*parts, f"timestamp={timestamp}", f"window={window}"])


class DocsClient:
    """One user's (or a public) client: `call` returns the raw httpx response, for the tests to read."""

    def __init__(self, base_url: str, api_key: str | None = None, secret: str | None = None, *,
                 broker_header: tuple[str, str] | None = None, window: int = DEFAULT_WINDOW) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.api_key = api_key
        self.private = None if secret is None else Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret)[:32])
        self.broker_header = broker_header  # (name, value), e.g. ("X-Broker-Id", "1400")
        self.window = window

    def close(self) -> None:
        self.http.close()

    def public(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def headers(self, method: str, path: str, params: Params | Sequence[Params]) -> dict[str, str]:
        assert self.api_key is not None and self.private is not None, "a signed request needs a key"
        timestamp = int(time.time() * 1000)
        text = signing_text(INSTRUCTIONS[(method, path)], params, timestamp, self.window)
        headers = {"X-API-Key": self.api_key, "X-Timestamp": str(timestamp), "X-Window": str(self.window),
                   "X-Signature": base64.b64encode(self.private.sign(text.encode())).decode()}
        if self.broker_header is not None:
            headers[self.broker_header[0]] = self.broker_header[1]
        return headers

    def call(self, method: str, path: str, params: Params | Sequence[Params] | None = None, *,
             tamper: bool = False, signed: Params | Sequence[Params] | None = None) -> httpx.Response:
        """A signed request: GET parameters in the query string, others as a JSON body (DELETE too).
        `tamper` flips one bit of the signature, as a corrupted request would arrive; `signed` is
        what to sign instead of what is sent, as a body changed on its way would arrive."""
        params = {} if params is None else params
        headers = self.headers(method, path, params if signed is None else signed)
        if tamper:
            signature = bytearray(base64.b64decode(headers["X-Signature"]))
            signature[0] ^= 1
            headers["X-Signature"] = base64.b64encode(bytes(signature)).decode()
        if method == "GET":
            assert isinstance(params, Mapping)
            return self.http.get(path, params=dict(params), headers=headers)
        headers["Content-Type"] = "application/json; charset=utf-8"
        return self.http.request(method, path, content=json.dumps(params), headers=headers)

    def ok(self, method: str, path: str, params: Params | Sequence[Params] | None = None) -> Any:
        """A signed request that must succeed; its JSON."""
        response = self.call(method, path, params)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

"""What the sandbox does not serve is said so, on both databases: every Backpack path that
docs/api.md's venue table marks "not served", and any other path or method under `/api/` and
`/wapi/`, is answered `404 NOT_IMPLEMENTED` with a message naming the request and the page that
lists what is served; every path the table marks "served" is answered by its route; and a missing
order is still `RESOURCE_NOT_FOUND`. The table is read from the documentation, so that it and the
server cannot drift apart."""

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from venue_requests import signed_headers

from bkr.api.app import create_app
from bkr.api.routers import not_served
from bkr.domain.config import ProgramConfig
from bkr.domain.signing import KeyPair
from bkr.settings import ServiceSettings
from bkr.venue.accounts import create_user_key
from bkr.venue.markets import VenueConfig

API_DOC = Path(__file__).parents[2] / "docs" / "api.md"
ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/\S+)` \| (served|not served) \|", re.MULTILINE)
TABLE = [(m[1], m[2], m[3] == "served") for m in ROW.finditer(API_DOC.read_text())]


@pytest.fixture
def venue(engine: Engine) -> Iterator[tuple[TestClient, KeyPair]]:
    app = create_app(engine, ProgramConfig(), ServiceSettings(), venue_config=VenueConfig())
    with TestClient(app) as client:
        with engine.begin() as connection:
            key = create_user_key(connection, VenueConfig(), "alice", datetime.now(UTC), actor="ops")
        yield client, key


def request(client: TestClient, method: str, path: str) -> tuple[int, Any]:
    """An unsigned request, with an empty JSON object for a body unless it is a GET; the status
    and the JSON answer (None if it is not JSON: `/ping`'s `pong`)."""
    answer = client.request(method, path, json=None if method == "GET" else {})
    is_json = answer.headers.get("content-type", "").startswith("application/json")
    return answer.status_code, answer.json() if is_json else None


def is_not_served(status: int, body: Any, method: str, path: str) -> bool:
    return isinstance(body, dict) and (status, set(body), body["code"]) == (
        404, {"code", "message"}, "NOT_IMPLEMENTED") and body[
        "message"] == (f"{method} {path} is not served by this sandbox; the paths it serves are listed in "
                       "docs/api.md, \"The venue: Backpack's API, for real clients\"")


def test_the_table_lists_backpack_s_paths() -> None:
    assert len(TABLE) == len({(m, p) for m, p, _ in TABLE}) > 80
    assert ("GET", "/api/v1/klines", True) in TABLE and ("POST", "/api/v1/rfq", False) in TABLE


def test_what_the_table_marks_not_served_is_said_so_and_what_it_marks_served_is_answered(
        venue: tuple[TestClient, KeyPair]) -> None:
    client, _ = venue
    for method, path, served in TABLE:
        status, body = request(client, method, path)
        if served:
            assert not (isinstance(body, dict) and body.get("code") == "NOT_IMPLEMENTED"), (method, path, body)
        else:
            assert is_not_served(status, body, method, path), (method, path, status, body)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/nope"), ("GET", "/wapi/v1/history/a/b/c"), ("GET", "/api/v2/markets"), ("GET", "/api/"),
    ("PUT", "/api/v1/order"), ("PATCH", "/api/v1/orders"), ("POST", "/api/v1/klines"), ("DELETE", "/api/v1/capital"),
    ("POST", "/wapi/v1/history/fills"), ("OPTIONS", "/api/v1/rfqs"),
])
def test_any_other_path_or_method_is_not_served_either(venue: tuple[TestClient, KeyPair], method: str,
                                                       path: str) -> None:
    status, body = request(venue[0], method, path)

    assert is_not_served(status, body, method, path), (status, body)


def test_a_head_request_for_what_is_not_served_is_a_404_too(venue: tuple[TestClient, KeyPair]) -> None:
    assert venue[0].head("/api/v1/vaults").status_code == 404


def test_an_unknown_order_id_is_still_resource_not_found(venue: tuple[TestClient, KeyPair]) -> None:
    client, key = venue
    query = {"orderId": "987654", "symbol": "SOL_USDC"}
    body = {"orderId": 987654, "symbol": "SOL_USDC"}

    found = client.get("/api/v1/order", params=query, headers=dict(
        (k.decode(), v.decode()) for k, v in signed_headers(key, "orderQuery", query)))
    cancelled = client.request("DELETE", "/api/v1/order", json=body, headers=dict(
        (k.decode(), v.decode()) for k, v in signed_headers(key, "orderCancel", body)))

    for answer in (found, cancelled):
        assert (answer.status_code, answer.json()["code"]) == (404, "RESOURCE_NOT_FOUND"), answer.text


def test_the_answer_for_what_is_not_served_is_the_last_route(venue: tuple[TestClient, KeyPair]) -> None:
    """Registered after every other route, so that a route added to the venue later matches first.
    (FastAPI keeps an included router as one entry, or copies its routes, by version.)"""
    app = venue[0].app
    assert isinstance(app, FastAPI)
    is_catch_all = [getattr(r, "original_router", None) is not_served.router
                    or (isinstance(r, APIRoute) and r.endpoint is not_served.not_served) for r in app.routes]

    assert any(is_catch_all) and all(is_catch_all[is_catch_all.index(True):])

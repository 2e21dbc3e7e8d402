"""An order's broker from its body's `brokerId` or from `X-Broker-Id`, with the client written from
Backpack's documentation alone (backpack_docs_client), against `bkr serve` on SQLite and on
PostgreSQL: the body alone, the header alone, both equal, both different (under each policy), and
each order of a batch on its own. Every case reads the broker's month-to-date volume over bkr's
broker API and compares it, exactly, with the fills of the orders that named it.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from backpack_docs_client import DocsClient
from venue_support import BkrServer, Key, VenueWorld, venue_world

pytestmark = pytest.mark.slow

SYMBOL = "SOL_USDC"
REJECT = '[program]\nunknown_broker_policy = "reject"\n'


@dataclass
class Venue:
    world: VenueWorld
    server: BkrServer
    taker_key: Key
    taker: DocsClient  # without X-Broker-Id
    clients: list[DocsClient]

    def client(self, header: str | None = None) -> DocsClient:
        """The taker's key, sending `X-Broker-Id: header` (or none)."""
        client = DocsClient(self.server.base, self.taker_key.api_key, self.taker_key.secret,
                            broker_header=None if header is None else ("X-Broker-Id", header))
        self.clients.append(client)
        return client

    def brokers(self, *broker_ids: int) -> None:
        for broker_id in broker_ids:
            self.world.active_broker(broker_id)

    def volume(self, broker_id: int) -> Decimal:
        return self.world.broker_figures(self.server, broker_id)[0]

    def volumes(self, *broker_ids: int) -> dict[int, Decimal]:
        return {b: self.volume(b) for b in broker_ids}

    def fills_volume(self, *order_ids: str) -> Decimal:
        """Σ price × quantity of the taker's fills of these orders, from its fill history."""
        total = Decimal(0)
        for order_id in order_ids:
            fills = self.taker.ok("GET", "/wapi/v1/history/fills", {"orderId": order_id, "symbol": SYMBOL})
            assert fills, f"order {order_id} has fills"
            total += sum((Decimal(f["price"]) * Decimal(f["quantity"]) for f in fills), Decimal(0))
        return total

    def operator_list(self, path: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.server.base}/v1/admin/venue/{path}", timeout=30,
                             headers={"Authorization": f"Bearer {self.world.operator_key}"})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def buy(quantity: str, broker_id: object = None) -> dict[str, Any]:
    order: dict[str, Any] = {"orderType": "Market", "quantity": quantity, "side": "Bid", "symbol": SYMBOL}
    if broker_id is not None:
        order["brokerId"] = broker_id
    return order


@pytest.fixture
def venue(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Venue]:
    """A served venue on `db_url` (with the configuration `request.param`, if given), with a
    maker's asks at three prices, so that an order may take several. Each test enrolls the
    brokers it names (`Venue.brokers`): the server sees them at its next order."""
    with venue_world(tmp_path, db_url) as world:
        maker_key, taker_key = world.user("maker"), world.user("taker")
        server = world.serve(getattr(request, "param", None))
        maker = DocsClient(server.base, maker_key.api_key, maker_key.secret)
        taker = DocsClient(server.base, taker_key.api_key, taker_key.secret)
        for price, quantity in (("150.25", "3"), ("150.5", "4"), ("151.75", "100")):
            maker.ok("POST", "/api/v1/order", {"orderType": "Limit", "price": price, "quantity": quantity,
                                               "side": "Ask", "symbol": SYMBOL})
        venue = Venue(world, server, taker_key, taker, [maker, taker])
        yield venue
        for client in venue.clients:
            client.close()


def test_each_order_counts_for_the_broker_its_body_or_else_its_header_names(venue: Venue) -> None:
    venue.brokers(3200, 3201, 3202, 3205, 3206, 3207)
    body_only = venue.client().ok("POST", "/api/v1/order", buy("2.5", 3200))
    header_only = venue.client("3201").ok("POST", "/api/v1/order", buy("1.25"))
    both_equal = venue.client("3202").ok("POST", "/api/v1/order", buy("0.75", 3202))
    batch = venue.client().ok("POST", "/api/v1/orders", [buy("1.5", 3205), buy("0.5", 3206), buy("0.01")])
    with_header = venue.client("3207").ok("POST", "/api/v1/orders", [buy("0.3", 3207), buy("0.2")])

    assert [o["status"] for o in (body_only, header_only, both_equal, *batch, *with_header)] == ["Filled"] * 8
    assert [o["operation"] for o in (*batch, *with_header)] == ["Ok"] * 5
    assert body_only["executedQuoteQuantity"] == "375.625"  # 2.5 at 150.25
    assert venue.volumes(3200, 3201, 3202, 3205, 3206, 3207) == {
        3200: venue.fills_volume(body_only["id"]), 3201: venue.fills_volume(header_only["id"]),
        3202: venue.fills_volume(both_equal["id"]), 3205: venue.fills_volume(batch[0]["id"]),
        3206: venue.fills_volume(batch[1]["id"]), 3207: venue.fills_volume(*(o["id"] for o in with_header))}
    assert venue.volume(3200) == Decimal("375.625")


def test_under_ignore_an_order_whose_two_ids_differ_trades_for_nobody_and_is_listed(venue: Venue) -> None:
    venue.brokers(3203, 3204, 3208)
    ambiguous = venue.client("3203").ok("POST", "/api/v1/order", buy("1", 3204))
    in_a_batch = venue.client("3203").ok("POST", "/api/v1/orders", [buy("2", 3208), buy("0.5", 3203)])
    malformed = venue.client().ok("POST", "/api/v1/order", buy("0.4", "3208"))  # a string, not an integer

    assert (ambiguous["status"], malformed["status"]) == ("Filled", "Filled")
    assert [(o["operation"], o["status"]) for o in in_a_batch] == [("Ok", "Filled"), ("Ok", "Filled")]
    assert venue.volumes(3203, 3204, 3208) == {3203: venue.fills_volume(in_a_batch[1]["id"]),
                                               3204: Decimal(0), 3208: Decimal(0)}
    conflicts = venue.operator_list("broker-id-conflicts")
    assert [(c["header"], c["body"], c["orders"], c["rejected"]) for c in conflicts] == [
        ("3203", "3204", 1, 0), ("3203", "3208", 1, 0)]
    seen = {s["header"]: s for s in venue.operator_list("broker-ids")}
    assert (seen['"3208"']["orders"], seen['"3208"']["rejected"]) == (1, 0)
    assert seen['"3208"']["reason"] == 'brokerId "3208" is not a broker id (a whole number 1..65535, as a JSON integer)'


@pytest.mark.parametrize("venue", [REJECT], indirect=True)
def test_under_reject_an_order_whose_two_ids_differ_is_refused_naming_both(venue: Venue) -> None:
    venue.brokers(3202, 3203, 3204, 3205, 3206)
    refused = venue.client("3203").call("POST", "/api/v1/order", buy("1", 3204))
    batch_refused = venue.client().call("POST", "/api/v1/orders", [buy("1", 3205), buy("1", 70000)])
    agreed = venue.client("3202").ok("POST", "/api/v1/order", buy("0.5", 3202))
    batch = venue.client().ok("POST", "/api/v1/orders", [buy("1.5", 3205), buy("0.25", 3206)])

    assert refused.status_code == 400 and refused.json()["code"] == "INVALID_CLIENT_REQUEST"
    assert refused.json()["message"].startswith("X-Broker-Id 3203 and brokerId 3204 name different brokers")
    assert batch_refused.status_code == 400, batch_refused.text  # nothing of the batch trades
    assert batch_refused.json()["message"].startswith("order 1: brokerId 70000 is not a broker id")
    assert venue.volumes(3202, 3203, 3204, 3205, 3206) == {
        3202: venue.fills_volume(agreed["id"]), 3203: Decimal(0), 3204: Decimal(0),
        3205: venue.fills_volume(batch[0]["id"]), 3206: venue.fills_volume(batch[1]["id"])}
    history = venue.taker.ok("GET", "/wapi/v1/history/orders", {"symbol": SYMBOL})
    assert sorted(o["id"] for o in history) == sorted([agreed["id"], batch[0]["id"], batch[1]["id"]])
    conflicts = venue.operator_list("broker-id-conflicts")
    assert [(c["header"], c["body"], c["orders"], c["rejected"]) for c in conflicts] == [("3203", "3204", 0, 1)]


def test_the_signature_covers_the_body_s_broker_id(venue: Venue) -> None:
    venue.brokers(3200, 3201)
    client = venue.client()

    changed = client.call("POST", "/api/v1/order", buy("1", 3201), signed=buy("1", 3200))
    added = client.call("POST", "/api/v1/order", buy("1", 3200), signed=buy("1"))

    for answer, sent in ((changed, "brokerId=3201"), (added, "brokerId=3200")):
        assert answer.status_code == 401 and answer.json()["code"] == "INVALID_SIGNATURE", answer.text
        assert sent in answer.json()["message"]  # the string it expected signed holds the body's brokerId
    assert venue.volumes(3200, 3201) == {3200: Decimal(0), 3201: Decimal(0)}
    assert venue.taker.ok("GET", "/wapi/v1/history/orders", {"symbol": SYMBOL}) == []

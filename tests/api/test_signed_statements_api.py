"""Signed statements over HTTP: the broker downloads one (`format=signed`, `format=html`), anyone
reads the exchange's statement keys, and the one checks against the other."""

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from api_support import Api, MovableClock
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient
from test_broker_api import AUGUST, BROKER, SEPTEMBER, close_august_and_september, fill, get, ingest, register_users

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig
from bkr.domain.statement_document import canonical_json
from bkr.domain.statement_signing import StatementKey, new_statement_key, verify_signed_statement
from bkr.program.close import close_month, stored_statement
from bkr.program.exports import StatementFormat, render_statement
from bkr.program.statement_signing import publish_statement_key, published_keys, retire_statement_key
from bkr.settings import ServiceSettings
from bkr.store import db

KEY = new_statement_key()


def app_with_key(db_url: str, clock: MovableClock, key: StatementKey | None) -> Iterator[Api]:
    engine = db.open_engine(db_url)
    app = create_app(engine, ProgramConfig(), ServiceSettings(), clock=clock, statement_key=key)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, engine, clock)
    engine.dispose()


@pytest.fixture
def signing_api(db_url: str, clock: MovableClock) -> Iterator[Api]:
    """The API of a server configured with the statement key KEY, which the exchange published."""
    for api in app_with_key(db_url, clock, KEY):
        with api.engine.begin() as connection:
            publish_statement_key(connection, KEY, clock())
        yield api


def test_anyone_reads_the_statement_keys_retired_ones_included(signing_api: Api) -> None:
    later = new_statement_key()
    with signing_api.engine.begin() as connection:
        publish_statement_key(connection, later, signing_api.clock() + timedelta(days=1))
        retire_statement_key(connection, KEY.key_id, signing_api.clock() + timedelta(days=2))

    response = signing_api.client.get("/v1/statement-keys")  # no credentials

    assert response.status_code == 200
    listed = response.json()["keys"]
    assert [(k["key_id"], k["public_key"], k["algorithm"]) for k in listed] == [
        (KEY.key_id, KEY.public_key, "ed25519"), (later.key_id, later.public_key, "ed25519")]
    assert listed[0]["retired_at"] is not None and listed[1]["retired_at"] is None


def test_a_broker_downloads_its_statement_signed_over_the_stored_bytes(signing_api: Api) -> None:
    pair = signing_api.broker(BROKER)
    close_august_and_september(signing_api)
    with signing_api.engine.connect() as connection:
        stored = stored_statement(connection, BROKER, SEPTEMBER)
        keys = published_keys(connection)

    response = get(signing_api, pair, "/statements/2026-09", {"format": "signed"})

    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    envelope = response.json()
    assert stored.encode() in response.content  # the envelope is canonical: the statement appears as stored
    assert canonical_json(envelope["statement"]).encode() == stored.encode()
    signature = envelope["signature"]
    Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"])).verify(
        base64.b64decode(signature["value"]), stored.encode())
    listed = signing_api.client.get("/v1/statement-keys").json()["keys"]
    assert {(k["key_id"], k["public_key"]) for k in listed} == {(signature["key_id"], signature["public_key"])}
    assert verify_signed_statement(envelope, keys).ok


def test_the_printable_statement_carries_the_signature(signing_api: Api) -> None:
    pair = signing_api.broker(BROKER)
    close_august_and_september(signing_api)
    envelope = get(signing_api, pair, "/statements/2026-09", {"format": "signed"}).json()

    page = get(signing_api, pair, "/statements/2026-09", {"format": "html"})

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert envelope["signature"]["value"] in page.text and envelope["signature"]["key_id"] in page.text
    assert envelope["statement"]["payout"] in page.text


def test_a_statement_with_a_bust_of_a_paid_month_is_served_in_every_format(signing_api: Api) -> None:
    """August's big fill is busted after August closed: September's statement carries the bust as a
    correction line, pays 0 and carries the rest out; every format says so, and the signature holds."""
    pair = signing_api.broker(BROKER)
    register_users(signing_api)
    august = fill("a1", "2026-08-03T12:00:00Z", price="1000000", quantity="6", fee="600")
    ingest(signing_api, [august])
    close_month(signing_api.engine, AUGUST, now=signing_api.clock())
    ingest(signing_api, [{**august, "fill_id": "a1-bust", "corrects": "a1", "quantity": "-6", "fee": "-600"},
                         fill("s1", "2026-09-04T12:00:00Z", price="200", quantity="5", fee="0.5")])
    close_month(signing_api.engine, SEPTEMBER, now=signing_api.clock())

    document = get(signing_api, pair, "/statements/2026-09").json()
    envelope = get(signing_api, pair, "/statements/2026-09", {"format": "signed"}).json()
    csv_text = get(signing_api, pair, "/statements/2026-09", {"format": "csv"}).text
    page = get(signing_api, pair, "/statements/2026-09", {"format": "html"}).text

    assert [(line["kind"], line["fill_month"], line["fee_base"]) for line in document["lines"]] == [
        ("regular", "2026-09", "0.5"), ("correction", "2026-08", "-600")]
    assert (document["payout_exact"], document["carried_out"], document["payout"]) == ("-179.9", "-179.9", "0.00")
    assert verify_signed_statement(envelope, published_keys_of(signing_api)).ok
    assert f"{BROKER},2026-09,carried_out,,,,,,,,,,,-179.9," in csv_text.splitlines()
    assert '<tr class="correction">' in page and "-179.9" in page


def published_keys_of(api: Api) -> list[Any]:
    with api.engine.connect() as connection:
        return published_keys(connection)


@pytest.mark.parametrize("published", [False, True])
def test_a_server_without_a_current_key_does_not_sign(db_url: str, clock: MovableClock, published: bool) -> None:
    key = new_statement_key() if published else None
    for api in app_with_key(db_url, clock, key):
        pair = api.broker(BROKER)
        close_august_and_september(api)
        if key is not None:  # published, then retired
            with api.engine.begin() as connection:
                publish_statement_key(connection, key, clock())
                retire_statement_key(connection, key.key_id, clock())

        refused = get(api, pair, "/statements/2026-09", {"format": "signed"})
        as_json = get(api, pair, "/statements/2026-09")

        assert refused.status_code == 503
        assert refused.json()["code"] == ("statement_key_retired" if published else "statement_key_missing")
        assert as_json.status_code == 200 and json.loads(as_json.text)["broker_id"] == BROKER
        if key is None:
            page = get(api, pair, "/statements/2026-09", {"format": "html"})
            assert page.status_code == 200 and "Not signed" in page.text


def _dashboard_session(api: Api) -> None:
    """Sign the test client into the dashboard as an operator (who may open every broker's pages)."""
    token = api.operator_key("viewer")["Authorization"].removeprefix("Bearer ")
    form = api.client.get("/dashboard/sign-in").text
    csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    signed_in = api.client.post("/dashboard/sign-in", data={"csrf": csrf, "key": token, "next": ""},
                                follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text


@pytest.mark.parametrize("fmt", ["json", "csv", "signed", "html"])
def test_every_door_gives_the_same_statement_with_the_same_headers(signing_api: Api, fmt: str) -> None:
    """The broker API, the dashboard's download and the operator API (json and csv) all answer with
    `render_statement`: the same bytes, media type and file name for the same statement."""
    pair = signing_api.broker(BROKER)
    close_august_and_september(signing_api)
    with signing_api.engine.connect() as connection:
        rendered = render_statement(connection, BROKER, SEPTEMBER, StatementFormat(fmt), KEY)
    _dashboard_session(signing_api)

    answers = [get(signing_api, pair, "/statements/2026-09", {"format": fmt}),
               signing_api.client.get(f"/dashboard/brokers/{BROKER}/statements/2026-09/download?format={fmt}")]
    if fmt in ("json", "csv"):
        answers.append(signing_api.client.get(f"/v1/admin/periods/2026-09/statements/{BROKER}?format={fmt}",
                                              headers=signing_api.operator_key("viewer")))

    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.content == rendered.body.encode("utf-8")
        assert answer.headers["content-type"] == rendered.media_type
        assert {name: answer.headers.get(name) for name in rendered.headers} == rendered.headers
    assert rendered.filename == f"statement-{BROKER}-2026-09" + {"json": ".json", "csv": ".csv",
                                                                 "signed": ".signed.json", "html": ".html"}[fmt]


def test_the_printable_page_runs_nothing_loads_nothing_and_is_never_framed(signing_api: Api) -> None:
    pair = signing_api.broker(BROKER)
    close_august_and_september(signing_api)

    page = get(signing_api, pair, "/statements/2026-09", {"format": "html"})

    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert (page.headers["x-frame-options"], page.headers["x-content-type-options"]) == ("DENY", "nosniff")
    assert "<script" not in page.text and "src=" not in page.text


def test_without_a_statement_key_every_door_refuses_a_signed_copy_alike(db_url: str, clock: MovableClock) -> None:
    for api in app_with_key(db_url, clock, None):
        pair = api.broker(BROKER)
        close_august_and_september(api)
        _dashboard_session(api)

        from_api = get(api, pair, "/statements/2026-09", {"format": "signed"})
        from_dashboard = api.client.get(f"/dashboard/brokers/{BROKER}/statements/2026-09/download?format=signed")

        assert from_api.status_code == from_dashboard.status_code == 503
        assert from_api.json()["code"] == "statement_key_missing"
        assert "no statement key" in from_dashboard.text

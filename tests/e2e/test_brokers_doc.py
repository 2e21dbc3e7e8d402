"""docs/brokers.md, run as a broker would run it, against a real `bkr serve`.

The guide's ```bash block is the operator's setup. Each of its `bkr …` lines runs as typed, with
BKR_DATABASE_URL naming the test's database and its `> FILE` written to the test's directory,
through bkr's command line in-process (`venue_support.run_bkr`), which spares the interpreter's
start-up for each command. Its `bkr serve` line is the one thing not run as written: the test
starts the server itself, as a real process on a free port. The guide's environment table is then
filled in as the guide says (BKR_URL, BROKER_ID, the keys from the JSON files the operator wrote),
and every ```python block runs, in order, each in a fresh namespace (so each snippet must be
complete on its own), and must print exactly the ```text block(s) that follow it in the guide.
The per-fill audit's snippet sums the fills of each statement line and must print the summary's
payout. The snippet about unknown ids runs a second time once the guide's ```toml block is applied as a
program version from the current month (`bkr program apply`), against the same running server,
and must print the guide's second output. The webhook receiver's verification helper is one of
the snippets (tests/integration/test_webhooks.py checks bkr's real deliveries with it). The broker's
figures are finally checked against the venue's own fills, summed here without the program's code.
"""

import contextlib
import io
import json
import re
import shlex
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from venue_support import VenueWorld, run_bkr, venue_world

from bkr.domain.periods import Month
from bkr.store.tables import venue_fills, venue_orders

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "brokers.md"
BROKER_ID = 3100  # the id the guide's operator enrolls
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


class Snippet:
    """A ```python block and the ```text blocks that follow it (what it prints)."""

    def __init__(self, number: int, code: str) -> None:
        self.number, self.code = number, code
        self.outputs: list[str] = []


def guide_blocks() -> tuple[list[str], list[Snippet], list[str]]:
    """The guide's bash blocks, its Python snippets with their outputs, and its TOML blocks."""
    bash: list[str] = []
    snippets: list[Snippet] = []
    toml: list[str] = []
    for match in FENCE.finditer(GUIDE.read_text(encoding="utf-8")):
        language, body = match.group(1), match.group(2)
        if language == "bash":
            bash.append(body)
        elif language == "python":
            snippets.append(Snippet(len(snippets) + 1, body))
        elif language == "text":
            assert snippets, "a ```text block before any ```python block: whose output is it?"
            snippets[-1].outputs.append(body.strip())
        elif language == "toml":
            toml.append(body)
    return bash, snippets, toml


def run_operator_setup(world: VenueWorld, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line of the operator's block but `bkr serve`: first the operator's key, exported, then
    `bkr ARGS [> FILE]`."""
    lines = [line for line in script.splitlines() if line.strip()]
    assert lines[-1].startswith("bkr serve "), "the operator's block ends by serving the sandbox"
    assert lines[0].startswith("export BKR_OPERATOR_KEY="), "the operator's block starts with its key"
    monkeypatch.setenv("BKR_OPERATOR_KEY", world.operator_key)  # an operator's, as the guide says
    for line in lines[1:-1]:
        command, _, target = line.partition(" > ")
        words = shlex.split(command)
        assert words[0] == "bkr", f"not a bkr command: {line!r}"
        output = run_bkr(*words[1:])
        if target:
            (world.directory / target.strip()).write_text(output)


def guide_environment(world: VenueWorld, base: str) -> dict[str, str]:
    """The guide's table of environment variables, filled from what the operator handed over."""
    def key(name: str) -> dict[str, str]:
        return json.loads((world.directory / name).read_text())  # type: ignore[no-any-return]

    taker, maker, broker = key("alice.json"), key("bob.json"), key(f"broker-{BROKER_ID}-key.json")
    assert broker["broker_id"] == BROKER_ID
    return {"BKR_URL": base, "BROKER_ID": str(BROKER_ID),
            "API_KEY": taker["api_key"], "API_SECRET": taker["secret"],
            "MAKER_API_KEY": maker["api_key"], "MAKER_API_SECRET": maker["secret"],
            "BROKER_KEY": broker["api_key"], "BROKER_SECRET": broker["secret"]}


def run_snippet(snippet: Snippet, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The snippet in a namespace of its own, as `python snippet.py` would run it; what it printed."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = compile(snippet.code, f"<docs/brokers.md, python snippet {snippet.number}>", "exec")
    printed_text = io.StringIO()
    with contextlib.redirect_stdout(printed_text):
        exec(code, {"__name__": "__main__"})
    return printed_text.getvalue().strip()


def counted_by_the_venue(world: VenueWorld) -> tuple[Decimal, Decimal, int]:
    """Volume, fee base (USD) and fills of the venue's fills whose order carried the broker's id:
    notional = price × quantity; a fee in the base asset is valued at the fill's price."""
    engine = create_engine(world.db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(venue_fills.c.price, venue_fills.c.quantity, venue_fills.c.fee, venue_fills.c.fee_symbol)
                .join(venue_orders, venue_orders.c.order_id == venue_fills.c.order_id)
                .where(venue_orders.c.broker_id == BROKER_ID)).all()
    finally:
        engine.dispose()
    volume = sum((Decimal(r.price) * Decimal(r.quantity) for r in rows), Decimal(0))
    fee_base = sum((Decimal(r.fee) * (1 if r.fee_symbol == "USDC" else Decimal(r.price)) for r in rows
                    if Decimal(r.fee) > 0), Decimal(0))
    return volume, fee_base, len(rows)


def printed(output: str, label: str) -> str:
    found = [line.removeprefix(f"{label}:").strip() for line in output.splitlines() if line.startswith(f"{label}:")]
    assert len(found) == 1, f"{label!r} in {output!r}"
    return found[0]


def test_every_snippet_of_the_broker_guide_runs_against_bkr_serve(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bash, snippets, toml = guide_blocks()
    assert len(bash) == 1 and len(toml) == 1
    assert [len(s.outputs) for s in snippets] == [1, 1, 1, 2, 1, 1, 1], "each snippet shows what it prints"
    ccxt_trade, hummingbot_request, plain_http, forgotten_id, watch, every_fill, verify_webhook = snippets
    monkeypatch.chdir(tmp_path)

    with venue_world(tmp_path) as world:
        monkeypatch.setenv("BKR_DATABASE_URL", world.db_url)  # as the operator's shell would have it
        run_operator_setup(world, bash[0], monkeypatch)
        sandbox = world.serve()
        env = guide_environment(world, sandbox.base)

        for snippet in (ccxt_trade, hummingbot_request, plain_http, forgotten_id, watch, every_fill, verify_webhook):
            assert run_snippet(snippet, env, monkeypatch) == snippet.outputs[0], f"snippet {snippet.number}"

        # The summary's figures are the venue's fills, summed independently.
        summary = watch.outputs[0]
        volume, fee_base, fills = counted_by_the_venue(world)
        assert Decimal(printed(summary, "api volume")) == volume
        assert Decimal(printed(summary, "fee base")) == fee_base
        assert printed(summary, "today") == f"{volume} in {fills} fills"
        # … and so is the per-fill audit's count
        assert printed(every_fill.outputs[0], "fills").startswith(f"{fills} in ")
        seen = world.broker_ids_seen()  # ccxt's 1400 traded, and the operator can see it was sent
        assert (seen["1400"]["orders"], seen["1400"]["rejected"]) == (1, 0)

        # The same forgetful client once the exchange rejects ids that are not active brokers: a
        # program version from this month, which the running server applies from its next order.
        strict = world.directory / "strict.toml"
        strict.write_text(toml[0])
        run_bkr("program", "apply", str(strict), "--from", str(Month.of(datetime.now(UTC))), "--reason",
                "reject orders whose X-Broker-Id is not an active broker", "--key", world.admin_key)
        assert run_snippet(forgotten_id, env, monkeypatch) == forgotten_id.outputs[1]
        assert world.broker_ids_seen()["1400"]["rejected"] == 1
        # … and the refused order left the broker's figures as they were.
        assert run_snippet(watch, env, monkeypatch) == watch.outputs[0]

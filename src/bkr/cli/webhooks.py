"""`bkr broker webhook` and `bkr webhooks`: brokers' endpoints, the deliverer, and the delivery log.

`bkr broker webhook set|rotate|remove` change a broker's endpoint and need an operator key (the
audit trail names its operator); `show` needs none. A new endpoint's signing secret, and a
rotated one, are printed once. `bkr webhooks deliver` sends what is due (`--once`: until nothing
is, then exits; else it keeps running, as `bkr serve` does in a thread); `bkr webhooks log` and
`bkr webhooks events` read the log and the outbox.
"""

from typing import Annotated

import typer
from rich.table import Table

from bkr.cli.common import (
    BrokerIdArgument,
    DbOption,
    JsonOption,
    KeyOption,
    checked_broker_id,
    err,
    operator_from_key,
    out,
    print_json,
    say,
    transaction,
)
from bkr.domain.clock import system_clock
from bkr.domain.operators import Role
from bkr.domain.webhooks import EventStatus
from bkr.program import webhooks
from bkr.store import db

webhook_app = typer.Typer(no_args_is_help=True, help="A broker's webhook endpoint (signed events; docs/brokers.md).")
webhooks_app = typer.Typer(no_args_is_help=True, help="Deliver webhook events, and read their log.")


def _print_secret(made: webhooks.EndpointWithSecret, as_json: bool) -> None:
    endpoint = made.endpoint
    if as_json:
        print_json(endpoint.to_document() | {"secret": made.secret})
        return
    out.print(f"endpoint: {endpoint.url}\nsecret:   {made.secret}")
    err.print("The secret is shown this once: give it to the broker, who checks each event's Bkr-Signature "
              "with it (docs/brokers.md#webhooks-be-told-instead-of-asking).")


@webhook_app.command("set")
def webhook_set(broker_id: BrokerIdArgument, url: Annotated[str, typer.Argument(help="http(s)://… (at most 2048 "
                                                                                      "characters).")],
                key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Register a broker's endpoint (a new one gets a signing secret, printed once), or move it to
    another URL (the secret stays)."""
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        made = webhooks.set_endpoint(connection, broker_id, url, system_clock(), actor=operator.name)
    if isinstance(made, webhooks.EndpointWithSecret):
        _print_secret(made, as_json)
    elif as_json:
        print_json(made.to_document())
    else:
        say(err, f"broker {broker_id}: events now go to {made.url} (the secret is unchanged: {made.secret_hint})")


@webhook_app.command("rotate")
def webhook_rotate(broker_id: BrokerIdArgument, key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL,
                   as_json: JsonOption = False) -> None:
    """A new signing secret for the broker's endpoint, printed once; the old one signs nothing more."""
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        made = webhooks.rotate_secret(connection, broker_id, system_clock(), actor=operator.name)
    _print_secret(made, as_json)


@webhook_app.command("remove")
def webhook_remove(broker_id: BrokerIdArgument, key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """Remove the broker's endpoint; its events not delivered yet are cancelled."""
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        cancelled = webhooks.remove_endpoint(connection, broker_id, system_clock(), actor=operator.name)
    say(err, f"broker {broker_id}: endpoint removed; {cancelled} undelivered event(s) cancelled")


@webhook_app.command("show")
def webhook_show(broker_id: BrokerIdArgument, db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """The broker's endpoint (its secret only as a hint)."""
    with transaction(db_url) as connection:
        endpoint = webhooks.get_endpoint(connection, broker_id)
    if as_json:
        print_json(endpoint.to_document())
        return
    out.print(f"broker {broker_id}: {endpoint.url}\n  since {endpoint.created_at.isoformat()}; secret "
              f"{endpoint.secret_hint} from {endpoint.secret_created_at.isoformat()}")


@webhooks_app.command("deliver")
def webhooks_deliver(
    once: Annotated[bool, typer.Option("--once", help="Deliver what is due now, then exit.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds between rounds.")] = 5.0,
    db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Send the due events to their endpoints, signed, and record each attempt. Any number of
    deliverers may run at once (and `bkr serve` runs one)."""
    from bkr.program import webhook_delivery  # lazy: httpx

    engine = db.open_engine(db_url)
    if once:
        done = webhook_delivery.deliver_all_due(engine, system_clock, webhook_delivery.http_sender())
        if as_json:
            print_json(done.to_document())
        else:
            say(err, f"{done.attempted} attempted: {len(done.delivered)} delivered, {len(done.retrying)} to retry, "
                     f"{len(done.failed)} given up, {len(done.cancelled)} cancelled")
        return
    deliverer = webhook_delivery.Deliverer(engine, system_clock, interval)
    say(err, f"delivering webhook events every {interval:g} s; Ctrl-C stops")
    try:
        deliverer.run()
    except KeyboardInterrupt:
        say(err, "stopped; what is not delivered yet stays in the outbox")


BrokerOption = Annotated[int | None, typer.Option("--broker", callback=checked_broker_id, show_default=False,
                                                  help="One broker's.")]


@webhooks_app.command("log")
def webhooks_log(
    broker_id: BrokerOption = None,
    event: Annotated[str | None, typer.Option(help="One event's attempts (evt_…).", show_default=False)] = None,
    before: Annotated[int | None, typer.Option(min=1, max=2**31 - 1, help="Attempts before this delivery id (the "
                                                                          "next page).", show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=webhooks.MAX_LOG_PAGE, help="Attempts per page.")] = 100,
    db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Delivery attempts, newest first: the event, the attempt, the answer (or the error)."""
    with transaction(db_url) as connection:
        found = webhooks.delivery_log(connection, broker_id=broker_id, event_id=event, before=before, limit=limit)
    if as_json:
        print_json({"deliveries": [record.to_document() for record in found],
                    "next_before": found[-1].delivery_id if len(found) == limit else None})
        return
    table = Table("id", "at (UTC)", "broker", "event", "type", "attempt", "answer", "ms", "event now",
                  title="webhook deliveries")
    for r in found:
        answer = str(r.status_code) if r.status_code is not None else (r.error or "")
        table.add_row(str(r.delivery_id), f"{r.attempted_at:%Y-%m-%d %H:%M:%S}", str(r.broker_id), r.event_id,
                      r.event_type, str(r.attempt), answer, str(r.duration_ms), r.event_status)
    out.print(table)
    if len(found) == limit:
        out.print(f"More: bkr webhooks log --before {found[-1].delivery_id}")


@webhooks_app.command("events")
def webhooks_events(
    broker_id: BrokerOption = None,
    status: Annotated[EventStatus | None, typer.Option(help="Only events in this state.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=webhooks.MAX_LOG_PAGE, help="Events to list.")] = 100,
    db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """The outbox, newest first: each event, where its delivery stands, and when it is next tried."""
    with transaction(db_url) as connection:
        found = webhooks.events(connection, broker_id=broker_id, status=status, limit=limit)
    if as_json:
        print_json({"events": [record.to_document() for record in found]})
        return
    table = Table("event", "broker", "type", "created (UTC)", "status", "attempts", "next attempt",
                  title="webhook events")
    for e in found:
        table.add_row(e.event_id, str(e.broker_id), e.event_type, f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.status,
                      str(e.attempts), "" if e.next_attempt_at is None else f"{e.next_attempt_at:%Y-%m-%d %H:%M:%S}")
    out.print(table)

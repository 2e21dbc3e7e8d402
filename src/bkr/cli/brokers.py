"""`bkr broker`: enroll brokers, change their status, show where one stands, and make its API keys.

Every change needs an operator key with the `operator` role (`--key` or BKR_OPERATOR_KEY), whose
operator the audit trail names; `list` and `show` need none.

The key use cases are imported by the command that makes a key: they load `cryptography`, which
would otherwise add some 30 ms to every `bkr` invocation."""

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from bkr.cli.common import (
    AtOption,
    BrokerIdArgument,
    ConfigOption,
    DbOption,
    JsonOption,
    KeyOption,
    ReasonOption,
    RetroactiveOption,
    err,
    moment,
    open_program,
    operator_from_key,
    out,
    print_json,
    retroactive_note,
    say,
    transaction,
)
from bkr.cli.webhooks import webhook_app
from bkr.domain.clock import system_clock
from bkr.domain.operators import Role
from bkr.domain.registry import BROKER_ID_RANGE, BrokerStatus, BrokerType
from bkr.program import registry, reports
from bkr.store import db

broker_app = typer.Typer(no_args_is_help=True, help="Enroll brokers and change their status.")


@broker_app.command("add")
def broker_add(
    broker_id: Annotated[int, typer.Option("--id", help=f"The X-Broker-Id number, {BROKER_ID_RANGE}.")],
    account: Annotated[str, typer.Option(help="The broker's business account.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    broker_type: Annotated[str, typer.Option("--type", help=" | ".join(t.value for t in BrokerType))],
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
) -> None:
    """Enroll a business account as a broker (status: pending)."""
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        registry.enroll_broker(connection, broker_id, account, name, broker_type, system_clock(), actor=operator.name)
    err.print(f"broker {broker_id} enrolled (pending); activate it with: bkr broker activate {broker_id}")


def _change_status(broker_id: int, status: BrokerStatus, at: str | None, key: str | None, retroactive: bool,
                   reason: str | None, db_url: str) -> None:
    when = moment(at)
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        view = registry.change_broker_status(connection, broker_id, status, when, system_clock(),
                                             actor=operator.name, is_retroactive=retroactive, reason=reason)
    say(err, f"broker {broker_id} {status.value} from {when if at else 'now'}; status now: {view.status}"
             + retroactive_note(retroactive, reason))


@broker_app.command("activate")
def broker_activate(broker_id: BrokerIdArgument, at: AtOption = None, retroactive: RetroactiveOption = False,
                    reason: ReasonOption = None, key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """Make a broker active: its API fills count from --at on."""
    _change_status(broker_id, BrokerStatus.ACTIVE, at, key, retroactive, reason, db_url)


@broker_app.command("suspend")
def broker_suspend(broker_id: BrokerIdArgument, at: AtOption = None, retroactive: RetroactiveOption = False,
                   reason: ReasonOption = None, key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """Suspend a broker: its fills stop counting from --at on."""
    _change_status(broker_id, BrokerStatus.SUSPENDED, at, key, retroactive, reason, db_url)


@broker_app.command("terminate")
def broker_terminate(broker_id: BrokerIdArgument, at: AtOption = None, retroactive: RetroactiveOption = False,
                     reason: ReasonOption = None, key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """End a broker's enrollment for good (its id is never reused)."""
    _change_status(broker_id, BrokerStatus.TERMINATED, at, key, retroactive, reason, db_url)


@broker_app.command("cancel")
def broker_cancel(broker_id: BrokerIdArgument,
                  at: Annotated[str, typer.Option("--at", help="The scheduled change's effective time (ISO 8601).")],
                  key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """Cancel a status change scheduled for later (`bkr broker show N` lists them)."""
    when = moment(at)
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        view = registry.cancel_status_change(connection, broker_id, when, system_clock(), actor=operator.name)
    err.print(f"broker {broker_id}: the change at {when.isoformat()} is cancelled; status now: {view.status}")


@broker_app.command("list")
def broker_list(db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """All brokers with their current status."""
    with transaction(db_url) as connection:
        views = registry.list_brokers(connection, system_clock())
    if as_json:
        print_json([{"broker_id": v.broker_id, "account": v.account_id, "name": v.name, "type": v.type.value,
                      "status": v.status.value} for v in views])
        return
    table = Table("id", "name", "type", "account", "status")
    for v in views:
        table.add_row(str(v.broker_id), v.name, v.type.value, v.account_id, v.status.value)
    out.print(table)


@broker_app.command("show")
def broker_show(broker_id: BrokerIdArgument, db_url: DbOption = db.DEFAULT_URL, config_path: ConfigOption = None,
                as_json: JsonOption = False) -> None:
    """A broker, its status history, and where it stands this month."""
    with open_program(db_url, config_path).begin() as connection:
        summary = reports.broker_summary(connection, broker_id, system_clock())
    view = summary.broker
    document: dict[str, Any] = {
        "broker_id": view.broker_id, "account": view.account_id, "name": view.name, "type": view.type.value,
        "status": view.status.value,
        "history": [{"status": c.status.value, "effective_at": c.effective_at.isoformat()}
                    for c in view.timeline.changes],
        "month_to_date": {k: v for k, v in summary.to_document().items() if k not in ("broker_id", "name", "status")},
    }
    if as_json:
        print_json(document)
        return
    out.print(Text.assemble((view.name, "bold"), f" (broker {view.broker_id}, {view.type.value}, account "
                            f"{view.account_id}): ", (view.status.value, "bold")))
    for change in view.timeline.changes:
        out.print(f"  {change.effective_at.isoformat()}  {change.status.value}")
    mtd = document["month_to_date"]
    out.print(f"{mtd['month']} so far: API volume ${mtd['api_volume']} (spot {mtd['spot_volume']}, futures "
              f"{mtd['futures_volume']}) → {mtd['tier']} at {mtd['broker_rate']}; payout if the month ended now "
              f"${mtd['payout']}" + (f"; ${mtd['volume_to_next_tier']} more for {mtd['next_tier']}"
                                      if mtd["next_tier"] else ""))
    if mtd["last_closed_month"]:
        out.print(f"{mtd['last_closed_month']} (last closed): {mtd['last_closed_tier']}")


broker_app.add_typer(webhook_app, name="webhook")
broker_key_app = typer.Typer(no_args_is_help=True, help="A broker's API keys (ED25519, Backpack style).")
broker_app.add_typer(broker_key_app, name="key")


@broker_key_app.command("create")
def broker_key_create(broker_id: BrokerIdArgument, key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL,
                      as_json: JsonOption = False) -> None:
    """Make a key pair for a broker's API (needs the operator role). The secret is shown once; bkr
    keeps only the public key."""
    from bkr.program import keys  # lazy: cryptography

    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        pair = keys.create_broker_key(connection, broker_id, system_clock(), actor=operator.name)
    if as_json:
        print_json({"broker_id": broker_id, "api_key": pair.api_key, "secret": pair.secret})
        return
    out.print(f"api key (X-API-Key): {pair.api_key}\nsecret:              {pair.secret}")
    err.print("The secret is not stored: keep it now. Sign requests as Backpack's API is signed (docs/api.md).")

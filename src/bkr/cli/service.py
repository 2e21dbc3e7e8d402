"""`bkr serve` runs the HTTP API (operators' keys are `bkr operator` and `bkr key`).

It imports what only it needs when it runs, not with this module (which every `bkr` invocation
imports): the API app with uvicorn takes most of a second."""

import os
import socket
from typing import Annotated

import typer

from bkr.cli.common import ConfigOption, DbOption, open_program
from bkr.domain.errors import InvalidInput
from bkr.settings import load_service_settings
from bkr.store import db

service_app = typer.Typer()  # no name: its commands are bkr's own (`bkr serve`)


@service_app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1; BKR_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000; BKR_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1; BKR_WORKERS).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Most fills per POST /v1/fills (BKR_MAX_BATCH).")] = None,
    close_grace_minutes: Annotated[int | None, typer.Option(
        help="Close the previous month this long after 00:00 UTC on the 1st (BKR_CLOSE_GRACE_MINUTES).")] = None,
    scheduled_close: Annotated[bool | None, typer.Option(
        "--scheduled-close/--no-scheduled-close", help="Close months on schedule (BKR_SCHEDULED_CLOSE).")] = None,
    webhooks: Annotated[bool | None, typer.Option(
        "--webhooks/--no-webhooks", help="Deliver brokers' webhook events (BKR_WEBHOOKS).")] = None,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
) -> None:
    """Run the HTTP API: fill ingestion, the operator API and the broker API."""
    from bkr.api.server import run_server  # lazy: FastAPI and uvicorn

    settings = load_service_settings(config_path, os.environ, {
        "host": host, "port": port, "workers": workers, "max_batch": max_batch,
        "close_grace_minutes": close_grace_minutes, "scheduled_close": scheduled_close, "webhooks": webhooks})
    _check_listening(settings.host, settings.port)
    # migrate an empty database, refuse one behind, and have the program's settings in it, before serving
    open_program(db_url, config_path).dispose()
    run_server(db_url, config_path, settings)


def _check_listening(host: str, port: int) -> None:
    """Refuse an address the server could not listen on, in one line, before it announces itself
    there (the server's own failure is a stream of log lines and exit status 3)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise InvalidInput(f"--host: cannot listen on {host!r} ({error})") from None
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        try:
            probe.bind(address)
        except OSError as error:
            raise InvalidInput(f"--port: cannot listen on {host}:{port} ({error.strerror})") from None

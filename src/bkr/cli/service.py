"""`bkr serve` runs the HTTP API (operators' keys are `bkr operator` and `bkr key`).

It imports what only it needs when it runs, not with this module (which every `bkr` invocation
imports): the API app with uvicorn takes most of a second."""

import os
from typing import Annotated

import typer

from bkr.cli.common import ConfigOption, DbOption
from bkr.settings import load_config, load_service_settings
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
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
) -> None:
    """Run the HTTP API: fill ingestion, the operator API and the broker API."""
    from bkr.api.server import run_server  # lazy: FastAPI and uvicorn

    config = load_config(config_path)
    settings = load_service_settings(config_path, os.environ, {
        "host": host, "port": port, "workers": workers, "max_batch": max_batch,
        "close_grace_minutes": close_grace_minutes, "scheduled_close": scheduled_close})
    db.open_engine(db_url).dispose()  # migrate an empty database, refuse one behind, before serving
    run_server(db_url, config_path, config, settings)

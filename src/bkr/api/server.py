"""Running the API under uvicorn, with one or several worker processes.

Workers are separate processes, so each builds its own app from the environment this module
sets (uvicorn imports `bkr.api.server:app_from_environment` in every worker). The program's
settings are in the database (`bkr serve` imports the config file's first, if it has none)."""

import json
import os
import secrets
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from rich.console import Console
from sqlalchemy.engine import make_url

from bkr.api.app import create_app
from bkr.api.observability import MULTIPROC_ENV, configure_logging
from bkr.domain.statement_signing import StatementKey
from bkr.program.statement_signing import load_signing_key
from bkr.settings import ServiceSettings, statement_key_file
from bkr.store import db
from bkr.venue.settings import load_venue_config

_ENV = "BKR_SERVE_STATE"


def app_from_environment() -> FastAPI:
    configure_logging()
    state = json.loads(os.environ[_ENV])
    config_path = Path(state["config"]) if state["config"] else None
    return create_app(db.open_engine(state["db"], create=False), None, ServiceSettings(**state["settings"]),
                      run_scheduler=True,
                      venue_config=load_venue_config(config_path), statement_key=configured_statement_key(config_path))


def configured_statement_key(config_path: Path | None) -> StatementKey | None:
    """The statement key the server signs with, if one is configured (a configured key that
    cannot be read stops the server before it starts)."""
    path = statement_key_file(config_path, os.environ)
    return None if path is None else load_signing_key(path)


def run_server(db_url: str, config_path: Path | None, settings: ServiceSettings) -> None:
    configure_logging()
    statement_key = configured_statement_key(config_path)
    shown = make_url(db_url).render_as_string(hide_password=True)
    base = _base_url(settings)
    lines = [f"bkr serving {shown} on {base}  (workers: {settings.workers})",
             f"  dashboard    {base}/dashboard",
             f"  API docs     {base}/docs", f"  OpenAPI      {base}/openapi.json",
             f"  venue        {base}/api/v1/markets  (Backpack-compatible sandbox; docs/brokers.md)",
             f"  streams      {base.replace('http://', 'ws://', 1)}/  (the venue's WebSocket streams)",
             f"  health       {base}/healthz   readiness {base}/readyz   metrics {base}/metrics",
             f"  statements   {'signed with key ' + statement_key.key_id if statement_key else 'not signed'}; "
             f"public keys at {base}/v1/statement-keys"]
    console = Console(stderr=True, highlight=False)
    for line in lines:
        console.print(line, soft_wrap=True)  # never wrapped: the URLs stay whole
    if settings.workers == 1:
        app = create_app(db.open_engine(db_url, create=False), None, settings, run_scheduler=True,
                         venue_config=load_venue_config(config_path), statement_key=statement_key)
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
        return
    if not settings.dashboard_secret:  # one key for every worker, or a session would end at the next worker
        settings = replace(settings, dashboard_secret=secrets.token_urlsafe(32))
    os.environ[_ENV] = json.dumps({"db": db_url, "config": str(config_path) if config_path else None,
                                   "settings": asdict(settings)})
    # Workers write their metrics to one directory that /metrics sums (see bkr.api.observability);
    # it must be set before they start, and a directory the operator chose is kept.
    with tempfile.TemporaryDirectory(prefix="bkr-metrics-") as metrics_dir:
        os.environ.setdefault(MULTIPROC_ENV, metrics_dir)
        uvicorn.run("bkr.api.server:app_from_environment", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_config=None, access_log=False)


def _base_url(settings: ServiceSettings) -> str:
    """The URL to open: a wildcard or loopback address is shown as localhost."""
    host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::", "::1", "") else settings.host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"

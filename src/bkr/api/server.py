"""Running the API under uvicorn, with one or several worker processes.

Workers are separate processes, so each builds its own app from the environment this module
sets (uvicorn imports `bkr.api.server:app_from_environment` in every worker)."""

import json
import os
from dataclasses import asdict
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from rich.console import Console

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig
from bkr.settings import ServiceSettings, load_config
from bkr.store import db

_ENV = "BKR_SERVE_STATE"


def app_from_environment() -> FastAPI:
    state = json.loads(os.environ[_ENV])
    config_path = Path(state["config"]) if state["config"] else None
    return create_app(db.open_engine(state["db"], create=False), load_config(config_path),
                      ServiceSettings(**state["settings"]), run_scheduler=True)


def run_server(db_url: str, config_path: Path | None, config: ProgramConfig, settings: ServiceSettings) -> None:
    base = f"http://{'localhost' if settings.host in ('127.0.0.1', '0.0.0.0') else settings.host}:{settings.port}"
    console = Console(stderr=True, highlight=False)
    console.print(f"bkr serving {db_url} on {base}  (workers: {settings.workers})\n"
                  f"  API docs     {base}/docs\n  OpenAPI      {base}/openapi.json\n"
                  f"  health       {base}/healthz   readiness {base}/readyz   metrics {base}/metrics")
    if settings.workers == 1:
        app = create_app(db.open_engine(db_url, create=False), config, settings, run_scheduler=True)
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
        return
    os.environ[_ENV] = json.dumps({"db": db_url, "config": str(config_path) if config_path else None,
                                   "settings": asdict(settings)})
    uvicorn.run("bkr.api.server:app_from_environment", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_config=None, access_log=False)

"""The dashboard: server-rendered pages for brokers and operators, under `/dashboard`.

Pages are drawn from the same use cases the API answers with, so a figure on a page is the
figure in the API's JSON. Sign-in takes the keys the API already issues; see docs/dashboard.md.
"""

import secrets

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from bkr.api.dashboard import broker_pages, operator_pages, signin
from bkr.api.dashboard.web import PACKAGE, PREFIX, Dashboard, make_templates


def install(app: FastAPI, secret: str) -> None:
    """Mount the dashboard on `app`; `secret` signs its session cookies (a random one when empty,
    so sessions then last as long as the process)."""
    app.state.dashboard = Dashboard(secret or secrets.token_urlsafe(32), make_templates())
    app.mount(f"{PREFIX}/static", StaticFiles(directory=PACKAGE / "static"), name="dashboard-static")
    for router in (signin.root, signin.router, broker_pages.router, operator_pages.router, signin.unknown):
        app.include_router(router)

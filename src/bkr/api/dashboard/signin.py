"""Signing in and out, where `/` and `/dashboard` lead, and the page for a path that leads nowhere."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from bkr.api.dashboard import session as sessions
from bkr.api.dashboard.auth import check_session, identify_key
from bkr.api.dashboard.session import Holder, Session
from bkr.api.dashboard.web import PREFIX, FormDep, PageRoute, SessionDep, back_to, redirect, render, set_session
from bkr.api.deps import ServicesDep
from bkr.api.errors import status_of
from bkr.domain.errors import BkrError
from bkr.program.sessions import end_session

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
root = APIRouter(include_in_schema=False)


def home_of(session: Session) -> str:
    if session.holder is Holder.BROKER:
        return f"{PREFIX}/brokers/{session.broker_id}"
    return f"{PREFIX}/program"


@root.get("/")
def index() -> Response:
    return redirect(PREFIX)


@router.get("")
def dashboard_home(services: ServicesDep, session: SessionDep) -> Response:
    """A signed-in visitor's own home page; the sign-in page for anyone else."""
    if session.signed_in:
        try:
            with services.engine.connect() as connection:
                check_session(connection, session, services.clock())
            return redirect(home_of(session))
        except BkrError:
            pass  # a key revoked or expired since: sign in again
    return redirect(f"{PREFIX}/sign-in")


@router.get("/sign-in")
def sign_in_page(request: Request, session: SessionDep,
                 next_page: Annotated[str, Query(alias="next")] = "") -> Response:
    return render(request, "sign_in.html", title="Sign in", next=next_page)


@router.post("/sign-in")
def sign_in(request: Request, services: ServicesDep, form: FormDep) -> Response:
    """Check the pasted key as the API would, then open a session for it. The key itself is
    never stored, in the cookie or anywhere else."""
    now = services.clock()
    try:
        with services.engine.connect() as connection:
            holder, key_id, broker_id = identify_key(connection, form.get("key", ""), now)
    except BkrError as error:
        return render(request, "sign_in.html", status=status_of(error), title="Sign in", next=form.get("next", ""),
                      error=str(error))
    session = sessions.signed_in(holder, key_id, broker_id, now)
    response = redirect(back_to(form.get("next", ""), home_of(session)))
    set_session(request, response, session)
    return response


@router.post("/sign-out")
def sign_out(request: Request, services: ServicesDep, session: SessionDep,
             form: FormDep) -> Response:  # form: the CSRF check
    """End the session on the server too: a copy of its cookie is refused from now on."""
    if session.signed_in:
        now = services.clock()
        with services.engine.begin() as connection:
            end_session(connection, session.csrf, datetime.fromtimestamp(session.expires, UTC), now)
    response = redirect(f"{PREFIX}/sign-in")
    set_session(request, response, sessions.anonymous(services.clock()))
    return response


unknown = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)


@unknown.get("/{path:path}")
def not_found(request: Request, session: SessionDep, path: str) -> Response:
    """Registered last: a dashboard path no page serves is answered as a page, not as API JSON."""
    return render(request, "error.html", status=404, title="Not found", message=f"/dashboard/{path}: no such page")

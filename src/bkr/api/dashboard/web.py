"""What every dashboard page shares: templates, the session cookie, who is asking, forms and errors.

Pages answer HTML, errors included: a domain error raised by a use case becomes a page with its
message and the HTTP status the API would give it, and a visitor who is not signed in is sent to
the sign-in page. A POST is accepted only with the session's CSRF token in its form.
"""

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

from bkr.api.dashboard import format as fmt
from bkr.api.dashboard import session as sessions
from bkr.api.dashboard.auth import check_session
from bkr.api.dashboard.session import COOKIE, Holder, Session
from bkr.api.deps import Services, ServicesDep, record_use
from bkr.api.errors import status_of
from bkr.domain.errors import BkrError, Forbidden, Unauthenticated
from bkr.domain.operators import Role as OperatorRole
from bkr.domain.registry import BrokerStatus
from bkr.program import exports, keys
from bkr.store import db

PACKAGE = Path(__file__).parent
PREFIX = "/dashboard"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16_384
# what an operator may do to a broker from the dashboard: the status to set, and the button's word
STATUS_ACTIONS = {BrokerStatus.PENDING: [(BrokerStatus.ACTIVE, "Activate")],
                  BrokerStatus.ACTIVE: [(BrokerStatus.SUSPENDED, "Suspend")],
                  BrokerStatus.SUSPENDED: [(BrokerStatus.ACTIVE, "Reactivate")],
                  BrokerStatus.TERMINATED: []}


@dataclass(frozen=True)
class Dashboard:
    """The dashboard's own state, kept on the app beside the API's services."""

    secret: str  # signs session cookies
    templates: Environment


def make_templates() -> Environment:
    # the dashboard's own templates, then the statement body it shares with the printable statement
    loader = ChoiceLoader([FileSystemLoader(PACKAGE / "templates"), FileSystemLoader(exports.TEMPLATES)])
    environment = Environment(loader=loader, autoescape=select_autoescape(), trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(exports.FILTERS)  # `exact`: the API's own text of an amount, for data-value
    environment.filters["amount"] = fmt.amount
    environment.filters["rate"] = fmt.rate
    environment.globals["actions"] = STATUS_ACTIONS
    environment.globals["Role"] = OperatorRole  # `operator.role.allows(Role.APPROVER)` decides a button
    environment.globals["amount"] = fmt.amount  # an amount as a page shows it, for the shared statement body
    return environment


def dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard  # type: ignore[no-any-return]


# A page runs no script, loads nothing from elsewhere, is never framed by another site (no
# clickjacking of its buttons) and is not kept in shared caches: it shows a broker's money.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# --- the session -----------------------------------------------------------------------------------


def current_session(request: Request, services: ServicesDep) -> Session:
    """The visitor's session; an anonymous one (with a CSRF token for the sign-in form) if it has
    none, or a forged or expired one. A new session is sent back with the response."""
    now = services.clock()
    found = sessions.decode(request.cookies.get(COOKIE), dashboard(request).secret, now)
    if found is None:
        found = sessions.anonymous(now)
        request.state.new_session = found
    request.state.session = found
    return found


SessionDep = Annotated[Session, Depends(current_session)]


def set_session(request: Request, response: Response, session: Session) -> None:
    """The cookie: HttpOnly (no script reads it), SameSite=Lax (not sent with another site's POST),
    Secure when the page was served over https, and no longer-lived than the session inside."""
    response.set_cookie(COOKIE, sessions.encode(session, dashboard(request).secret),
                        max_age=int(sessions.LIFETIME.total_seconds()), path=PREFIX, httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")


def signed_in(request: Request, services: ServicesDep, session: SessionDep) -> Session:
    """A signed-in session whose key is still good (checked against the database on every request,
    as the API checks a key); its operator, if an operator's, is kept for the page to name."""
    now = services.clock()
    with db.snapshot(services.engine) as connection:
        operator = check_session(connection, session, now)
    request.state.operator = operator
    if operator is not None:
        record_use(services, operator.key_id, operator.key_last_used_at, now)
    return session


SignedInDep = Annotated[Session, Depends(signed_in)]


def _operator(needed: OperatorRole) -> Callable[..., keys.Operator]:
    """The signed-in operator, if its role allows what needs `needed`, as the API would decide."""

    def allowed(request: Request, session: SignedInDep) -> keys.Operator:
        operator: keys.Operator | None = request.state.operator
        if operator is None:
            raise Forbidden("operator pages need an operator key; this session is a broker's",
                            code="role_insufficient")
        return keys.require_role(operator, needed)

    return allowed


OperatorReaderDep = Annotated[keys.Operator, Depends(_operator(OperatorRole.VIEWER))]
OperatorChangeDep = Annotated[keys.Operator, Depends(_operator(OperatorRole.OPERATOR))]  # changes the program
ApproverDep = Annotated[keys.Operator, Depends(_operator(OperatorRole.APPROVER))]  # approves and settles


def may_open_broker(session: Session, broker_id: int) -> None:
    """A broker sees only itself; operators see every broker."""
    if session.holder is Holder.BROKER and session.broker_id != broker_id:
        raise Forbidden(f"this session belongs to broker {session.broker_id}; it cannot open broker {broker_id}",
                        code="not_your_broker")


# --- forms ---------------------------------------------------------------------------------------


async def checked_form(request: Request, session: SessionDep) -> dict[str, str]:
    """The POSTed form, once its CSRF token matches the session's (403 otherwise)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM_TYPE:
        raise Forbidden("a dashboard action is a form post", code="csrf_failed")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Forbidden("form too large", code="csrf_failed")
    form = {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
    if not sessions.csrf_matches(session, form.get("csrf")):
        raise Forbidden("the form's security token is missing or stale: reload the page and try again",
                        code="csrf_failed")
    return form


FormDep = Annotated[dict[str, str], Depends(checked_form)]


def back_to(target: str, default: str) -> str:
    """Where a form returns: `target` if it is a dashboard page (never another site), else `default`."""
    return target if target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target else default


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


# --- pages ---------------------------------------------------------------------------------------


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    operator: keys.Operator | None = getattr(request.state, "operator", None)
    services: Services = request.app.state.services
    page = dashboard(request).templates.get_template(template).render(
        request=request, session=session, operator=operator, csrf=session.csrf if session else "",
        now=services.clock(),
        live=request.query_params.get("live") == "1", **context)
    response = HTMLResponse(page, status_code=status, headers=PAGE_HEADERS)
    new: Session | None = getattr(request.state, "new_session", None)
    if new is not None:
        set_session(request, response, new)
    return response


class PageRoute(APIRoute):
    """A route that answers errors as pages: sign-in for an unknown visitor, else the error's
    message with the status the API gives the same error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthenticated as error:
                if getattr(request.state, "session", None) is None or not request.state.session.signed_in:
                    return redirect(f"{PREFIX}/sign-in?next={quote(request.url.path)}")
                return render(request, "error.html", status=401, title="Sign in again", message=str(error),
                              sign_in=True)
            except BkrError as error:
                return render(request, "error.html", status=status_of(error), title=_TITLES.get(
                    status_of(error), "Something is wrong"), message=str(error), code=error.code)
            except RequestValidationError as error:
                first = error.errors()[0] if error.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("path", "query"))
                return render(request, "error.html", status=404, title="Not found",
                              message=f"{where}: {first.get('msg', 'invalid')}")

        return page


_TITLES = {403: "Not allowed", 404: "Not found", 409: "Not possible now", 422: "Invalid input"}

"""The venue's answer for what it does not serve: every path and method under `/api/` and
`/wapi/` that no route of the venue matches (Backpack's RFQs, strategies, borrowing and lending,
withdrawals, …, or a method a served path does not take).

Without it such a request met the router's own 404, which the venue spells `RESOURCE_NOT_FOUND`,
the code of a missing order: clients raised their "order not found" error for a path the sandbox
never had. The answer is `404` with Backpack's own `NOT_IMPLEMENTED` code (so that clients whose
types list Backpack's codes still read it, and ccxt raises `OperationFailed`, not the not-found
`ExchangeNotAvailable`) and a message naming the request and the page that lists what is served.

These routes match every path under their prefixes, so they are registered after every other
route (`bkr.api.app.create_app` includes this router last): a route added to the venue later still
matches first.
"""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bkr.api.errors import venue_error_response

router = APIRouter(include_in_schema=False)

CODE = "NOT_IMPLEMENTED"
STATUS = 404
SERVED_LIST = "docs/api.md, \"The venue: Backpack's API, for real clients\""
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
SHOWN_PATH = 100  # characters of the path the message quotes at most


@router.api_route("/api/{rest:path}", methods=METHODS)
@router.api_route("/wapi/{rest:path}", methods=METHODS)
def not_served(request: Request) -> JSONResponse:
    path = request.url.path
    what = f"{request.method} {path if len(path) <= SHOWN_PATH else path[:SHOWN_PATH] + '…'}"
    return venue_error_response(STATUS, CODE, f"{what} is not served by this sandbox; the paths it serves are "
                                              f"listed in {SERVED_LIST}")

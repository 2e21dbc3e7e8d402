"""Every error the API answers is JSON: `{"code", "message", "field", "request_id"}`.

`code` is stable (clients branch on it); `message` is for people; `field` names the input to
blame when there is one. Domain errors carry their code; this module only picks the status.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from bkr.domain.errors import (
    BkrError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PeriodNotEnded,
    StatementKeyUnavailable,
    StoreNotReady,
    Unauthenticated,
)


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    request_id: str | None = None


class ApiError(BkrError):
    """An error of the HTTP layer itself (a batch too large), with its status."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field, code=code)
        self.status = status


_STATUS: tuple[tuple[type[BkrError], int], ...] = (
    (Unauthenticated, 401), (Forbidden, 403), (NotFound, 404), (Conflict, 409), (PeriodNotEnded, 409),
    (InvalidInput, 422), (StoreNotReady, 503), (StatementKeyUnavailable, 503),
)

_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid_input"}


def status_of(error: BkrError) -> int:
    if isinstance(error, ApiError):
        return error.status
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400


def error_response(request: Request, status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(code=code, message=message, field=field, request_id=getattr(request.state, "request_id", None))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field_of(location: tuple[Any, ...]) -> str | None:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


# --- the venue speaks Backpack's errors ------------------------------------------------------------

VENUE_PREFIXES = ("/api/", "/wapi/")


def is_venue(request: Request) -> bool:
    return request.url.path.startswith(VENUE_PREFIXES)


def backpack_error(error: Exception) -> tuple[int, str]:
    """The HTTP status and Backpack error code of an error met on the venue."""
    code = getattr(error, "code", "")
    if isinstance(error, Unauthenticated):
        return 401, code if code in ("INVALID_SIGNATURE", "UNAUTHORIZED") else "UNAUTHORIZED"
    if isinstance(error, Forbidden):
        return 403, "FORBIDDEN"
    if isinstance(error, NotFound):
        return 404, "RESOURCE_NOT_FOUND"
    if code == "SERVER_ERROR":
        return 500, code
    if isinstance(error, BkrError) and code.isupper():  # the venue's own errors carry Backpack's code
        return 400, code
    if isinstance(error, (InvalidInput, Conflict)):
        return 400, "INVALID_CLIENT_REQUEST"
    return 500, "SERVER_ERROR"


def venue_error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BkrError)
    async def domain_error(request: Request, error: BkrError) -> JSONResponse:
        if is_venue(request):
            return venue_error_response(*backpack_error(error), str(error))
        headers = {"WWW-Authenticate": "Signature"} if isinstance(error, Unauthenticated) else None
        return error_response(request, status_of(error), error.code, str(error), error.field, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        if is_venue(request):
            return venue_error_response(400, "INVALID_CLIENT_REQUEST", message)
        return error_response(request, 422, "invalid_input", message, field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if is_venue(request):
            code = "RESOURCE_NOT_FOUND" if error.status_code == 404 else "INVALID_CLIENT_REQUEST"
            return venue_error_response(error.status_code, code, str(error.detail))
        if error.status_code == 400 and isinstance(error.__cause__, ValueError):
            # FastAPI's answer to a JSON body it cannot even decode (not UTF-8): the same 422 as
            # any other malformed JSON body, which every endpoint with a body documents.
            return error_response(request, 422, "invalid_input", f"body: not valid JSON ({error.__cause__})",
                                  "body")
        return error_response(request, error.status_code, _HTTP_CODES.get(error.status_code, "http_error"),
                              str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, error: OperationalError) -> JSONResponse:
        if is_venue(request):
            return venue_error_response(503, "MAINTENANCE", "database unavailable")
        return error_response(request, 503, "database_unavailable",
                              f"database: {str(error.orig).strip().splitlines()[0] if error.orig else error}")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of an endpoint, for its OpenAPI entry."""
    described = {400: "Malformed request", 401: "Missing, malformed or failing credentials",
                 403: "Not allowed with these credentials", 404: "Not found", 409: "Conflicts with the record",
                 413: "Batch larger than the configured maximum", 422: "A field is invalid; `field` names it",
                 503: "Database unavailable or schema behind"}
    return {status: {"model": ErrorBody, "description": described[status]} for status in statuses}

"""Request ids, structured JSON logs and Prometheus metrics.

The metric objects are defined here, once; the code that observes an event increments them.

Every request gets an id: the caller's `X-Request-ID` when it is sane (at most 64 characters of
`A-Z a-z 0-9 . _ -`), else a new one. It is answered in the `X-Request-ID` header, copied into
error bodies, and written on every log line of the request, so one id finds a request in the
client's logs, the access log and a traceback alike.

Metrics work with several worker processes: when `PROMETHEUS_MULTIPROC_DIR` names a directory
(set before the workers start, as `bkr serve --workers N` does), each process writes its samples
there and `/metrics` adds them up across processes (prometheus_client's multiprocess mode).
"""

import json
import logging
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bkr.api.errors import error_response, is_venue

FILLS = Counter("bkr_fills", "Fills received over HTTP, by outcome and, for rejections, the field to blame",
                ["outcome", "reason"])
INGEST_SECONDS = Histogram("bkr_ingest_seconds", "Time to process one POST /v1/fills batch",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CLOSES = Counter("bkr_closes", "Month closes attempted, by trigger (api, schedule) and result "
                 "(closed, already_closed, preview, error)", ["trigger", "result"])
REQUEST_SECONDS = Histogram("bkr_request_seconds", "HTTP request latency by method, route template and status",
                            ["method", "route", "status"])
REQUESTS = Counter("bkr_requests", "HTTP requests answered, by method, route template and status",
                   ["method", "route", "status"])

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_CONTENT_TYPE: str = CONTENT_TYPE_LATEST  # text/plain with the exposition format's version
REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ROUTE = "unmatched"  # a path no route serves: one label, whatever was asked for

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

access_log = logging.getLogger("bkr.access")
error_log = logging.getLogger("bkr.api")

# The id of the request being served, for every log line written while serving it.
current_request_id: ContextVar[str | None] = ContextVar("bkr_request_id", default=None)


# --- request ids and the caller ------------------------------------------------------------------

def request_id_from(header: str | None) -> str:
    """The caller's request id when it is sane, else a new one."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def identify(request: Request, *, broker_id: int | None = None, operator_key_id: str | None = None,
             operator: str | None = None, user_id: str | None = None) -> None:
    """Name the authenticated caller of `request`, for its access log line."""
    if broker_id is not None:
        request.state.broker_id = broker_id
    if operator_key_id is not None:
        request.state.operator_key_id = operator_key_id
    if operator is not None:
        request.state.operator = operator
    if user_id is not None:
        request.state.user_id = user_id


# --- metrics -------------------------------------------------------------------------------------

def metrics_registry() -> CollectorRegistry:
    """The registry `/metrics` exposes: this process's, or every worker's in multiprocess mode."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def metrics_text() -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(metrics_registry())


# --- logs ----------------------------------------------------------------------------------------

# What a LogRecord carries by itself; anything else on a record came from `extra=`. uvicorn's
# `color_message` (the message with terminal colours) is left out too.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `message`, the request id while a
    request is served, any `extra={...}` fields, and `exception` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(line, default=str, ensure_ascii=False)


_LOGGERS = ("bkr", "uvicorn", "uvicorn.error")


def configure_logging(level: int | str = logging.INFO) -> None:
    """Write bkr's logs (and uvicorn's own) as JSON lines on stderr. Called once per serving
    process; calling it again replaces its handler rather than adding a second."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("bkr-json")
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for existing in [h for h in logger.handlers if h.get_name() == "bkr-json"]:
            logger.removeHandler(existing)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


# --- the middleware ------------------------------------------------------------------------------

class RequestObserver:
    """Pure ASGI middleware: gives each request its id, then logs and measures it. Pure ASGI (not
    BaseHTTPMiddleware) so that the route the router picked is visible in the shared scope and
    the request id's context reaches the endpoint's thread."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = routes  # to name the route of a request the router does not record (/docs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        request_id = request_id_from(headers.get("x-request-id"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = 500
            error_log.exception("unhandled error in %s %s", scope["method"], scope["path"],
                                extra={"request_id": request_id, "route": _route_of(scope, self.routes)})
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope, self.routes)
            REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(elapsed)
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            fields: dict[str, Any] = {"request_id": request_id, "method": scope["method"], "route": route,
                                      "path": scope["path"], "status": status,
                                      "duration_ms": round(elapsed * 1000, 3)}
            for name in ("broker_id", "operator", "operator_key_id", "user_id"):
                if state.get(name) is not None:
                    fields[name] = state[name]
            access_log.info("%s %s %s", scope["method"], scope["path"], status, extra=fields)
            current_request_id.reset(token)


def _route_of(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that served the request, never the raw path (whose ids would
    make one metric series per broker)."""
    route = scope.get("route")
    if route is None:
        route = next((candidate for candidate in routes if candidate.matches(scope)[0] is Match.FULL), None)
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def install(app: FastAPI) -> None:
    """Add the request-id, logging and metrics middleware to `app`, and the JSON answer to an
    unhandled error: `500 {"code": "internal", ...}` with the request id and nothing else."""

    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        if is_venue(request):  # the venue answers as Backpack does, whatever happened
            return JSONResponse({"code": "SERVER_ERROR", "message": f"internal error; request id {request_id}"},
                                status_code=500, headers=headers)
        return error_response(request, 500, "internal",
                              "internal error; quote the request id when reporting it", headers=headers)

    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(RequestObserver, routes=app.router.routes)

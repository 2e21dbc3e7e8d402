"""Request ids, structured JSON logs and Prometheus metrics.

The metric objects are defined here, once; the code that observes an event increments them.
"""

from fastapi import FastAPI
from prometheus_client import Counter, Histogram

FILLS = Counter("bkr_fills", "Fills received over HTTP, by outcome and, for rejections, the field to blame",
                ["outcome", "reason"])
INGEST_SECONDS = Histogram("bkr_ingest_seconds", "Time to process one POST /v1/fills batch",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CLOSES = Counter("bkr_closes", "Month closes attempted, by trigger (api, schedule) and result "
                 "(closed, already_closed, preview, error)", ["trigger", "result"])
REQUEST_SECONDS = Histogram("bkr_request_seconds", "HTTP request latency by method, route template and status",
                            ["method", "route", "status"])


def install(app: FastAPI) -> None:
    """Add the request-id, logging and metrics middleware to `app`."""

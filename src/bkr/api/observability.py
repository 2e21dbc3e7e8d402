"""Request ids, structured JSON logs and Prometheus metrics."""

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add the request-id, logging and metrics middleware to `app`."""

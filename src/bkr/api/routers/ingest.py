"""The ingest endpoints."""

from fastapi import APIRouter

router = APIRouter()

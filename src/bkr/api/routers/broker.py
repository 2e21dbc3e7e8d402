"""The broker endpoints."""

from fastapi import APIRouter

router = APIRouter()

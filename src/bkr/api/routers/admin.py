"""The admin endpoints."""

from fastapi import APIRouter

router = APIRouter()

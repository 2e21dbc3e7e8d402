"""The ops endpoints."""

from fastapi import APIRouter

router = APIRouter()

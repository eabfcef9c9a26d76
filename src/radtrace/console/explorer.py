"""Placeholder: the QA explorer pages are being built (issue #17)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/console", include_in_schema=False)

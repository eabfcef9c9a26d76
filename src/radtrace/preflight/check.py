"""What one start-up check found, and which of them stop a service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Check", "failed_checks"]


@dataclass(frozen=True)
class Check:
    """The outcome of one start-up check."""

    name: str
    status: Literal["ok", "warning", "failed"]
    detail: str
    config_error: bool = False
    """A failure the configuration must change for (a port another program holds): exit 2, not 1."""


def failed_checks(checks: list[Check]) -> list[Check]:
    """The checks that must stop a service from starting."""
    return [check for check in checks if check.status == "failed"]

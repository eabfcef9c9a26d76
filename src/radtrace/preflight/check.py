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
    """A failure that only a change on this host fixes, which a restart cannot: a setting to correct (a port another
    program holds), or this host's radtrace to upgrade (the database's floor is above it): exit 2, not 1, so systemd's
    ``RestartPreventExitStatus=2`` does not restart the service every few seconds."""


def failed_checks(checks: list[Check]) -> list[Check]:
    """The checks that must stop a service from starting."""
    return [check for check in checks if check.status == "failed"]

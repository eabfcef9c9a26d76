"""Helpers shared by test modules (not fixtures): running the real ``radtrace`` command."""

from __future__ import annotations

import os
import subprocess
import sys


def radtrace(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real command in a subprocess, without the caller's RADTRACE_* variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    environment.update({"COLUMNS": "200"} | (env or {}))
    return subprocess.run(
        [sys.executable, "-m", "radtrace", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )

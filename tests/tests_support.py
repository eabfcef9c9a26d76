"""Helpers shared by test modules (not fixtures): running the real ``radtrace`` command, and dicom3tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


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


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dicom3tools' ``dciodvfy`` reports as errors for the DICOM file at ``path`` (warnings left out)."""
    found = shutil.which("dciodvfy")
    assert found is not None, "dciodvfy (Debian package dicom3tools) is not installed"
    result = subprocess.run([found, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]

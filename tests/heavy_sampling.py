"""Which of the heavy tests (tests/heavy_tests.txt) this run leaves out: CI's 30-minute budget on a 2-core machine.

Each heavy test (8 s or more of a worker: kills, restarts, whole services, browsers) runs in about one run of three
(at one in two, the run of 2026-12-06 took 29.8 minutes): the third is chosen by a seed, the commit under test by
default (``git rev-parse HEAD``; the day when there is no git), so a re-run of one commit runs the same tests and each
landing another third. ``RADTRACE_HEAVY_SEED`` picks another, ``RADTRACE_FULL_HEAVY=1`` (or picking tests with
``-k``) runs them all. The seed is printed in the
run's header, and each test left out is reported skipped with it, so a failure can be run again exactly.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
from pathlib import Path

__all__ = ["HEAVY_LIST", "heavy_names", "left_out", "seed"]

HEAVY_LIST = Path(__file__).with_name("heavy_tests.txt")


def heavy_names(path: Path = HEAVY_LIST) -> frozenset[str]:
    """The ``module path::function`` names listed (comments and blank lines ignored)."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def seed() -> str:
    """``RADTRACE_HEAVY_SEED``, else the commit under test, else today's date (UTC)."""
    chosen = os.environ.get("RADTRACE_HEAVY_SEED", "").strip()
    if chosen:
        return chosen
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        found = None
    if found is not None and found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip()[:12]
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")


def left_out(name: str, run_seed: str) -> bool:
    """Whether the heavy test ``name`` (``module path::function``) is left out of the run with ``run_seed``."""
    return hashlib.sha256(f"{run_seed}:{name}".encode()).digest()[0] % 3 != 0

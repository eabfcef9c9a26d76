"""The tiny random Qwen2.5-VL for tests, built once per test run and shared by pytest-xdist's workers.

Built per worker it took 4 to 17 s of each worker's CPU under ``make test`` (-n 2): now the first worker to ask builds
it in the run's temporary directory (the workers' common parent) while the others wait on a file lock, in a directory
named by a hash of the builder's configuration and source, put in place whole (built aside, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

__all__ = ["shared_tiny_model"]


def shared_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's directory for this run (see radtrace.model.tiny_model); read-only to tests (one that alters
    weights copies them first)."""
    from radtrace.model import tiny_model

    base = tmp_path_factory.getbasetemp()
    run = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    recipe = json.dumps([tiny_model.TINY_TEXT_CONFIG, tiny_model.TINY_VISION_CONFIG], sort_keys=True).encode()
    key = hashlib.sha256(recipe + Path(tiny_model.__file__).read_bytes()).hexdigest()[:16]
    directory = run / f"tiny-model-{key}"
    with FileLock(run / f"tiny-model-{key}.lock"):
        if not (directory / tiny_model.TINY_MARKER_FILE).is_file():  # the marker is written last
            building = run / f"tiny-model-{key}.building"
            shutil.rmtree(building, ignore_errors=True)  # what a worker that died building left
            tiny_model.build_tiny_model(building)
            building.rename(directory)
    return directory

"""bench/gpu.sh, the one command a bare GPU node runs, tested on the CPU through ``--tiny-config``.

The GPU run builds a random model of the real 3B architecture; here the same script, benchmark and forced
trace length run with the tiny model's layers and the real vocabulary, so a broken script is found before a
GPU is lent, not on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_writes_the_full_size_table(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path),
        "RADTRACE_WHEELS": str(tmp_path / "no-wheels"),  # this machine has the packages; no cp312 wheels here
        "RADTRACE_GPU_STATIC_ROW": "0",
        "RADTRACE_GPU_BUDGET_S": "300",  # read on a GPU only; every variable gpu.sh documents must pass the settings
    }
    done = subprocess.run(
        ["bash", "bench/gpu.sh", "--tiny-config", "--device", "cpu", "--batches", "1,4", "--max-new-tokens", "5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "full-size.md").read_text(encoding="utf-8")
    assert "TINY layers, real vocabulary" in table
    assert "trace length forced to 5 new tokens" in table
    rows = json.loads((tmp_path / "full-size.json").read_text(encoding="utf-8"))["rows"]
    assert [(row["path"].split()[0], row["batch"]) for row in rows] == [
        ("worker", 1), ("peer:", 1), ("worker", 4), ("peer:", 4),
    ]  # fmt: skip
    # min = max new tokens: every study generated exactly 5 tokens on both paths
    assert all(row["generated_tokens"] == 5 * row["studies"] for row in rows)
    assert all(row["stages"].startswith("prepare ") for row in rows if row["path"].startswith("worker"))
    # float32 on the CPU: batching changes no greedy token
    divergence = json.loads((tmp_path / "full-size.json").read_text(encoding="utf-8"))["divergence"]
    assert divergence == {"4": {"compared": 2, "differing": 0, "first_difference_at": []}}
    assert "bench/gpu.sh:" in done.stdout


@pytest.mark.skipif(
    os.environ.get("RADTRACE_FULL_BENCH") != "1",
    reason="set RADTRACE_FULL_BENCH=1 (about 25 s: every configuration, torch.compile included, on the CPU)",
)
def test_the_step_timing_script_measures_every_configuration(tmp_path: Path) -> None:
    """bench/gpu_steps.py, the per-step probe for a GPU session, runs through every configuration on the CPU."""
    done = subprocess.run(
        [sys.executable, "bench/gpu_steps.py", "--tiny-config", "--device", "cpu", "--tokens", "4", "--divide", "128",
         "--budget-s", "120", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tmp_path / "steps.md").read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.startswith("| ")]
    measured = [row.split("|")[2].strip() for row in rows[1:]]
    assert measured == ["dynamic", "static", "gqa", "dynamic", "dynamic", "static+compile"]
    assert not any("failed" in row or "skipped" in row for row in rows)

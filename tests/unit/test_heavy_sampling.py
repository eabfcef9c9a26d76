"""The heavy-test list names tests that exist, and each seed runs about a third of them, another third per seed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import heavy_sampling

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]


def test_every_listed_heavy_test_exists_and_the_always_run_ones_are_not_listed() -> None:
    names = heavy_sampling.heavy_names()
    assert len(names) > 50
    for name in names:
        module, function = name.split("::")
        source = (ROOT / module).read_text(encoding="utf-8")
        assert re.search(rf"^(async )?def {re.escape(function)}\(", source, re.MULTILINE), f"{name}: no such test"
    # the newcomer's first hour, patient data in logs, real films and attribute ablation run in every run
    for module in ("test_first_hour.py", "test_logging_canaries.py", "test_real_films.py", "test_ablation.py"):
        assert not [name for name in names if f"/{module}::" in name]


def test_each_seed_runs_about_a_third_and_another_third_than_the_next() -> None:
    names = sorted(heavy_sampling.heavy_names())
    left = {seed: {name for name in names if heavy_sampling.left_out(name, seed)} for seed in ("a1b2c3", "d4e5f6")}
    for chosen in left.values():
        assert len(names) * 0.5 < len(chosen) < len(names) * 0.8  # about two in three left out
    assert left["a1b2c3"] != left["d4e5f6"]
    assert all(heavy_sampling.left_out(name, "a1b2c3") == (name in left["a1b2c3"]) for name in names)  # stable


def test_the_seed_is_the_one_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADTRACE_HEAVY_SEED", "20261206")
    assert heavy_sampling.seed() == "20261206"
    monkeypatch.delenv("RADTRACE_HEAVY_SEED")
    assert re.fullmatch(r"[0-9a-f]{12}|\d{8}", heavy_sampling.seed())

"""``radtrace model info`` and ``radtrace model read`` as an operator runs them, with the tiny model.

The first test runs the real process; the others call the same command in-process (``CliRunner``) to spare
a torch import per test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radtrace.cli import app
from radtrace.testing.studies import ImageSpec, StudySpec, make_study, write_study
from tests_support import radtrace

pytestmark = pytest.mark.unit

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def in_process(*args: str, env: dict[str, str]) -> Result:
    result = CliRunner().invoke(app, list(args), env=env | {"COLUMNS": "200"})
    return Result(result.exit_code, result.stdout, result.stderr)


def env(tiny_model_dir: Path, tmp_path: Path) -> dict[str, str]:
    return OFFLINE | {
        "RADTRACE_MODEL__PATH": str(tiny_model_dir),
        "RADTRACE_MODEL__DEVICE": "cpu",
        "RADTRACE_MODEL__MAX_NEW_TOKENS": "12",
        "RADTRACE_DATA_DIR": str(tmp_path / "data"),
    }


def test_model_read_prints_image_reasoning_findings_and_timings(tiny_model_dir: Path, tmp_path: Path) -> None:
    paths = write_study(make_study(StudySpec(seed=4)), tmp_path / "study")  # a PA and a lateral
    result = radtrace("model", "read", str(tmp_path / "study"), env=env(tiny_model_dir, tmp_path))
    assert result.returncode == 0, result.stderr
    for heading in ("images shown", "reasoning", "findings", "timings", "tokens"):
        assert heading in result.stdout
    assert "frontal" in result.stdout
    assert "unparsed" in result.stdout  # random weights: flagged, not crashed
    assert "not for clinical use" in result.stdout
    assert len(paths) == 2


def test_model_read_json_is_a_reading(tiny_model_dir: Path, tmp_path: Path) -> None:
    from radtrace.model.reading import Reading

    (path,) = write_study(make_study(images=[ImageSpec(view="AP")]), tmp_path / "one")
    result = in_process("model", "read", str(path), "--json", env=env(tiny_model_dir, tmp_path))
    assert result.returncode == 0, result.stderr
    reading = Reading.from_json(result.stdout)
    assert reading.images[0].view == "AP"
    assert reading.identity.generation["max_new_tokens"] == 12
    assert 1 <= reading.tokens.generated <= 12


def test_model_read_of_a_lateral_only_study_is_skipped(tiny_model_dir: Path, tmp_path: Path) -> None:
    write_study(make_study(images=[ImageSpec(view="LL")]), tmp_path / "lat")
    result = in_process("model", "read", str(tmp_path / "lat"), "--json", env=env(tiny_model_dir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"skipped": "no frontal chest image"}


def test_model_read_without_weights_or_dicom_fails_clearly(tmp_path: Path) -> None:
    write_study(make_study(), tmp_path / "study")
    missing = OFFLINE | {"RADTRACE_MODEL__PATH": str(tmp_path / "nowhere"), "RADTRACE_DATA_DIR": str(tmp_path)}
    result = in_process("model", "read", str(tmp_path / "study"), env=missing)
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    (tmp_path / "notes.txt").write_text("not dicom")
    result = in_process("model", "read", str(tmp_path / "notes.txt"), env=missing)
    assert result.returncode == 1
    assert "not" in result.stderr
    assert "DICOM" in result.stderr


def test_model_info_shows_profile_budget_and_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = in_process("model", "info", "--hash", "--json", env=env(tiny_model_dir, tmp_path))
    assert result.returncode == 0, result.stderr
    overview = json.loads(result.stdout)["overview"]
    assert overview["profile"] == "nv-reason-cxr"
    assert overview["prompt"] == "Find abnormalities and support devices."
    assert (overview["min_pixels"], overview["max_pixels"], overview["max_new_tokens"]) == (128**2, 476**2, 12)
    assert overview["available"] is True
    assert overview["tiny_test_model"] is True
    assert len(overview["weights_sha256"]) == 64
    table = in_process("model", "info", env=OFFLINE | {"RADTRACE_MODEL__PROFILE": "deepmedix-r1"})
    assert table.returncode == 0, table.stderr
    assert "deepmedix-r1" in table.stdout
    assert str(504 * 504) in table.stdout
    assert "not available locally" in table.stdout

"""The ``radtrace`` command as an operator meets it: real process, real exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radtrace import __version__
from tests_support import radtrace

pytestmark = pytest.mark.unit


def test_version() -> None:
    result = radtrace("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"radtrace {__version__}"


def test_config_show_prints_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        '[listener]\nae_title = "RT_NIGHT"\n[audit]\ncheckpoint_key = "top-secret-key"\n', encoding="utf-8"
    )
    result = radtrace(
        "--config",
        str(config),
        "config",
        "show",
        "--json",
        env={"RADTRACE_STORE__URL": "postgresql+psycopg://rt:pg-password@db/rt", "RADTRACE_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["listener"]["ae_title"] == "RT_NIGHT"
    assert shown["store"]["effective_url"] == "postgresql+psycopg://rt:***@db/rt"
    assert "top-secret-key" not in result.stdout
    assert "pg-password" not in result.stdout


def test_config_show_table_lists_every_section(tmp_path: Path) -> None:
    result = radtrace("config", "show", env={"RADTRACE_DATA_DIR": str(tmp_path), "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for section in ("listener.", "store.", "broker.", "model.", "reporting.", "dispatch.", "audit.", "api."):
        assert section in result.stdout


def test_invalid_setting_fails_at_start_naming_it() -> None:
    result = radtrace("config", "show", env={"RADTRACE_LISTENER__MAX_ASSOCIATIONS": "0"})
    assert result.returncode == 2
    assert "listener.max_associations" in result.stderr
    assert "RADTRACE_LISTENER__MAX_ASSOCIATIONS" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_to_start_when_the_data_directory_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    result = radtrace("serve", env={"RADTRACE_DATA_DIR": str(blocker), "COLUMNS": "200"})
    assert result.returncode == 2  # a setting to change (was 1, with five failed checks and no word of the setting)
    assert "failed" in result.stdout
    assert "is not a directory: point RADTRACE_DATA_DIR" in " ".join(result.stdout.split())
    assert "start-up checks failed" in result.stderr


def test_serve_refuses_to_start_below_the_free_space_threshold(tmp_path: Path) -> None:
    result = radtrace(
        "serve",
        env={"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_LISTENER__MIN_FREE_BYTES": str(2**62), "COLUMNS": "200"},
    )
    assert result.returncode == 2  # a disk or a setting to change (was 1, with no word of what to change)
    assert "free disk space" in result.stdout
    assert "RADTRACE_LISTENER__MIN_FREE_BYTES" in " ".join(result.stdout.split())


def test_make_tiny_builds_a_model_the_loader_accepts(tmp_path: Path) -> None:
    from radtrace.model.loading import load_vlm

    result = radtrace("model", "make-tiny", str(tmp_path / "tiny"), "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert "not for clinical use" in result.stdout
    loaded = load_vlm(tmp_path / "tiny", device="cpu")
    assert loaded.model.config.model_type == "qwen2_5_vl"

"""Slips in the settings a night-shift newcomer types into a shell: each one line naming the variable and how to
write it, exit 2 (found by the first-hour exploration).

Before: allowed_callers with single quotes inside (or a bare AE title, or a comma list of body parts) was
'invalid configuration: error parsing value for field "listener" from source "EnvSettingsSource"', naming neither
the variable nor JSON; RADTRACE_DATA_DIR=' /srv/radtrace' silently became <current folder>/ /srv/radtrace, where serve
made a new, empty data directory; RADTRACE_MODEL__PATH='~/models/x' was only "does not exist".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.preflight import check_model_weights
from tests_support import radtrace

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("variable", "value", "example"),
    [
        ("RADTRACE_LISTENER__ALLOWED_CALLERS", "[{'ae_title': 'PACS01'}]", '[{"ae_title": "PACS01", "host"'),
        ("RADTRACE_LISTENER__ALLOWED_CALLERS", "PACS01", '[{"ae_title": "PACS01", "host"'),
        ("RADTRACE_LISTENER__ROUTING__CHEST_BODY_PARTS", "CHEST,THORAX", '["CHEST", "THORAX"]'),
    ],
)
def test_a_list_variable_not_in_json_is_named_with_how_to_write_it(variable: str, value: str, example: str) -> None:
    result = radtrace("config", "show", env={variable: value})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"{variable} is not valid JSON" in lines[0]
    assert f"{variable}='{example}" in lines[0]
    assert "Traceback" not in result.stderr


def test_valid_json_in_a_list_variable_still_loads() -> None:
    result = radtrace("config", "show", env={"RADTRACE_LISTENER__ALLOWED_CALLERS": '[{"ae_title": "PACS01"}]'})
    assert result.returncode == 0, result.stderr
    assert "PACS01" in result.stdout


def test_a_data_dir_with_a_stray_space_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": f" {tmp_path / 'srv'}"}
    for command in (["status"], ["db", "upgrade"]):
        result = radtrace(*command, env=env)
        assert result.returncode == 2, result.stderr
        assert "remove the stray space from RADTRACE_DATA_DIR" in result.stderr
    assert not any(Path.cwd().glob(" *")), "a folder named ' ' was made in the current folder"


def test_a_model_path_with_a_tilde_says_the_shell_did_not_expand_it(tmp_path: Path) -> None:
    check = check_model_weights(load_settings(data_dir=tmp_path, model={"path": "~/models/NV-Reason-CXR-3B"}))
    assert check.status == "warning"
    assert "'~' is not expanded inside quotes" in check.detail

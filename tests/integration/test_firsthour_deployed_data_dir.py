"""A read-only command run in a login shell on a host set up from deploy/systemd says where the service's data is.

Found by the first-hour exploration: the units set RADTRACE_DATA_DIR=/var/lib/radtrace and read
/etc/radtrace/radtrace.env, which a shell does not, so 'radtrace status' from the operator's home folder answered
'no radtrace database at /home/.../var/radtrace.db ... point RADTRACE_DATA_DIR ... at the data directory in use',
naming neither that directory nor the user and settings to run it with.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def run_in(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {"COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "radtrace", *args],
        cwd=folder, env=environment | (env or {}), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", [["status"], ["drafts", "list"], ["study", "show", "1.2.3"]])
def test_a_command_run_from_a_home_folder_names_the_deployed_data_directory_and_user(
    tmp_path: Path, command: list[str]
) -> None:
    result = run_in(tmp_path, *command)
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())
    assert f"no radtrace database at {tmp_path / 'var' / 'radtrace.db'}" in message
    assert "sudo -u radtrace env RADTRACE_DATA_DIR=/var/lib/radtrace /opt/radtrace/venv/bin/radtrace" in message
    assert "/etc/radtrace/radtrace.env" in message
    assert not (tmp_path / "var").exists()


def test_a_data_directory_given_by_the_operator_is_not_second_guessed(tmp_path: Path) -> None:
    result = run_in(tmp_path, "status", env={"RADTRACE_DATA_DIR": str(tmp_path / "elsewhere")})
    assert result.returncode == 1, result.stderr
    assert "no radtrace database at" in result.stderr
    assert "/var/lib/radtrace" not in result.stderr

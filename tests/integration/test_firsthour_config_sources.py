"""radtrace config show says where each value comes from, so a config file value that a RADTRACE_* variable overrides
is seen (found by the first-hour exploration).

Before: with RADTRACE_LISTENER__PORT=11112 left exported in the shell (or an Environment= line in a unit) and
'port = 2104' in site.toml, config show printed listener.port 11112 and nothing else: the edit to the file was
silently without effect and nothing said which source won.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests_support import radtrace

pytestmark = pytest.mark.integration


def row(stdout: str, setting: str) -> str:
    found = [line for line in stdout.splitlines() if f" {setting} " in line]
    assert len(found) == 1, stdout
    return " ".join(found[0].replace("│", " ").split())


def test_config_show_names_the_source_of_each_value_and_a_file_value_a_variable_overrides(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[listener]\nport = 2104\nae_title = "RADTRACE01"\n[dispatch]\nris = { host = "ris", port = 2575 }\n',
        encoding="utf-8",
    )
    env = {"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_LISTENER__PORT": "11112", "COLUMNS": "400"}
    result = radtrace("--config", str(site), "config", "show", env=env)
    assert result.returncode == 0, result.stderr
    assert row(result.stdout, "listener.port") == (
        f"listener.port 11112 env RADTRACE_LISTENER__PORT (overrides 2104 in config file {site})"
    )
    assert row(result.stdout, "listener.ae_title") == f"listener.ae_title RADTRACE01 config file {site}"
    assert row(result.stdout, "dispatch.ris.port") == f"dispatch.ris.port 2575 config file {site}"
    assert row(result.stdout, "data_dir") == f"data_dir {tmp_path} env RADTRACE_DATA_DIR"
    assert row(result.stdout, "listener.settle_seconds") == "listener.settle_seconds 10.0 default"

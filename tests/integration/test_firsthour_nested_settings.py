"""A mistake inside a list or table setting (a PACS entry, the RIS, a caller rule) names the variable or file that
holds it and the key it meant (found by the first-hour exploration).

Before: RADTRACE_DISPATCH__PACS='[{..., "tsl": true}]' gave 'dispatch.pacs.0.tsl: Extra inputs are not permitted
(got True) [env RADTRACE_DISPATCH__PACS__TSL]': a variable that does not exist (setting it is refused as unknown),
no hint of 'tls'; with a --config file as well, the file was blamed for the variable's mistake.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests_support import radtrace

pytestmark = pytest.mark.integration

PACS_TYPO = '[{"ae_title": "PACS01", "host": "127.0.0.1", "port": 104, "tsl": true}]'


def one_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    assert lines[0] == "radtrace: invalid configuration:", stderr
    assert "Traceback" not in stderr
    return "\n".join(lines[1:])


@pytest.mark.parametrize(
    ("variable", "value", "wrong", "meant"),
    [
        ("RADTRACE_DISPATCH__PACS", PACS_TYPO, "dispatch.pacs.0.tsl", "tls"),
        ("RADTRACE_DISPATCH__RIS", '{"host": "ris", "port": 2575, "timeout": 5}', "dispatch.ris.timeout", "timeout_s"),
        ("RADTRACE_LISTENER__ALLOWED_CALLERS", '[{"ae_title": "PACS01", "hots": "10.0.0.0/8"}]', "hots", "host"),
    ],
)
def test_a_wrong_key_inside_a_variable_names_that_variable_and_the_key_meant(
    tmp_path: Path, variable: str, value: str, wrong: str, meant: str
) -> None:
    result = radtrace("config", "show", env={"RADTRACE_DATA_DIR": str(tmp_path), variable: value})
    assert result.returncode == 2, result.stderr
    message = one_error_line(result.stderr)
    assert wrong in message
    assert f"no such setting; did you mean {meant}?" in message
    assert message.endswith(f"[env {variable}]"), message


def test_a_wrong_key_in_the_config_file_blames_the_file_and_a_variable_mistake_the_variable(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[dispatch]\nris = { host = "ris", port = 2575, timeout = 5 }\n', encoding="utf-8")
    result = radtrace("--config", str(site), "config", "show", env={"RADTRACE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    message = one_error_line(result.stderr)
    assert "dispatch.ris.timeout: no such setting; did you mean timeout_s?" in message
    assert message.endswith(f"[config file {site}]"), message

    site.write_text('[dispatch]\ncalling_ae_title = "RADTRACE"\n', encoding="utf-8")
    result = radtrace(
        "--config", str(site), "config", "show",
        env={"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_DISPATCH__PACS": PACS_TYPO},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    message = one_error_line(result.stderr)
    assert message.endswith("[env RADTRACE_DISPATCH__PACS]"), message


def test_a_missing_key_inside_a_variable_names_that_variable(tmp_path: Path) -> None:
    result = radtrace(
        "config", "show", env={"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_DISPATCH__RIS": '{"host": "ris"}'}
    )
    assert result.returncode == 2, result.stderr
    message = one_error_line(result.stderr)
    assert message.startswith("dispatch.ris.port: Field required"), message
    assert message.endswith("[env RADTRACE_DISPATCH__RIS]"), message

"""Every ``radtrace`` process pays for what the command tree imports before it does anything: ``radtrace --help``,
``config show``, each child ``serve`` starts and each subprocess test. The DICOM, database, broker and model
libraries are imported by the commands that use them, not by the command tree.

Before: importing :mod:`radtrace.cli.application` imported pydicom, numpy, PIL and requests (radtrace.logging),
SQLAlchemy (the start-up checks, imported by ``send`` and ``serve``'s module), and the root callback imported
pynetdicom for every command run (to turn its identifier logging off).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Libraries no command needs in order to build the command tree, print help or show the configuration.
HEAVY = (
    "alembic",
    "celery",
    "fastapi",
    "highdicom",
    "hl7apy",
    "kombu",
    "numpy",
    "PIL",
    "prometheus_client",
    "pydicom",
    "pynetdicom",
    "requests",
    "sqlalchemy",
    "torch",
    "transformers",
    "uvicorn",
)

_IMPORTED = f"""
import json, sys
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))
"""

_RUN_COMMAND = """
import sys
from radtrace.cli import main
sys.argv = ["radtrace", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
""" + _IMPORTED.replace("print(", "print('IMPORTED', ")


def _python(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RADTRACE_")}
    env["RADTRACE_DATA_DIR"] = str(tmp_path)
    return env


def test_importing_the_command_tree_imports_no_heavy_library(clean_env: dict[str, str]) -> None:
    result = _python("import radtrace.cli.application" + _IMPORTED, env=clean_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "command",
    [("--help",), ("--version",), ("config", "show"), ("status", "--help"), ("listen", "--help"), ("send", "--help")],
    ids=" ".join,
)
def test_help_version_and_config_show_import_no_heavy_library(
    command: tuple[str, ...], clean_env: dict[str, str]
) -> None:
    result = _python(_RUN_COMMAND, *command, env=clean_env)
    assert result.returncode == 0, result.stderr
    imported = [line for line in result.stdout.splitlines() if line.startswith("IMPORTED ")]
    assert imported, result.stdout
    assert json.loads(imported[-1].removeprefix("IMPORTED ")) == []
    assert "Usage:" in result.stdout or "radtrace" in result.stdout  # the command itself ran and printed


def test_pynetdicom_imported_after_logging_is_configured_still_hides_identifiers(clean_env: dict[str, str]) -> None:
    """configure_logging no longer imports pynetdicom; it turns the identifier logging off when pynetdicom is
    imported later (the listener, the dispatcher, 'radtrace send')."""
    code = """
import io, sys
from radtrace.logging import configure_logging
configure_logging("text", "INFO", stream=io.StringIO())
assert "pynetdicom" not in sys.modules
import pynetdicom
from pynetdicom import _config
configure_logging("text", "INFO", stream=io.StringIO())  # again: once pynetdicom is there, set at once
print(_config.LOG_REQUEST_IDENTIFIERS, _config.LOG_RESPONSE_IDENTIFIERS)
"""
    result = _python(code, env=clean_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]

"""A test that runs the radtrace command in-process leaves no log handler behind for the tests after it.

typer's CliRunner gives the command a stderr of its own and closes it when the command returns; radtrace's entry
point installs its root handler on that stream. Left on the root logger, it made every later log call in the same
pytest process (a breaker's warning, an HTTP refusal) print '--- Logging error --- ValueError: I/O operation on
closed file' with a full call stack, under any test that followed one of the CLI tests in the same worker.
The two tests run in this order (a module's tests run in file order, on one xdist worker).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radtrace.cli import app

pytestmark = pytest.mark.unit


def test_a_command_run_in_process_logs_through_radtrace_s_handler(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--log-level", "INFO", "db", "upgrade"], env={"RADTRACE_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert [handler for handler in logging.getLogger().handlers if getattr(handler, "_radtrace", False)]


def test_a_later_test_s_log_calls_write_to_no_closed_stream(capsys: pytest.CaptureFixture[str]) -> None:
    left = [handler for handler in logging.getLogger().handlers if getattr(handler, "_radtrace", False)]
    logging.getLogger("radtrace.worker.breaker").warning("model server unavailable (connection refused)")
    err = capsys.readouterr().err
    assert "--- Logging error ---" not in err, err
    assert left == [], "a radtrace handler left on the root logger by an earlier test"

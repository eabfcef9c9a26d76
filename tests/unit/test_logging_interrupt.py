"""A Ctrl-C is said once, by radtrace: a library that logs the KeyboardInterrupt on its way through is not repeated.

Seen in the fresh-clone CI at d80e549 (test_firsthour_ctrl_c, delay 1.0 s): the signal landed while SQLAlchemy's pool
closed a connection, and its 'Exception closing connection' record printed the KeyboardInterrupt's traceback above
radtrace's one line 'radtrace: interrupted (Ctrl-C) during the start-up checks; nothing was started'."""

from __future__ import annotations

import io
import logging

import pytest

from radtrace.logging import configure_logging

pytestmark = pytest.mark.unit


@pytest.fixture
def output() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("text", "INFO", stream=stream)
    return stream


def _logged_with(logger: str, error: BaseException) -> None:
    try:
        raise error
    except BaseException:
        logging.getLogger(logger).exception("Exception closing connection %s", "<sqlite3.Connection>")


def test_a_library_logging_a_ctrl_c_is_not_repeated(output: io.StringIO) -> None:
    _logged_with("sqlalchemy.pool.impl.QueuePool", KeyboardInterrupt())
    assert output.getvalue() == ""


def test_other_library_errors_and_radtrace_s_own_records_are_kept(output: io.StringIO) -> None:
    _logged_with("sqlalchemy.pool.impl.QueuePool", OSError("disk I/O error"))
    _logged_with("radtrace.cli.services", KeyboardInterrupt())
    text = output.getvalue()
    assert "sqlalchemy.pool.impl.QueuePool: Exception closing connection" in text
    assert "OSError: disk I/O error" in text
    assert "radtrace.cli.services: Exception closing connection" in text

"""A mistyped or unreachable ``store.url``, met by ``radtrace serve`` and by a read-only command: one line naming
the setting (password masked) and what to do; exit 2 when the URL itself is wrong (no such database, user or host,
an unsupported scheme), 1 when the server does not answer (the README: "a database that is down").

Found by the first-hour exploration: before, "database unavailable while reading the service status: connection
failed: ... FATAL: database "nosuchdb" does not exist" and exit 1, naming neither store.url nor
RADTRACE_STORE__URL; "postgres://" was "unsupported database 'postgres'" without the scheme to write instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.unit

SECRET = "pw-night-shift"
WRONG_URLS = {
    "no such database": f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/radtrace_no_such_db",
    "no such user": f"postgresql+psycopg://radtrace_no_such_role:{SECRET}@127.0.0.1:5432/postgres",
    "no such host": f"postgresql+psycopg://radtrace:{SECRET}@db.invalid:5432/radtrace",
    "heroku scheme": f"postgres://radtrace:{SECRET}@127.0.0.1:5432/radtrace",
}


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("case", list(WRONG_URLS))
def test_a_wrong_store_url_is_named_with_exit_2(case: str, tmp_path: Path) -> None:
    result = radtrace("status", env={"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_STORE__URL": WRONG_URLS[case]})
    assert result.returncode == 2, result.stderr
    line = _one_line(result.stderr)
    assert "correct store.url (RADTRACE_STORE__URL)" in line
    assert SECRET not in line
    if case == "heroku scheme":
        assert "postgresql+psycopg://" in line


def test_a_database_server_that_does_not_answer_is_exit_1_naming_the_setting(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://radtrace:{SECRET}@127.0.0.1:{free_port()}/radtrace"
    result = radtrace("status", env={"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_STORE__URL": url})
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    assert "Connection refused" in line
    assert "is the database server running? store.url (RADTRACE_STORE__URL)" in line
    assert SECRET not in line


@pytest.mark.parametrize(("case", "code"), [("no such database", 2), ("not answering", 1)])
def test_serve_with_a_wrong_store_url_stops_at_its_checks_naming_the_setting(
    case: str, code: int, tmp_path: Path
) -> None:
    url = WRONG_URLS.get(case, f"postgresql+psycopg://radtrace@127.0.0.1:{free_port()}/radtrace")
    env = {
        "RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_STORE__URL": url,
        "RADTRACE_LISTENER__PORT": str(free_port()), "RADTRACE_API__PORT": str(free_port()),
    }  # fmt: skip
    result = radtrace("serve", env=env)
    assert result.returncode == code, result.stdout + result.stderr
    assert "RADTRACE_STORE__URL" in " ".join(result.stdout.split())
    assert "started listener" not in result.stderr
    assert SECRET not in result.stdout

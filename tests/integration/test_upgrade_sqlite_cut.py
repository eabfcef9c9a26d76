"""``radtrace db upgrade`` on SQLite held up by another writer (a listener in a long transaction, a DBA's sqlite3
shell in BEGIN IMMEDIATE), then stopped: SIGTERM (systemd's stop) or Ctrl-C ends it at once, the database untouched.

Before, the migration waited in SQLite's busy handler, one C call of up to the busy timeout (30 s), and Python ran the
signal's handler only once it returned: a stop that systemd escalates to SIGKILL after its own timeout, or an operator
pressing Ctrl-C again and again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migration_support import schema_revision, store_at_migration

pytestmark = pytest.mark.integration

BEFORE = "0016"
#: How long the test's writer holds its lock at most: less than the store's busy timeout (30 s), so that a migration
#: that heeds the signal only once SQLite's busy wait returns is still waiting when the writer lets go.
HELD_AT_MOST_S = 25.0


def _waiting_in_sqlite(pid: int) -> bool:
    """Whether the process's main thread sleeps (SQLite's busy handler sleeps between its tries)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() in {"hrtimer_nanosleep", "do_nanosleep"}
    except OSError:
        return False


def _environment(data_dir: Path, url: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RADTRACE_")}
    return environment | {"RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_STORE__URL": url, "COLUMNS": "200"}


def _at_before(tmp_path: Path) -> tuple[Path, str]:
    data_dir = tmp_path / "var"
    url = f"sqlite:///{data_dir / 'radtrace.db'}"
    data_dir.mkdir()
    with store_at_migration(url, BEFORE):
        pass
    return data_dir, url


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_migration_held_up_by_another_writer_stops_at_once_on_sigterm_or_ctrl_c(
    stop: signal.Signals, tmp_path: Path
) -> None:
    data_dir, url = _at_before(tmp_path)
    ended_while_held, returncode, said = _stopped_while_held_up(data_dir, url, stop)
    assert ended_while_held, f"db upgrade ended only once the writer let go: {said}"
    assert returncode == 130, said
    assert "did not finish: it was interrupted (SIGTERM or Ctrl-C)" in " ".join(said.split()), said
    assert "the database is at schema 0016, untouched" in " ".join(said.split()), said
    assert schema_revision(url) == BEFORE


def test_a_run_after_a_cut_keeps_one_copy_of_the_schema_not_two(tmp_path: Path) -> None:
    """The run cut short kept a copy of the database at 0016; the next one keeps its own (the database as it is now)
    and removes the older copy of that schema, saying so. Before, each re-run left one more copy of the database."""
    data_dir, url = _at_before(tmp_path)
    assert _stopped_while_held_up(data_dir, url, signal.SIGTERM)[1] == 130
    [cut] = data_dir.glob("radtrace.db.backup-0016-*")
    earlier = cut.with_name("radtrace.db.backup-0016-20260101T000000Z")  # kept by a run cut short some time ago
    cut.rename(earlier)
    again = subprocess.run([sys.executable, "-m", "radtrace", "db", "upgrade"], env=_environment(data_dir, url),
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    said = " ".join((again.stdout + again.stderr).split())
    assert again.returncode == 0, said
    assert f"(upgraded from {BEFORE})" in said, said
    copies = sorted(data_dir.glob("radtrace.db.backup-*"))
    assert len(copies) == 1, (copies, said)
    [kept] = copies
    assert kept != earlier, said
    assert kept.name.startswith("radtrace.db.backup-0016-"), said
    assert (
        "it replaces an older copy of schema 0016 (a run that did not finish kept it, or it was restored from it): "
        f"{earlier}" in said
    )
    assert schema_revision(f"sqlite:///{kept}") == BEFORE


def _stopped_while_held_up(data_dir: Path, url: str, stop: signal.Signals) -> tuple[bool, int, str]:
    """db upgrade on the database at ``url``, held up by a writer holding its lock, sent ``stop`` once it waits:
    (whether it ended while the writer still held the lock, its exit status, what it said)."""
    writer = sqlite3.connect(data_dir / "radtrace.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the write lock, held
    upgrade = subprocess.Popen([sys.executable, "-m", "radtrace", "db", "upgrade"], env=_environment(data_dir, url),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert upgrade.stdout is not None
        said = upgrade.stdout.readline()  # the backup, kept before the migration
        assert "kept a copy of the database as it was (revision 0016)" in said, said
        deadline = time.monotonic() + 60
        seen_waiting = 0
        while seen_waiting < 3:  # three looks in a row: in the busy wait, past the signal handler's set-up
            if upgrade.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"db upgrade did not wait for the lock: {said}{upgrade.communicate()[0]}")
            seen_waiting = seen_waiting + 1 if _waiting_in_sqlite(upgrade.pid) else 0
            time.sleep(0.02)
        upgrade.send_signal(stop)
        held_until = time.monotonic() + HELD_AT_MOST_S
        while upgrade.poll() is None and time.monotonic() < held_until:
            time.sleep(0.05)
        ended_while_held = upgrade.poll() is not None
    finally:
        writer.rollback()
        writer.close()
    said += upgrade.communicate(timeout=120)[0]
    return ended_while_held, upgrade.returncode, said

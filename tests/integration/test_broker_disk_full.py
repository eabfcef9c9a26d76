"""The embedded broker's disk fills (a real 16 MiB tmpfs as the data directory, the work database elsewhere, as with
PostgreSQL): nothing accepted is lost, a real ``radtrace worker`` neither dies nor spins, one line says it.

Seen before: a message waiting in ``broker.db`` when the disk filled made kombu's take (an UPDATE) fail with
SQLITE_FULL, which Celery took for a lost connection: 'Connection to broker lost' five times a second, 'Frequent
restarts detected' each second, and after 35 s 'Unrecoverable error: QueuePool limit of size 5 overflow 10 reached':
the worker ended. Started again on the full disk (systemd, every 5 s), its start-up checks failed and it exited 1.
A doorbell rung meanwhile logged its SQLite error once per study.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radtrace.config import Settings
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.studies import StudySpec, make_study
from radtrace.worker.doorbell import ring_process
from serve_support import killed_at_end
from tests_support import fill_file_system, radtrace, small_tmpfs
from worker_support import revision_row, running_worker, spool_study, wait_for_state, worker_env, worker_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DONE = {RevisionState.DISPATCHED, RevisionState.FAILED, RevisionState.SKIPPED}


@pytest.fixture
def settings(tmp_path: Path, sqlite_store: Store, tiny_model_dir: Path) -> Iterator[Settings]:
    """Worker settings whose data directory is a 16 MiB tmpfs; the work database is under ``tmp_path``."""
    with small_tmpfs(tmp_path / "radtrace"):
        yield worker_settings(tmp_path, str(sqlite_store.engine.url), tiny_model_dir,
                              broker={"reconcile_interval_s": 1.0, "overdue_after_s": 1.0})  # fmt: skip


def fill(folder: Path) -> Path:
    """Fill ``folder``'s file system to the last byte; returns the filler file."""
    filler = fill_file_system(folder)
    assert os.statvfs(folder).f_bavail == 0
    return filler


def wait_for_line(log_file: Path, text: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [line for line in log_file.read_text(errors="replace").splitlines() if text in line]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in the worker's log:\n{log_file.read_text(errors='replace')[-4000:]}")


def test_a_full_broker_disk_loses_nothing_and_the_worker_waits_for_space(
    settings: Settings, sqlite_store: Store, tmp_path: Path
) -> None:
    log_file = tmp_path / "worker.log"
    with killed_at_end(running_worker(settings, log_file=log_file)) as worker:  # nothing on stopping
        wait_for_line(log_file, " taking ")
        os.kill(worker.pid, signal.SIGSTOP)  # the worker takes nothing while the doorbell rings and the disk fills
        try:
            rung, unrung = (spool_study(settings, sqlite_store, make_study(StudySpec(seed=seed)))[0]
                            for seed in (71, 72))  # fmt: skip
            assert ring_process(settings, rung, 1)  # its message waits in broker.db
            filler = fill(settings.data_dir)
            assert not ring_process(settings, unrung, 1)  # the study is queued in the database; its doorbell is not
        finally:
            os.kill(worker.pid, signal.SIGCONT)

        line = wait_for_line(log_file, "the embedded broker's messages wait")
        assert f"radtrace.worker.broker_space: disk full: {settings.data_dir}, 0 MB free: " in line, line
        time.sleep(10)  # ten seconds of a full disk
        assert worker.poll() is None, log_file.read_text(errors="replace")[-4000:]
        text = log_file.read_text(errors="replace")
        assert "Connection to broker lost" not in text
        assert "Unrecoverable error" not in text
        assert text.count("the embedded broker's messages wait") == 1
        assert text.count("doorbell(s) not rung") <= 1  # the reconciler's rings: one line a minute at most
        passes = [line for line in text.splitlines() if "reconciler rang" in line]
        assert passes, text[-4000:]  # each pass names the disk, not 'broker down?'
        assert all(f"not rung: disk full: {settings.data_dir}, 0 MB free)" in line for line in passes), passes
        assert len(text.splitlines()) < 40, text[-4000:]
        assert [revision_row(sqlite_store, uid).state for uid in (rung, unrung)] == [RevisionState.QUEUED] * 2

        status = radtrace("status", "--json", "--no-broker", env=worker_env(settings))
        assert status.returncode == 0, status.stderr
        disk = json.loads(status.stdout)["data_disk"]
        assert disk.startswith(f"disk full: {settings.data_dir}, 0 MB free"), disk

        filler.unlink()  # space again: both are read, the unrung one rung again by the reconciler
        for uid in (rung, unrung):
            rev = wait_for_state(sqlite_store, uid, DONE, timeout=120, log_file=log_file)
            assert rev.state is RevisionState.DISPATCHED, rev.reason
            assert rev.attempts == 1
        assert worker.poll() is None
    text = log_file.read_text(errors="replace")
    assert "disk space again" in text
    assert json.loads(radtrace("status", "--json", "--no-broker", env=worker_env(settings)).stdout)["data_disk"] is None


def test_a_worker_started_on_a_full_disk_waits_and_starts_once_there_is_space(
    settings: Settings, sqlite_store: Store, tmp_path: Path
) -> None:
    uid, _ = spool_study(settings, sqlite_store, make_study(StudySpec(seed=81)))
    assert ring_process(settings, uid, 1)
    filler = fill(settings.data_dir)
    log_file = tmp_path / "worker.log"
    with killed_at_end(running_worker(settings, log_file=log_file)) as worker:  # nothing on stopping
        line = wait_for_line(log_file, "the worker starts once there is space")
        assert f"disk full: {settings.data_dir}, 0 MB free: the worker starts once there is space" in line
        time.sleep(8)
        assert worker.poll() is None, log_file.read_text(errors="replace")  # before: exit 1 at once
        assert log_file.read_text(errors="replace").count("disk full") == 1

        filler.unlink()
        rev = wait_for_state(sqlite_store, uid, DONE, timeout=150, log_file=log_file)
        assert rev.state is RevisionState.DISPATCHED, rev.reason
    assert "disk space again where" in log_file.read_text(errors="replace")

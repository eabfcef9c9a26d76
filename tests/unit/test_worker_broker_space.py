"""The embedded broker on a full disk (radtrace.worker.broker_space), the worker's start on one
(radtrace.worker.space_at_start) and status's data-disk line (radtrace.worker.disk_space.data_disk_line): pure, with a
clock, a sleep and free space the test controls."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from radtrace.config import load_settings
from radtrace.preflight import Check
from radtrace.worker import broker_space, disk_space, space_at_start
from radtrace.worker.broker_space import BrokerSpace, is_disk_full, ring_failed_on_full_disk
from radtrace.worker.disk_space import data_disk_line

pytestmark = pytest.mark.unit

MB = 1 << 20


def _full_error() -> sa.exc.OperationalError:
    orig = sqlite3.OperationalError("database or disk is full")
    orig.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    return sa.exc.OperationalError("UPDATE kombu_message ...", {}, orig)


def test_only_the_embedded_sqlite_broker_finding_its_disk_full_is_a_full_disk(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path}/broker.db"
    assert is_disk_full(_full_error(), url)
    wrapped = RuntimeError("kombu's own")
    wrapped.__cause__ = _full_error()
    assert is_disk_full(wrapped, url)
    locked = sa.exc.OperationalError("...", {}, sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(locked, url)
    assert not is_disk_full(_full_error(), "redis://127.0.0.1:6379/0")
    assert not is_disk_full(ConnectionError("refused"), url)


def test_a_full_disk_waits_1_s_doubling_to_30_s_and_is_said_once_each_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = [0]
    monkeypatch.setattr(broker_space, "free_bytes", lambda path: free[0])
    monkeypatch.setattr(disk_space, "free_bytes", lambda path, statvfs=None: free[0])
    now = [100.0]
    space = BrokerSpace(f"sqlite:///{tmp_path}/broker.db", clock=lambda: now[0])
    assert not space.waiting()
    waits = []
    for _ in range(8):
        space.full()
        started = now[0]
        while space.waiting():
            now[0] += 0.25
        waits.append(now[0] - started)
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]

    space.full()
    now[0] += 5
    free[0] = 50 * MB  # space again: tried at once, not at the end of the 30 s
    assert not space.waiting()
    space.taken()
    space.taken()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"disk full: {tmp_path}, 0 MB free: the embedded broker's messages wait, not taken")
    assert lines[1] == f"disk space again: {tmp_path}, 50 MB free; the embedded broker delivers again (waited 126 s)"


def test_a_quota_statvfs_does_not_see_is_tried_once_a_second_at_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_space, "free_bytes", lambda path: 50 * MB)  # statvfs says space; writes fail
    now = [0.0]
    space = BrokerSpace(f"sqlite:///{tmp_path}/broker.db", clock=lambda: now[0])
    space.full()
    tries = 0
    while now[0] < 10:
        if not space.waiting():
            tries += 1
            space.full()
        now[0] += 0.02  # the polling interval
    assert tries <= 10


def test_doorbells_not_rung_on_a_full_disk_are_said_once_a_minute_with_their_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_space, "_ring_state", {"said_at": float("-inf"), "since": 0})
    monkeypatch.setattr(disk_space, "free_bytes", lambda path, statvfs=None: 0)
    now = [0.0]
    for _ in range(500):  # a reconciler pass over 500 queued studies, then another a minute later
        ring_failed_on_full_disk(f"sqla+sqlite:///{tmp_path}/broker.db", clock=lambda: now[0])
    now[0] = 61.0
    ring_failed_on_full_disk(f"sqla+sqlite:///{tmp_path}/broker.db", clock=lambda: now[0])
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"disk full: {tmp_path}, 0 MB free: 1 doorbell(s) not rung (the embedded broker "
                               "cannot write broker.db); each study and delivery is kept in the database")  # fmt: skip
    assert lines[1].startswith(f"disk full: {tmp_path}, 0 MB free: 500 doorbell(s) not rung")


# --- the worker's start ------------------------------------------------------------------------------


def _checks(disk: str) -> list[Check]:
    return [Check("settings", "ok", "loaded and valid"), Check("data directory", "failed", f"/d: {disk}")]


def test_a_worker_on_a_full_disk_runs_its_checks_again_until_there_is_space(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(data_dir=tmp_path)
    free = [0]
    monkeypatch.setattr(space_at_start, "free_bytes", lambda path: free[0])
    monkeypatch.setattr(disk_space, "free_bytes", lambda path, statvfs=None: free[0])
    runs: list[int] = []
    slept: list[float] = []

    def run(_: Any) -> list[Check]:
        runs.append(1)
        if len(runs) == 6:
            free[0] = 100 * MB
            return [Check("settings", "ok", "loaded and valid")]
        return _checks("No space left on device")

    checks = space_at_start.worker_start_checks(settings, run, sleep=slept.append)
    assert [check.status for check in checks] == ["ok"]
    assert slept == [5, 10, 20, 40, 60]
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"disk full: {tmp_path}, 0 MB free: the worker starts once there is space (its "
                               "start-up checks: data directory: /d: No space left on device;")  # fmt: skip
    assert lines[1].startswith(f"disk space again where {tmp_path} is; the worker starts after")


def test_a_failure_that_is_not_the_disk_still_ends_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(space_at_start, "free_bytes", lambda path: 100 * MB)
    checks = space_at_start.worker_start_checks(load_settings(data_dir=tmp_path), lambda _: _checks("denied"),
                                                sleep=pytest.fail)  # fmt: skip
    assert [check.status for check in checks] == ["ok", "failed"]


def test_the_listeners_free_space_limit_is_a_warning_for_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(space_at_start, "free_bytes", lambda path: 900 * MB)
    low = Check("free disk space", "failed", "900 MiB free where /d is, below listener.min_free_bytes (2.0 GiB)")
    [check] = space_at_start.worker_start_checks(load_settings(data_dir=tmp_path), lambda _: [low], sleep=pytest.fail)
    assert check.status == "warning"
    assert check.detail.endswith("the worker reads what the free space holds for drafts, the rest wait, not read")


# --- radtrace status --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "starts"),
    [(0, "disk full: {d}, 0 MB free (listener.min_free_bytes 2048 MB): the listener refuses studies"),
     (40 * MB, "disk full: {d}, 40 MB free"),
     (900 * MB, "disk low: {d}, 900 MB free, below listener.min_free_bytes 2048 MB: the listener refuses studies"),
     (3000 * MB, None)],
)  # fmt: skip
def test_status_says_the_data_disk_is_full_or_low_only_when_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, starts: str | None
) -> None:
    monkeypatch.setattr(disk_space, "free_bytes", lambda path, statvfs=None: free)
    line = data_disk_line(tmp_path, 2048 * MB)
    if starts is None:
        assert line is None
    else:
        assert line is not None
        assert line.startswith(starts.format(d=tmp_path)), line

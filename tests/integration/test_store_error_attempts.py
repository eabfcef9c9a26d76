"""Store errors on a real PostgreSQL: whose they are decides whether an attempt counts, and a claim whose reply was
lost is its worker's claim still.

- A statement of ours that runs past ``statement_timeout`` (the database answering) ends its attempt as an ordinary
  failure: counted, so a bug in our own SQL fails its study after ``broker.max_attempts`` instead of being retried
  forever unseen. Before, every :class:`StoreUnavailableError` leaving a batch was taken for the database's outage.
- The server terminating our connection (``pg_terminate_backend``: what a shutdown or a failover does) is an outage:
  the attempt is not counted and its audited reading is drafted again (c3581c1).
- A claim whose COMMIT reached the database but whose reply did not (the connection broke in between) is found by
  its worker on the next try by the token it wrote, and kept: one attempt, one ``inference_started``. Before, the
  worker took its own claim over as attempt 2.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa

from radtrace.audit.chain import verify_chain
from radtrace.config import Settings
from radtrace.errors import StoreUnavailableError
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Job, JobState, RevisionState
from radtrace.testing.studies import make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import CountingReader, attempt_events, revision_row, spool_study, study_events, worker_settings

pytestmark = pytest.mark.integration


def _conninfo(url: str) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL URL (the test's own admin connections)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _jobs(store: Store) -> list[tuple[int, JobState, str | None]]:
    with store.session() as session:
        return [(a, s, e) for a, s, e in session.execute(sa.select(Job.attempt, Job.state, Job.error).order_by(Job.id))]


def _after(target: Any, name: str, then: Callable[[], None], monkeypatch: pytest.MonkeyPatch, times: int = 1) -> None:
    """Run ``then`` after each of the next ``times`` calls of ``target.name``."""
    original = getattr(target, name)
    left = [times]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if left[0] > 0:
            left[0] -= 1
            then()
        return result

    monkeypatch.setattr(target, name, wrapped)


class RevisionLock:
    """Another client holding the revisions' rows FOR NO KEY UPDATE: the worker's UPDATE of its revision waits (an
    outbox row's foreign key check, FOR KEY SHARE, does not)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = psycopg.connect(_conninfo(url))
        self.pid = self.connection.info.backend_pid

    def take(self) -> None:
        self.connection.execute("SELECT id FROM revisions FOR NO KEY UPDATE")

    def waiter(self) -> int | None:
        """The backend waiting for this lock, if any."""
        with psycopg.connect(_conninfo(self.url), autocommit=True) as admin:
            row = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s "
                                "AND wait_event_type = 'Lock'", (self.pid,)).fetchone()  # fmt: skip
        return None if row is None else int(row[0])

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()


@pytest.fixture
def pg_url(pg_store: Store) -> str:
    return pg_store.engine.url.render_as_string(hide_password=False)


@pytest.fixture
def wsettings(tmp_path: Path, pg_url: str, tiny_model_dir: Path) -> Settings:
    return worker_settings(tmp_path, pg_url, tiny_model_dir)


def test_a_statement_timeout_of_ours_counts_the_attempt(
    wsettings: Settings, pg_store: Store, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_uid, number = spool_study(wsettings, pg_store, make_study())
    # The worker's connections time a statement out after 1 s, as a site's statement_timeout would
    timed = Store.from_url(f"{pg_url}?options={quote('-c statement_timeout=1000')}")
    try:
        reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
        pipeline = StudyPipeline(wsettings, timed, reader, worker="w1")
        lock = RevisionLock(pg_url)
        _after(pipeline.recording, "record", lock.take, monkeypatch)  # audited, then its end cannot be written

        try:
            with pytest.raises(StoreUnavailableError, match="statement timeout"):
                pipeline.process(study_uid, number)
        finally:
            lock.release()
        rev = revision_row(pg_store, study_uid)
        assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.PROCESSING, 1, "w1")

        again = pipeline.process(study_uid, number)  # the retried task

        assert again.result is Result.REPORTED
        assert revision_row(pg_store, study_uid).attempts == 2  # counted (before: 1, as an outage)
        assert reader.batches == [1, 1]  # an ordinary failure: read again
        assert attempt_events(pg_store, study_uid) == [
            ("inference_started", 1, None),
            ("inference_completed", 1, None),
            ("report_failed", 1, None),  # attempt 1's end, recorded as its worker took it over: counted
            ("inference_started", 2, None),
            ("inference_completed", 2, None),
        ]
        failed = next(p for kind, p in study_events(pg_store, study_uid) if kind == "report_failed")
        assert "statement timeout" in failed["error"]
        assert "reading_kept" not in failed
        jobs = _jobs(pg_store)
        assert [(attempt, state) for attempt, state, _ in jobs] == [(1, JobState.FAILED), (2, JobState.SUCCEEDED)]
        assert "statement timeout" in str(jobs[0][2])
        assert not str(jobs[0][2]).startswith("not counted")
        assert verify_chain(pg_store).ok
    finally:
        timed.dispose()


def test_statement_timeouts_of_ours_fail_the_study_after_max_attempts(
    tmp_path: Path, pg_store: Store, pg_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wsettings = worker_settings(tmp_path, pg_url, tiny_model_dir, broker={"max_attempts": 2})
    study_uid, number = spool_study(wsettings, pg_store, make_study())
    timed = Store.from_url(f"{pg_url}?options={quote('-c statement_timeout=500')}")
    try:
        pipeline = StudyPipeline(wsettings, timed, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                                 worker="w1")  # fmt: skip
        locks: list[RevisionLock] = []

        def lock() -> None:
            locks.append(RevisionLock(pg_url))
            locks[-1].take()

        _after(pipeline.recording, "record", lock, monkeypatch, times=2)
        for _ in range(2):  # the same bug each time
            try:
                with pytest.raises(StoreUnavailableError, match="statement timeout"):
                    pipeline.process(study_uid, number)
            finally:
                locks[-1].release()

        ended = pipeline.process(study_uid, number)  # before: taken over uncounted, again and again

        assert ended.result is Result.FAILED
        assert ended.reason is not None
        assert ended.reason.startswith("gave up after 2 attempts: ")
        assert "statement timeout" in ended.reason
        rev = revision_row(pg_store, study_uid)
        assert (rev.state, rev.attempts) == (RevisionState.FAILED, 3)
        assert [kind for kind, _ in study_events(pg_store, study_uid)][-1] == "study_failed"
    finally:
        timed.dispose()


def test_the_server_terminating_our_connection_is_an_outage_not_counted(
    wsettings: Settings, pg_store: Store, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_uid, number = spool_study(wsettings, pg_store, make_study())
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    pipeline = StudyPipeline(wsettings, pg_store, reader, worker="w1")
    lock = RevisionLock(pg_url)
    terminated: list[int] = []
    done = threading.Event()

    def terminate_each_waiter() -> None:  # each statement that waits for the lock: the drafts', then the end's
        while not done.wait(0.05):
            if (pid := lock.waiter()) is not None:
                with psycopg.connect(_conninfo(pg_url), autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                terminated.append(pid)

    killer = threading.Thread(target=terminate_each_waiter, daemon=True)

    def lock_and_kill() -> None:
        lock.take()
        killer.start()

    _after(pipeline.recording, "record", lock_and_kill, monkeypatch)
    try:
        with pytest.raises(StoreUnavailableError):
            pipeline.process(study_uid, number)
    finally:
        done.set()
        killer.join(timeout=60)
        lock.release()
    assert terminated, "the worker's connection never waited for the lock"

    again = pipeline.process(study_uid, number)

    assert again.result is Result.REPORTED
    assert revision_row(pg_store, study_uid).attempts == 1
    assert reader.batches == [1]  # its audited reading drafted again
    lost = next(p for kind, p in study_events(pg_store, study_uid) if kind == "report_failed")
    assert (lost["attempt_counted"], lost["reading_kept"]) == (False, True)
    assert verify_chain(pg_store).ok


class CommitReplyCutter:
    """A TCP proxy to PostgreSQL that, once armed, lets the next COMMIT through to the server and closes the client's
    connection instead of relaying the server's reply: the transaction committed, its client never heard so."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self.server.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            cutting = threading.Event()  # this connection's COMMIT went up: its reply is not relayed
            threading.Thread(target=self._up, args=(client, upstream, cutting), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, cutting), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, cutting: threading.Event) -> None:
        while data := _recv(client):
            if self.armed.is_set() and b"COMMIT" in data:
                self.armed.clear()
                cutting.set()
            with contextlib.suppress(OSError):
                upstream.sendall(data)
            if cutting.is_set():
                return  # the connection ends when the server's reply comes (_down)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _down(self, upstream: socket.socket, client: socket.socket, cutting: threading.Event) -> None:
        with client, upstream:
            while data := _recv(upstream):
                if cutting.is_set():  # the server's reply to the COMMIT (it committed): dropped with the connection
                    self.cut.set()
                    return
                with contextlib.suppress(OSError):
                    client.sendall(data)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def cutter(pg_url: str) -> Iterator[CommitReplyCutter]:
    url = sa.make_url(pg_url)
    proxy = CommitReplyCutter(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    proxy.close()


def test_a_claim_whose_commit_reply_was_lost_is_kept_not_counted_again(
    tmp_path: Path, pg_store: Store, pg_url: str, tiny_model_dir: Path, cutter: CommitReplyCutter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    proxied_url = sa.make_url(pg_url).set(host="127.0.0.1", port=cutter.port).render_as_string(hide_password=False)
    wsettings = worker_settings(tmp_path, proxied_url, tiny_model_dir)
    study_uid, number = spool_study(wsettings, pg_store, make_study())
    proxied = Store.from_url(proxied_url)
    try:
        reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
        pipeline = StudyPipeline(wsettings, proxied, reader, worker="w1")
        claim = pipeline.attempts.claim

        def claim_cut_after_commit(study: str, revision: int) -> Any:
            cutter.armed.set()  # the claim's transaction is the next COMMIT
            return claim(study, revision)

        monkeypatch.setattr(pipeline.attempts, "claim", claim_cut_after_commit)
        with pytest.raises(StoreUnavailableError):
            pipeline.process(study_uid, number)
        assert cutter.cut.is_set()
        rev = revision_row(pg_store, study_uid)  # committed: the claim is the worker's
        assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.PROCESSING, 1, "w1")
        monkeypatch.setattr(pipeline.attempts, "claim", claim)

        again = pipeline.process(study_uid, number)  # the retried task

        assert again.result is Result.REPORTED
        assert revision_row(pg_store, study_uid).attempts == 1  # before: 2, its own claim taken over
        assert reader.batches == [1]
        assert attempt_events(pg_store, study_uid) == [("inference_started", 1, None), ("inference_completed", 1, None)]
        assert [(attempt, state) for attempt, state, _ in _jobs(pg_store)] == [(1, JobState.SUCCEEDED)]
        assert verify_chain(pg_store).ok
    finally:
        proxied.dispose()


def test_a_claim_that_did_not_commit_is_claimed_afresh(
    wsettings: Settings, pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guard: a claim whose transaction failed before COMMIT left nothing; the next try claims attempt 1 as new.
    study_uid, number = spool_study(wsettings, pg_store, make_study())
    pipeline = StudyPipeline(wsettings, pg_store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                             worker="w1")  # fmt: skip
    recorder = pipeline.attempts.recorder
    record_many = recorder.record_many

    def refused(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailableError("database unavailable while claiming a revision: connection refused")

    monkeypatch.setattr(recorder, "record_many", refused)
    with pytest.raises(StoreUnavailableError):
        pipeline.process(study_uid, number)
    monkeypatch.setattr(recorder, "record_many", record_many)
    assert revision_row(pg_store, study_uid).state is RevisionState.QUEUED

    assert pipeline.process(study_uid, number).result is Result.REPORTED
    assert revision_row(pg_store, study_uid).attempts == 1
    assert [kind for kind, _, _ in attempt_events(pg_store, study_uid)] == ["inference_started", "inference_completed"]

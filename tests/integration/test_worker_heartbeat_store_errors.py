"""The claims' heartbeat tells and counts a failed renewal by whose error it is, as an attempt's count does.

Before, every store error of a beat was one warning per claim per beat, "claim not renewed: …", whoever's it was; a
database that was away was tried claim by claim (each waiting for the connection timeout) and not again until the
next beat, a third of ``broker.claim_timeout_s`` later. Now an outage is said once, the rest of the beat is not
tried, and the beat is tried again every second until the claims are renewed ("renewed again after …"); a statement
of ours that timed out is an error of ours, said per claim as not an outage, and left to the next beat.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import radtrace.worker.claims
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store, translate_db_error
from radtrace.store.models import Revision
from radtrace.testing.studies import StudySpec, make_study
from radtrace.worker.claims import Claim, claims_kept_alive
from radtrace.worker.pipeline import StudyPipeline
from worker_support import spool_study, wait_until, worker_settings

pytestmark = pytest.mark.integration


def _claims(tmp_path: Path, store: Store, tiny_model_dir: Path, count: int) -> tuple[StudyPipeline, list[Claim]]:
    url = str(store.engine.url.render_as_string(hide_password=False))
    settings = worker_settings(tmp_path, url, tiny_model_dir)
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")
    claims = []
    for seed in range(count):
        uid, number = spool_study(settings, store, make_study(StudySpec(seed=60 + seed)))
        claim = pipeline.attempts.claim(uid, number)
        assert isinstance(claim, Claim)
        claims.append(claim)
    return pipeline, claims


def _expiries(store: Store) -> list[object]:
    with store.session() as session:
        return list(session.scalars(sa.select(Revision.claim_expires_at).order_by(Revision.id)))


def test_a_database_outage_is_said_once_and_the_beat_tried_again_until_it_is_back(
    tmp_path: Path, store: Store, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    pipeline, claims = _claims(tmp_path, store, tiny_model_dir, 3)
    before = _expiries(store)
    real = store.session
    down = threading.Event()
    down.set()
    refused: list[str] = []

    @contextlib.contextmanager
    def session(doing: str = "using the database", *, immediate: bool = False) -> Iterator[Session]:
        if down.is_set():
            refused.append(doing)
            error = sa.exc.OperationalError("connect", None, Exception("connection refused"))
            raise translate_db_error(error, doing) from error
        with real(doing, immediate=immediate) as opened:
            yield opened

    monkeypatch.setattr(store, "session", session)
    monkeypatch.setattr(radtrace.worker.claims, "BEAT_RETRY_S", 0.05)
    caplog.set_level(logging.INFO, logger="radtrace.worker.claims")

    with claims_kept_alive(claims, pipeline.attempts.renew, 0.2) as heartbeat:
        wait_until(lambda: len(refused) >= 4)
        down.clear()
        wait_until(lambda: any("renewed again" in r.getMessage() for r in caplog.records))

    assert refused
    assert set(refused) == {"renewing a claim"}
    assert heartbeat.missed["ours"] == 0
    # one try a beat while it was away, the three claims counted unrenewed (before: each claim tried, each waiting
    # for its connection timeout)
    assert heartbeat.missed["outage"] == 3 * len(refused)
    messages = [r.getMessage() for r in caplog.records]
    away = [m for m in messages if "not renewed" in m]
    assert len(away) == 1  # said once for the outage (before: once per claim per beat)
    assert away[0].startswith("3 claim(s) not renewed: database unavailable while renewing a claim")
    assert "trying again every" in away[0]
    assert next(m for m in messages if "renewed again" in m).endswith(f"({3 * len(refused)} renewal(s) missed)")
    assert all(after > earlier for after, earlier in zip(_expiries(store), before, strict=True))  # type: ignore[operator]


def test_a_statement_timeout_of_ours_is_told_as_ours_and_not_retried_every_second(
    tmp_path: Path, pg_store: Store, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = pg_store.engine.url.render_as_string(hide_password=False)
    timed = Store.from_url(f"{url}?options={quote('-c statement_timeout=300')}")
    try:
        pipeline, claims = _claims(tmp_path, timed, tiny_model_dir, 2)
        caplog.set_level(logging.INFO, logger="radtrace.worker.claims")
        conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo) as locker:
            locker.execute("SELECT id FROM revisions FOR NO KEY UPDATE")  # the renewals' UPDATE waits, then times out
            with claims_kept_alive(claims, pipeline.attempts.renew, 0.2) as heartbeat:
                wait_until(lambda: heartbeat.missed["ours"] >= 4)
            locker.rollback()
    finally:
        timed.dispose()

    assert heartbeat.missed["outage"] == 0  # before: no count; and worded as any other store error
    told = [r for r in caplog.records if "not renewed" in r.getMessage()]
    assert told
    assert all(r.levelno == logging.ERROR for r in told)
    assert all("statement timed out while renewing a claim" in r.getMessage() for r in told)
    assert all("not its outage" in r.getMessage() for r in told)
    assert not any("database unavailable" in r.getMessage() for r in caplog.records)
    # every claim tried at each beat: the other claim's renewal is not skipped for this one's timeout
    assert {claim.names() for claim in claims} <= {r.getMessage().split(":")[0] for r in told}

"""A statement timeout of ours on a real PostgreSQL reads "statement timed out while …" wherever its attempt's end is
kept (the job row, the audit log), and only the database's outage reads "database unavailable while …".

Before, :func:`radtrace.store.engine.translate_db_error` worded both as an outage, though since 0903a66 the attempt
a statement timeout ends is counted as an ordinary failure: the job row said "database unavailable" for an attempt
the worker had counted against the study.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from radtrace.errors import StoreUnavailableError
from radtrace.store.engine import Store
from radtrace.store.models import Job
from radtrace.testing.studies import make_study
from radtrace.worker.claims import Claim
from radtrace.worker.pipeline import StudyPipeline
from worker_support import audit_events, revision_row, spool_study, worker_settings

pytestmark = pytest.mark.integration


class _NoModel:
    def read_each(self, studies: object) -> list[object]:
        raise AssertionError("nothing is read in this test")


def _timed_out(pg_url: str, doing: str) -> StoreUnavailableError:
    timed = Store.from_url(f"{pg_url}?options={quote('-c statement_timeout=100')}")
    try:
        with pytest.raises(StoreUnavailableError) as raised, timed.session(doing) as session:
            session.execute(sa.text("SELECT pg_sleep(5)"))
    finally:
        timed.dispose()
    return raised.value


def test_a_real_statement_timeout_is_worded_as_ours_and_a_refused_connection_as_an_outage(pg_store: Store) -> None:
    url = pg_store.engine.url.render_as_string(hide_password=False)
    error = _timed_out(url, "finishing a revision")
    assert error.reason == (
        "statement timed out while finishing a revision: canceling statement due to statement timeout"
    )
    down = Store.from_url("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_timeout_s=1)
    try:
        with pytest.raises(StoreUnavailableError) as raised, down.session("claiming a revision"):
            pass
    finally:
        down.dispose()
    assert raised.value.reason.startswith("database unavailable while claiming a revision: ")


def test_an_attempt_a_statement_timeout_ended_is_recorded_as_timed_out_not_as_an_outage(
    tmp_path: Path, pg_store: Store, tiny_model_dir: Path
) -> None:
    url = pg_store.engine.url.render_as_string(hide_password=False)
    settings = worker_settings(tmp_path, url, tiny_model_dir)
    study_uid, number = spool_study(settings, pg_store, make_study())
    pipeline = StudyPipeline(settings, pg_store, _NoModel(), worker="w1")
    claim = pipeline.attempts.claim(study_uid, number)
    assert isinstance(claim, Claim)

    pipeline.attempts.lost_to_database([claim], _timed_out(url, "recording the reading"))
    again = pipeline.attempts.claim(study_uid, number)  # the worker takes its attempt over: counted

    assert isinstance(again, Claim)
    assert revision_row(pg_store, study_uid).attempts == 2
    with pg_store.session() as session:
        errors = session.scalars(sa.select(Job.error).where(Job.attempt == 1)).all()
    assert errors == ["statement timed out while recording the reading: canceling statement due to statement timeout"]
    [ended] = [payload for kind, _, payload in audit_events(pg_store) if kind == "inference_failed"]
    assert ended["error"] == errors[0]
    assert "attempt_counted" not in ended

"""A study that failed in two periods of the dashboard, and a draft SR that reached its PACS on two days.

The study's reading fails on a Monday, an operator retries it, it fails again on the Tuesday, is retried once more
and read (the real pipeline; the audit recorder's clock set to those days). The site sends each draft SR to two
PACS (one ``outbox`` row per destination): one took it on the Monday, the other, down overnight, on the Tuesday.

What QA staff expect: each day counts the studies that failed on it (the study on both days), but the window, and
a week holding both days, count the study once; a draft SR is delivered once, when it first reached a PACS (the
latency's "drafts → SR at PACS" is to that first delivery too). Before, the volume counted each day's distinct
revisions delivered and summed the days: the week and the window counted this study's draft twice.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit_support import frozen_clock
from console_support import add_user, console_client, console_settings, sign_in
from radtrace.audit.events import Actor
from radtrace.errors import PermanentError
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from radtrace.worker.study_retry import retry_revision
from worker_support import spool_study

pytestmark = pytest.mark.integration

REASON = "model backend refused the study"


class RefusingModel:
    def read_each(self, studies: Any) -> Any:
        raise PermanentError(REASON)


def _rows(client: Any, chart: str, params: dict[str, str]) -> dict[str, dict[str, str]]:
    answer = client.get(f"/console/dashboard/{chart}.csv", params=params)
    assert answer.status_code == 200, answer.text
    return {row["period"]: row for row in csv.DictReader(io.StringIO(answer.text))}


def test_a_study_failed_and_delivered_in_two_periods_counts_once_in_the_window_and_the_week(
    store: Store, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    monday = today - timedelta(days=today.weekday())
    tuesday = monday + timedelta(days=1)
    settings = console_settings(tmp_path, store)
    uid, number = spool_study(settings, store, make_study(StudySpec(seed=81), [ImageSpec()]))
    with frozen_clock(datetime.combine(monday, time(10), tzinfo=UTC)) as clock:
        assert StudyPipeline(settings, store, RefusingModel(), worker="w1").process(uid, number).result is Result.FAILED
        retry_revision(store, uid, None, Actor(user="qa.operator"))
        clock.now = datetime.combine(tuesday, time(10), tzinfo=UTC)
        assert StudyPipeline(settings, store, RefusingModel(), worker="w1").process(uid, number).result is Result.FAILED
    retry_revision(store, uid, None, Actor(user="qa.operator"))
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    assert StudyPipeline(settings, store, reader, worker="w2").process(uid, number).result is Result.REPORTED
    with store.session() as session:
        revision_id = session.scalar(sa.select(Revision.id))
        assert revision_id is not None
        session.execute(sa.delete(OutboxMessage).where(OutboxMessage.kind == "sr"))
        for destination, day in (("PACS_A", monday), ("PACS_B", tuesday)):
            session.add(
                OutboxMessage(revision_id=revision_id, kind="sr", destination=destination, payload_path="sr.dcm",
                              payload_sha256="0" * 64, state=OutboxState.DELIVERED,
                              delivered_at=datetime.combine(day, time(23, 30), tzinfo=UTC))
            )  # fmt: skip

    window = {"from": monday.isoformat(), "to": (monday + timedelta(days=6)).isoformat()}
    add_user(store, "qa.twice", "qa")
    with console_client(store, settings) as client:
        sign_in(client, "qa.twice")
        by_day = {**window, "period": "day"}
        failures, volume = _rows(client, "failures", by_day), _rows(client, "volume", by_day)
        page = client.get("/console/dashboard", params=by_day).text
        by_week = {**window, "period": "week"}
        week_failures, week_volume = _rows(client, "failures", by_week), _rows(client, "volume", by_week)
        week_page = client.get("/console/dashboard", params=by_week).text

    for day in (monday, tuesday):  # each day counts the study that failed on it
        assert (failures[str(day)]["failed_attempts"], failures[str(day)]["studies_failed"]) == ("1", "1"), day
    (week,) = week_failures.values()
    assert (week["failed_attempts"], week["studies_failed"], week["recovered"]) == ("2", "1", "1")
    for shown in (page, week_page):
        volume_table = shown.split('id="volume"')[1].split("</table>")[0]
        assert 'failed-studies"><td>failed at least once</td><td class="num">1<' in volume_table
        assert f'failed attempt: <bdi class="free-text">{REASON}</bdi></td><td class="num">2<' in volume_table
        assert "1 study failed at least once: 1 read after a retry, 0 still failed." in shown
        # before: 2, the draft counted on each day it reached a PACS
        assert '<td>delivered (draft SR at a PACS)</td><td class="num">1<' in volume_table
    assert [volume[str(day)]["delivered"] for day in (monday, tuesday)] == ["1", "0"]  # before: 1, 1
    (week_row,) = week_volume.values()
    assert week_row["delivered"] == "1"  # before: 2
    assert sum(int(row["delivered"]) for row in volume.values()) == 1

"""The dashboard's failures of studies an operator retried (``radtrace study retry``) afterwards.

Two studies fail in the real pipeline with the model's reason; one is retried and read, the other stays failed;
a third is read at once. The failures chart counted revisions whose state is failed *now*: the retried study's
failure and its reason left the chart, the failures CSV, the volume figures and the reasons table, so a burst
that operators retried vanished from the dashboard (only the audit log kept ``study_failed``). Every failed
reading attempt counts when it happened, with its reason, and the studies that failed are split into those read
after a retry and those still failed, the same on the page and in both CSVs.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from radtrace.audit.events import Actor
from radtrace.errors import PermanentError
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from radtrace.worker.study_retry import retry_revision
from worker_support import spool_study

pytestmark = pytest.mark.integration

REASON = "model backend refused the study"


class RefusingModel:
    """A reader whose model fails the study for good (no automatic retry)."""

    def read_each(self, studies: Any) -> Any:
        raise PermanentError(REASON)


def _rows(client: Any, chart: str) -> list[dict[str, str]]:
    answer = client.get(f"/console/dashboard/{chart}.csv")
    assert answer.status_code == 200, answer.text
    return list(csv.DictReader(io.StringIO(answer.text)))


def _today(rows: list[dict[str, str]]) -> dict[str, str]:
    busy = [
        row for row in rows if any(value not in ("0", "", "False", "None") for k, value in row.items() if k != "period")
    ]
    assert len(busy) == 1, busy
    return busy[0]


def test_a_retried_failure_stays_on_the_failures_chart_as_failed_then_recovered(store: Store, tmp_path: Path) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = [spool_study(settings, store, make_study(StudySpec(seed=seed), [ImageSpec()])) for seed in (71, 72, 73)]
    (retried, number), (left, left_number), (fine, fine_number) = studies
    for uid, n in ((retried, number), (left, left_number)):
        assert StudyPipeline(settings, store, RefusingModel(), worker="w1").process(uid, n).result is Result.FAILED
    assert StudyPipeline(settings, store, reader, worker="w1").process(fine, fine_number).result is Result.REPORTED
    retry_revision(store, retried, None, Actor(user="qa.operator"))
    assert StudyPipeline(settings, store, reader, worker="w2").process(retried, number).result is Result.REPORTED

    add_user(store, "qa.fail", "qa")
    with console_client(store, settings) as client:
        sign_in(client, "qa.fail")
        failures = _today(_rows(client, "failures"))
        volume = _today(_rows(client, "volume"))
        page = client.get("/console/dashboard").text
    assert volume["read"] == "2"
    assert volume["failed"] == "2", volume  # before: 1, the study still failed; the retried one's failure gone
    assert volume[f"failed: {REASON}"] == "2"  # both failures keep their reason
    assert failures["failed_attempts"] == "2", failures
    assert failures["attempts"] == "4", failures  # two failed attempts, two readings
    assert float(failures["rate"]) == pytest.approx(0.5)
    assert (failures["studies_failed"], failures["recovered"], failures["still_failed"], failures["retrying"]) == (
        "2",
        "1",
        "1",
        "0",
    )
    reasons = page.split('id="volume"')[1].split("</table>")[0]
    assert f'failed attempt: <bdi class="free-text">{REASON}</bdi></td><td class="num">2<' in reasons
    assert 'data-testid="failed-studies"><td>failed at least once</td><td class="num">2<' in reasons
    assert 'data-testid="recovered-studies"><td>… of them read after a retry</td><td class="num">1<' in reasons
    assert "2 studies failed at least once: 1 read after a retry, 1 still failed." in page

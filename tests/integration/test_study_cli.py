"""`radtrace status` names failed and skipped studies by Study UID and accession with their whole reason;
`radtrace study show|retry` look one up and queue it again, audited."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.config import Settings, load_settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision, RevisionState
from radtrace.testing.studies import StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from tests_support import radtrace
from worker_support import audit_events, revision_row, spool_study

pytestmark = pytest.mark.integration

LONG_REASON = (
    "model error after 3 attempts: CUDA out of memory while generating; tried to allocate 2.00 GiB "
    "(GPU 0 has 1.10 GiB free) — the study itself is fine, retry it once the GPU is free again"
)


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data", model={"path": tiny_model_dir, "device": "cpu", "max_new_tokens": 32}
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.data_dir.mkdir(parents=True)
    store = Store.from_url(settings.store_url)
    upgrade(store)
    yield store
    store.dispose()


def _end(store: Store, study_uid: str, state: RevisionState, reason: str) -> None:
    with store.session() as session:
        revision = session.scalar(sa.select(Revision).where(Revision.study.has(study_uid=study_uid)))
        assert revision is not None
        revision.state, revision.reason, revision.attempts = state, reason, 3


def _unboxed(text: str) -> str:
    """The table's text without borders and line breaks (a wrapped cell reads as one string again)."""
    return re.sub(r"\s+", " ", re.sub(r"[│┃┏┓┗┛━─┡┩╇┳┻╋┼┬┴├┤└┘┌┐║═╔╗╚╝]", " ", text))


def test_failed_and_skipped_studies_are_named_with_their_whole_reason_and_a_failed_one_can_be_retried(
    settings: Settings, store: Store
) -> None:
    failed = make_study(StudySpec(seed=21, accession="ACC-FAILED-1"))
    skipped = make_study(StudySpec(seed=22, accession="ACC-SKIPPED-2"))
    failed_uid, _ = spool_study(settings, store, failed)
    skipped_uid, _ = spool_study(settings, store, skipped)
    _end(store, failed_uid, RevisionState.FAILED, LONG_REASON)
    _end(store, skipped_uid, RevisionState.SKIPPED, "no frontal chest image: only a lateral view was received")
    env = {"RADTRACE_DATA_DIR": str(settings.data_dir), "COLUMNS": "120"}

    status = radtrace("status", "--no-broker", env=env)
    assert status.returncode == 0, status.stderr
    shown = _unboxed(status.stdout)
    for uid in (failed_uid, skipped_uid):
        assert uid in status.stdout.splitlines()  # whole, on a line of its own: ready to copy
    assert "ACC-FAILED-1" in shown
    assert "ACC-SKIPPED-2" in shown
    assert LONG_REASON.replace(" ", "") in shown.replace(" ", "")  # whole, only wrapped
    assert "only a lateral view was received" in shown

    detail = radtrace("study", "show", failed_uid, "--json", env=env)
    assert detail.returncode == 0, detail.stderr
    (shown_revision,) = json.loads(detail.stdout)["revisions"]
    assert (shown_revision["state"], shown_revision["reason"]) == ("failed", LONG_REASON)

    retried = radtrace("study", "retry", failed_uid, env=env)
    assert retried.returncode == 0, retried.stderr
    assert "was failed; queued again" in retried.stdout
    rev = revision_row(store, failed_uid)
    assert (rev.state, rev.attempts, rev.reason) == (RevisionState.QUEUED, 0, None)
    (event,) = [payload for kind, _, payload in audit_events(store) if kind == "study_retried"]
    assert (event["previous_state"], event["previous_reason"], event["previous_attempts"]) == ("failed", LONG_REASON, 3)

    again = radtrace("study", "retry", failed_uid, env=env)  # it is queued now: nothing to retry
    assert again.returncode == 1
    assert "no failed or skipped revision" in again.stderr
    assert radtrace("study", "show", "1.2.3.999", env=env).returncode == 1

    # the new attempt is an ordinary one: a worker reads and reports it
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    assert StudyPipeline(settings, store, reader, worker="w1").process(failed_uid, 1).result is Result.REPORTED

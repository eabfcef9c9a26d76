"""The worker's log lines name a study as the listener's do: its key and its revision's number, and a skip's reason.

Found running ``radtrace serve`` on the real films: the listener logged ``study 59e2f9b4e72353fa revision 1 queued``
and the worker, for the same study, ``revision 1 skipped (attempt 1)``: the ``1`` was the revision's row ID (other
studies' lines read ``revision 17 reported``), so no line told the operator which study was skipped, or why, or
matched the listener's line. Now: ``study 59e2f9b4e72353fa revision 1 skipped (attempt 1): no frontal chest image``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import load_settings
from radtrace.logging import study_key
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.worker.attempts import RevisionAttempts
from radtrace.worker.claims import Claim
from worker_support import Unobserved

pytestmark = pytest.mark.integration

UIDS = ("1.2.826.0.1.3680043.8.498.4711", "1.2.826.0.1.3680043.8.498.4712")


def _attempts(tmp_path: Path, store: Store) -> RevisionAttempts:
    url = str(store.engine.url.render_as_string(hide_password=False))
    settings = load_settings(data_dir=tmp_path / "radtrace", store={"url": url})
    return RevisionAttempts(settings, store, AuditRecorder(store), actor=Actor(), worker="gpu-1:101", clock=utc_now,
                            observer=Unobserved())  # fmt: skip


def test_worker_lines_name_the_study_key_and_revision_number(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with store.session() as session:  # two studies: the second's revision 1 is row 2
        for uid in UIDS:
            study = Study(study_uid=uid, study_key=study_key(uid), accession=None)
            session.add_all([study, Revision(study=study, number=1, state=RevisionState.QUEUED)])
    attempts = _attempts(tmp_path, store)
    with caplog.at_level(logging.INFO, logger="radtrace.worker.attempts"):
        first = attempts.claim(UIDS[0], 1)
        assert isinstance(first, Claim)
        attempts.finish(first, RevisionState.REPORTED)
        second = attempts.claim(UIDS[1], 1)
        assert isinstance(second, Claim)
        assert second.revision_id != 1  # what the old line printed as "revision"
        attempts.finish(second, RevisionState.SKIPPED, reason="no frontal chest image")
    lines = [r.getMessage() for r in caplog.records if r.name == "radtrace.worker.attempts"]
    assert lines == [
        f"study {study_key(UIDS[0])} revision 1 reported (attempt 1)",
        f"study {study_key(UIDS[1])} revision 1 skipped (attempt 1): no frontal chest image",
    ]

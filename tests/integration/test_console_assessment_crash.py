"""An assessment SR and the decision naming it are one step, even across a crash between them.

The console wrote the assessment SR under ``assessments/<study>/<revision>/`` and then recorded the decision
with its outbox rows: when the recording failed (a fault, a conflict, the process killed in between), the kept SR
stayed, named by no decision and queued for no PACS, and was served as if it had been decided. Now it is written
under ``assessments/.pending/``, kept only once the decision is committed, removed when the decision is not
recorded, and after a crash settled when the console starts (or when its link is followed).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, console_settings, csrf_of, reported_study, sign_in, study_path
from radtrace.audit.events import EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage

pytestmark = pytest.mark.integration


class PowerCutError(Exception):
    """The fault injected between writing the assessment SR and committing its decision."""


def _kept(settings: Settings) -> list[str]:
    """Every assessment SR file served as kept (outside the pending folder)."""
    root = settings.data_dir / "assessments"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.dcm") if ".pending" not in p.parts)


def _pending(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "assessments" / ".pending").glob("*.dcm"))


def _draft_events(store: Store) -> list[dict[str, Any]]:
    with store.session() as session:
        rows = session.scalars(sa.select(AuditEventRow.payload).where(
            AuditEventRow.event_type == EventType.DRAFT_ASSESSED.value).order_by(AuditEventRow.seq))  # fmt: skip
        return [json.loads(row) for row in rows]


def _decide(client: Any, study_uid: str) -> Any:
    page = client.get(study_path(client.app.state.console.store, study_uid)).text
    data = {"csrf_token": csrf_of(page), "decision": "reject", "reason": "RT-R2", "seen": ""}
    return client.post(
        f"{study_path(client.app.state.console.store, study_uid)}/draft", data=data, follow_redirects=False
    )


@pytest.fixture
def setup(sqlite_store: Store, tmp_path: Path) -> tuple[Store, Settings, str]:
    settings = console_settings(tmp_path, sqlite_store)
    study_uid = reported_study(settings, sqlite_store, StudyReader(settings.model, data_dir=settings.data_dir), seed=71)
    add_user(sqlite_store, "dr.crash", "radiologist")
    return sqlite_store, settings, study_uid


def _fail_the_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision's transaction fails after the assessment SR is written (as a crash or a full disk would)."""
    record = AuditRecorder.record

    def failing(self: AuditRecorder, event: Any, **options: Any) -> Any:
        if event.type is EventType.DRAFT_ASSESSED:
            raise PowerCutError("the machine lost power")
        return record(self, event, **options)

    monkeypatch.setattr(AuditRecorder, "record", failing)


def test_a_fault_before_the_decision_is_committed_leaves_no_kept_assessment_sr(
    setup: tuple[Store, Settings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, settings, study_uid = setup
    with console_client(store, settings) as client:
        sign_in(client, "dr.crash")
        _fail_the_decision(monkeypatch)
        with pytest.raises(PowerCutError):
            _decide(client, study_uid)
    assert _draft_events(store) == []
    assert _kept(settings) == []  # before: <study>/1/<uid>.dcm, an assessment nobody recorded
    assert _pending(settings) == []
    with store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage).where(
            OutboxMessage.kind.like("assessment%"))) == 0  # fmt: skip


def test_after_a_crash_the_console_removes_an_unrecorded_sr_and_keeps_a_recorded_one(
    setup: tuple[Store, Settings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from radtrace.console.assessment_files import PendingAssessment

    store, settings, study_uid = setup
    with console_client(store, settings) as client:
        sign_in(client, "dr.crash")
        # 1. killed before the commit: nothing ran after the fault (the pending file is not removed)
        with monkeypatch.context() as patch:
            _fail_the_decision(patch)
            patch.setattr(PendingAssessment, "discard", lambda self: None)
            with pytest.raises(PowerCutError):
                _decide(client, study_uid)
        [unrecorded] = _pending(settings)
        # 2. killed after the commit, before the SR was kept
        with monkeypatch.context() as patch:
            patch.setattr(PendingAssessment, "promote", lambda self: self.pending)
            assert _decide(client, study_uid).status_code == 303
    [decision] = _draft_events(store)
    recorded = decision["assessment_sr"]
    assert {p.name for p in _pending(settings)} == {unrecorded.name, f"{recorded['sop_instance_uid']}.dcm"}
    assert _kept(settings) == []
    hour_ago = time.time() - 3600  # the crash was an hour ago; a decision in flight elsewhere is minutes old
    for path in _pending(settings):
        os.utime(path, (hour_ago, hour_ago))
    with console_client(store, settings) as client:  # the console starts again
        sign_in(client, "dr.crash")
        assert _pending(settings) == []
        assert _kept(settings) == [recorded["path"]]
        link = re.search(r'id="assessment-sr" href="([^"]+)"', client.get(study_path(store, study_uid)).text)
        assert link is not None
        download = client.get(link.group(1))
    assert download.status_code == 200
    import hashlib

    assert hashlib.sha256(download.content).hexdigest() == recorded["sha256"]


def test_the_link_of_a_decision_committed_just_before_a_crash_serves_its_sr(
    setup: tuple[Store, Settings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from radtrace.console.assessment_files import PendingAssessment

    store, settings, study_uid = setup
    with console_client(store, settings) as client:
        sign_in(client, "dr.crash")
        with monkeypatch.context() as patch:
            patch.setattr(PendingAssessment, "promote", lambda self: self.pending)
            assert _decide(client, study_uid).status_code == 303
        link = re.search(r'id="assessment-sr" href="([^"]+)"', client.get(study_path(store, study_uid)).text)
        assert link is not None
        assert client.get(link.group(1)).status_code == 200  # kept when asked for, not only at the next start
    assert _pending(settings) == []
    assert len(_kept(settings)) == 1

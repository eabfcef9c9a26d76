"""A site whose only destination is the file drop (``dispatch.file_drop_dir``) gets the radiologists' assessments
there as it gets the drafts: ``<assessment SR UID>.assessment.dcm`` (and ``.assessment.hl7`` when an ORU is built),
written atomically by the production sender, once per decision, the same name again on a retry; the revision's
state stays its draft's, and an assessment in the drop is never a later draft's predecessor."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, csrf_of, reported_study, sign_in
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import load_settings
from radtrace.model.reader import StudyReader
from radtrace.reporting.dispatch.outbox import KIND_ASSESSMENT_FILE, KIND_FILE, Outbox
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState
from radtrace.worker.pipeline import StudyPipeline, payload_dir

pytestmark = pytest.mark.integration


def _rows(store: Store, kind: str) -> list[OutboxMessage]:
    with store.session() as session:
        return list(session.scalars(sa.select(OutboxMessage).where(OutboxMessage.kind == kind).order_by("id")))


def _decisions(store: Store) -> list[dict[str, Any]]:
    with store.session() as session:
        payloads = session.scalars(
            sa.select(AuditEventRow.payload)
            .where(AuditEventRow.event_type == "draft_assessed")
            .order_by(AuditEventRow.seq)
        )
        return [json.loads(p) for p in payloads]


def test_a_file_drop_only_site_gets_each_assessment_sr_in_the_drop_once(store: Store, tmp_path: Path) -> None:
    drop = tmp_path / "drop"  # not there yet: the first attempt is retried, as for a draft (not mounted)
    settings = load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "profile": "deepmedix-r1", "device": "cpu"},
        console={"sync_interval_s": 0},
        dispatch={"file_drop_dir": str(drop)},
    )
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    study_uid = reported_study(settings, store, reader, seed=81)
    add_user(store, "dr.drop", "radiologist")
    with console_client(store, settings) as client:
        client.app.state.console.ring_dispatch = lambda outbox_id: True
        sign_in(client, "dr.drop")
        base = f"/console/studies/{study_uid}/1"
        page = client.get(base).text
        token = csrf_of(page)
        label = re.findall(r'name="label" value="([^"]+)"', page)[0]
        client.post(f"{base}/findings", data={"csrf_token": token, "label": label, "decision": "accept"})
        for verdict, reason in [("accept", "RT-A2"), ("reject", "RT-R2")]:  # a changed mind: a second SR
            answer = client.post(
                f"{base}/draft",
                follow_redirects=False,
                data={"csrf_token": token, "decision": verdict, "reason": reason},
            )
            assert answer.status_code == 303
    decisions = _decisions(store)
    assessments = _rows(store, KIND_ASSESSMENT_FILE)
    uids = [d["assessment_sr"]["sop_instance_uid"] for d in decisions]
    assert [row.document_uid for row in assessments] == uids
    assert [row.destination for row in assessments] == [f"{drop / uid}.assessment.dcm" for uid in uids]
    for decision, row in zip(decisions, assessments, strict=True):  # the decision's event names its row
        assert decision["outbox"] == [
            {"id": row.id, "kind": KIND_ASSESSMENT_FILE, "destination": row.destination, "sha256": row.payload_sha256}
        ]

    pipeline = StudyPipeline(settings, store, reader, worker="dispatcher")  # the production senders
    first = pipeline.dispatch(assessments[0].id)
    assert first.delivery.state is OutboxState.PENDING  # the folder is missing: retried, never created
    assert not drop.exists()
    drop.mkdir()
    with store.session() as session:  # its backoff over
        session.get_one(OutboxMessage, assessments[0].id).next_attempt_at = utc_now()
    for row in [*_rows(store, KIND_FILE), *assessments]:
        assert pipeline.dispatch(row.id).delivery.state is OutboxState.DELIVERED
    assert pipeline.dispatch(assessments[0].id).delivery.state is OutboxState.DELIVERED  # a late doorbell: no-op
    with store.session() as session:
        revision = session.scalars(sa.select(Revision)).one()
        assert revision.state is RevisionState.DISPATCHED  # settled by the draft's files
    names = sorted(p.name for p in drop.iterdir())
    drafts = sorted(Path(row.destination).name for row in _rows(store, KIND_FILE))
    assert names == sorted([*drafts, *(f"{uid}.assessment.dcm" for uid in uids)])  # no temporary file left
    for decision in decisions:
        kept = settings.data_dir / "assessments" / decision["assessment_sr"]["path"]
        dropped = drop / f"{decision['assessment_sr']['sop_instance_uid']}.assessment.dcm"
        assert dropped.read_bytes() == kept.read_bytes()

    # Queued again (a retried decision): the same rows, nothing new; sent again, the same name is replaced whole.
    outbox = Outbox(store, AuditRecorder(store), settings.dispatch, payload_dir(settings))
    row = assessments[1]
    payload = (payload_dir(settings) / row.payload_path).read_bytes()
    staged = outbox.staged()
    with store.session(immediate=True) as session:
        again = outbox.add_assessments(session, row.revision_id, row.document_uid, payload, b"MSH|oru", staged=staged)
    staged.keep()
    assert [r["id"] for r in again if r["destination"] == row.destination] == [row.id]
    [oru] = [r for r in again if r["id"] != row.id]  # given an ORU, the drop gets it beside the SR
    assert oru["destination"] == f"{drop / row.document_uid}.assessment.hl7"
    assert pipeline.dispatch(int(str(oru["id"]))).delivery.state is OutboxState.DELIVERED
    assert (drop / f"{row.document_uid}.assessment.hl7").read_bytes() == b"MSH|oru"
    assert len(_rows(store, KIND_ASSESSMENT_FILE)) == 3

    # A later revision's predecessors are the drafts, never an assessment the drop holds.
    with store.session() as session:
        later = Revision(study_id=revision.study_id, number=2, state=RevisionState.QUEUED)
        session.add(later)
        session.flush()
        later_id = later.id
    assert not {str(ds.SOPInstanceUID) for ds in outbox.earlier_srs(later_id)} & set(uids)

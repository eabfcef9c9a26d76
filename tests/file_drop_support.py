"""Drafts delivered into the file drop, for the tests of their withdrawal there: a reported revision whose drafts the
outbox wrote into ``<tmp_path>/drop`` (tests/integration/test_draft_withdrawal_file_drop.py,
test_withdrawal_not_built_retry.py)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa
from pydicom.dataset import Dataset

from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings, ReportingSettings
from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles, planned_deliveries
from radtrace.reporting.hl7 import build_oru
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from reporting_support import sr_cases


class DroppedDrafts(NamedTuple):
    outbox: Outbox
    drop: Path
    revision_id: int
    outbox_ids: list[int]


def dropped_drafts(
    store: Store, tmp_path: Path, reports: ReportFiles, source: Dataset, *, study_key: str, accession: str
) -> DroppedDrafts:
    """``reports`` of revision 1 (reported) of ``source``'s study, enqueued for the file drop ``tmp_path/drop`` alone
    (the payloads under ``tmp_path/payloads``) and delivered there: the outbox, the drop folder, the revision's id and
    its outbox rows' ids."""
    drop = tmp_path / "drop"
    drop.mkdir()
    outbox = Outbox(store, AuditRecorder(store), DispatchSettings(file_drop_dir=drop), tmp_path / "payloads")
    with store.session() as session:
        study = Study(study_uid=str(source.StudyInstanceUID), study_key=study_key, accession=accession)
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        revision_id = revision.id
    planned = planned_deliveries(outbox.settings, reports)
    ids = outbox.enqueue(revision_id, planned, sr_sop_instance_uid=reports.sr_sop_instance_uid)
    assert {d.state for d in outbox.deliver_due()} == {OutboxState.DELIVERED}
    return DroppedDrafts(outbox, drop, revision_id, ids)


def oru_withdrawal_unbuildable(
    store: Store, tmp_path: Path, *, study_key: str, accession: str
) -> tuple[str, DroppedDrafts]:
    """The typical real-film reporting case's SR and ORU delivered into the file drop (:func:`dropped_drafts`), then
    the revision marked reassigned (its drafts to be withdrawn) and the ORU's payload file deleted (a disk replaced, a
    bad restore): the ORU's withdrawal cannot be built. The SR's SOP Instance UID and the dropped drafts."""
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    uid = str(sr.SOPInstanceUID)
    oru = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=uid)
    reports = ReportFiles(uid, sr_bytes(sr), oru.encode())
    dropped = dropped_drafts(store, tmp_path, reports, sources[0], study_key=study_key, accession=accession)
    with store.session() as session:
        paths = session.execute(
            sa.select(OutboxMessage.destination, OutboxMessage.payload_path)
            .where(OutboxMessage.id.in_(dropped.outbox_ids))
        ).all()  # fmt: skip
        session.execute(sa.update(Revision).where(Revision.id == dropped.revision_id).values(reassigned_at=utc_now()))
    [hl7_payload] = [path for destination, path in paths if destination.endswith(".hl7")]
    (tmp_path / "payloads" / hl7_payload).unlink()
    return uid, dropped

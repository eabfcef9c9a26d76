"""Record a received instance: its spool file, its rows and its audit event in one transaction.

The order is what makes "success means safe" true (DESIGN.md principle 2): the file is staged and
fsynced, the transaction opens, the file is renamed into place, the rows and the audit event are
written and committed; only then does the handler answer 0x0000. A crash before the commit leaves
at worst a spool file without a row, which nothing treats as received, and the sender, having had
no success, sends it again.

Same SOP Instance UID again: identical bytes are a duplicate (recorded, nothing rewritten); other
bytes are kept as the next version and audited. An instance for a study whose revision was already
queued opens the study's next revision.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.dicom_listener.headers import ReceivedHeader
from radtrace.dicom_listener.spool import Spool, StagedFile
from radtrace.logging import study_key
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Instance, Revision, RevisionState, Study

__all__ = ["IngestOutcome", "IngestResult", "lock_study", "record_instance"]


class IngestOutcome(enum.StrEnum):
    """What receiving an instance amounted to."""

    RECEIVED = "received"
    DUPLICATE = "duplicate"
    NEW_VERSION = "new_version"


@dataclass(frozen=True)
class IngestResult:
    """The outcome, and where the instance is (for a duplicate: the copy already held)."""

    outcome: IngestOutcome
    study_id: int
    revision_number: int
    version: int
    path: str


def lock_study(session: Session, study_uid: str) -> None:
    """Serialise writers of one study: a transaction-scoped advisory lock on PostgreSQL.

    On SQLite the session's ``BEGIN IMMEDIATE`` already holds the database write lock.
    """
    if is_postgresql(session.get_bind()):
        key = int.from_bytes(hashlib.sha256(b"radtrace.study:" + study_uid.encode()).digest()[:8], "big") >> 1
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _study(session: Session, header: ReceivedHeader) -> Study:
    study = session.scalars(sa.select(Study).where(Study.study_uid == header.study_uid)).one_or_none()
    if study is None:
        study = Study(
            study_uid=header.study_uid,
            study_key=study_key(header.study_uid),
            accession=header.accession,
            study_description=header.study_description,
        )
        session.add(study)
        session.flush()
    else:
        study.accession = study.accession or header.accession
        study.study_description = study.study_description or header.study_description
    return study


def _open_revision(session: Session, study: Study) -> Revision:
    latest = session.scalars(
        sa.select(Revision).where(Revision.study_id == study.id).order_by(Revision.number.desc()).limit(1)
    ).one_or_none()
    if latest is not None and latest.state is RevisionState.RECEIVING:
        return latest
    revision = Revision(study_id=study.id, number=(latest.number + 1) if latest else 1, state=RevisionState.RECEIVING)
    session.add(revision)
    session.flush()
    return revision


def record_instance(
    store: Store,
    recorder: AuditRecorder,
    spool: Spool,
    staged: StagedFile,
    header: ReceivedHeader,
    actor: Actor,
) -> IngestResult:
    """Move ``staged`` into the spool and commit its rows and audit event; see the module docstring."""
    committed: Path | None = None
    try:
        with store.session("recording a received instance", immediate=True) as session:
            lock_study(session, header.study_uid)
            study = _study(session, header)
            earlier = session.scalars(
                sa.select(Instance)
                .where(Instance.sop_instance_uid == header.sop_instance_uid)
                .order_by(Instance.version.desc())
            ).all()
            same = next((i for i in earlier if i.sha256 == staged.sha256), None)
            payload: dict[str, Any] = {
                "sop_instance_uid": header.sop_instance_uid,
                "sop_class_uid": header.sop_class_uid,
                "transfer_syntax_uid": header.transfer_syntax_uid,
                "sha256": staged.sha256,
                "size_bytes": staged.size,
            }
            if same is not None:
                spool.discard(staged)
                revision_number = session.get_one(Revision, same.revision_id).number
                recorder.record(
                    AuditEvent(
                        EventType.INSTANCE_DUPLICATE,
                        actor,
                        study_uid=header.study_uid,
                        accession=header.accession,
                        payload=payload | {"version": same.version, "revision": revision_number},
                    ),
                    session=session,
                )
                return IngestResult(IngestOutcome.DUPLICATE, study.id, revision_number, same.version, same.path)
            revision = _open_revision(session, study)
            version = (earlier[0].version + 1) if earlier else 1
            relative = spool.final_path(header.study_uid, header.sop_instance_uid, version)
            committed = spool.commit(staged, relative)
            now = utc_now()
            session.add(
                Instance(
                    study_id=study.id,
                    revision_id=revision.id,
                    sop_instance_uid=header.sop_instance_uid,
                    version=version,
                    sop_class_uid=header.sop_class_uid,
                    series_uid=header.series_uid,
                    transfer_syntax_uid=header.transfer_syntax_uid,
                    modality=header.modality,
                    body_part=header.body_part,
                    requested_priority=header.requested_priority,
                    path=relative.as_posix(),
                    size_bytes=staged.size,
                    sha256=staged.sha256,
                    calling_ae=actor.ae_title,
                    received_at=now,
                )
            )
            study.last_instance_at = now
            outcome = IngestOutcome.NEW_VERSION if earlier else IngestOutcome.RECEIVED
            event_type = EventType.INSTANCE_NEW_VERSION if earlier else EventType.INSTANCE_RECEIVED
            extra: dict[str, Any] = {"version": version, "revision": revision.number}
            if earlier:
                extra["replaces_sha256"] = earlier[0].sha256
            recorder.record(
                AuditEvent(
                    event_type, actor, study_uid=header.study_uid, accession=header.accession, payload=payload | extra
                ),
                session=session,
            )
            result = IngestResult(outcome, study.id, revision.number, version, relative.as_posix())
    except BaseException:
        # Not committed: a renamed file must not stay behind as if it had been received.
        if committed is not None:
            with contextlib.suppress(FileNotFoundError):
                committed.unlink()
        raise
    return result

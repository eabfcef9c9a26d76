"""An IHE IOCM Rejection Note from the PACS naming an image radtrace read: the drafts read from it are flagged.

A PACS that rejects an image (IHE Imaging Object Change Management: wrong patient, patient safety, a wrong worklist
entry, retention expired) sends a Key Object Selection Document (SOP Class 1.2.840.10008.5.1.4.1.1.88.59) whose
Document Title (Concept Name Code Sequence) is one of the DCM rejection codes below, and whose Current Requested
Procedure Evidence Sequence names the rejected instances (Referenced Series Sequence > Referenced SOP Sequence). The
note is stored and answered as any instance (0x0000); here, in the same transaction, each revision that read a
referenced instance radtrace holds (the revision holding it and every later one of its study that the worker has
claimed or finished) gets ``rejected_at`` and the note's title code (``rejection_code``: a withdrawal of its draft
mirrors it), the instance's versions in that study get ``instances.rejected_at`` and ``rejection_code`` (no later
reading reads them: :mod:`radtrace.worker.read_instances`), and an ``instance_rejection_noted`` event is written on
each such study naming the note, its title and the instances. The copy rejected is the one in the study the note's
evidence files it under: an image the PACS moved to another study and then rejected in the old one leaves the new
study's copy read and unflagged. Only when radtrace holds no study of that UID is the newest copy taken.
``radtrace status``, ``radtrace study show`` and the review console warn as for an image re-sent under another
patient (:mod:`.reassigned`). A KOS with another title (a
radiologist's key images) changes nothing.

Only images count: a referenced instance held as a document (modality SR, KO or PR: no revision reads one) flags
nothing. A PACS that forwards whole studies back sends radtrace its own documents: its draft SRs (kept with the
study's latest revision: :mod:`.ingest`) and the rejection note radtrace sent to withdraw a draft
(:mod:`radtrace.reporting.dispatch.withdrawals`), which names those SRs. Read as the PACS's, that note would flag the
revision holding the echoed SRs (a later reading of the study, about other images) and withdraw its draft too. It is
kept as any echoed document (audited ``instance_received``, ``not_read``), and flags nothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, cast

import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.dicom_deflated import read_bounded
from radtrace.dicom_listener.headers import DEFAULT_MAX_INFLATED_BYTES, ReceivedHeader
from radtrace.dicom_listener.reassigned import UNCHECKED, have_read
from radtrace.errors import DicomInputError
from radtrace.logging import study_key
from radtrace.store.models import Instance, Revision, Study

__all__ = ["KOS_SOP_CLASS", "REJECTION_TITLES", "Rejection", "note_rejection", "rejection_of"]

log = logging.getLogger(__name__)

KOS_SOP_CLASS: Final = "1.2.840.10008.5.1.4.1.1.88.59"
#: IOCM rejection note titles (DCM, CID 7011): code -> meaning.
REJECTION_TITLES: Final[Mapping[str, str]] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
#: A rejection note larger than this is not read (a KOS is a few KiB; thousands of references stay far under).
MAX_NOTE_BYTES: Final = 16 << 20
#: Values longer than this in the note are dropped when it is read (none of those read here is long).
_DEFER_BYTES: Final = 1 << 16

_REVISIONS: Final = cast(sa.Table, Revision.__table__)
_STUDIES: Final = cast(sa.Table, Study.__table__)
_INSTANCES: Final = cast(sa.Table, Instance.__table__)
#: Modalities of documents, never images a revision reads: a rejection note naming one flags nothing.
DOCUMENT_MODALITIES: Final = ("SR", "KO", "PR")


@dataclass(frozen=True)
class Rejection:
    """A rejection note's title code and the SOP Instance UIDs it rejects, each with the Study Instance UID its
    evidence files it under (``studies``, in the same order; "" where the note gives none)."""

    code: str
    sop_instance_uids: tuple[str, ...]
    studies: tuple[str, ...] = ()

    @property
    def meaning(self) -> str:
        return REJECTION_TITLES[self.code]

    def references(self) -> list[tuple[str, str]]:
        """``(Study Instance UID or "", SOP Instance UID)`` of each rejected instance."""
        studies = self.studies or ("",) * len(self.sop_instance_uids)
        return list(zip(studies, self.sop_instance_uids, strict=True))


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    value = ds.get(keyword)
    return [item for item in value if isinstance(item, Dataset)] if value is not None else []


def rejection_of(path: Path, size: int) -> Rejection | None:
    """The rejection a received KOS file holds: ``None`` for a KOS with another title, or one that cannot be read
    (too large, not DICOM: it is stored as received all the same)."""
    if size > MAX_NOTE_BYTES:
        log.warning("a key object selection of %d bytes is not read for a rejection note", size)
        return None
    try:
        with path.open("rb") as handle:
            ds = read_bounded(
                handle, keep_bulk=False, defer_bytes=_DEFER_BYTES, max_inflated_bytes=DEFAULT_MAX_INFLATED_BYTES
            )
        titles = _items(ds, "ConceptNameCodeSequence")
        code = str(titles[0].get("CodeValue", "")).strip() if titles else ""
        scheme = str(titles[0].get("CodingSchemeDesignator", "")).strip() if titles else ""
        if scheme != "DCM" or code not in REJECTION_TITLES:
            return None
        uids: list[str] = []
        studies: list[str] = []
        for study in _items(ds, "CurrentRequestedProcedureEvidenceSequence"):
            study_uid = str(study.get("StudyInstanceUID", "")).strip()
            for series in _items(study, "ReferencedSeriesSequence"):
                for sop in _items(series, "ReferencedSOPSequence"):
                    uid = str(sop.get("ReferencedSOPInstanceUID", "")).strip()
                    if uid and uid not in uids:
                        uids.append(uid)
                        studies.append(study_uid)
    except (OSError, InvalidDicomError, ValueError, DicomInputError, AttributeError, TypeError) as exc:
        log.warning("a key object selection could not be read for a rejection note: %s", type(exc).__name__)
        return None
    return Rejection(code, tuple(uids), tuple(studies))


def _held_in(sop_instance_uid: str) -> sa.Select[tuple[int, int]]:
    """The study and holding revision number of the newest version of an image held under ``sop_instance_uid`` (an
    image: radtrace's own SR echoed back is no reading's); add a study condition to look in one study."""
    return (
        sa.select(_INSTANCES.c.study_id, _REVISIONS.c.number)
        .join(_REVISIONS, _REVISIONS.c.id == _INSTANCES.c.revision_id)
        .where(
            _INSTANCES.c.sop_instance_uid == sop_instance_uid,
            sa.or_(_INSTANCES.c.modality.is_(None), _INSTANCES.c.modality.not_in(DOCUMENT_MODALITIES)),
        )
        .order_by(_INSTANCES.c.version.desc())
        .limit(1)
    )


def _known_study(connection: sa.Connection, study_uid: str) -> bool:
    return (
        bool(study_uid)
        and connection.execute(sa.select(_STUDIES.c.id).where(_STUDIES.c.study_uid == study_uid)).first() is not None
    )


def note_rejection(
    session: Session, recorder: AuditRecorder, actor: Actor, header: ReceivedHeader, rejection: Rejection, now: datetime
) -> list[str]:
    """Flag the revisions that read an instance the note rejects and audit it on each of their studies; returns the
    Study UIDs flagged (none when the note names no instance radtrace holds)."""
    connection = session.connection()
    held: dict[int, list[tuple[str, int]]] = {}  # study id -> [(SOP Instance UID, holding revision number)]
    for study_uid, uid in rejection.references():
        row = connection.execute(
            _held_in(uid).where(_INSTANCES.c.study_id == _STUDIES.c.id, _STUDIES.c.study_uid == study_uid)
        ).first()
        if row is None and not _known_study(connection, study_uid):
            row = connection.execute(_held_in(uid)).first()  # the evidence names no study held here: its newest copy
        if row is not None:
            held.setdefault(int(row.study_id), []).append((uid, int(row.number)))
    flagged: list[str] = []
    for study_id, instances in held.items():
        first = min(number for _, number in instances)
        readers = (_REVISIONS.c.study_id == study_id) & (_REVISIONS.c.number >= first) & have_read()
        marked = [int(n) for n in connection.execute(sa.select(_REVISIONS.c.number).where(readers)).scalars()]
        connection.execute(
            sa.update(_REVISIONS)
            .where(readers, _REVISIONS.c.rejected_at.is_(None))
            .values(rejected_at=now, rejection_code=rejection.code)  # its title: the withdrawal mirrors it
        )
        connection.execute(sa.update(_REVISIONS).where(readers).values(**UNCHECKED))  # a check did not cover this
        connection.execute(  # no later reading reads them (radtrace.worker.read_instances)
            sa.update(_INSTANCES)
            .where(
                _INSTANCES.c.study_id == study_id,  # its copy in another study (moved there) is that study's own
                _INSTANCES.c.sop_instance_uid.in_([uid for uid, _ in instances]),
                _INSTANCES.c.rejected_at.is_(None),
            )
            .values(rejected_at=now, rejection_code=rejection.code)
        )
        study = connection.execute(
            sa.select(_STUDIES.c.study_uid, _STUDIES.c.accession).where(_STUDIES.c.id == study_id)
        ).one()
        recorder.record(
            AuditEvent(
                EventType.INSTANCE_REJECTION_NOTED,
                actor,
                outcome=Outcome.MINOR_FAILURE,
                study_uid=study.study_uid,
                accession=study.accession,
                payload={
                    "rejection_note_sop_instance_uid": header.sop_instance_uid,
                    "rejection_note_study_uid": header.study_uid,
                    "title": {"code": rejection.code, "scheme": "DCM", "meaning": rejection.meaning},
                    "sop_instance_uids": [uid for uid, _ in instances],
                    "revisions": sorted(marked),
                },
            ),
            session=session,
        )
        log.warning(
            "study %s: the PACS rejected %d image(s) it was read from (%s); revision(s) %s flagged: do not sign "
            "before checking",
            study_key(study.study_uid),
            len(instances),
            rejection.meaning,
            ", ".join(str(n) for n in sorted(marked)),
        )
        flagged.append(str(study.study_uid))
    return flagged

"""An image re-sent by the PACS under another patient or study: the old study's drafts are flagged.

A wrong-patient correction at the PACS (the image belonged to patient B, was filed under A) re-sends the same SOP
Instance UID under another Study Instance UID and Patient ID. The listener stores the corrected copy with its new
study and answers 0x0000 (the correction is legitimate); here, in the same transaction, the revisions of the OLD
study that read the image (the one holding it and every later one: a revision reads the study's instances up to it)
get ``reassigned_at`` (those the worker has claimed or finished: one still waiting is read without it, see
:mod:`radtrace.worker.read_instances`; so is each revision of that study opened later), and an
``instance_reassigned`` event is written on the old study naming the SOP Instance UID, the new Study UID and what
changed (``patient``, ``study``). ``radtrace status``, ``radtrace study show`` and the review console
(:mod:`radtrace.console.reassigned_flags`) say that the old study's draft was read from an image that now belongs
elsewhere. Nothing here logs an identifier: the WARNING line names the studies by key.

A PACS that undoes its correction (A -> B -> A) files the image back under A, often byte for byte as A first had it.
Such a copy is no duplicate of A's old version (:func:`duplicate_candidates`: a copy is a duplicate only of a version
in the study where the PACS filed the image last): it is A's next version, so B's revisions that read it are flagged
here (their drafts are withdrawn: :mod:`radtrace.reporting.dispatch.withdrawals`) and A's next revision reads it
again, from A's own images; A's earlier revision keeps its flag (its draft stays withdrawn, and a later SR does not
name it as a predecessor: :func:`radtrace.store.withdrawn.withdrawn_revisions`, the store-level query the worker
shares, re-exported here). So does a PACS that undoes a patient change within one study (A/P1 -> A/P9 -> A/P1, the
last copy byte for byte the first): a copy is a duplicate only of a version held under the study and Patient ID of the
newest (:func:`filed_now`), so the return is A's next version, the P9-era revision is flagged (its draft withdrawn)
and A's next revision reads the image again under P1.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recordable import column_text
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.dicom_listener.headers import ReceivedHeader
from radtrace.logging import study_key
from radtrace.store.models import Instance, Revision, RevisionState, Study

__all__ = [
    "REASSIGNED_FLAG",
    "UNCHECKED",
    "FlaggedRevision",
    "HeldCopy",
    "duplicate_candidates",
    "filed_now",
    "flagged_revisions",
    "have_read",
    "note_reassigned",
]

log = logging.getLogger(__name__)

#: The worklist flag of a revision an image of which was re-sent under another patient or study.
REASSIGNED_FLAG: Final = "image-reassigned"

_REVISIONS: Final = cast(sa.Table, Revision.__table__)
_INSTANCES: Final = cast(sa.Table, Instance.__table__)
_STUDIES: Final = cast(sa.Table, Study.__table__)
_EVENTS: Final = cast(sa.Table, AuditEventRow.__table__)
#: The events that record where a version of an instance was stored, with its Patient ID.
_PATIENT_ID_WIDTH: Final = cast(sa.String, _EVENTS.c.patient_id.type).length
_STORED: Final = (EventType.INSTANCE_RECEIVED.value, EventType.INSTANCE_NEW_VERSION.value)


@dataclass(frozen=True)
class HeldCopy:
    """The latest version held under a SOP Instance UID: its study, revision and version."""

    study_id: int
    revision_id: int
    version: int


class _HeldVersion(Protocol):
    @property
    def study_id(self) -> int: ...

    @property
    def version(self) -> int: ...


_Version = TypeVar("_Version", bound=_HeldVersion)


def duplicate_candidates(held: Sequence[_Version], patients: Mapping[int, str | None] | None = None) -> list[_Version]:
    """Of the versions held under a SOP Instance UID (newest first), those a re-sent copy may be a duplicate of: the
    ones in the study holding the newest version, where the PACS filed the image last. A copy identical to a version
    in another study (or the same content in another encoding) is the PACS filing the image back there, its
    correction undone (A -> B -> A): a new version of that study, which reads it again, not a duplicate of what it
    held before (the newest copy would stay in B: A could never read it again, and B's draft, read from A's image,
    would stand).

    ``patients``: the Patient ID each version was received with (by version; one missing is not known). Of the
    study's versions, then, only those under the newest one's Patient ID: a copy of a version held under another
    patient (A/P1 -> A/P9 -> A/P1) is the PACS undoing its patient change, a new version read again under P1."""
    if not held:
        return []
    here = [version for version in held if version.study_id == held[0].study_id]
    if patients is None or held[0].version not in patients:
        return here
    newest = patients[held[0].version] or None
    return [v for v in here if v.version not in patients or (patients[v.version] or None) == newest]


def filed_now(connection: sa.Connection, sop_instance_uid: str, held: Sequence[_Version]) -> list[_Version]:
    """:func:`duplicate_candidates` of ``held`` (the versions held under ``sop_instance_uid``, newest first), the
    Patient IDs read from the audit log (:func:`_held_patient_ids`) where the study holds more than one version."""
    here = duplicate_candidates(held)
    if len(here) < 2:  # the usual re-send: one version held, nothing to look up
        return here
    study_uid = connection.execute(
        sa.select(_STUDIES.c.study_uid).where(_STUDIES.c.id == here[0].study_id)
    ).scalar_one()
    wanted = frozenset(int(version.version) for version in here)
    return duplicate_candidates(here, _held_patient_ids(connection, study_uid, sop_instance_uid, wanted))


def _held_patient_ids(
    connection: sa.Connection, study_uid: str, sop_instance_uid: str, wanted: frozenset[int] | None = None
) -> dict[int, str | None]:
    """The Patient ID each version of the instance held in the study was received with (by version; the audit
    column's value, None where there was none), from its ``instance_received`` or ``instance_new_version`` event
    (the instance rows keep no patient data): the latest event of each version; ``wanted``: only these versions (the
    events are read, newest first, until each is found)."""
    rows = connection.execute(
        sa.select(_EVENTS.c.patient_id, _EVENTS.c.payload)
        .where(_EVENTS.c.study_uid == study_uid, _EVENTS.c.event_type.in_(_STORED))
        .order_by(_EVENTS.c.seq.desc())
    )
    found: dict[int, str | None] = {}
    for patient_id, payload in rows.all():  # all fetched: the loop may end early
        try:
            data = json.loads(payload)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("sop_instance_uid") == sop_instance_uid:
            version = data.get("version")
            if isinstance(version, int) and not isinstance(version, bool):
                found.setdefault(version, cast(str | None, patient_id))
                if wanted is not None and wanted <= found.keys():
                    break
    return found


def note_reassigned(
    session: Session,
    recorder: AuditRecorder,
    actor: Actor,
    header: ReceivedHeader,
    held: HeldCopy,
    new_study_id: int,
    new_revision: int,
    now: datetime,
) -> tuple[str, ...]:
    """Where a new version of a held instance changes its Study UID or Patient ID: mark the old study's revisions
    that read it and audit ``instance_reassigned`` on the old study. Returns what changed (empty: nothing)."""
    connection = session.connection()
    old = connection.execute(
        sa.select(_STUDIES.c.study_uid, _STUDIES.c.accession).where(_STUDIES.c.id == held.study_id)
    ).one()
    changed: list[str] = []
    patients = _held_patient_ids(connection, old.study_uid, header.sop_instance_uid)
    old_patient = patients.get(held.version)
    # compared as the audit column stores it (bounded, no NUL): an ID the log had to mark is not a change
    new_patient = column_text(header.patient_id, _PATIENT_ID_WIDTH) or None
    if held.version in patients and (old_patient or None) != new_patient:
        changed.append("patient")
    if held.study_id != new_study_id:
        changed.append("study")
    if not changed:
        return ()
    holding = connection.execute(sa.select(_REVISIONS.c.number).where(_REVISIONS.c.id == held.revision_id)).scalar_one()
    readers = (_REVISIONS.c.study_id == held.study_id) & (_REVISIONS.c.number >= holding) & have_read()
    if held.study_id == new_study_id:  # the revision the new version joins, and later ones, read the new version
        readers &= _REVISIONS.c.number < new_revision
    marked = [
        int(n)
        for n in connection.execute(sa.select(_REVISIONS.c.number).where(readers).order_by(_REVISIONS.c.number))
        .scalars()
        .all()
    ]
    connection.execute(
        sa.update(_REVISIONS).where(readers, _REVISIONS.c.reassigned_at.is_(None)).values(reassigned_at=now)
    )
    connection.execute(sa.update(_REVISIONS).where(readers).values(**UNCHECKED))  # a check did not cover this
    # the new study held the image before (or, within one study, under the new Patient ID): the PACS undid its
    # correction and filed the image back
    filed_back = (
        held.study_id == new_study_id
        and any((patient or None) == new_patient for version, patient in patients.items() if version < held.version)
    ) or (
        held.study_id != new_study_id
        and connection.execute(
            sa.select(_INSTANCES.c.id)
            .where(
                _INSTANCES.c.study_id == new_study_id,
                _INSTANCES.c.sop_instance_uid == header.sop_instance_uid,
                _INSTANCES.c.version <= held.version,  # not the new version, inserted already
            )
            .limit(1)
        ).first()
        is not None
    )
    payload: dict[str, Any] = {
        "sop_instance_uid": header.sop_instance_uid,
        "new_study_uid": header.study_uid,
        "changed": changed,
        "held_version": held.version,
        "new_version": held.version + 1,
        "revisions": marked,
    }
    if filed_back:
        payload["filed_back"] = {"revision": new_revision}  # the new study's revision that reads it again
    recorder.record(
        AuditEvent(
            EventType.INSTANCE_REASSIGNED,
            actor,
            outcome=Outcome.MINOR_FAILURE,
            study_uid=old.study_uid,
            accession=old.accession,
            patient_id=old_patient,
            payload=payload,
        ),
        session=session,
    )
    log.warning(
        "study %s: an image it was read from was re-sent by the PACS under another %s (now study %s); "
        "revision(s) %s flagged: do not sign before checking",
        study_key(old.study_uid),
        " and ".join(changed),
        study_key(header.study_uid),
        ", ".join(str(n) for n in marked) or "none",
    )
    if filed_back and held.study_id == new_study_id:
        log.warning(
            "study %s: an image the PACS had filed under another patient is filed back under the patient it had "
            "before; revision %d reads it again (a draft read from it before was withdrawn and stays so)",
            study_key(header.study_uid),
            new_revision,
        )
    elif filed_back:
        log.warning(
            "study %s: an image the PACS had moved to study %s is filed back here; revision %d reads it again (a draft "
            "read from it before was withdrawn and stays so)",
            study_key(header.study_uid),
            study_key(old.study_uid),
            new_revision,
        )
    return tuple(changed)


def have_read() -> sa.ColumnElement[bool]:
    """The revisions that may have read their instances: the worker claimed them, or is done with them. One still
    receiving or queued is read later, without an instance moved away or rejected by then
    (:mod:`radtrace.worker.read_instances`): it is not marked.

    On PostgreSQL (READ COMMITTED) this filter cannot pass over a revision that a worker claims meanwhile and then
    reads before the listener commits: the listener has taken the audit chain's lock (its instance event, recorded
    before the mark) and a claim records ``inference_started`` in its own transaction, so the claim commits only
    after the listener (and reads its new copy or rejection), or the listener marks after the claim committed
    (tests/integration/test_reassigned_mark_race.py). Locking the revisions here (``FOR UPDATE``) would add nothing
    but a deadlock: the listener would wait for the claim's row while the claim waits for the audit lock."""
    return _REVISIONS.c.state.not_in([RevisionState.RECEIVING, RevisionState.QUEUED])


#: A revision's check of its marks cleared: a new mark is one the radiologist has not checked.
UNCHECKED: Final = {"flags_checked_at": None, "flags_checked_by": None, "flags_checked_reason": None}


@dataclass(frozen=True)
class FlaggedRevision:
    """A revision an image of which was re-sent under another patient or study (``reassigned_at``), or rejected by
    the PACS (``rejected_at``): ``marked_at`` is when."""

    study_uid: str
    revision: int
    marked_at: datetime
    #: who checked its flags on the study page, and when (None: not checked; see radtrace.console.reassigned_flags)
    checked_by: str | None = None
    checked_at: datetime | None = None


def flagged_revisions(
    session: Session, study_uid: str | None = None, mark: str = "reassigned_at"
) -> list[FlaggedRevision]:
    """The revisions marked ``mark`` (``reassigned_at`` or ``rejected_at``; of one study, or all), by study then
    revision."""
    column = _REVISIONS.c[mark]
    query = (
        sa.select(
            _STUDIES.c.study_uid,
            _REVISIONS.c.number,
            column,
            _REVISIONS.c.flags_checked_by,
            _REVISIONS.c.flags_checked_at,
        )
        .join(_STUDIES, _STUDIES.c.id == _REVISIONS.c.study_id)
        .where(column.is_not(None))
        .order_by(_STUDIES.c.study_uid, _REVISIONS.c.number)
    )
    if study_uid is not None:
        query = query.where(_STUDIES.c.study_uid == study_uid)
    return [
        FlaggedRevision(str(uid), int(number), when, by, checked)
        for uid, number, when, by, checked in session.execute(query)
    ]

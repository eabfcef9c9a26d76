"""Record a received instance: its spool file, its rows and its audit event in one transaction.

The order is what makes "success means safe" true (DESIGN.md principle 2): the file is staged and
fsynced, the transaction opens, the file is renamed into place, the rows and the audit event are
written and committed; only then does the handler answer 0x0000. A crash before the commit leaves
at worst a spool file without a row, which nothing treats as received, and the sender, having had
no success, sends it again.

Same SOP Instance UID again: identical bytes (to any version held in the study, under the Patient ID, where the PACS
filed the image last) are a duplicate (recorded, nothing rewritten); a copy of a version in another study, or held
under another Patient ID, is the PACS filing the image back there, a new version (:func:`.reassigned.filed_now`).
Other bytes are compared by what they hold (:mod:`.resend`) with the versions held there, newest first, at most
:data:`~.compare_child.MAX_COMPARED_VERSIONS`:
the same attributes and pixels in another encoding, or a lossy copy of the held pixels, are a duplicate of the
version they match, audited with the reason ("same content, re-sent as JPEG-LS Lossless Image Compression") and the
version (an old copy of version 1 re-sent after a corrected version 2 is version 1's duplicate, not
a version 3); anything else is kept as the next version, its event naming the attributes that changed
from the latest. An instance for a study whose revision was already queued opens the study's next
revision, except one the model never reads (no CR/DX radiograph: an SR, a presentation state, radtrace's own draft
sent back by a PACS that forwards whole studies) after the latest revision was read, skipped or failed: it is kept
with that revision, its event saying why it is not read (``not_read``), and opens none, so a reported study does
not turn skipped. A new version under another Study UID or Patient ID (a wrong-patient correction at the PACS)
flags the old study's revisions that read it and is audited on the old study (:mod:`.reassigned`).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.dicom_charset import audit_record
from radtrace.dicom_listener.compare_child import MAX_COMPARED_VERSIONS, VersionsCompared, compare_versions_in_child
from radtrace.dicom_listener.filtering import FilterRule, InstanceFacts, never_read
from radtrace.dicom_listener.headers import ReceivedHeader
from radtrace.dicom_listener.reassigned import HeldCopy, filed_now, note_reassigned
from radtrace.dicom_listener.rejection_note import KOS_SOP_CLASS, Rejection, note_rejection, rejection_of
from radtrace.dicom_listener.resend import Comparison, Likeness
from radtrace.dicom_listener.spool import Spool, StagedFile
from radtrace.logging import escape, study_key
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Instance, Revision, RevisionState, Study

__all__ = ["IngestOutcome", "IngestResult", "lock_study", "record_instance"]

log = logging.getLogger(__name__)


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
    #: Other bytes under a SOP Instance UID held: the comparison that decided (with the version matched, else with
    #: the latest version held).
    comparison: Comparison | None = None
    #: Why the model never reads this instance, where it was kept with a revision already read (none opened).
    not_read: str | None = None


def lock_study(session: Session, study_uid: str) -> None:
    """Serialise writers of one study: a transaction-scoped advisory lock on PostgreSQL.

    On SQLite the session's ``BEGIN IMMEDIATE`` already holds the database write lock.
    """
    if is_postgresql(session.get_bind()):
        key = int.from_bytes(hashlib.sha256(b"radtrace.study:" + study_uid.encode()).digest()[:8], "big") >> 1
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


_STUDIES: Final = cast(sa.Table, Study.__table__)
_REVISIONS: Final = cast(sa.Table, Revision.__table__)
_INSTANCES: Final = cast(sa.Table, Instance.__table__)


def _study_id(connection: sa.Connection, header: ReceivedHeader, received_at: datetime | None) -> int:
    """The study's id, inserting the study on its first instance; fills accession/description if unset.

    ``received_at``: when a new instance arrived (``last_instance_at``); ``None`` for a duplicate.
    """
    table = _STUDIES
    row = connection.execute(
        sa.select(table.c.id, table.c.accession, table.c.study_description).where(table.c.study_uid == header.study_uid)
    ).first()
    if row is None:
        values = {
            "study_uid": header.study_uid,
            "study_key": study_key(header.study_uid),
            "accession": header.accession,
            "study_description": header.study_description,
            "last_instance_at": received_at,
        }
        return int(connection.execute(sa.insert(table).values(values).returning(table.c.id)).scalar_one())
    changes: dict[str, Any] = {}
    if received_at is not None:
        changes["last_instance_at"] = received_at
    if row.accession is None and header.accession:
        changes["accession"] = header.accession
    if row.study_description is None and header.study_description:
        changes["study_description"] = header.study_description
    if changes:
        connection.execute(sa.update(table).where(table.c.id == row.id).values(changes))
    return int(row.id)


#: A revision in one of these states is done with its instances: nothing will read it again unless an operator
#: retries it (failed, skipped), and a retry reads every instance of the study up to it.
_DONE_READING: Final = frozenset(
    {RevisionState.REPORTED, RevisionState.DISPATCHED, RevisionState.SKIPPED, RevisionState.FAILED}
)


def _revision_for(
    connection: sa.Connection, study_id: int, now: datetime, header: ReceivedHeader, rule: FilterRule | None
) -> tuple[int, int, str | None]:
    """``(id, number, why not read)`` of the revision a new instance joins: the study's revision in ``receiving``;
    else, for an instance the model never reads (:func:`~.filtering.never_read`: its reason) when the latest
    revision is done reading, that revision; else the next one, opened."""
    table = _REVISIONS
    latest = connection.execute(
        sa.select(table.c.id, table.c.number, table.c.state)
        .where(table.c.study_id == study_id)
        .order_by(table.c.number.desc())
        .limit(1)
    ).first()
    if latest is not None and latest.state == RevisionState.RECEIVING:
        return int(latest.id), int(latest.number), None
    if latest is not None and RevisionState(latest.state) in _DONE_READING:
        facts = InstanceFacts(header.sop_class_uid, header.modality, header.body_part)
        why = never_read(facts, rule)
        if why is not None:
            return int(latest.id), int(latest.number), why
    number = (latest.number + 1) if latest is not None else 1
    values = {"study_id": study_id, "number": number, "state": RevisionState.RECEIVING, "opened_at": now}
    revision_id = connection.execute(sa.insert(table).values(values).returning(table.c.id)).scalar_one()
    return int(revision_id), number, None


@dataclass(frozen=True)
class _Held:
    """The versions held under a SOP Instance UID, to compare a re-sent instance with (outside the lock): the
    latest's ``sha256``, and ``(version, path)`` of the newest :data:`MAX_COMPARED_VERSIONS`, newest first."""

    sha256: str
    versions: tuple[tuple[int, str], ...]
    held: int


@dataclass(frozen=True)
class _Compared:
    """A re-sent instance compared with the held versions when the latest's bytes had ``sha256``."""

    sha256: str
    versions: VersionsCompared


def record_instance(
    store: Store,
    recorder: AuditRecorder,
    spool: Spool,
    staged: StagedFile,
    header: ReceivedHeader,
    actor: Actor,
    *,
    max_image_pixels: int = 50_000_000,  # listener.max_image_pixels' default
    door: dict[str, Any] | None = None,
    rule: FilterRule | None = None,
) -> IngestResult:
    """Move ``staged`` into the spool and commit its rows and audit event; see the module docstring.

    Other bytes under a SOP Instance UID already held are first compared with the versions held, newest first
    (:func:`radtrace.dicom_listener.compare_child.compare_versions_in_child`, which decodes them in a child process
    within ``max_image_pixels``' memory; outside the transaction, which holds the study's lock and on SQLite the
    database's write lock); the transaction then runs again with the comparison. ``door``: the listener port and
    whether over TLS, added to the audit payload (a listener with ``listener.plain_port``). ``rule``: what the
    model reads (``listener.routing``), for an instance that arrives after its study was read.
    """
    # an IHE IOCM rejection note: read before the transaction (a small file; it flags what read the images it names)
    rejection = rejection_of(staged.path, staged.size) if header.sop_class_uid == KOS_SOP_CLASS else None
    outcome = _record(store, recorder, spool, staged, header, actor, None, door, rule, rejection)
    if isinstance(outcome, _Held):
        held = [(version, spool.root / path) for version, path in outcome.versions]
        versions = compare_versions_in_child(held, staged.path, max_pixels=max_image_pixels)
        versions = replace(versions, held=outcome.held)
        compared = _Compared(outcome.sha256, versions)
        outcome = _record(store, recorder, spool, staged, header, actor, compared, door, rule, rejection)
    if isinstance(outcome, _Held):  # the second run never asks for a comparison
        raise RuntimeError("a re-sent instance was compared twice")
    if outcome.comparison is not None and outcome.outcome is IngestOutcome.DUPLICATE:
        level = logging.WARNING if outcome.comparison.likeness is Likeness.LOSSY_COPY else logging.INFO
        reason = escape(outcome.comparison.reason())
        log.log(
            level,
            "study %s: %s; acknowledged as a duplicate of version %d",
            study_key(header.study_uid),
            reason,
            outcome.version,
        )
    if outcome.not_read is not None:
        log.info(
            "study %s: an instance that is not read (%s) kept with revision %d, which is done; no revision opened",
            study_key(header.study_uid),
            escape(outcome.not_read),
            outcome.revision_number,
        )
    return outcome


def _record(
    store: Store,
    recorder: AuditRecorder,
    spool: Spool,
    staged: StagedFile,
    header: ReceivedHeader,
    actor: Actor,
    compared: _Compared | None,
    door: dict[str, Any] | None = None,
    rule: FilterRule | None = None,
    rejection: Rejection | None = None,
) -> IngestResult | _Held:
    """One transaction of :func:`record_instance`; :class:`_Held` (nothing written) where a comparison is due.

    SQL Core statements, not the ORM: this runs before every C-STORE answer, and the ORM's unit of
    work cost more than the statements themselves.
    """
    committed: Path | None = None
    try:
        with store.session("recording a received instance", immediate=True) as session:
            lock_study(session, header.study_uid)
            connection = session.connection()
            now = utc_now()
            table = _INSTANCES
            earlier = connection.execute(
                sa.select(table.c.version, table.c.sha256, table.c.revision_id, table.c.path, table.c.study_id)
                .where(table.c.sop_instance_uid == header.sop_instance_uid)
                .order_by(table.c.version.desc())
            ).all()
            # a copy of a version in another study, or under another Patient ID: the image filed back
            current = filed_now(connection, header.sop_instance_uid, earlier)
            same = next((i for i in current if i.sha256 == staged.sha256), None)
            comparison: Comparison | None = None
            compared_payload: dict[str, Any] = {}
            if same is None and earlier:
                latest = earlier[0]
                if compared is None:
                    newest = tuple((int(i.version), str(i.path)) for i in current[:MAX_COMPARED_VERSIONS])
                    return _Held(str(latest.sha256), newest, len(earlier))
                # compared while this was still the latest version: the verdict stands (else: a new version, as before)
                if compared.sha256 == latest.sha256:
                    comparison = compared.versions.comparison
                    compared_payload = compared.versions.payload()
                    match = compared.versions.match
                    if match is not None:
                        same = next((i for i in current if i.version == match[0]), None)
            study_id = _study_id(connection, header, None if same is not None else now)
            payload: dict[str, Any] = {
                "sop_instance_uid": header.sop_instance_uid,
                "sop_class_uid": header.sop_class_uid,
                "transfer_syntax_uid": header.transfer_syntax_uid,
                "sha256": staged.sha256,
                "size_bytes": staged.size,
            } | (door or {})
            payload |= compared_payload
            if same is not None:
                spool.discard(staged)
                revision_number = connection.execute(
                    sa.select(_REVISIONS.c.number).where(_REVISIONS.c.id == same.revision_id)
                ).scalar_one()
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
                return IngestResult(
                    IngestOutcome.DUPLICATE, study_id, revision_number, same.version, same.path, comparison
                )
            revision_id, revision_number, not_read = _revision_for(connection, study_id, now, header, rule)
            version = (earlier[0].version + 1) if earlier else 1
            relative = spool.final_path(header.study_uid, header.sop_instance_uid, version)
            committed = spool.commit(staged, relative)
            connection.execute(
                sa.insert(table).values(
                    study_id=study_id,
                    revision_id=revision_id,
                    sop_instance_uid=header.sop_instance_uid,
                    version=version,
                    sop_class_uid=header.sop_class_uid,
                    series_uid=header.series_uid,
                    transfer_syntax_uid=header.transfer_syntax_uid,
                    modality=header.modality,
                    body_part=header.body_part,
                    requested_priority=header.requested_priority,
                    manufacturer=header.manufacturer,
                    manufacturer_model=header.manufacturer_model,
                    photometric=header.photometric,
                    pixel_spacing_mm=header.pixel_spacing_mm,
                    deviations=header.deviations_json(),
                    path=relative.as_posix(),
                    size_bytes=staged.size,
                    sha256=staged.sha256,
                    calling_ae=actor.ae_title,
                    received_at=now,
                )
            )
            outcome = IngestOutcome.NEW_VERSION if earlier else IngestOutcome.RECEIVED
            event_type = EventType.INSTANCE_NEW_VERSION if earlier else EventType.INSTANCE_RECEIVED
            extra: dict[str, Any] = {"version": version, "revision": revision_number}
            if not_read is not None:
                extra["not_read"] = not_read
            if header.deviations:
                extra["deviations"] = header.deviations_json()
            if earlier:
                extra["replaces_sha256"] = earlier[0].sha256
            if header.patient_id_issuer:  # the ID is in the event's patient_id column, where QA searches it
                extra["patient_id_issuer"] = header.patient_id_issuer
            # text whose character set was guessed, or read by the site's rule for the sender: the terms and the
            # rule (no text); a guess's flag is a label QA filters on (a site rule guesses nothing: no label)
            choice = header.character_set if header.character_set and header.character_set.recorded else None
            if choice:
                extra["character_set"] = audit_record(choice)
            guessed = choice if choice and choice.flagged else None
            recorder.record(
                AuditEvent(
                    event_type,
                    actor,
                    study_uid=header.study_uid,
                    accession=header.accession,
                    patient_id=header.patient_id,
                    labels=(guessed.flag,) if guessed else (),
                    payload=payload | extra,
                ),
                session=session,
            )
            if earlier:  # a wrong-patient correction re-sends the UID under another patient or study
                held = HeldCopy(int(earlier[0].study_id), int(earlier[0].revision_id), int(earlier[0].version))
                note_reassigned(session, recorder, actor, header, held, study_id, revision_number, now)
            if rejection is not None:  # the PACS rejected images: the drafts read from them are flagged
                note_rejection(session, recorder, actor, header, rejection, now)
            result = IngestResult(
                outcome, study_id, revision_number, version, relative.as_posix(), comparison, not_read
            )
    except BaseException:
        # Not committed: a renamed file must not stay behind as if it had been received.
        if committed is not None:
            with contextlib.suppress(FileNotFoundError):
                committed.unlink()
        raise
    return result

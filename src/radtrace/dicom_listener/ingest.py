"""Record a received instance: its spool file, its rows and its audit event in one transaction.

The order is what makes "success means safe" true (DESIGN.md principle 2): the file is staged and
fsynced, the transaction opens, the file is renamed into place, the rows and the audit event are
written and committed; only then does the handler answer 0x0000. A crash before the commit leaves
at worst a spool file without a row, which nothing treats as received, and the sender, having had
no success, sends it again.

Same SOP Instance UID again: identical bytes (to any version held) are a duplicate (recorded, nothing
rewritten). Other bytes are compared by what they hold (:mod:`.resend`) with the versions held, newest
first, at most :data:`~.compare_child.MAX_COMPARED_VERSIONS`: the same attributes and pixels in
another encoding, or a lossy copy of the held pixels, are a duplicate of the version they match,
audited with the reason ("same content, re-sent as JPEG-LS Lossless Image Compression") and the
version (an old copy of version 1 re-sent after a corrected version 2 is version 1's duplicate, not
a version 3); anything else is kept as the next version, its event naming the attributes that changed
from the latest. An instance for a study whose revision was already queued opens the study's next
revision.
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
from radtrace.dicom_listener.headers import ReceivedHeader
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


def _receiving_revision(connection: sa.Connection, study_id: int, now: datetime) -> tuple[int, int]:
    """``(id, number)`` of the study's revision in ``receiving``, opening the next one if there is none."""
    table = _REVISIONS
    latest = connection.execute(
        sa.select(table.c.id, table.c.number, table.c.state)
        .where(table.c.study_id == study_id)
        .order_by(table.c.number.desc())
        .limit(1)
    ).first()
    if latest is not None and latest.state == RevisionState.RECEIVING:
        return int(latest.id), int(latest.number)
    number = (latest.number + 1) if latest is not None else 1
    values = {"study_id": study_id, "number": number, "state": RevisionState.RECEIVING, "opened_at": now}
    revision_id = connection.execute(sa.insert(table).values(values).returning(table.c.id)).scalar_one()
    return int(revision_id), number


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
) -> IngestResult:
    """Move ``staged`` into the spool and commit its rows and audit event; see the module docstring.

    Other bytes under a SOP Instance UID already held are first compared with the versions held, newest first
    (:func:`radtrace.dicom_listener.compare_child.compare_versions_in_child`, which decodes them in a child process
    within ``max_image_pixels``' memory; outside the transaction, which holds the study's lock and on SQLite the
    database's write lock); the transaction then runs again with the comparison. ``door``: the listener port and
    whether over TLS, added to the audit payload (a listener with ``listener.plain_port``).
    """
    outcome = _record(store, recorder, spool, staged, header, actor, None, door)
    if isinstance(outcome, _Held):
        held = [(version, spool.root / path) for version, path in outcome.versions]
        versions = compare_versions_in_child(held, staged.path, max_pixels=max_image_pixels)
        versions = replace(versions, held=outcome.held)
        outcome = _record(store, recorder, spool, staged, header, actor, _Compared(outcome.sha256, versions), door)
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
                sa.select(table.c.version, table.c.sha256, table.c.revision_id, table.c.path)
                .where(table.c.sop_instance_uid == header.sop_instance_uid)
                .order_by(table.c.version.desc())
            ).all()
            same = next((i for i in earlier if i.sha256 == staged.sha256), None)
            comparison: Comparison | None = None
            compared_payload: dict[str, Any] = {}
            if same is None and earlier:
                latest = earlier[0]
                if compared is None:
                    newest = tuple((int(i.version), str(i.path)) for i in earlier[:MAX_COMPARED_VERSIONS])
                    return _Held(str(latest.sha256), newest, len(earlier))
                # compared while this was still the latest version: the verdict stands (else: a new version, as before)
                if compared.sha256 == latest.sha256:
                    comparison = compared.versions.comparison
                    compared_payload = compared.versions.payload()
                    match = compared.versions.match
                    if match is not None:
                        same = next((i for i in earlier if i.version == match[0]), None)
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
            revision_id, revision_number = _receiving_revision(connection, study_id, now)
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
            if header.deviations:
                extra["deviations"] = header.deviations_json()
            if earlier:
                extra["replaces_sha256"] = earlier[0].sha256
            if header.patient_id_issuer:  # the ID is in the event's patient_id column, where QA searches it
                extra["patient_id_issuer"] = header.patient_id_issuer
            # text whose character set was guessed: the terms and the rule (no text), its flag a label QA filters on
            guessed = header.character_set if header.character_set and header.character_set.flagged else None
            if guessed:
                extra["character_set"] = audit_record(guessed)
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
            result = IngestResult(outcome, study_id, revision_number, version, relative.as_posix(), comparison)
    except BaseException:
        # Not committed: a renamed file must not stay behind as if it had been received.
        if committed is not None:
            with contextlib.suppress(FileNotFoundError):
                committed.unlink()
        raise
    return result

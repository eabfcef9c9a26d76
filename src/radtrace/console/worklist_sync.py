"""Building the worklist's projection: one ``review_items`` row for every read revision.

:func:`sync_review_items` adds a row for every newly reported (or dispatched) revision: patient, age/sex,
accession and study date from the spooled header of the image the model read, the present findings, flags and
model from the reading recorded in ``inference_completed``. It is idempotent and bounded per call; the pages call
it at most every ``console.sync_interval_s``. :func:`reread_names` reads a row's patient header again when the
character-set settings it was read under change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from radtrace.config import ListenerSettings
from radtrace.console.reassigned_flags import flag_reassigned_items, revision_marks, unflagged_reassigned
from radtrace.console.recorded_reading import (
    FLAG_LABELS,
    reading_flags,
    reading_for_revision,
    recorded_frontal,
    recorded_objects,
    recorded_text,
)
from radtrace.console.schema import ReviewItem
from radtrace.console.worklist_header import header_charset, patient_age, patient_header
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Instance, Priority, Revision, RevisionState, Study

__all__ = [
    "READ_STATES",
    "names_reading",
    "read_where",
    "reread_names",
    "sync_review_items",
    "was_read",
]

log = logging.getLogger(__name__)

#: How many rows read under other character-set settings one sync reads again (:func:`reread_names`): 17 ms a row
#: for a real JPEG-LS film on a loaded 2-core machine (its reading's audit row and its header;
#: bench/console_names_reread.py), so a page that syncs waits ~0.35 s more while rows are left.
NAMES_REREAD_LIMIT: Final = 20
#: Per database (engine): the settings digest no row is left stale under, in this process.
_NAMES_CURRENT: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
#: pg_advisory_xact_lock key of the worklist's sync (a fixed 63-bit key derived from a name, as the audit log's).
WORKLIST_SYNC_LOCK_KEY: Final = int.from_bytes(hashlib.sha256(b"radtrace.review_items.sync").digest()[:8], "big") >> 1
#: The revision states whose reading is a draft: a later revision in one of them replaces an earlier one.
READ_STATES: Final = (RevisionState.REPORTED, RevisionState.DISPATCHED)


def was_read(state: str, reported_at: datetime | None) -> bool:
    """Whether a revision was read (its draft made): the one rule of what the worklist lists and what supersedes an
    earlier revision on the study page and in decisions (:func:`read_where` is it in SQL). In :data:`READ_STATES`,
    or reported once (``reported_at``, never cleared): a draft whose delivery failed for good leaves its revision
    ``failed`` with the time it was reported, and ``radtrace study retry`` of one with no failed delivery to send
    again queues it with that time kept (the pipeline finds its outbox rows and finishes it, not reads it again).
    Such a draft was made, and may have reached the PACS: it is there to be reviewed and replaces an earlier
    revision as much as a delivered one does."""
    return reported_at is not None or state in {str(read) for read in READ_STATES}


def read_where() -> sa.ColumnElement[bool]:
    """:func:`was_read` in SQL: a condition on :class:`Revision`."""
    return sa.or_(Revision.state.in_(READ_STATES), Revision.reported_at.is_not(None))


def _whole_flags(flags: list[str], limit: int) -> str:
    """``flags`` joined by commas, as many whole flags as fit in ``limit`` characters (the column), radtrace's own
    (:data:`FLAG_LABELS`) first: cutting the joined text left half a flag, and could drop a known one."""
    kept: list[str] = []
    for flag in sorted(flags, key=lambda flag: flag not in FLAG_LABELS):
        if len(",".join([*kept, flag])) <= limit:
            kept.append(flag)
    return ",".join(sorted(kept))


def names_reading(listener: ListenerSettings | None, sender: str | None = None) -> str:
    """A digest of the settings a row's patient header is read under (``listener.assumed_character_set`` and the
    ``listener.sender_character_sets`` rules): a row recorded under another is read again (:func:`reread_names`).
    ``sender``: the calling AE of the row's image ('' none): only that AE's rules, so a rule reaches only its
    sender's rows; None (a row added before migration 0025 recorded its sender): every rule."""
    assumed, _none = header_charset(listener, None)
    every = [] if listener is None else listener.sender_character_sets
    if sender is not None:
        every = [rule for rule in every if rule.ae_title == sender.strip()]
    settings = {"assumed": assumed, "rules": [[r.ae_title, r.declared, r.actual] for r in every]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _stale(listener: ListenerSettings | None) -> sa.ColumnElement[bool]:
    """The rows read under other settings than ``listener``'s: each row with its sender recorded against its
    sender's digest (a rule's change reaches only that AE's rows), the others (NULL) against every rule's."""
    ruled = sorted({rule.ae_title for rule in listener.sender_character_sets}) if listener is not None else []
    own = names_reading(listener, "")
    if ruled:
        expected: sa.ColumnElement[Any] = sa.case(
            {ae: names_reading(listener, ae) for ae in ruled}, value=ReviewItem.sender, else_=own
        )
    else:
        expected = sa.literal(own)
    return sa.or_(
        ReviewItem.names_read_as.is_(None),
        sa.and_(ReviewItem.sender.is_(None), ReviewItem.names_read_as != names_reading(listener)),
        sa.and_(ReviewItem.sender.is_not(None), ReviewItem.names_read_as != expected),
    )


def _frontal_instance(
    session: Session, study_id: int, reading: Mapping[str, Any]
) -> sa.Row[str, str, str | None] | None:
    """The spooled file of the image a recorded reading read as frontal: (path, SOP class, calling AE), or None."""
    sop = recorded_text(recorded_frontal(reading).get("sop_instance_uid"))
    if not sop:
        return None
    return session.execute(
        sa.select(Instance.path, Instance.sop_class_uid, Instance.calling_ae)
        .where(Instance.study_id == study_id, Instance.sop_instance_uid == sop)
        .order_by(Instance.version.desc())
        .limit(1)
    ).first()


def _sender(instance: sa.Row[str, str, str | None] | None) -> str:
    """The calling AE a row's image came from, as its row records it ('' none recorded)."""
    return ((instance[2] if instance else None) or "").strip()[:16]


def _header_values(header: Mapping[str, str | None]) -> dict[str, str | None]:
    """A row's columns read from the patient header, bounded to the columns' sizes."""
    return {
        "patient_name": (header["PatientName"] or "")[:255] or None,
        "patient_id": (header["PatientID"] or "")[:64] or None,
        "patient_age": patient_age(header),
        "patient_sex": (header["PatientSex"] or "")[:8] or None,
        "study_date": (header["StudyDate"] or "")[:8] or None,
    }


def _item(
    session: Session, spool_dir: Path, revision: Revision, study: Study, listener: ListenerSettings | None
) -> ReviewItem:
    payload = reading_for_revision(session, study.study_uid, revision.number) or {}
    reading: Mapping[str, Any] = payload.get("reading") or {}
    frontal = recorded_frontal(reading)
    instance = _frontal_instance(session, study.id, reading)
    header = patient_header(
        spool_dir, instance[0] if instance else None, *header_charset(listener, instance[2] if instance else None)
    )
    flags = reading_flags(reading, instance[1] if instance else None) if reading else ["unparsed"]
    flags.extend(revision_marks(revision))  # an image it read was re-sent under another patient/study, or rejected
    findings = recorded_objects(reading.get("findings"))
    present = [label for f in findings if f.get("status") == "present" and (label := recorded_text(f.get("label")))]
    identity = reading.get("identity")
    identity = identity if isinstance(identity, Mapping) else {}
    return ReviewItem(
        revision_id=revision.id,
        study_uid=study.study_uid,
        revision=revision.number,
        rank=0 if revision.priority is Priority.STAT else 1,
        reported_at=revision.reported_at or revision.updated_at,
        superseded=False,
        **_header_values(header),
        sender=_sender(instance),
        names_read_as=names_reading(listener, _sender(instance)),
        accession=study.accession,
        view=(recorded_text(frontal.get("view")) or "")[:16] or None,
        findings=",".join(label.replace(",", " ") for label in present)[:1024],
        flags=_whole_flags(flags, 255),
        flagged=bool(flags),
        model_name=(recorded_text(identity.get("model_name")) or "")[:255] or None,
        sr_sop_instance_uid=revision.sr_sop_instance_uid,
        assessed=False,
    )


def sync_review_items(
    store: Store, spool_dir: Path, *, limit: int = 500, listener: ListenerSettings | None = None
) -> int:
    """Add the worklist rows of read revisions (:func:`was_read`) that have none yet (at most ``limit``), and flag
    the rows of revisions an image of which was re-sent under another patient or study since (:mod:`.reassigned_flags`);
    returns how many rows were added. Rows read under other character-set settings are read again first
    (:func:`reread_names`)."""
    reread_names(store, spool_dir, listener=listener)
    missing = (
        sa.select(Revision, Study)
        .join(Study, Revision.study_id == Study.id)
        .outerjoin(ReviewItem, ReviewItem.revision_id == Revision.id)
        .where(
            read_where(),
            ReviewItem.revision_id.is_(None),
        )
        .order_by(Revision.id)
        .limit(limit)
    )
    with store.session("looking for reported revisions missing from the worklist") as session:
        if session.execute(missing.with_only_columns(Revision.id)).first() is None and not unflagged_reassigned(
            session
        ):
            return 0  # the usual case: no write lock taken
    # Reads, then writes, so the write lock is taken first: SQLite refuses a deferred transaction that has read the
    # write lock once another connection has committed since ("database is locked" at once, no busy wait), which made
    # a page a 503 whenever a report, a decision or an audit event landed between the two; and on PostgreSQL two API
    # processes adding the same revision's row would collide on its key. The missing rows are read again under it.
    with store.session("adding reported revisions to the worklist", immediate=True) as session:
        if is_postgresql(store.engine):
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WORKLIST_SYNC_LOCK_KEY})
        found = session.execute(missing).all()
        for revision, study in found:
            item = _item(session, spool_dir, revision, study, listener)
            later = session.scalar(
                sa.select(sa.func.count())
                .select_from(ReviewItem)
                .where(ReviewItem.study_uid == study.study_uid, ReviewItem.revision > revision.number)
            )
            item.superseded = bool(later)
            session.add(item)
            session.flush()
            session.execute(
                sa.update(ReviewItem)
                .where(ReviewItem.study_uid == study.study_uid, ReviewItem.revision < revision.number)
                .values(superseded=True)
            )
        flag_reassigned_items(session)
    return len(found)


def _stamp_upgraded(store: Store, listener: ListenerSettings | None, current: str) -> None:
    """Rows added before migration 0020 (``names_read_as`` NULL) of studies no AE with a rule now sent anything
    of: recorded as read under the settings in force, unread (they were read under the assumed set, as now, and
    no rule applies to them), so an upgrade does not read every row's header again; the others are read again."""
    ruled = sorted({rule.ae_title for rule in listener.sender_character_sets}) if listener is not None else []
    unread: list[sa.ColumnElement[bool]] = [ReviewItem.names_read_as.is_(None)]
    if ruled:
        unread.append(
            ~sa.exists(
                sa.select(Instance.id)
                .join(Study, Instance.study_id == Study.id)
                .where(Study.study_uid == ReviewItem.study_uid, Instance.calling_ae.in_(ruled))
            )
        )
    with store.session("looking for worklist rows added before migration 0020") as session:
        if session.execute(sa.select(ReviewItem.revision_id).where(*unread).limit(1)).first() is None:
            return
    with store.session("recording worklist rows added before migration 0020", immediate=True) as session:
        session.execute(sa.update(ReviewItem).where(*unread).values(names_read_as=current))


def reread_names(
    store: Store, spool_dir: Path, *, listener: ListenerSettings | None = None, limit: int = NAMES_REREAD_LIMIT
) -> int:
    """Read again the patient header of up to ``limit`` rows recorded under other character-set settings than
    ``listener``'s (:func:`names_reading`): a ``listener.sender_character_sets`` rule set, changed or removed since
    a row was added (or the assumed set changed) reaches the rows already on the worklist, as it reaches the
    drafts, instead of the list naming the patient by the old reading until rebuilt by hand. Unassessed rows
    first. A row whose spooled image is gone or unreadable keeps its text. Once none is left, this process does
    not look again (the settings cannot change under it; rows it adds are read under them). Returns how many
    rows were read again."""
    current = names_reading(listener)
    if _NAMES_CURRENT.get(store.engine) == current:
        return 0
    stale = _stale(listener)
    _stamp_upgraded(store, listener, current)
    headers: dict[int, dict[str, str | None]] = {}
    senders: dict[int, str] = {}
    with store.session("finding worklist rows read under other character-set settings") as session:
        rows = session.execute(
            sa.select(ReviewItem.revision_id, ReviewItem.study_uid, ReviewItem.revision, Study.id)
            .join(Study, Study.study_uid == ReviewItem.study_uid)
            .where(stale)
            .order_by(ReviewItem.assessed, ReviewItem.rank, ReviewItem.reported_at, ReviewItem.revision_id)
            .limit(limit)
        ).all()
        for revision_id, study_uid, number, study_id in rows:
            reading = (reading_for_revision(session, study_uid, number) or {}).get("reading") or {}
            instance = _frontal_instance(session, study_id, reading)
            header = patient_header(
                spool_dir,
                instance[0] if instance else None,
                *header_charset(listener, instance[2] if instance else None),
            )
            headers[revision_id] = _header_values(header) if any(header.values()) else {}
            senders[revision_id] = _sender(instance)
    if not rows:
        _NAMES_CURRENT[store.engine] = current
        return 0
    with store.session("reading worklist rows' names again", immediate=True) as session:
        for revision_id, values in headers.items():
            session.execute(
                sa.update(ReviewItem)
                .where(ReviewItem.revision_id == revision_id, stale)
                .values(
                    **values, sender=senders[revision_id], names_read_as=names_reading(listener, senders[revision_id])
                )
            )
    read = sum(1 for values in headers.values() if values)
    log.info("worklist: %d rows read again under the current character-set settings", read)
    return read

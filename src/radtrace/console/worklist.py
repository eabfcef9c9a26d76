"""The worklist: reported revisions waiting for a radiologist, STAT first then oldest, one page at a time.

:func:`sync_review_items` adds a row to ``review_items`` for every newly reported (or dispatched) revision:
patient, age/sex, accession and study date from the spooled header of the image the model read, the present
findings, flags and model from the reading recorded in ``inference_completed``. It is idempotent and
bounded per call; the pages call it at most every ``console.sync_interval_s``. :func:`worklist_page` reads
only ``review_items``, on one index per filter, so the time of a page does not grow with the table.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session, aliased

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.schema import ConsoleSession, ConsoleUser, ReviewItem
from radtrace.dicom_charset import (
    CHARACTER_SET_ASSUMED,
    CHARACTER_SET_DOUBTFUL,
    DEFAULT_ASSUMED_CHARACTER_SET,
    read_text_as,
    recorded_choice,
    without_charset_warnings,
)
from radtrace.dicom_deflated import read_bounded
from radtrace.dicom_listener.headers import DEFAULT_MAX_INFLATED_BYTES
from radtrace.errors import DicomInputError
from radtrace.model.image_marks import BURNED_IN_ANNOTATION, LOSSY_COMPRESSION, WINDOW_NOT_APPLIED, image_marks
from radtrace.reporting.sr import POLARITY_CONTRADICTION, SUSPECTED_NEGATIVE, PolarityNote, polarity_notes
from radtrace.reporting.text import dicom_text, fhir_text
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Instance, Priority, Revision, RevisionState, Study

__all__ = [
    "FLAG_LABELS",
    "READ_STATES",
    "FailedRow",
    "WorklistFilter",
    "WorklistPage",
    "WorklistRow",
    "audit_payload",
    "failed_count",
    "failed_page",
    "image_polarity_notes",
    "mark_opened",
    "next_study",
    "read_where",
    "reading_flags",
    "reading_for_revision",
    "recorded_frontal",
    "recorded_objects",
    "sync_review_items",
    "was_read",
    "worklist_page",
]

log = logging.getLogger(__name__)

SECONDARY_CAPTURE_PREFIX: Final = "1.2.840.10008.5.1.4.1.1.7"
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


#: flag -> what the worklist says
FLAG_LABELS: Final = {
    "refused": "model refused",
    "truncated": "truncated",
    "unparsed": "unparsed",
    "view-unknown": "view unknown",
    "ap-portable": "AP / portable",
    "secondary-capture": "secondary capture",
    "text-sanitised": "text sanitised",
    SUSPECTED_NEGATIVE: "suspected negative",
    POLARITY_CONTRADICTION: "polarity header contradiction",
    CHARACTER_SET_ASSUMED: "character set assumed",
    CHARACTER_SET_DOUBTFUL: "character set doubtful",
    LOSSY_COMPRESSION: "lossy image",
    BURNED_IN_ANNOTATION: "burned-in annotation",
    WINDOW_NOT_APPLIED: "window not applied",
}
_HEADER_TAGS: Final = ["PatientName", "PatientID", "PatientAge", "PatientSex", "StudyDate", "PatientBirthDate"]
#: A spooled image's header is read as the worker reads it: values longer than this are not kept.
_HEADER_DEFER_BYTES: Final = 1 << 20


class WorklistFilter(enum.StrEnum):
    """Which revisions a worklist page lists."""

    UNASSESSED = "unassessed"
    ALL = "all"
    MINE = "mine"
    FLAGGED = "flagged"
    #: revisions the worker gave up on (state ``failed``) that no later revision replaces: not drafts, but a
    #: radiologist must know the study waits for a reading by hand
    FAILED = "failed"


@dataclass(frozen=True)
class WorklistRow:
    """One line of the worklist."""

    study_uid: str
    revision: int
    stat: bool
    reported_at: datetime
    patient_name: str | None
    patient_id: str | None
    patient_age: str | None
    patient_sex: str | None
    accession: str | None
    study_date: str | None
    view: str | None
    findings: tuple[str, ...]
    flags: tuple[str, ...]
    decision: str | None
    decided_by: str | None
    opened_by: str | None
    #: the whole-draft decision of the newest earlier revision that has one ("revision 1 accepted by dr.one"): made
    #: on the images before this revision's, not carried over (the study page names it)
    earlier: str | None = None

    def waiting_s(self, now: datetime) -> float:
        """Seconds since the draft was reported."""
        return max(0.0, (now - self.reported_at).total_seconds())


@dataclass(frozen=True)
class WorklistPage:
    """One page of rows, the total matching, and where this page is."""

    rows: tuple[WorklistRow, ...]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        """How many pages the filter has (at least 1)."""
        return max(1, -(-self.total // self.page_size))


def _whole_flags(flags: list[str], limit: int) -> str:
    """``flags`` joined by commas, as many whole flags as fit in ``limit`` characters (the column), radtrace's own
    (:data:`FLAG_LABELS`) first: cutting the joined text left half a flag, and could drop a known one."""
    kept: list[str] = []
    for flag in sorted(flags, key=lambda flag: flag not in FLAG_LABELS):
        if len(",".join([*kept, flag])) <= limit:
            kept.append(flag)
    return ",".join(sorted(kept))


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def _conditions(which: WorklistFilter, user: str) -> list[sa.ColumnElement[bool]]:
    item = ReviewItem
    if which is WorklistFilter.ALL:
        return [item.superseded.is_(False)]
    if which is WorklistFilter.MINE:
        return [item.opened_by == user, item.superseded.is_(False)]
    if which is WorklistFilter.FLAGGED:
        return [item.superseded.is_(False), item.flagged.is_(True), item.assessed.is_(False)]
    return [item.superseded.is_(False), item.assessed.is_(False)]


def worklist_page(store: Store, which: WorklistFilter, user: str, page: int, page_size: int) -> WorklistPage:
    """One page of the worklist: STAT first, then the oldest report; ``page`` counts from 1."""
    page = max(1, page)
    where = _conditions(which, user)
    order = (ReviewItem.rank, ReviewItem.reported_at, ReviewItem.revision_id)
    with store.session("reading the worklist") as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(ReviewItem).where(*where)) or 0
        items = session.scalars(
            sa.select(ReviewItem).where(*where).order_by(*order).offset((page - 1) * page_size).limit(page_size)
        ).all()
        earlier = _earlier_decisions(session, [item for item in items if item.revision > 1])
        rows = tuple(_row(item, earlier.get((item.study_uid, item.revision))) for item in items)
    return WorklistPage(rows, int(total), page, page_size)


def _earlier_decisions(session: Session, items: Sequence[ReviewItem]) -> dict[tuple[str, int], str]:
    """For each of ``items`` (study UID, revision), the newest whole-draft decision on an earlier revision of its
    study, as the worklist's status says it; one query for the page."""
    if not items:
        return {}
    found: dict[tuple[str, int], str] = {}
    decided = session.execute(
        sa.select(ReviewItem.study_uid, ReviewItem.revision, ReviewItem.decision, ReviewItem.decided_by)
        .where(ReviewItem.study_uid.in_({item.study_uid for item in items}), ReviewItem.assessed.is_(True))
        .order_by(ReviewItem.revision)
    ).all()
    for item in items:
        for study_uid, number, decision, user in decided:
            if study_uid == item.study_uid and number < item.revision and decision:
                found[(item.study_uid, item.revision)] = f"revision {number} {decision} by {user or 'someone'}"
    return found


def _row(item: ReviewItem, earlier: str | None = None) -> WorklistRow:
    return WorklistRow(
        study_uid=item.study_uid,
        revision=item.revision,
        stat=item.rank == 0,
        reported_at=item.reported_at,
        patient_name=item.patient_name,
        patient_id=item.patient_id,
        patient_age=item.patient_age,
        patient_sex=item.patient_sex,
        accession=item.accession,
        study_date=item.study_date,
        view=item.view,
        findings=_split(item.findings),
        flags=_split(item.flags),
        decision=item.decision,
        decided_by=item.decided_by,
        opened_by=item.opened_by,
        earlier=earlier,
    )


@dataclass(frozen=True)
class FailedRow:
    """One revision the worker could not read, as the worklist's ``failed`` filter lists it."""

    study_uid: str
    revision: int
    stat: bool
    finished_at: datetime | None
    reason: str | None
    accession: str | None
    patient_name: str | None
    patient_id: str | None
    #: read and drafted, then its draft's delivery failed for good: the draft is on the worklist
    drafted: bool = False


def _failed_where() -> list[sa.ColumnElement[bool]]:
    later = aliased(Revision)
    return [
        Revision.state == RevisionState.FAILED,
        ~sa.exists().where(later.study_id == Revision.study_id, later.number > Revision.number),
    ]


def failed_count(store: Store) -> int:
    """How many revisions are failed with no later revision of their study (on the state index)."""
    with store.session("counting failed studies") as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Revision).where(*_failed_where())) or 0)


def failed_page(
    store: Store,
    spool_dir: Path,
    page: int,
    page_size: int,
    *,
    assumed_character_set: str = DEFAULT_ASSUMED_CHARACTER_SET,
) -> tuple[tuple[FailedRow, ...], int]:
    """One page of failed revisions (newest failure first) with patient and reason, and how many there are; a
    revision read and drafted whose draft's delivery then failed for good is one (``drafted``)."""
    page = max(1, page)
    with store.session("reading failed studies") as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(Revision).where(*_failed_where())) or 0
        found = session.execute(
            sa.select(Revision, Study)
            .join(Study, Revision.study_id == Study.id)
            .where(*_failed_where())
            .order_by(Revision.finished_at.desc(), Revision.id.desc())
            .offset((page - 1) * page_size)
            .limit(page_size)
        ).all()
        rows = []
        for revision, study in found:
            path = session.scalar(
                sa.select(Instance.path).where(Instance.revision_id == revision.id).order_by(Instance.id).limit(1)
            )
            header = _header(spool_dir, path, assumed_character_set)
            rows.append(FailedRow(
                study_uid=study.study_uid, revision=revision.number, stat=revision.priority is Priority.STAT,
                finished_at=revision.finished_at, reason=revision.reason, accession=study.accession,
                patient_name=header["PatientName"], patient_id=header["PatientID"],
                drafted=revision.reported_at is not None,
            ))  # fmt: skip
    return tuple(rows), int(total)


def next_study(
    store: Store, user: str, after: tuple[str, int] | None, idle_timeout_s: float | None = None
) -> tuple[str, int] | None:
    """The first unassessed revision in worklist order that nobody else is reading, skipping ``after``: not
    opened by another radiologist, or opened by one who is no longer signed in (no session used within
    ``idle_timeout_s``; None: opened by another is always skipped). A study opened by a radiologist who has gone
    home (a STAT one too) is offered again, not skipped by everyone's "next study" for good."""
    held = [ReviewItem.opened_by.is_(None), ReviewItem.opened_by == user]
    if idle_timeout_s is not None:
        since = now() - timedelta(seconds=idle_timeout_s)
        reading = (
            sa.select(ConsoleSession.id)
            .join(ConsoleUser, ConsoleSession.user_id == ConsoleUser.id)
            .where(ConsoleUser.name == ReviewItem.opened_by, ConsoleSession.ended_at.is_(None),
                   ConsoleSession.last_seen_at > since)
        )  # fmt: skip
        held.append(~sa.exists(reading))
    where = [*_conditions(WorklistFilter.UNASSESSED, user), sa.or_(*held)]
    if after is not None:
        where.append(sa.not_(sa.and_(ReviewItem.study_uid == after[0], ReviewItem.revision == after[1])))
    with store.session("finding the next study") as session:
        found = session.execute(
            sa.select(ReviewItem.study_uid, ReviewItem.revision)
            .where(*where)
            .order_by(ReviewItem.rank, ReviewItem.reported_at, ReviewItem.revision_id)
            .limit(1)
        ).first()
    return (found[0], found[1]) if found else None


# --- building the projection ------------------------------------------------------------------


def audit_payload(stored: object) -> dict[str, Any]:
    """An audit event's payload as a dict; empty for one edited in the database into something that is not a JSON
    object (SQLite keeps any value): audit/ shows such a row raw and ``radtrace audit verify`` names it, while the
    console, which decoded every payload, answered 500 on the worklist for everyone for as long as it stayed."""
    try:
        parsed = json.loads(stored)  # type: ignore[arg-type]  # text, or whatever the row was edited into
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def reading_for_revision(session: Session, study_uid: str, revision: int) -> Mapping[str, Any] | None:
    """The ``inference_completed`` payload of one revision (its latest attempt), or None."""
    table = AuditEventRow
    payloads = session.scalars(
        sa.select(table.payload)
        .where(table.study_uid == study_uid, table.event_type == EventType.INFERENCE_COMPLETED.value)
        .order_by(table.seq.desc())
    )
    for text in payloads:
        payload = audit_payload(text)
        if payload.get("revision") == revision and isinstance(payload.get("reading"), dict):
            return dict(payload)
    return None


def reading_flags(reading: Mapping[str, Any], sop_class_uid: str | None) -> list[str]:
    """The worklist's flags for a reading: the model's own, view unknown, AP/portable, SC, text sanitised, and for
    any image it read, a picture that looks like a negative or a header that contradicts itself on polarity, a lossy
    image, text burned into the pixels, a window not applied (:func:`radtrace.model.image_marks.image_marks`, as the
    drafts flag them) and text read in a character set the header did not declare.

    ``reading`` is a recorded one (``inference_completed``'s), which may have been edited in the database into any
    shape: what is not what the worker records (an image entry that is no object, flags that are no list of text,
    a view that is no text) is passed over, never raised on; no readable image reads as one with no view."""
    flags = set(_strings(reading.get("flags")))
    images = recorded_objects(reading.get("images"))
    for image in images:
        flags.update(note.kind for note in image_polarity_notes(image))
        steps = image.get("preparation")
        if isinstance(steps, list):
            flags.update(mark.flag for mark in image_marks(steps))
            if (choice := recorded_choice(steps)) is not None and choice.flagged:
                flags.add(choice.flag)
    frontal = recorded_frontal(reading)
    if not _text(frontal.get("view")):
        flags.add("view-unknown")
    if {"ap", "portable"} & set(_strings(frontal.get("view_flags"))):
        flags.add("ap-portable")
    if (sop_class_uid or _text(frontal.get("sop_class_uid")) or "").startswith(SECONDARY_CAPTURE_PREFIX):
        flags.add("secondary-capture")
    texts = [_text(step.get("text")) for step in recorded_objects(reading.get("reasoning"))]
    texts += [_text(reading.get("impression"))] + [
        _text(f.get("label")) for f in recorded_objects(reading.get("findings"))
    ]
    # As the drafts do: a text the SR (UT) or FHIR had to change to carry it means the draft reads differently.
    if any(text and (dicom_text(text, "UT").changed or fhir_text(text).changed) for text in texts):
        flags.add("text-sanitised")
    return sorted(flags)


def recorded_frontal(reading: Mapping[str, Any]) -> Mapping[str, Any]:
    """The frontal image of a recorded reading: its first image entry that is an object with role ``frontal``, else
    its first entry that is an object, else ``{}`` (entries edited into anything else are passed over)."""
    images = recorded_objects(reading.get("images"))
    return next((image for image in images if image.get("role") == "frontal"), images[0] if images else {})


def image_polarity_notes(image: object) -> tuple[PolarityNote, ...]:
    """What the inversion step of one image of a recorded reading (an item of its ``images``) found against the
    picture's polarity (:func:`radtrace.reporting.sr.polarity_notes`); none for a row edited into something else."""
    steps = image.get("preparation") if isinstance(image, Mapping) else None
    return polarity_notes(steps) if isinstance(steps, list) else ()


def recorded_objects(value: object) -> list[Mapping[str, Any]]:
    """The items of a recorded list that are objects (none when it is no list)."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list | tuple) else []


def _strings(value: object) -> list[str]:
    """The items of a recorded list that are text (none when it is no list)."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list | tuple) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _header(spool_dir: Path, relative: str | None, assumed_character_set: str) -> dict[str, str | None]:
    """The patient's name, ID, age, sex and dates from a spooled image, its text read as the worker reads it (the
    whole header, so an undeclared character set is decided on the same text: :func:`read_text_as`)."""
    values: dict[str, str | None] = dict.fromkeys(_HEADER_TAGS)
    if relative is None:
        return values
    try:  # as the worker reads it: pixel data left on disk, values over 1 MiB dropped (in items too: pydicom held
        # a 250 MiB private value in a View Code item, +262 MB per row shown, +525 MB deflated), sequences bounded
        with without_charset_warnings(), (spool_dir / relative).open("rb") as handle:
            ds = read_bounded(
                handle, keep_bulk=False, defer_bytes=_HEADER_DEFER_BYTES, max_inflated_bytes=DEFAULT_MAX_INFLATED_BYTES
            )
        read_text_as(ds, assumed=assumed_character_set)
    except (OSError, InvalidDicomError, ValueError, DicomInputError) as exc:
        log.warning("worklist: header of a spooled image unreadable: %s", type(exc).__name__)
        return values
    for keyword in _HEADER_TAGS:
        value = ds.get(keyword)
        values[keyword] = str(value).strip() or None if value is not None else None
    return values


def _age(header: Mapping[str, str | None]) -> str | None:
    age = header.get("PatientAge")
    if age:
        return age[:8]
    born, seen = header.get("PatientBirthDate"), header.get("StudyDate")
    if born and seen and len(born) == 8 and len(seen) == 8 and born.isdigit() and seen.isdigit():
        years = int(seen[:4]) - int(born[:4]) - ((seen[4:]) < (born[4:]))
        return f"{years:03d}Y" if 0 <= years < 200 else None
    return None


def _item(session: Session, spool_dir: Path, revision: Revision, study: Study, assumed: str) -> ReviewItem:
    payload = reading_for_revision(session, study.study_uid, revision.number) or {}
    reading: Mapping[str, Any] = payload.get("reading") or {}
    frontal = recorded_frontal(reading)
    sop = _text(frontal.get("sop_instance_uid"))
    instance = None
    if sop:
        instance = session.execute(
            sa.select(Instance.path, Instance.sop_class_uid)
            .where(Instance.study_id == study.id, Instance.sop_instance_uid == sop)
            .order_by(Instance.version.desc())
            .limit(1)
        ).first()
    header = _header(spool_dir, instance[0] if instance else None, assumed)
    flags = reading_flags(reading, instance[1] if instance else None) if reading else ["unparsed"]
    findings = recorded_objects(reading.get("findings"))
    present = [label for f in findings if f.get("status") == "present" and (label := _text(f.get("label")))]
    identity = reading.get("identity")
    identity = identity if isinstance(identity, Mapping) else {}
    return ReviewItem(
        revision_id=revision.id,
        study_uid=study.study_uid,
        revision=revision.number,
        rank=0 if revision.priority is Priority.STAT else 1,
        reported_at=revision.reported_at or revision.updated_at,
        superseded=False,
        patient_name=(header["PatientName"] or "")[:255] or None,
        patient_id=(header["PatientID"] or "")[:64] or None,
        patient_age=_age(header),
        patient_sex=(header["PatientSex"] or "")[:8] or None,
        accession=study.accession,
        study_date=(header["StudyDate"] or "")[:8] or None,
        view=(_text(frontal.get("view")) or "")[:16] or None,
        findings=",".join(label.replace(",", " ") for label in present)[:1024],
        flags=_whole_flags(flags, 255),
        flagged=bool(flags),
        model_name=(_text(identity.get("model_name")) or "")[:255] or None,
        sr_sop_instance_uid=revision.sr_sop_instance_uid,
        assessed=False,
    )


def sync_review_items(
    store: Store, spool_dir: Path, *, limit: int = 500, assumed_character_set: str = DEFAULT_ASSUMED_CHARACTER_SET
) -> int:
    """Add the worklist rows of read revisions (:func:`was_read`) that have none yet (at most ``limit``); returns how
    many."""
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
        if session.execute(missing.with_only_columns(Revision.id)).first() is None:
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
            item = _item(session, spool_dir, revision, study, assumed_character_set)
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
    return len(found)


def mark_opened(store: Store, study_uid: str, revision: int, user: str) -> None:
    """The first radiologist to open a revision has it on their "mine" list."""
    with store.session("marking a study opened") as session:
        session.execute(
            sa.update(ReviewItem)
            .where(ReviewItem.study_uid == study_uid, ReviewItem.revision == revision, ReviewItem.opened_by.is_(None))
            .values(opened_by=user)
        )


def now() -> datetime:
    """The time waiting times are measured to."""
    return utc_now()

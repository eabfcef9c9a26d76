"""The worklist: reported revisions waiting for a radiologist, STAT first then oldest, one page at a time.

:func:`worklist_page` reads only ``review_items`` (built by :mod:`radtrace.console.worklist_sync` from the readings
recorded in the audit log, :mod:`radtrace.console.recorded_reading`), on one index per filter, so the time of a page
does not grow with the table. :func:`failed_page` lists the revisions the worker gave up on; :func:`next_study` picks
the study a radiologist reads next.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from radtrace.config import ListenerSettings
from radtrace.console.reassigned_flags import REASSIGNED_FLAG, REJECTED_FLAG
from radtrace.console.recorded_reading import (
    FLAG_LABELS,
    audit_payload,
    image_polarity_notes,
    reading_flags,
    reading_for_revision,
    recorded_frontal,
    recorded_inputs,
    recorded_objects,
)
from radtrace.console.schema import ConsoleSession, ConsoleUser, ReviewItem
from radtrace.console.worklist_header import header_charset, patient_header
from radtrace.console.worklist_sync import (
    READ_STATES,
    names_reading,
    read_where,
    reread_names,
    sync_review_items,
    was_read,
)
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Priority, Revision, RevisionState, Study

# The reading and sync names are re-exported: the pages and the tests import them from here.
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
    "names_reading",
    "next_study",
    "read_where",
    "reading_flags",
    "reading_for_revision",
    "recorded_frontal",
    "recorded_inputs",
    "recorded_objects",
    "reread_names",
    "sync_review_items",
    "was_read",
    "worklist_page",
    "worklist_query",
]


class WorklistFilter(enum.StrEnum):
    """Which revisions a worklist page lists."""

    UNASSESSED = "unassessed"
    ALL = "all"
    MINE = "mine"
    FLAGGED = "flagged"
    #: revisions the worker gave up on (state ``failed``) that no later revision replaces: not drafts, but a
    #: radiologist must know the study waits for a reading by hand
    FAILED = "failed"


#: The flags a radiologist's recorded check covers (:func:`radtrace.console.reassigned_flags.flag_check`).
CHECKED_FLAGS: Final = frozenset({REASSIGNED_FLAG, REJECTED_FLAG})


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
    #: who recorded that they checked the draft's image flags (image moved to another patient, rejected by the
    #: PACS: :mod:`radtrace.console.reassigned_flags`); the flags stay, labelled checked by them
    flags_checked_by: str | None = None

    @property
    def withdrawn(self) -> bool:
        """Whether the draft is withdrawn and not yet checked (an image flag no radiologist recorded as checked):
        "Start reading" does not offer it (:func:`next_study`)."""
        return self.flags_checked_by is None and any(flag in CHECKED_FLAGS for flag in self.flags)

    def checked(self, flag: str) -> bool:
        """Whether ``flag`` is one a radiologist recorded as checked on this draft (the image flags only)."""
        return self.flags_checked_by is not None and flag in CHECKED_FLAGS

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


def worklist_query(which: WorklistFilter, user: str, page: int, page_size: int) -> sa.Select[Any]:
    """The query of one page of a filter's rows (``page`` from 1): each filter's conditions and order are the
    leading columns of its own index (``ix_review_items_queue``, ``_all``, ``_flagged``, ``_mine``), so a page is
    read from the index in order, never sorted whole."""
    order = (ReviewItem.rank, ReviewItem.reported_at, ReviewItem.revision_id)
    return (
        sa.select(ReviewItem)
        .where(*_conditions(which, user))
        .order_by(*order)
        .offset((max(1, page) - 1) * page_size)
        .limit(page_size)
    )


def worklist_page(store: Store, which: WorklistFilter, user: str, page: int, page_size: int) -> WorklistPage:
    """One page of the worklist: STAT first, then the oldest report; ``page`` counts from 1."""
    page = max(1, page)
    where = _conditions(which, user)
    with store.session("reading the worklist") as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(ReviewItem).where(*where)) or 0
        items = session.scalars(worklist_query(which, user, page, page_size)).all()
        earlier = _earlier_decisions(session, [item for item in items if item.revision > 1])
        checked = _flags_checked(session, items)
        rows = tuple(
            _row(item, earlier.get((item.study_uid, item.revision)), checked.get(item.revision_id)) for item in items
        )
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


def _flags_checked(session: Session, items: Sequence[ReviewItem]) -> dict[int, str]:
    """For each of ``items`` whose image flags a radiologist recorded as checked, who did (by revision id); one
    query for the page."""
    flagged = [item.revision_id for item in items if item.flags]
    if not flagged:
        return {}
    rows = session.execute(
        sa.select(Revision.id, Revision.flags_checked_by).where(
            Revision.id.in_(flagged), Revision.flags_checked_at.is_not(None)
        )
    ).all()
    return {int(revision_id): str(by or "someone") for revision_id, by in rows}


def _row(item: ReviewItem, earlier: str | None = None, flags_checked_by: str | None = None) -> WorklistRow:
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
        flags_checked_by=flags_checked_by,
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
    listener: ListenerSettings | None = None,
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
            first = session.execute(
                sa.select(Instance.path, Instance.calling_ae)
                .where(Instance.revision_id == revision.id)
                .order_by(Instance.id)
                .limit(1)
            ).first()
            header = patient_header(
                spool_dir, first[0] if first else None, *header_charset(listener, first[1] if first else None)
            )
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
    home (a STAT one too) is offered again, not skipped by everyone's "next study" for good.

    A withdrawn draft is not offered ("Start reading" and ``n`` go past it) until a radiologist recorded that they
    checked its marks (:func:`radtrace.console.reassigned_flags.flag_check`): one read from an image the PACS
    re-sent under another patient or study, or rejected. It was reported before the correction, so by worklist
    order (oldest first) it came first, ahead of every draft a radiologist can sign: before, "Start reading" opened
    a draft that may be about another patient's film and whose accepting is refused. A radiologist reading the
    queue expects the drafts they can report on; the withdrawn ones stay on the worklist, marked (their flag, and
    "not offered by Start reading"), and under the ``flagged`` filter, for whoever checks them against the PACS;
    once checked they are offered in worklist order like any draft. The marks are read from the revision, not the
    worklist row's flags, so a mark that came after the row was synced is already heeded."""
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
    withdrawn = sa.exists().where(
        Revision.id == ReviewItem.revision_id,
        sa.or_(Revision.reassigned_at.is_not(None), Revision.rejected_at.is_not(None)),
        Revision.flags_checked_at.is_(None),
    )
    where = [*_conditions(WorklistFilter.UNASSESSED, user), sa.or_(*held), ~withdrawn]
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

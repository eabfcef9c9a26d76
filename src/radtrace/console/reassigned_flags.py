"""The worklist flags of a draft read from an image the PACS moved or rejected after it was read.

A worklist row's flags are computed once, when the row is added (:func:`radtrace.console.worklist.sync_review_items`);
a wrong-patient correction at the PACS (:mod:`radtrace.dicom_listener.reassigned`: ``revisions.reassigned_at``) or an
IHE IOCM rejection note (:mod:`radtrace.dicom_listener.rejection_note`: ``revisions.rejected_at``) can come after.
:func:`flag_reassigned_items` adds the flag to existing rows of such revisions, in the sync's transaction;
:func:`unflagged_reassigned` is the sync's cheap look for them before it takes the write lock. The flag goes first,
and flags that no longer fit the column are dropped whole.

A flagged revision's draft cannot be accepted (a finding, the impression or the whole draft) until a radiologist
records on the study page that they checked it (:func:`flag_check`: who, when, in their words; stored on the revision,
audited ``image_flags_checked``): the page then shows the warning as checked by them, and accepting is allowed. A
later mark clears the check (:data:`radtrace.dicom_listener.reassigned.UNCHECKED`): it did not cover it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.schema import ReviewItem
from radtrace.dicom_listener.reassigned import REASSIGNED_FLAG
from radtrace.store.models import Revision, RevisionState, Study

__all__ = [
    "MAX_CHECK_REASON",
    "MAX_MOVES",
    "REASSIGNED_FLAG",
    "REJECTED_FLAG",
    "FlagCheck",
    "MovedTo",
    "flag_check",
    "flag_reassigned_items",
    "revision_marks",
    "unflagged_reassigned",
    "with_flag",
]

#: The worklist flag of a revision an image of which the PACS rejected (IOCM rejection note).
REJECTED_FLAG: Final = "image-rejected"
#: review_items.flags' length
_FLAGS_LIMIT: Final = 255
_MARKS: Final[tuple[tuple[InstrumentedAttribute[Any], str], ...]] = (
    (Revision.reassigned_at, REASSIGNED_FLAG),
    (Revision.rejected_at, REJECTED_FLAG),
)


def revision_marks(revision: Revision) -> list[str]:
    """The flags of a revision's marks, for a row added now."""
    return [flag for column, flag in _MARKS if getattr(revision, column.key) is not None]


def _unflagged(column: InstrumentedAttribute[Any], flag: str) -> sa.Select[Any]:
    listed = sa.or_(ReviewItem.flags.is_(None), ~ReviewItem.flags.contains(flag, autoescape=True))
    return (
        sa.select(ReviewItem.revision_id)
        .join(Revision, Revision.id == ReviewItem.revision_id)
        .where(column.is_not(None), listed)
    )


def with_flag(flags: str | None, flag: str) -> str:
    """``flags`` (comma-joined) with ``flag`` first, as many whole others as fit the column."""
    kept = [flag]
    for other in (flags or "").split(","):
        if other and other != flag and len(",".join([*kept, other])) <= _FLAGS_LIMIT:
            kept.append(other)
    return ",".join(kept)


def unflagged_reassigned(session: Session) -> bool:
    """Whether a worklist row of a revision marked ``reassigned_at`` or ``rejected_at`` lacks its flag."""
    return any(session.execute(_unflagged(column, flag).limit(1)).first() is not None for column, flag in _MARKS)


def flag_reassigned_items(session: Session) -> int:
    """Add the flags to the worklist rows of revisions marked that lack them; returns how many rows changed."""
    changed = 0
    for column, flag in _MARKS:
        found = session.execute(
            sa.select(ReviewItem.revision_id, ReviewItem.flags).where(
                ReviewItem.revision_id.in_(_unflagged(column, flag))
            )
        ).all()
        for revision_id, flags in found:
            session.execute(
                sa.update(ReviewItem)
                .where(ReviewItem.revision_id == revision_id)
                .values(flags=with_flag(flags, flag), flagged=True)
            )
        changed += len(found)
    return changed


#: The longest reason a radiologist may give for a check (as a decision's comment).
MAX_CHECK_REASON: Final = 2000


@dataclass(frozen=True)
class MovedTo:
    """A study the PACS re-sent an image of a flagged revision under (a wrong-patient or wrong-study correction):
    its Study UID and its newest revision with a draft (None: none read yet), the draft that now covers the image."""

    study_uid: str
    revision: int | None


@dataclass(frozen=True)
class FlagCheck:
    """A flagged revision's marks (:data:`REASSIGNED_FLAG`, :data:`REJECTED_FLAG`) and its check, if any: who
    checked them, when, and what they wrote."""

    marks: tuple[str, ...]
    checked_by: str | None = None
    checked_at: datetime | None = None
    reason: str | None = None
    #: the marks as a page shows them (their times, and the newest marking event of the study): the study page's
    #: Checked form sends it back, and a check is recorded only while it is unchanged (radtrace.console.decisions)
    shown: str = ""
    #: the other studies the PACS re-sent this revision's images under (a wrong-patient correction), oldest first
    moved_to: tuple[MovedTo, ...] = ()

    @property
    def checked(self) -> bool:
        return self.checked_at is not None

    def refusal(self, doing: str) -> str | None:
        """Why ``doing`` (accepting a finding, …) is refused on this revision; None once it is checked."""
        if self.checked:
            return None
        what = " and ".join(_MARK_WORDS[mark] for mark in self.marks)
        return (
            f"{doing} is refused: an image this draft was read from was {what}. Check the study in the PACS, then "
            "record on the study page that you checked it (Checked, with your reason); accepting is allowed after."
        )


_MARK_WORDS: Final = {
    REASSIGNED_FLAG: "re-sent by the PACS under another patient/study",
    REJECTED_FLAG: "rejected by the PACS (IHE rejection note)",
}


def flag_check(session: Session, study_uid: str, revision: int) -> FlagCheck | None:
    """The marks of revision ``revision`` of the study and their check; None when it has none (or no such
    revision)."""
    row = session.execute(
        sa.select(Revision.reassigned_at, Revision.rejected_at, Revision.flags_checked_by, Revision.flags_checked_at,
                  Revision.flags_checked_reason)
        .join(Study, Study.id == Revision.study_id)
        .where(Study.study_uid == study_uid, Revision.number == revision)
    ).first()  # fmt: skip
    if row is None:
        return None
    marks = tuple(flag for flag, at in ((REASSIGNED_FLAG, row[0]), (REJECTED_FLAG, row[1])) if at is not None)
    if not marks:
        return None
    newest = session.scalar(  # a mark of another image keeps the revision's first time: the study's events say
        sa.select(sa.func.max(AuditEventRow.seq)).where(
            AuditEventRow.study_uid == study_uid, AuditEventRow.event_type.in_(_MARKING_EVENTS)
        )
    )
    shown = ";".join([*(at.isoformat() if at is not None else "-" for at in (row[0], row[1])), str(newest)])
    moved = _moved_to(session, study_uid, revision) if REASSIGNED_FLAG in marks else ()
    return FlagCheck(marks, row[2], row[3], row[4], shown, moved)


def _moved_to(session: Session, study_uid: str, revision: int) -> tuple[MovedTo, ...]:
    """The studies the images ``revision`` read are in now, each with its newest revision that has a draft: each
    image the study's ``instance_reassigned`` events (radtrace.dicom_listener.reassigned) say went elsewhere is
    followed from study to study (:func:`_now_in`). An image the PACS moved twice (A -> B -> C) leads to C, whose
    draft covers it, not to B's, withdrawn in turn; one filed back here (A -> B -> A) leads to this study's later
    revision that read it again (None while none has)."""
    from radtrace.console.recorded_reading import audit_payload  # here: that module imports this one

    payloads = session.execute(
        sa.select(AuditEventRow.seq, AuditEventRow.payload)
        .where(AuditEventRow.study_uid == study_uid, AuditEventRow.event_type == EventType.INSTANCE_REASSIGNED.value)
        .order_by(AuditEventRow.seq)
    ).all()
    targets: list[str] = []
    for seq, text in payloads:
        payload = audit_payload(text)
        target, sop = payload.get("new_study_uid"), payload.get("sop_instance_uid")
        if isinstance(target, str) and target != study_uid and revision in payload.get("revisions", ()):
            now_in = _now_in(session, target, sop, int(seq)) if isinstance(sop, str) else target
            if now_in not in targets:
                targets.append(now_in)
    read = (RevisionState.REPORTED, RevisionState.DISPATCHED)
    moved = []
    for target in targets:
        newest = _newest_read(session, target, read)
        if target == study_uid and (newest is None or newest <= revision):
            newest = None  # filed back here: no later revision has read it yet
        moved.append(MovedTo(target, newest))
    return tuple(moved)


#: The most moves of one image :func:`_now_in` follows: a bound on the walk whatever the audit rows say.
MAX_MOVES: Final = 32


def _now_in(session: Session, study_uid: str, sop_uid: str, since: int) -> str:
    """The study image ``sop_uid`` is in now, having been re-sent to ``study_uid`` by the event ``since`` (its seq):
    each later ``instance_reassigned`` event of that study naming the image moves it on, to the next study, and so
    on. Each step takes an event later than the one before (seq strictly rising), so a cycle (A -> B -> A -> B)
    ends at the last move, never loops; :data:`MAX_MOVES` bounds the walk besides."""
    from radtrace.console.recorded_reading import audit_payload  # here: that module imports this one

    for _ in range(MAX_MOVES):
        moves = session.execute(
            sa.select(AuditEventRow.seq, AuditEventRow.payload)
            .where(AuditEventRow.study_uid == study_uid, AuditEventRow.seq > since,
                   AuditEventRow.event_type == EventType.INSTANCE_REASSIGNED.value)
            .order_by(AuditEventRow.seq)
        ).all()  # fmt: skip
        onward = next(((int(seq), payload) for seq, payload in ((seq, audit_payload(text)) for seq, text in moves)
                       if payload.get("sop_instance_uid") == sop_uid
                       and isinstance(payload.get("new_study_uid"), str)
                       and payload["new_study_uid"] != study_uid), None)  # fmt: skip
        if onward is None:
            return study_uid
        since, study_uid = onward[0], str(onward[1]["new_study_uid"])
    return study_uid


def _newest_read(session: Session, study_uid: str, read: tuple[RevisionState, ...]) -> int | None:
    return session.scalar(
        sa.select(sa.func.max(Revision.number))
        .join(Study, Study.id == Revision.study_id)
        .where(Study.study_uid == study_uid, Revision.state.in_(read))
    )


#: The events that mark a study's revisions (radtrace.dicom_listener.reassigned, .rejection_note).
_MARKING_EVENTS: Final = (EventType.INSTANCE_REASSIGNED.value, EventType.INSTANCE_REJECTION_NOTED.value)

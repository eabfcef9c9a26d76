"""The decisions behind the QA dashboard's note "N decisions on M drafts withdrawn as wrong-patient": one row each.

The agreement figures leave out the current decisions on drafts withdrawn as wrong-patient
(:func:`~radtrace.console.dashboard_agreement.read_left_out` counts them). This module lists the same decisions, so
QA can see which studies, readers and findings the note stands for and why each draft was withdrawn: the study,
its revision, the accession the decision was recorded with, the finding (or whole draft), the decision, who made
it and when, and why its draft was withdrawn (an image it read re-sent by the PACS under another patient or study;
rejected by an IOCM note titled for patient safety, 113037, or a wrong worklist entry, 113038). Newest first,
keyset-paged on the decision's audit ``seq`` (a decision recorded while QA pages does not shift the pages), and
as CSV whole.

The decisions are found as the count finds them (the withdrawn drafts' study UIDs in short ``IN`` lists on
``ix_qa_decisions_key``): a site has few wrong-patient drafts, so their decisions' ``seq`` numbers are read whole
and only the page's rows are read in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from radtrace.audit.schema import AuditEventRow
from radtrace.console.dashboard_agreement import (
    WHOLE_DRAFT,
    WRONG_PATIENT_REJECTIONS,
    on_withdrawn,
    sync_decisions,
    wrong_patient_drafts,
)
from radtrace.console.dashboard_queries import Window
from radtrace.console.schema import QaDecision
from radtrace.dicom_listener.rejection_note import REJECTION_TITLES
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "LeftOutDecision",
    "LeftOutPage",
    "all_left_out",
    "left_out_days",
    "left_out_page",
]

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
#: Study UIDs (or decisions) per query when the drafts' reasons (or the page's rows) are read.
_BATCH: Final = 500
#: Why a draft was withdrawn as wrong-patient, in QA's words.
RE_SENT: Final = "an image it read was re-sent by the PACS under another patient or study"


@dataclass(frozen=True)
class LeftOutDecision:
    """One current decision left out of the agreement figures: what was decided on which draft, by whom, and why
    its draft counts as another patient's."""

    seq: int
    recorded_at: datetime
    study_uid: str
    revision: int
    #: the accession the decision was recorded with (the study's when the event has none)
    accession: str | None
    #: a finding label, the impression, or :data:`~radtrace.console.dashboard_agreement.WHOLE_DRAFT`
    label: str
    decision: str
    reader: str | None
    because: str


@dataclass(frozen=True)
class LeftOutPage:
    """One page of the list, newest first, and where it lies in the whole: ``total`` decisions on ``drafts`` drafts
    (the dashboard's note), the first row's position (1-based), and the cursors of the pages either side (None:
    none that way)."""

    decisions: tuple[LeftOutDecision, ...]
    total: int
    drafts: int
    first: int
    older_before_seq: int | None
    newer_after_seq: int | None


def _keys(session: Any, window: Window) -> list[tuple[int, str, int]]:
    """(seq, study UID, revision) of every current decision recorded in ``window`` on a draft withdrawn as
    wrong-patient, newest first: the decisions :func:`~radtrace.console.dashboard_agreement.read_left_out` counts,
    found as it finds them."""
    where = [~QaDecision.superseded, window.within(QaDecision.recorded_at, window.start, window.last)]
    columns = (QaDecision.seq, QaDecision.study_uid, QaDecision.revision)
    found = on_withdrawn(session, wrong_patient_drafts(session), where, columns)
    return sorted(((int(seq), str(uid), int(rev)) for seq, uid, rev in found), reverse=True)


def _because(session: Any, drafts: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """Why each draft (study UID, revision) was withdrawn as wrong-patient, in words."""
    found: dict[tuple[str, int], str] = {}
    studies = sorted({uid for uid, _ in drafts})
    for start in range(0, len(studies), _BATCH):
        rows = session.execute(
            sa.select(Study.study_uid, Revision.number, Revision.reassigned_at, Revision.rejected_at,
                      Revision.rejection_code)
            .join(Study, Study.id == Revision.study_id)
            .where(Study.study_uid.in_(studies[start : start + _BATCH]))
        )  # fmt: skip
        for uid, number, reassigned_at, rejected_at, code in rows:
            if (str(uid), int(number)) not in drafts:
                continue
            reasons = [RE_SENT] if reassigned_at is not None else []
            if rejected_at is not None and code in WRONG_PATIENT_REJECTIONS:
                reasons.append(f"an image it read was rejected by the PACS: {REJECTION_TITLES[code]} ({code})")
            found[(str(uid), int(number))] = "; ".join(reasons)
    return found


def _read(session: Any, seqs: list[int]) -> list[LeftOutDecision]:
    """The decisions ``seqs`` in full, in the order given."""
    rows: list[Any] = []
    for start in range(0, len(seqs), _BATCH):
        rows += session.execute(
            sa.select(QaDecision.seq, QaDecision.recorded_at, QaDecision.study_uid, QaDecision.revision,
                      QaDecision.label, QaDecision.decision, AuditEventRow.actor_user,
                      sa.func.coalesce(AuditEventRow.accession, Study.accession))
            .join(AuditEventRow, AuditEventRow.seq == QaDecision.seq)
            .outerjoin(Study, Study.study_uid == QaDecision.study_uid)
            .where(QaDecision.seq.in_(seqs[start : start + _BATCH]))
        ).all()  # fmt: skip
    because = _because(session, {(str(row[2]), int(row[3])) for row in rows})
    by_seq = {
        int(seq): LeftOutDecision(int(seq), at, str(uid), int(rev), accession, label or WHOLE_DRAFT, str(decision),
                                  reader, because.get((str(uid), int(rev)), ""))
        for seq, at, uid, rev, label, decision, reader, accession in rows
    }  # fmt: skip
    return [by_seq[seq] for seq in seqs if seq in by_seq]


def left_out_page(
    store: Store,
    window: Window,
    *,
    before_seq: int | None = None,
    after_seq: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> LeftOutPage:
    """The page of left-out decisions older than ``before_seq`` (or, given ``after_seq``, the page just newer than
    it; neither: the newest), newest first, at most ``limit`` rows."""
    sync_decisions(store)
    with store.session("listing the decisions left out of the agreement figures") as session:
        keys = _keys(session, window)
        seqs = [seq for seq, *_ in keys]
        if after_seq is not None:
            end = sum(1 for seq in seqs if seq > after_seq)  # the rows newer than the cursor end the page
            start = max(0, end - limit)
        else:
            start = sum(1 for seq in seqs if before_seq is not None and seq >= before_seq)
            end = start + limit
        shown = seqs[start:end]
        decisions = tuple(_read(session, shown))
    return LeftOutPage(
        decisions,
        total=len(seqs),
        drafts=len({(uid, rev) for _, uid, rev in keys}),
        first=start + 1,
        older_before_seq=shown[-1] if shown and end < len(seqs) else None,
        newer_after_seq=shown[0] if shown and start > 0 else None,
    )


def all_left_out(store: Store, window: Window) -> list[LeftOutDecision]:
    """Every left-out decision of ``window``, newest first (the CSV)."""
    sync_decisions(store)
    with store.session("exporting the decisions left out of the agreement figures") as session:
        return _read(session, [seq for seq, *_ in _keys(session, window)])


def left_out_days(store: Store, time_zone: str) -> tuple[date, date] | None:
    """The site-local days (``time_zone``) of the first and the last current decision, all time, left out of the
    agreement figures (None: none): the window of the all-time agreement page's link to the list."""
    sync_decisions(store)
    with store.session("dating the decisions left out of the agreement figures") as session:
        seqs = sorted(int(seq) for (seq,) in on_withdrawn(session, wrong_patient_drafts(session),
                                                         [~QaDecision.superseded], (QaDecision.seq,)))  # fmt: skip
        times: list[datetime] = []
        for start in range(0, len(seqs), _BATCH):
            times += session.scalars(
                sa.select(QaDecision.recorded_at).where(QaDecision.seq.in_(seqs[start : start + _BATCH]))
            ).all()
    if not times:
        return None
    zone = ZoneInfo(time_zone)
    return min(times).astimezone(zone).date(), max(times).astimezone(zone).date()

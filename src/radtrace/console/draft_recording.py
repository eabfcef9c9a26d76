"""Recording a whole-draft decision with its assessment SR: checked, built, written pending, recorded with its
outbox rows in one transaction, then kept (or discarded when it was not recorded), then the dispatcher rung.

:func:`record_draft_decision` is the one path from a radiologist's "accept/reject draft" to the audit event, the
kept assessment SR (:mod:`.assessment_files`) and the outbox rows that take it to the PACS (and the RIS).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy.orm import Session

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.console.assessment_files import PendingAssessment, keep_pending
from radtrace.console.decisions import (
    DecisionsChangedError,
    check_draft_decision,
    decide_draft,
    repeated_draft_decision,
)
from radtrace.console.pages import ConsoleState
from radtrace.console.review import DRAFT_REASONS, Expected, StudyReview, load_review
from radtrace.console.worklist import now
from radtrace.errors import ReportError

if TYPE_CHECKING:
    from radtrace.reporting.dispatch.outbox import StagedPayloads

__all__ = ["assessments_root", "record_draft_decision", "ring"]

log = logging.getLogger(__name__)


def assessments_root(settings: Settings) -> Path:
    """Where assessment SRs are kept: ``<data_dir>/assessments``."""
    return settings.data_dir / "assessments"


#: How many times a whole-draft decision is built again when a finding or impression decision was recorded while
#: it was being built (:class:`DecisionsChangedError`); past that, the radiologist is told (409) to reload.
_ATTEMPTS: Final = 3


def record_draft_decision(
    state: ConsoleState, review: StudyReview, actor: Actor, observer: str, verdict: str, reason: str,
    comment: str | None, expected: Expected | None, key: str | None = None,
) -> tuple[int, list[int]]:  # fmt: skip
    """Record a whole-draft decision; returns its audit seq and the outbox rows queued (to ring after). With an
    idempotency ``key`` (:mod:`.decisions`), the same decision sent again with it returns the first one's seq and
    queues nothing: one assessment SR goes out, however many times a client retried.

    Refused (:class:`~radtrace.console.review.DecisionError`) or found repeated before an assessment SR is built.
    The SR is written pending, the decision and its outbox rows are committed, then the SR is kept; when the
    decision is not recorded (a conflict, an error, a repeat found only then) the pending SR is removed, and after
    a crash in between :func:`radtrace.console.assessment_files.settle_pending` settles it. When a finding or the
    impression was decided while the SR was being built (this radiologist in another tab: someone else's is a
    conflict already), the review is read again and the SR built again from it."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _record_once(state, review, actor, observer, verdict, reason, comment, expected, key)
        except DecisionsChangedError:
            fresh = load_review(state.store, review.study_uid, review.revision, review.zone)
            if attempt == _ATTEMPTS or fresh is None:
                raise
            log.info("console: a finding was decided while a whole-draft decision was built; building it again")
            review = fresh
    raise AssertionError("unreachable")  # pragma: no cover


def _record_once(
    state: ConsoleState, review: StudyReview, actor: Actor, observer: str, verdict: str, reason: str,
    comment: str | None, expected: Expected | None, key: str | None,
) -> tuple[int, list[int]]:  # fmt: skip
    text = check_draft_decision(verdict, reason, comment)  # the comment recorded is the one the SR carries
    repeated = repeated_draft_decision(state.store, review, actor, verdict, reason, text, expected, key)
    if repeated is not None:
        return repeated, []
    built = _assessment_sr(state.settings, review, observer, verdict, reason, text)
    queued: list[int] = []
    if built is None:
        seq, _recorded = decide_draft(state.store, review, actor, verdict, reason, text, None, None, expected, key)
        return seq, queued
    from radtrace.reporting.dispatch.outbox import StagedPayloads
    from radtrace.worker.pipeline import payload_dir

    pending, hl7 = built
    staged = StagedPayloads(payload_dir(state.settings))
    try:
        seq, recorded = decide_draft(state.store, review, actor, verdict, reason, text, pending.record(),
                                     _outbox_rows(state, pending, hl7, queued, staged), expected, key)  # fmt: skip
    except BaseException:
        pending.discard()
        staged.discard()
        raise
    if not recorded:  # the same decision, recorded from the same page (or key) by a request that came just before
        pending.discard()
        staged.discard()
        return seq, []
    pending.promote()
    staged.keep()
    return seq, queued


def _assessment_sr(
    settings: Settings, review: StudyReview, observer: str, verdict: str, reason: str, comment: str | None
) -> tuple[PendingAssessment, bytes | None] | None:
    """Build the assessment SR of this decision set and write it pending, and its ORU when
    ``console.assessment_hl7`` and a RIS are set; None (logged) when the AI SR is not kept."""
    import pydicom
    from pydicom.uid import generate_uid

    from radtrace.console.assessment import (
        FindingAssessment,
        ImpressionAssessment,
        build_assessment_oru,
        build_assessment_sr,
    )
    from radtrace.reporting.draft_store import drafts_root, list_drafts

    kept = [d for d in list_drafts(drafts_root(settings), review.study_uid) if d.revision == review.revision]
    if not kept:
        log.warning("console: no kept draft SR for this revision; the decision is recorded without assessment SR")
        return None
    ai_sr = pydicom.dcmread(kept[0].files["sr"])
    findings = [
        FindingAssessment(f.label, f.status, f.decision.verdict, f.decision.status, f.decision.comment)
        for f in review.findings
        if f.decision is not None
    ]
    decided = review.impression_decision
    impression = ImpressionAssessment(decided.verdict, decided.text, decided.comment) if decided else None
    sop_uid = str(generate_uid())
    when, coded = now(), (reason, DRAFT_REASONS[reason])
    sr = build_assessment_sr(
        ai_sr, observer=observer, verdict=verdict, reason=coded, comment=comment, findings=findings,
        sop_instance_uid=sop_uid, when=when, institution=settings.reporting.institution_name, impression=impression,
    )  # fmt: skip
    hl7 = None
    if settings.console.assessment_hl7 and settings.dispatch.ris is not None:
        try:
            hl7 = build_assessment_oru(
                ai_sr, observer=observer, verdict=verdict, reason=coded, comment=comment, findings=findings,
                sop_instance_uid=sop_uid, when=when, settings=settings.reporting, impression=impression,
            ).encode()  # fmt: skip
        except ReportError as exc:  # the SR still goes to the PACS; the RIS misses this one, and the log says so
            log.warning("console: the assessment ORU could not be built (%s); the SR is sent without it", exc.reason)
    return keep_pending(assessments_root(settings), review.study_uid, review.revision, sr), hl7


def _outbox_rows(
    state: ConsoleState, pending: PendingAssessment, hl7: bytes | None, queued: list[int], staged: StagedPayloads
) -> Callable[[Session, int], list[dict[str, object]]]:
    """What queues the assessment SR for each PACS (and its ORU for the RIS) inside the decision's transaction
    (row IDs go to ``queued``, the payload files, pending until the commit, to ``staged``)."""
    from radtrace.reporting.dispatch.outbox import Outbox
    from radtrace.worker.pipeline import payload_dir

    def add(session: Session, revision_id: int) -> list[dict[str, object]]:
        settings = state.settings
        outbox = Outbox(state.store, AuditRecorder(state.store), settings.dispatch, payload_dir(settings))
        rows = outbox.add_assessments(session, revision_id, pending.sop_instance_uid, pending.data, hl7,
                                      staged=staged)  # fmt: skip
        queued.extend(int(str(row["id"])) for row in rows)
        return rows

    return add


def ring(state: ConsoleState, outbox_ids: list[int]) -> None:
    """Ring the dispatcher once per queued row, after the commit; best effort (the reconciler rings again)."""
    ringer = state.ring_dispatch
    if ringer is None:
        from radtrace.worker.doorbell import ring_dispatch

        def ringer(outbox_id: int) -> bool:
            return ring_dispatch(state.settings, outbox_id)

    for outbox_id in outbox_ids:
        ringer(outbox_id)

"""Recording a radiologist's decisions: each finding's, the impression's and the whole draft's, as audit events.

A decision is an append-only ``finding_assessed`` or ``draft_assessed`` event naming the one it supersedes
(:mod:`.review` reads them back). Each is recorded under the decisions' lock, only while the revision still takes
decisions (no later revision has been read) and only when the decision its page showed is still the current one
(:class:`~radtrace.console.review.Expected`): otherwise :class:`~radtrace.console.review.DecisionConflictError`,
and the same decision sent twice from one page is recorded once.

A client that sends no ``seen`` (a script) may send an idempotency key instead (:data:`IDEMPOTENCY_KEY`): the
decision is recorded with it (``idempotency_key`` in its payload), and the same key sent again by the same user on
the same revision records nothing more (a retry after a timeout: the first request may have been recorded) and
answers as the first did; the key sent again with another decision is refused (:class:`DecisionError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.queries import AuditRecord, record_columns
from radtrace.audit.recorder import AUDIT_LOCK_KEY, AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.console.reassigned_flags import MAX_CHECK_REASON, MovedTo, flag_check
from radtrace.console.recorded_reading import audit_payload
from radtrace.console.review import (
    DRAFT_REASONS,
    IMPRESSION,
    MAX_COMMENT,
    MAX_IMPRESSION,
    Decision,
    DecisionConflictError,
    DecisionError,
    DraftDecision,
    Expected,
    FindingDecision,
    StudyReview,
    decisions_in,
    latest_decision,
)
from radtrace.console.schema import ReviewItem
from radtrace.console.worklist import read_where
from radtrace.dicom_listener.rejection_note import REJECTION_TITLES
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Revision, Study

__all__ = [
    "IDEMPOTENCY_KEY",
    "DecisionsChangedError",
    "DraftWithdrawnError",
    "FlagsNotCheckedError",
    "check_draft_decision",
    "check_flags",
    "checked_comment",
    "decide_draft",
    "decide_finding",
    "decide_impression",
    "repeated_draft_decision",
]


#: An idempotency key as a client may send it: 8 to 128 letters, digits and ``._:+/=~-`` (a UUID, a ULID, base64).
IDEMPOTENCY_KEY: Final = re.compile(r"[A-Za-z0-9._:+/=~-]{8,128}")


class FlagsNotCheckedError(DecisionError):
    """Accepting a draft (or a finding, the impression) read from an image the PACS moved or rejected since, before a
    radiologist recorded that they checked it; ``moved_to``: the studies the PACS re-sent its images under."""

    def __init__(self, reason: str, moved_to: tuple[MovedTo, ...] = ()) -> None:
        super().__init__(reason)
        self.moved_to = moved_to

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.reason, self.moved_to)


class DraftWithdrawnError(DecisionConflictError):
    """A decision on a revision whose draft was withdrawn (an image it read was re-sent by the PACS corrected, or
    rejected) after a later revision of the study was read: ``current``, the number of that revision, the study's
    current draft."""

    def __init__(self, reason: str, current: int) -> None:
        super().__init__(reason)
        self.current = current

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.reason, self.current)


class DecisionsChangedError(DecisionConflictError):
    """A finding or impression decision was recorded between loading the review a whole-draft decision was built
    from (its payload, its assessment SR) and recording it: build it again from the decisions as they are now."""


def checked_comment(comment: str | None) -> str | None:
    """A radiologist's comment as it is recorded and written into the assessment SR: stripped, None when nothing is
    left (a comment of only spaces is no comment at all), at most :data:`MAX_COMMENT` characters
    (:class:`DecisionError` beyond)."""
    text = (comment or "").strip()
    if len(text) > MAX_COMMENT:
        raise DecisionError(f"a comment is at most {MAX_COMMENT} characters")
    return text or None


def _lock_decisions(session: Session) -> None:
    """Serialise decisions for the rest of the transaction: SQLite's write lock is held since BEGIN IMMEDIATE;
    on PostgreSQL the audit chain's advisory lock (re-entrant, taken again by the recorder)."""
    if is_postgresql(session.get_bind()):
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})


def _sent_before(
    session: Session, store: Store, review: StudyReview, actor: Actor, kind: EventType, key: str | None,
    sent: Mapping[str, Any],
) -> int | None:  # fmt: skip
    """The seq of the ``kind`` event ``actor`` recorded on this revision with idempotency key ``key``, when its
    payload holds ``sent`` (the same decision sent again); None when the key was not used (or none was sent).
    :class:`DecisionError` when it was, for another decision. Under the decisions' lock (the first request's
    commit is seen, or it is not yet recorded and waits for this one)."""
    if key is None:
        return None
    table = AuditEventRow
    rows = session.execute(
        sa.select(*record_columns(store))
        .where(table.study_uid == review.study_uid, table.event_type == kind.value, table.actor_user == actor.user)
        .order_by(table.seq)
    ).mappings()
    for record in map(AuditRecord.from_row, rows):
        payload = record.payload
        if payload.get("idempotency_key") != key or payload.get("revision") != review.revision:
            continue
        if all(payload.get(name) == value for name, value in sent.items()):
            return record.seq
        raise DecisionError(
            "this idempotency key was sent before with another decision (recorded as audit event "
            f"{record.seq}); a new decision needs a new key"
        )
    return None


def _check_revision(session: Session, review: StudyReview) -> None:
    """:class:`DecisionConflictError` when a later revision of the study has been read (this one's decisions are
    closed); :class:`DraftWithdrawnError` when, besides, this revision's draft was withdrawn."""
    later = session.scalar(
        sa.select(sa.func.max(Revision.number))
        .join(Study)
        .where(Study.study_uid == review.study_uid, Revision.number > review.revision, read_where())
    )
    if later is None:
        return
    why = _withdrawn_because(session, review)
    if why is not None:
        raise DraftWithdrawnError(
            f"the draft of revision {review.revision} was withdrawn: {why}. Revision {later}, read since, is the "
            f"current draft of this study; decisions on revision {review.revision} are closed. Open revision {later} "
            "and decide there.",
            later,
        )
    raise DecisionConflictError(
        f"revision {later} of this study has been read since this page was loaded; decisions on revision "
        f"{review.revision} are closed. Open revision {later} and decide there."
    )


def _withdrawn_because(session: Session, review: StudyReview) -> str | None:
    """Why the draft of ``review``'s revision was withdrawn, in a radiologist's words; None when it was not (no
    image it read was re-sent by the PACS under another patient or study, nor rejected)."""
    row = session.execute(
        sa.select(Revision.reassigned_at, Revision.rejected_at, Revision.rejection_code)
        .join(Study)
        .where(Study.study_uid == review.study_uid, Revision.number == review.revision)
    ).first()
    if row is None:
        return None
    reasons = []
    if row[0] is not None:
        changed = _reassigned_changes(session, review)
        if changed == {"patient"}:
            reasons.append("an image it was read from was re-sent by the PACS under another patient in this study "
                           "(a wrong-patient correction)")  # fmt: skip
        else:
            reasons.append("an image it was read from was re-sent by the PACS under another patient or study")
    if row[1] is not None:
        title = REJECTION_TITLES.get(str(row[2] or ""))
        reasons.append("an image it was read from was rejected by the PACS" + (f" ({title})" if title else ""))
    return "; ".join(reasons) or None


def _reassigned_changes(session: Session, review: StudyReview) -> set[str]:
    """What the PACS changed of the images ``review``'s revision read (``patient``, ``study``), from the study's
    ``instance_reassigned`` events that name the revision."""
    changed: set[str] = set()
    for text in session.scalars(
        sa.select(AuditEventRow.payload).where(
            AuditEventRow.study_uid == review.study_uid,
            AuditEventRow.event_type == EventType.INSTANCE_REASSIGNED.value,
        )
    ):
        payload = audit_payload(text)
        revisions = payload.get("revisions")
        if isinstance(revisions, list) and review.revision in revisions:
            changed.update(str(what) for what in payload.get("changed") or () if isinstance(what, str))
    return changed


def _check_flags_checked(session: Session, review: StudyReview, doing: str) -> None:
    """Refuse (:class:`FlagsNotCheckedError`) ``doing`` on a revision read from an image the PACS moved or rejected
    since, until a radiologist recorded that they checked it (:func:`check_flags`)."""
    check = flag_check(session, review.study_uid, review.revision)
    refusal = check.refusal(doing) if check is not None else None
    if refusal is not None:
        raise FlagsNotCheckedError(refusal, check.moved_to if check is not None else ())


def check_flags(store: Store, review: StudyReview, actor: Actor, reason: str | None, shown: str | None) -> int:
    """Record that ``actor`` checked the flags of ``review``'s revision (an image it was read from was moved to another
    patient/study or rejected by the PACS): who, when and ``reason`` on the revision, and an ``image_flags_checked``
    event; returns its seq. Accepting its draft is allowed from then on. ``shown``: the marks the page showed
    (:attr:`FlagCheck.shown`). :class:`DecisionError` when the revision is not flagged, the reason is empty or too
    long, or the form does not say what it showed; :class:`DecisionConflictError` when the marks changed since the
    page was loaded (a check covers only what the radiologist saw). The decisions' lock is the audit chain's, which
    the listener holds from before it marks until it commits: no mark lands between the comparison and the check."""
    text = (reason or "").replace("\r\n", "\n").strip()
    if not text:
        raise DecisionError("say what you checked: a reason is required")
    if len(text) > MAX_CHECK_REASON:
        raise DecisionError(f"a reason is at most {MAX_CHECK_REASON} characters")
    if not shown:
        raise DecisionError("the form does not say which flags it showed (marks_shown): reload the study page")
    now = utc_now()
    with store.session("recording a check of a flagged draft", immediate=True) as session:
        _lock_decisions(session)
        check = flag_check(session, review.study_uid, review.revision)
        if check is None:
            raise DecisionError(f"revision {review.revision} of this study is not flagged: nothing to check")
        if check.shown != shown:
            raise DecisionConflictError(
                "the PACS moved or rejected an image of this draft since this page was loaded: your check would cover "
                "a flag you have not seen. Reload the study page, read its warnings, then record your check."
            )
        study_id = sa.select(Study.id).where(Study.study_uid == review.study_uid).scalar_subquery()
        session.execute(
            sa.update(Revision)
            .where(Revision.study_id == study_id, Revision.number == review.revision)
            .values(flags_checked_at=now, flags_checked_by=actor.user, flags_checked_reason=text)
        )
        payload: dict[str, Any] = {
            "revision": review.revision,
            "flags": list(check.marks),
            "reason": text,
            "supersedes_check": check.checked_at.isoformat() if check.checked_at else None,
            "sr_sop_instance_uid": review.item.sr_sop_instance_uid if review.item else None,
        }
        event = AuditEvent(EventType.IMAGE_FLAGS_CHECKED, actor, study_uid=review.study_uid,
                           accession=review.accession, payload=payload)  # fmt: skip
        return AuditRecorder(store).record(event, session=session).seq


def _check_current(
    current: Decision | None,
    expected: Expected | None,
    actor: Actor,
    same: Callable[[Decision], bool],
    what: str,
    zone: ZoneInfo,
) -> Decision | None:
    """None when a decision sent from a page that showed ``expected`` may be recorded; the current decision when
    it is this very decision already recorded from that page (a double submit: nothing more to record); raises
    :class:`DecisionConflictError` when someone decided since the page was loaded."""
    if expected is None or (current.seq if current else None) == expected.seq:
        return None
    if current is None:  # the page named a decision this revision does not have (a page of another study?)
        raise DecisionConflictError(f"the decision this page showed for {what} is not recorded; reload the page")
    if current.user == actor.user and current.supersedes == expected.seq and same(current):
        return current
    raise DecisionConflictError(_recorded_since(current, what, zone))


def _recorded_since(decision: Decision, what: str, zone: ZoneInfo, why: str = "") -> str:
    return (
        f"{decision.user or 'someone'} recorded “{decision.wording}” for {what} {decision.when(zone)}, after this "
        f"page was loaded{why}. Nothing was recorded from this page: reload it to see the current decisions, then "
        "decide again."
    )


def _check_findings_seen(
    decisions: Mapping[str, Sequence[Decision]], shown: Expected, actor: Actor, zone: ZoneInfo
) -> None:
    """Refuse a whole-draft decision whose page did not show a finding or impression decision that someone else
    recorded since: the draft's decision (its payload, its assessment SR) carries the findings' decisions."""
    unseen = [(key, d) for key, history in decisions.items() for d in history
              if (shown.seq is None or d.seq > shown.seq) and d.user != actor.user]  # fmt: skip
    if unseen:
        key, newest = max(unseen, key=lambda pair: pair[1].seq)
        what = "the impression" if key == IMPRESSION else key
        raise DecisionConflictError(_recorded_since(newest, what, zone, ", and a whole-draft decision carries it"))


def _verdict(verdict: str, what: str) -> FindingDecision:
    """``verdict`` as a :class:`FindingDecision`; :class:`DecisionError` naming ``what`` (a finding decision, an
    impression decision) and the choices otherwise."""
    try:
        return FindingDecision(verdict)
    except ValueError as exc:
        given = f"not {verdict!r}" if verdict.strip() else "and none was chosen"
        raise DecisionError(f"{what} is accept, reject or modify, {given}") from exc


def decide_finding(
    store: Store, review: StudyReview, actor: Actor, label: str, verdict: str, status: str | None,
    comment: str | None, expected: Expected | None = None, key: str | None = None,
) -> int:  # fmt: skip
    """Record one finding's decision (``finding_assessed``); returns its audit seq.

    With ``expected`` (what the page showed), a decision recorded since is a :class:`DecisionConflictError`, and
    the same decision sent twice from one page is recorded once (its seq is returned). With an idempotency ``key``
    (see the module), the same decision sent again with it is recorded once. A revision superseded by a later read
    one takes no decisions."""
    finding = next((f for f in review.findings if f.label == label), None)
    if finding is None:
        raise DecisionError(f"the draft has no finding {label!r}")
    chosen = _verdict(verdict, "a finding decision")
    new_status: str | None = None
    if chosen is FindingDecision.MODIFY:
        if status not in {"present", "absent", "uncertain"}:
            raise DecisionError("modify needs the corrected status: present, absent or uncertain")
        if status == finding.status:  # m, Enter with the model's status still chosen: no modification at all
            raise DecisionError(f"the model says {status}, as chosen: accept it, or choose another status")
        new_status = status
    text = checked_comment(comment)
    fields = {"model_status": finding.status, "decision": chosen.value, "status": new_status, "comment": text}
    return _record_decision(store, review, actor, label, label, expected,
                            lambda d: (d.verdict, d.status, d.comment) == (chosen.value, new_status, text),
                            fields, labels=(label,) if "," not in label else (), key=key)  # fmt: skip


def _record_decision(
    store: Store, review: StudyReview, actor: Actor, finding: str, what: str, expected: Expected | None,
    same: Callable[[Decision], bool], fields: dict[str, Any], labels: tuple[str, ...] = (),
    key: str | None = None,
) -> int:  # fmt: skip
    """Record a ``finding_assessed`` event for ``finding`` (a finding's label, or :data:`IMPRESSION`) with
    ``fields``, under the decisions' lock, once the revision still takes decisions and none was recorded since the
    page was loaded (``expected``); the same decision sent twice (from one page, or with one idempotency ``key``)
    is recorded once. Returns its seq."""
    with store.session(f"recording a decision on {what}", immediate=True) as session:
        _lock_decisions(session)
        sent = {"finding": finding, **fields}
        if (earlier := _sent_before(session, store, review, actor, EventType.FINDING_ASSESSED, key, sent)) is not None:
            return earlier
        _check_revision(session, review)
        verdict = fields.get("decision")
        if verdict != FindingDecision.REJECT.value:  # accepting or modifying says what the image shows
            _check_flags_checked(session, review, f"{'Modifying' if verdict == 'modify' else 'Accepting'} {what}")
        current = latest_decision(decisions_in(session, store, review.study_uid, review.revision)[0].get(finding, []))
        repeated = _check_current(current, expected, actor, same, what, review.zone)
        if repeated is not None:
            return repeated.seq
        payload: dict[str, Any] = {
            "revision": review.revision,
            "finding": finding,
            **fields,
            "supersedes": current.seq if current else None,
            "sr_sop_instance_uid": review.item.sr_sop_instance_uid if review.item else None,
        }
        if key is not None:
            payload["idempotency_key"] = key
        event = AuditEvent(EventType.FINDING_ASSESSED, actor, study_uid=review.study_uid, accession=review.accession,
                           labels=labels, payload=payload)  # fmt: skip
        return AuditRecorder(store).record(event, session=session).seq


def decide_impression(
    store: Store, review: StudyReview, actor: Actor, verdict: str, text: str | None, comment: str | None,
    expected: Expected | None = None, key: str | None = None,
) -> int:  # fmt: skip
    """Record the impression's decision: accept, reject, or modify with the radiologist's impression (a
    ``finding_assessed`` event naming :data:`IMPRESSION`, so QA counts it beside the findings); returns its seq.
    ``expected`` and ``key`` work as for :func:`decide_finding`."""
    if not (review.impression or "").strip():
        raise DecisionError("the draft has no impression to decide on")
    chosen = _verdict(verdict, "an impression decision")
    corrected: str | None = None
    if chosen is FindingDecision.MODIFY:
        corrected = (text or "").replace("\r\n", "\n").strip()  # a browser sends a textarea's lines as CRLF
        if not corrected:
            raise DecisionError("modify needs the impression as you would write it")
        if len(corrected) > MAX_IMPRESSION:
            raise DecisionError(f"an impression is at most {MAX_IMPRESSION} characters")
        if corrected == (review.impression or "").replace("\r\n", "\n").strip():  # m, Enter with the text as shown
            raise DecisionError("this is the draft's impression unchanged: accept it, or change the text")
    note = checked_comment(comment)
    fields = {"model_impression": review.impression, "decision": chosen.value, "impression": corrected,
              "comment": note}  # fmt: skip
    same = (chosen.value, corrected, note)
    return _record_decision(store, review, actor, IMPRESSION, "the impression", expected,
                            lambda d: (d.verdict, d.text, d.comment) == same, fields, key=key)  # fmt: skip


def check_draft_decision(verdict: str, reason_code: str, comment: str | None) -> str | None:
    """Refuse a whole-draft decision that cannot be recorded, before anything is built for it; returns the checked
    comment (:func:`checked_comment`), the one the audit records and the assessment SR carries."""
    try:
        chosen = DraftDecision(verdict)
    except ValueError as exc:
        raise DecisionError(f"a draft decision is accept or reject, not {verdict!r}") from exc
    if reason_code not in DRAFT_REASONS:
        raise DecisionError(f"unknown reason code {reason_code!r}")
    # A reason of the other verdict's family would be recorded and sent as "rejected: Agrees with my reading".
    if reason_code.startswith(_CONTRADICTING[chosen]):
        doing = "rejecting" if chosen is DraftDecision.REJECT else "accepting"
        raise DecisionError(
            f"{reason_code} “{DRAFT_REASONS[reason_code]}” is not a reason for {doing} the draft: choose one that is"
        )
    return checked_comment(comment)


#: The reason codes that contradict each whole-draft verdict (RT-O1, Other, goes with both).
_CONTRADICTING: Final[Mapping[DraftDecision, str]] = {DraftDecision.ACCEPT: "RT-R", DraftDecision.REJECT: "RT-A"}


def _current_draft(
    session: Session, store: Store, review: StudyReview, actor: Actor, chosen: DraftDecision, reason_code: str,
    text: str | None, expected: Expected | None, key: str | None,
) -> tuple[Decision | None, int | None, dict[str, list[Decision]]]:  # fmt: skip
    """The current draft decision, the seq of the same one when this decision is a repeat (sent with the same
    idempotency ``key``, or see :func:`_check_current`), and the findings' and the impression's decision
    histories."""
    _lock_decisions(session)
    sent = {"decision": chosen.value, "reason_code": reason_code, "comment": text}
    earlier = _sent_before(session, store, review, actor, EventType.DRAFT_ASSESSED, key, sent)
    if earlier is not None:  # recorded already: answered as it was then, whatever came after it
        return None, earlier, {}
    _check_revision(session, review)
    if chosen is DraftDecision.ACCEPT:
        _check_flags_checked(session, review, "Accepting the whole draft")
    findings, drafts = decisions_in(session, store, review.study_uid, review.revision)
    current = latest_decision(drafts)
    repeated = _check_current(current, expected, actor, lambda d: (d.verdict, d.reason, d.comment) ==
                              (chosen.value, reason_code, text), "the whole draft", review.zone)  # fmt: skip
    if repeated is None and expected is not None and expected.findings is not None:
        _check_findings_seen(findings, expected.findings, actor, review.zone)
    return current, repeated.seq if repeated else None, findings


def _check_review_current(findings: Mapping[str, Sequence[Decision]], review: StudyReview) -> None:
    """Raise :class:`DecisionsChangedError` when a finding's or the impression's current decision is not the one
    ``review`` (what a whole-draft decision's payload and assessment SR are built from) was loaded with: one was
    recorded meanwhile (by this radiologist in another tab, or by a client that does not send ``seen``), and the
    decision would be recorded after it while saying it was not made."""
    loaded: dict[str, int | None] = {f.label: f.decision.seq if f.decision else None for f in review.findings}
    loaded[IMPRESSION] = review.impression_decision.seq if review.impression_decision else None
    newer = [latest for key, history in findings.items()
             if key in loaded and (latest := latest_decision(history)) is not None
             and latest.seq != loaded[key]]  # fmt: skip
    if newer:
        key_of = {d.seq: key for key, history in findings.items() for d in history}
        newest = max(newer, key=lambda d: d.seq)
        what = "the impression" if key_of[newest.seq] == IMPRESSION else key_of[newest.seq]
        raise DecisionsChangedError(
            _recorded_since(newest, what, review.zone, ", while this whole-draft decision was being recorded")
        )


def repeated_draft_decision(
    store: Store, review: StudyReview, actor: Actor, verdict: str, reason_code: str, comment: str | None,
    expected: Expected | None, key: str | None = None,
) -> int | None:  # fmt: skip
    """Before anything is built for a whole-draft decision: its seq when it is already recorded from the same page
    (a double submit) or with the same idempotency ``key`` (a retry), None when it may be recorded;
    :class:`DecisionConflictError` when it may not."""
    text = check_draft_decision(verdict, reason_code, comment)
    with store.session("checking a draft decision", immediate=True) as session:
        _current, repeated, _findings = _current_draft(session, store, review, actor, DraftDecision(verdict),
                                                       reason_code, text, expected, key)  # fmt: skip
    return repeated


def decide_draft(
    store: Store,
    review: StudyReview,
    actor: Actor,
    verdict: str,
    reason_code: str,
    comment: str | None,
    assessment_sr: Mapping[str, str] | None = None,
    add_outbox_rows: Callable[[Session, int], list[dict[str, object]]] | None = None,
    expected: Expected | None = None,
    key: str | None = None,
) -> tuple[int, bool]:
    """Record the whole draft's decision (``draft_assessed``, naming its assessment SR when one was kept) and
    mirror it on the worklist; returns its seq, and False when it was a repeat (nothing recorded: ``assessment_sr``
    is not named by any decision and goes).

    ``add_outbox_rows(session, revision_id)`` queues the assessment SR for the PACS in the same transaction
    (:meth:`radtrace.reporting.dispatch.outbox.Outbox.add_assessments`); the event names the rows (``outbox``).
    ``expected`` and ``key`` work as for :func:`decide_finding` (a repeat queues nothing more). The payload and the
    SR are built from ``review``: when a finding or impression decision was recorded since it was loaded,
    :class:`DecisionsChangedError` (nothing recorded; build them again)."""
    text = check_draft_decision(verdict, reason_code, comment)
    chosen = DraftDecision(verdict)
    payload: dict[str, Any] = {
        "revision": review.revision,
        "decision": chosen.value,
        "reason_code": reason_code,
        "reason_scheme": "RADTRACE",
        "reason_meaning": DRAFT_REASONS[reason_code],
        "comment": text,
        "supersedes": review.draft_decision.seq if review.draft_decision else None,
        "sr_sop_instance_uid": review.item.sr_sop_instance_uid if review.item else None,
        "findings": {f.label: (f.decision.verdict if f.decision else None) for f in review.findings},
        "impression": review.impression_decision.verdict if review.impression_decision else None,
        "assessment_sr": dict(assessment_sr) if assessment_sr else None,
    }
    if key is not None:
        payload["idempotency_key"] = key
    now = utc_now()
    with store.session("recording a draft decision", immediate=True) as session:
        current, repeated, findings = _current_draft(session, store, review, actor, chosen, reason_code, text,
                                                     expected, key)  # fmt: skip
        if repeated is not None:
            return repeated, False
        _check_review_current(findings, review)
        payload["supersedes"] = current.seq if current else None
        if add_outbox_rows is not None:
            revision_id = session.scalar(
                sa.select(Revision.id).join(Study).where(Study.study_uid == review.study_uid,
                                                         Revision.number == review.revision)
            )  # fmt: skip
            if revision_id is None:
                raise DecisionError("this revision no longer exists")
            payload["outbox"] = add_outbox_rows(session, revision_id)
        recorded = AuditRecorder(store).record(
            AuditEvent(EventType.DRAFT_ASSESSED, actor, study_uid=review.study_uid, accession=review.accession,
                       payload=payload),
            session=session,
        )  # fmt: skip
        session.execute(
            sa.update(ReviewItem)
            .where(ReviewItem.study_uid == review.study_uid, ReviewItem.revision == review.revision)
            .values(assessed=True, decision=f"{chosen.value}ed", decided_by=actor.user, decided_at=now)
        )
    return recorded.seq, True

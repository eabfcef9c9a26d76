"""What a radiologist reviews and decides: one revision's reading, and the append-only decisions about it.

:func:`load_review` gathers a revision's reading (from ``inference_completed``), the findings with the
sentences of the reasoning that concern each, the kept draft, the revisions before it, and the decisions
recorded so far. Decisions are audit events only (``finding_assessed``, ``draft_assessed``): a changed mind
is a new event naming the one it supersedes, never an edit. The latest event per finding (and for the
impression, a ``finding_assessed`` naming :data:`IMPRESSION`, and for the draft) is the current decision.
``review_items`` mirrors the latest draft decision for the worklist.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.queries import AuditRecord, record_columns
from radtrace.audit.recorder import AUDIT_LOCK_KEY, AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.console.schema import ReviewItem
from radtrace.console.worklist import FLAG_LABELS, image_polarity_notes, reading_for_revision, recorded_objects
from radtrace.errors import PermanentError
from radtrace.reporting.sr import PolarityNote
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Revision, RevisionState, Study

__all__ = [
    "DRAFT_REASONS",
    "IMPRESSION",
    "MAX_IMPRESSION",
    "Decision",
    "DecisionConflictError",
    "DecisionError",
    "DraftDecision",
    "Expected",
    "FindingDecision",
    "FindingReview",
    "StudyReview",
    "check_draft_decision",
    "checked_comment",
    "decide_draft",
    "decide_finding",
    "decide_impression",
    "evidence_sentences",
    "load_review",
    "repeated_draft_decision",
]

MAX_COMMENT: Final = 2000
#: The longest corrected impression a radiologist may write.
MAX_IMPRESSION: Final = 4000
#: The ``finding`` an impression decision names in its ``finding_assessed`` event (and its label in qa_decisions):
#: parenthesised, so no finding label can be it.
IMPRESSION: Final = "(impression)"


class FindingDecision(enum.StrEnum):
    """A radiologist's verdict on one finding."""

    ACCEPT = "accept"
    REJECT = "reject"
    MODIFY = "modify"


class DraftDecision(enum.StrEnum):
    """A radiologist's verdict on the whole draft."""

    ACCEPT = "accept"
    REJECT = "reject"


#: Coded reasons for a whole-draft decision (local codes, scheme RADTRACE; see docs/ui.md).
DRAFT_REASONS: Final[Mapping[str, str]] = {
    "RT-A1": "Agrees with my reading",
    "RT-A2": "Agrees after minor corrections to findings",
    "RT-R1": "Clinically significant finding missed",
    "RT-R2": "Finding reported that is not there",
    "RT-R3": "Image quality or view not suitable for the model",
    "RT-R4": "Wrong patient, study or body part",
    "RT-R5": "Reasoning does not support the conclusion",
    "RT-O1": "Other (see comment)",
}


class DecisionError(PermanentError):
    """A decision that cannot be recorded (unknown finding, bad value, not a radiologist)."""


class DecisionConflictError(DecisionError):
    """A decision made on a page that no longer shows the current state: someone recorded another decision since
    the page was loaded, or a later revision of the study has been read."""


@dataclass(frozen=True)
class Expected:
    """The decision a page showed as current when it was loaded (its seq; None: no decision yet). A decision sent
    from that page is recorded only while it is still the current one (optimistic concurrency)."""

    seq: int | None
    #: for a whole-draft decision, which carries the findings' decisions: the newest finding or impression decision
    #: its page showed (``Expected(None)``: none); None when the form did not say (not checked)
    findings: Expected | None = None


@dataclass(frozen=True)
class Decision:
    """One recorded decision (an audit event)."""

    seq: int
    user: str | None
    #: None when the row's time was edited into something that is not one (SQLite); ``at_unreadable`` holds it
    at: datetime | None
    verdict: str
    status: str | None = None
    reason: str | None = None
    comment: str | None = None
    supersedes: int | None = None
    assessment_sr: str | None = None
    #: the radiologist's impression, for a modified impression
    text: str | None = None
    at_unreadable: str | None = None

    @property
    def when(self) -> str:
        """When it was recorded, as a page says it; a time edited in the database is shown as the audit explorer
        shows it (``radtrace audit verify`` names the row)."""
        if self.at is None:
            return f"at an unreadable time ({self.at_unreadable!r}: the audit row was edited)"
        return f"at {self.at:%Y-%m-%d %H:%M:%S} UTC"

    @property
    def wording(self) -> str:
        """How the page says it: accepted, rejected, changed to absent, modified (an impression)."""
        if self.verdict == "modify":
            return f"changed to {self.status}" if self.status else "modified"
        return f"{self.verdict}ed"


@dataclass(frozen=True)
class FindingReview:
    """One finding as the study page shows it."""

    label: str
    status: str
    confidence: float | None
    evidence: tuple[str, ...]
    boxes: tuple[Mapping[str, Any], ...]
    decision: Decision | None
    history: tuple[Decision, ...] = ()


@dataclass(frozen=True)
class StudyReview:
    """Everything the study page shows about one revision."""

    study_uid: str
    revision: int
    accession: str | None
    item: ReviewItem | None
    reading: Mapping[str, Any]
    identity: Mapping[str, Any]
    findings: tuple[FindingReview, ...]
    reasoning: tuple[tuple[str, str], ...]
    impression: str | None
    flags: tuple[str, ...]
    images: tuple[Mapping[str, Any], ...]
    timings: Mapping[str, Any]
    revisions: tuple[tuple[int, str, datetime | None], ...]
    draft_decision: Decision | None
    draft_history: tuple[Decision, ...] = field(default=())
    impression_decision: Decision | None = None
    impression_history: tuple[Decision, ...] = field(default=())
    #: a later revision of the study that has been read (its draft replaces this one); None when this is the latest
    superseded_by: int | None = None

    @property
    def newest_finding_decision(self) -> int | None:
        """The seq of the newest finding or impression decision recorded on this revision; None when none is."""
        histories = [*(finding.history for finding in self.findings), self.impression_history]
        return max((decision.seq for history in histories for decision in history), default=None)

    @property
    def flag_labels(self) -> tuple[str, ...]:
        """The flags as the page words them."""
        return tuple(FLAG_LABELS.get(flag, flag) for flag in self.flags)

    @property
    def polarity_warnings(self) -> tuple[tuple[str, PolarityNote], ...]:
        """(the image as the page names it, what its inversion step found) for each image the model read whose
        picture looks like a negative or whose header contradicts itself on polarity: the model read the picture
        as the header says, so a negative read as a film makes every finding suspect."""
        warnings = []
        for image in self.images:
            role = image.get("role")
            which = f"{f'{role} image' if role else 'image'} · {image.get('view') or 'view unknown'}"
            which = which[:1].upper() + which[1:]  # as the image's caption: "Frontal · PA"
            warnings += [(which, note) for note in image_polarity_notes(image)]
        return tuple(warnings)


_SENTENCE: Final = re.compile(r"[^.!?\n]+[.!?]?")
_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "Pleural Effusion": ("effusion",),
    "Enlarged Cardiomediastinum": ("cardiomediastin", "mediastin"),
    "Cardiomegaly": ("cardiomegaly", "heart size", "cardiac silhouette", "enlarged heart"),
    "Lung Opacity": ("opacit",),
    "Lung Lesion": ("lesion", "nodule", "mass"),
    "Support Devices": ("device", "tube", "catheter", "line", "pacemaker", "wire"),
    "Pneumothorax": ("pneumothora",),
    "Atelectasis": ("atelecta",),
    "Consolidation": ("consolidat",),
    "Pneumonia": ("pneumonia",),
    "Edema": ("edema", "oedema"),
    "Fracture": ("fracture",),
    "Pleural Other": ("pleural thickening", "pleural plaque"),
}


def evidence_sentences(label: str, reasoning: Sequence[tuple[str, str]], given: str | None) -> tuple[str, ...]:
    """The sentences of the reasoning that concern ``label``: the parser's evidence first, then any naming it."""
    words = (label.lower(), *_ALIASES.get(label, ()))
    found: list[str] = []
    if given and given.strip():
        found.append(given.strip())
    for _section, text in reasoning:
        for match in _SENTENCE.finditer(text):
            sentence = match.group(0).strip()
            if sentence and any(word in sentence.lower() for word in words) and sentence not in found:
                found.append(sentence)
    return tuple(found[:6])


def _decisions(store: Store, study_uid: str, revision: int) -> tuple[dict[str, list[Decision]], list[Decision]]:
    with store.session("reading decisions") as session:
        return _decisions_in(session, store, study_uid, revision)


def _decisions_in(
    session: Session, store: Store, study_uid: str, revision: int
) -> tuple[dict[str, list[Decision]], list[Decision]]:
    # Read as the audit log's own readers do (record_columns, AuditRecord): a row edited in the database (a time
    # that is no time, a payload that is no JSON) is shown as such, not a 500 on the study for as long as it stays.
    table = AuditEventRow
    per_finding: dict[str, list[Decision]] = {}
    draft: list[Decision] = []
    rows = session.execute(
        sa.select(*record_columns(store))
        .where(
            table.study_uid == study_uid,
            table.event_type.in_([EventType.FINDING_ASSESSED.value, EventType.DRAFT_ASSESSED.value]),
        )
        .order_by(table.seq)
    ).mappings()
    for record in map(AuditRecord.from_row, rows):
        payload, kind = record.payload, record.event_type
        if payload.get("revision") != revision:
            continue
        decision = Decision(
            seq=record.seq,
            user=record.actor_user,
            at=record.recorded_at,
            at_unreadable=record.recorded_at_unreadable,
            verdict=str(payload.get("decision")),
            status=payload.get("status"),
            reason=payload.get("reason_code"),
            comment=payload.get("comment"),
            supersedes=payload.get("supersedes"),
            assessment_sr=(payload.get("assessment_sr") or {}).get("sop_instance_uid"),
            text=payload.get("impression") if isinstance(payload.get("impression"), str) else None,
        )
        if kind == EventType.DRAFT_ASSESSED.value:
            draft.append(decision)
        else:
            per_finding.setdefault(str(payload.get("finding")), []).append(decision)
    return per_finding, draft


def _latest(decisions: Sequence[Decision]) -> Decision | None:
    return decisions[-1] if decisions else None


def load_review(store: Store, study_uid: str, revision: int) -> StudyReview | None:
    """The study page's content for one revision, or None when no reading of it is recorded."""
    with store.session("reading a study for review") as session:
        payload = reading_for_revision(session, study_uid, revision)
        if payload is None:
            return None
        item = session.scalar(
            sa.select(ReviewItem).where(ReviewItem.study_uid == study_uid, ReviewItem.revision == revision)
        )
        study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
        revisions = (
            session.execute(
                sa.select(Revision.number, Revision.state, Revision.reported_at)
                .where(Revision.study_id == study.id)
                .order_by(Revision.number)
            ).all()
            if study is not None
            else []
        )
    reading: Mapping[str, Any] = payload["reading"]
    reasoning = tuple((str(step.get("section")), str(step.get("text"))) for step in reading.get("reasoning", []))
    per_finding, draft = _decisions(store, study_uid, revision)
    impression_history = tuple(per_finding.pop(IMPRESSION, ()))
    findings = tuple(
        FindingReview(
            label=str(f["label"]),
            status=str(f["status"]),
            confidence=f.get("confidence"),
            evidence=evidence_sentences(str(f["label"]), reasoning, f.get("evidence")),
            boxes=tuple(f.get("boxes") or ()),
            decision=_latest(per_finding.get(str(f["label"]), [])),
            history=tuple(per_finding.get(str(f["label"]), ())),
        )
        for f in reading.get("findings", [])
    )
    flags = tuple(item.flags.split(",")) if item is not None and item.flags else tuple(reading.get("flags", []))
    read_later = [number for number, state, _at in revisions if number > revision and state in _READ_STATES]
    return StudyReview(
        study_uid=study_uid,
        revision=revision,
        accession=study.accession if study is not None else None,
        item=item,
        reading=reading,
        identity=_recorded_object(reading.get("identity")),
        findings=findings,
        reasoning=reasoning,
        impression=reading.get("impression"),
        flags=flags,
        images=tuple(recorded_objects(reading.get("images"))),
        timings=_recorded_object(reading.get("timings")),
        revisions=tuple((number, str(state), at) for number, state, at in revisions),
        draft_decision=draft[-1] if draft else None,
        draft_history=tuple(draft),
        impression_decision=_latest(impression_history),
        impression_history=impression_history,
        superseded_by=max(read_later) if read_later else None,
    )


def _recorded_object(value: object) -> dict[str, Any]:
    """A reading's object field (identity, timings), or empty where it was edited into something else."""
    return value if isinstance(value, dict) else {}


def checked_comment(comment: str | None) -> str | None:
    """A radiologist's comment as it is recorded and written into the assessment SR: stripped, None when nothing is
    left (a comment of only spaces is no comment at all), at most :data:`MAX_COMMENT` characters
    (:class:`DecisionError` beyond)."""
    text = (comment or "").strip()
    if len(text) > MAX_COMMENT:
        raise DecisionError(f"a comment is at most {MAX_COMMENT} characters")
    return text or None


_READ_STATES: Final = (RevisionState.REPORTED, RevisionState.DISPATCHED)


def _lock_decisions(session: Session) -> None:
    """Serialise decisions for the rest of the transaction: SQLite's write lock is held since BEGIN IMMEDIATE;
    on PostgreSQL the audit chain's advisory lock (re-entrant, taken again by the recorder)."""
    if is_postgresql(session.get_bind()):
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})


def _check_revision(session: Session, review: StudyReview) -> None:
    later = session.scalar(
        sa.select(sa.func.max(Revision.number))
        .join(Study)
        .where(Study.study_uid == review.study_uid, Revision.number > review.revision,
               Revision.state.in_(_READ_STATES))
    )  # fmt: skip
    if later is not None:
        raise DecisionConflictError(
            f"revision {later} of this study has been read since this page was loaded; decisions on revision "
            f"{review.revision} are closed. Open revision {later} and decide there."
        )


def _check_current(
    current: Decision | None, expected: Expected | None, actor: Actor, same: Callable[[Decision], bool], what: str
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
    raise DecisionConflictError(_recorded_since(current, what))


def _recorded_since(decision: Decision, what: str, why: str = "") -> str:
    return (
        f"{decision.user or 'someone'} recorded “{decision.wording}” for {what} {decision.when}, after this page was "
        f"loaded{why}. Nothing was recorded from this page: reload it to see the current decisions, then decide again."
    )


def _check_findings_seen(decisions: Mapping[str, Sequence[Decision]], shown: Expected, actor: Actor) -> None:
    """Refuse a whole-draft decision whose page did not show a finding or impression decision that someone else
    recorded since: the draft's decision (its payload, its assessment SR) carries the findings' decisions."""
    unseen = [(key, d) for key, history in decisions.items() for d in history
              if (shown.seq is None or d.seq > shown.seq) and d.user != actor.user]  # fmt: skip
    if unseen:
        key, newest = max(unseen, key=lambda pair: pair[1].seq)
        what = "the impression" if key == IMPRESSION else key
        raise DecisionConflictError(_recorded_since(newest, what, ", and a whole-draft decision carries it"))


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
    comment: str | None, expected: Expected | None = None,
) -> int:  # fmt: skip
    """Record one finding's decision (``finding_assessed``); returns its audit seq.

    With ``expected`` (what the page showed), a decision recorded since is a :class:`DecisionConflictError`, and
    the same decision sent twice from one page is recorded once (its seq is returned). A revision superseded by a
    later read one takes no decisions."""
    finding = next((f for f in review.findings if f.label == label), None)
    if finding is None:
        raise DecisionError(f"the draft has no finding {label!r}")
    chosen = _verdict(verdict, "a finding decision")
    new_status: str | None = None
    if chosen is FindingDecision.MODIFY:
        if status not in {"present", "absent", "uncertain"}:
            raise DecisionError("modify needs the corrected status: present, absent or uncertain")
        new_status = status
    text = checked_comment(comment)
    fields = {"model_status": finding.status, "decision": chosen.value, "status": new_status, "comment": text}
    return _record_decision(store, review, actor, label, label, expected,
                            lambda d: (d.verdict, d.status, d.comment) == (chosen.value, new_status, text),
                            fields, labels=(label,) if "," not in label else ())  # fmt: skip


def _record_decision(
    store: Store, review: StudyReview, actor: Actor, key: str, what: str, expected: Expected | None,
    same: Callable[[Decision], bool], fields: dict[str, Any], labels: tuple[str, ...] = (),
) -> int:  # fmt: skip
    """Record a ``finding_assessed`` event for ``key`` (a finding's label, or :data:`IMPRESSION`) with ``fields``,
    under the decisions' lock, once the revision still takes decisions and none was recorded since the page was
    loaded (``expected``); the same decision sent twice is recorded once. Returns its seq."""
    with store.session(f"recording a decision on {what}", immediate=True) as session:
        _lock_decisions(session)
        _check_revision(session, review)
        current = _latest(_decisions_in(session, store, review.study_uid, review.revision)[0].get(key, []))
        repeated = _check_current(current, expected, actor, same, what)
        if repeated is not None:
            return repeated.seq
        payload: dict[str, Any] = {
            "revision": review.revision,
            "finding": key,
            **fields,
            "supersedes": current.seq if current else None,
            "sr_sop_instance_uid": review.item.sr_sop_instance_uid if review.item else None,
        }
        event = AuditEvent(EventType.FINDING_ASSESSED, actor, study_uid=review.study_uid, accession=review.accession,
                           labels=labels, payload=payload)  # fmt: skip
        return AuditRecorder(store).record(event, session=session).seq


def decide_impression(
    store: Store, review: StudyReview, actor: Actor, verdict: str, text: str | None, comment: str | None,
    expected: Expected | None = None,
) -> int:  # fmt: skip
    """Record the impression's decision: accept, reject, or modify with the radiologist's impression (a
    ``finding_assessed`` event naming :data:`IMPRESSION`, so QA counts it beside the findings); returns its seq.
    ``expected`` works as for :func:`decide_finding`."""
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
                            lambda d: (d.verdict, d.text, d.comment) == same, fields)  # fmt: skip


def check_draft_decision(verdict: str, reason_code: str, comment: str | None) -> str | None:
    """Refuse a whole-draft decision that cannot be recorded, before anything is built for it; returns the checked
    comment (:func:`checked_comment`), the one the audit records and the assessment SR carries."""
    try:
        DraftDecision(verdict)
    except ValueError as exc:
        raise DecisionError(f"a draft decision is accept or reject, not {verdict!r}") from exc
    if reason_code not in DRAFT_REASONS:
        raise DecisionError(f"unknown reason code {reason_code!r}")
    return checked_comment(comment)


def _current_draft(
    session: Session, store: Store, review: StudyReview, actor: Actor, chosen: DraftDecision, reason_code: str,
    text: str | None, expected: Expected | None,
) -> tuple[Decision | None, Decision | None]:  # fmt: skip
    """The current draft decision, and the same one when this decision is a repeat (see :func:`_check_current`)."""
    _lock_decisions(session)
    _check_revision(session, review)
    findings, drafts = _decisions_in(session, store, review.study_uid, review.revision)
    current = _latest(drafts)
    repeated = _check_current(current, expected, actor, lambda d: (d.verdict, d.reason, d.comment) ==
                              (chosen.value, reason_code, text), "the whole draft")  # fmt: skip
    if repeated is None and expected is not None and expected.findings is not None:
        _check_findings_seen(findings, expected.findings, actor)
    return current, repeated


def repeated_draft_decision(
    store: Store, review: StudyReview, actor: Actor, verdict: str, reason_code: str, comment: str | None,
    expected: Expected | None,
) -> int | None:  # fmt: skip
    """Before anything is built for a whole-draft decision: its seq when it is already recorded from the same page
    (a double submit), None when it may be recorded; :class:`DecisionConflictError` when it may not."""
    text = check_draft_decision(verdict, reason_code, comment)
    with store.session("checking a draft decision", immediate=True) as session:
        _current, repeated = _current_draft(session, store, review, actor, DraftDecision(verdict), reason_code, text,
                                            expected)  # fmt: skip
    return repeated.seq if repeated else None


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
) -> int:
    """Record the whole draft's decision (``draft_assessed``, naming its assessment SR when one was kept) and
    mirror it on the worklist; returns its seq.

    ``add_outbox_rows(session, revision_id)`` queues the assessment SR for the PACS in the same transaction
    (:meth:`radtrace.reporting.dispatch.outbox.Outbox.add_assessments`); the event names the rows (``outbox``).
    ``expected`` works as for :func:`decide_finding` (a repeat queues nothing more)."""
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
    now = utc_now()
    with store.session("recording a draft decision", immediate=True) as session:
        current, repeated = _current_draft(session, store, review, actor, chosen, reason_code, text, expected)
        if repeated is not None:
            return repeated.seq
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
    return recorded.seq

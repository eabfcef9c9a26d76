"""What a radiologist reviews and decides: one revision's reading, and the append-only decisions about it.

:func:`load_review` gathers a revision's reading (from ``inference_completed``), the findings with the
sentences of the reasoning that concern each, the kept draft, the revisions before it, and the decisions
recorded so far. Decisions are audit events only (``finding_assessed``, ``draft_assessed``): a changed mind
is a new event naming the one it supersedes, never an edit. The latest event per finding (and for the
impression, a ``finding_assessed`` naming :data:`IMPRESSION`, and for the draft) is the current decision.
``review_items`` mirrors the latest draft decision for the worklist. :mod:`.decisions` records them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import EventType
from radtrace.audit.queries import AuditRecord, record_columns
from radtrace.audit.schema import AuditEventRow
from radtrace.console.schema import ReviewItem
from radtrace.console.times import UTC_ZONE, shown_time
from radtrace.console.worklist import (
    FLAG_LABELS,
    READ_STATES,
    image_polarity_notes,
    reading_for_revision,
    recorded_inputs,
    recorded_objects,
    was_read,
)
from radtrace.errors import PermanentError
from radtrace.model.evidence import SENTENCE, evidence_sentences
from radtrace.model.image_marks import ImageMark, image_marks
from radtrace.reporting.sr import PolarityNote
from radtrace.store.engine import Store
from radtrace.store.instances import revision_instances
from radtrace.store.models import Instance, Revision, Study
from radtrace.worker.read_instances import withdrawn_instances

__all__ = [
    "DRAFT_REASONS",
    "IMPRESSION",
    "MAX_IMPRESSION",
    "READ_STATES",
    "SENTENCE",
    "Decision",
    "DecisionConflictError",
    "DecisionError",
    "DraftDecision",
    "EarlierDecisions",
    "Expected",
    "FindingDecision",
    "FindingReview",
    "StudyReview",
    "decisions_by_revision",
    "decisions_in",
    "latest_decision",
    "load_review",
    "was_read",
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
    #: what the model said of the finding when it was decided (its ``model_status``); None for the impression
    model_status: str | None = None

    def when(self, zone: ZoneInfo = UTC_ZONE) -> str:
        """When it was recorded, as a page says it: in the site's zone (``qa.time_zone``), named (UTC, EST, EDT),
        as the audit explorer writes it; a time edited in the database is shown as the audit explorer shows it
        (``radtrace audit verify`` names the row)."""
        if self.at is None:
            return f"at an unreadable time ({self.at_unreadable!r}: the audit row was edited)"
        return f"at {shown_time(self.at, zone, named=True)}"

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
class EarlierDecisions:
    """The current decisions recorded on an earlier revision of the study: they were made on that revision's draft
    and images, before newer (corrected, added) images were read as a later revision. A later revision's page names
    them; it never carries them over."""

    revision: int
    #: (the finding's label, or :data:`IMPRESSION`; its current decision), in the order they were first decided
    findings: tuple[tuple[str, Decision], ...]
    draft: Decision | None

    def finding(self, label: str) -> Decision | None:
        """The current decision on ``label`` (a finding, or :data:`IMPRESSION`) on that revision, or None."""
        return next((decision for key, decision in self.findings if key == label), None)


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
    #: the site's zone (``qa.time_zone``): the page's times (revisions reported, decisions) are written in it
    zone: ZoneInfo = UTC_ZONE
    #: how many images (SOP instances) the study had when this revision was read; None when unknown
    study_images: int | None = None
    #: the decisions recorded on earlier revisions of the study, newest revision first (those with any)
    earlier_decisions: tuple[EarlierDecisions, ...] = ()

    def decided_earlier(self, label: str) -> tuple[tuple[int, Decision], ...]:
        """(revision, current decision there) for ``label`` (a finding, or :data:`IMPRESSION`) on each earlier
        revision that decided it, newest first: work done on the earlier images, shown beside this draft's."""
        found = ((earlier.revision, earlier.finding(label)) for earlier in self.earlier_decisions)
        return tuple((number, decision) for number, decision in found if decision is not None)

    @property
    def images_not_read(self) -> int:
        """How many of the study's images (as of this revision) the model did not read: this page does not show
        them (another view, a duplicate, a series the profile leaves out)."""
        return max(0, (self.study_images or 0) - len(self.images))

    def when(self, decision: Decision) -> str:
        """When ``decision`` was recorded, as this page writes it (the site's zone, named)."""
        return decision.when(self.zone)

    @property
    def default_reason(self) -> str:
        """The coded reason the whole-draft form starts on; it never contradicts what was recorded. The current
        whole-draft decision's reason while no finding or impression was decided after it; otherwise RT-A2
        ("Agrees after minor corrections to findings") once a finding or the impression was modified or rejected,
        and RT-A1 ("Agrees with my reading") only while none was."""
        recorded = self.draft_decision.reason if self.draft_decision is not None else None
        if recorded is not None and recorded in DRAFT_REASONS and not self.decided_since_draft:
            return recorded
        current = [finding.decision for finding in self.findings] + [self.impression_decision]
        corrected = any(d is not None and d.verdict != FindingDecision.ACCEPT.value for d in current)
        return "RT-A2" if corrected else "RT-A1"

    def shown(self, at: datetime) -> str:
        """``at`` as this page writes it: in the site's zone, named (UTC, EST, EDT), as the audit explorer does."""
        return shown_time(at, self.zone, named=True)

    @property
    def newest_finding_decision(self) -> int | None:
        """The seq of the newest finding or impression decision recorded on this revision; None when none is."""
        histories = [*(finding.history for finding in self.findings), self.impression_history]
        return max((decision.seq for history in histories for decision in history), default=None)

    @property
    def later_unread(self) -> tuple[tuple[int, str], ...]:
        """(number, state) of each later revision of the study that has not been read, oldest first: images
        received after this reading (still being received, queued, being read) or not read at all (failed,
        skipped), which this draft does not cover. Empty once a later one is read (:attr:`superseded_by`)."""
        if self.superseded_by is not None:
            return ()
        return tuple((number, state) for number, state, at in self.revisions if number > self.revision
                     and not was_read(state, at))  # fmt: skip

    @property
    def decided_since_draft(self) -> tuple[tuple[str, Decision], ...]:
        """(the finding's label, or "the impression"; its current decision) for each one decided after the current
        whole-draft decision: that decision, its payload and its assessment SR (sent to the PACS, and as an ORU to
        the RIS) carry the decisions current when it was made, not these. Empty without a whole-draft decision."""
        if self.draft_decision is None:
            return ()
        current = [(finding.label, finding.decision) for finding in self.findings]
        current.append(("the impression", self.impression_decision))
        after = self.draft_decision.seq
        return tuple((what, decision) for what, decision in current if decision is not None and decision.seq > after)

    @property
    def flag_labels(self) -> tuple[str, ...]:
        """The flags as the page words them."""
        return tuple(FLAG_LABELS.get(flag, flag) for flag in self.flags)

    @staticmethod
    def image_marks(image: Mapping[str, Any]) -> tuple[ImageMark, ...]:
        """What one image's recorded preparation says the drafts flag on its line: a lossy image, text burned into
        the pixels, a window not applied (:func:`radtrace.model.image_marks.image_marks`). Read from the reading,
        so a worklist row added before a flag existed does not hide it here."""
        steps = image.get("preparation")
        return image_marks(steps) if isinstance(steps, list) else ()

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


def decisions_in(
    session: Session, store: Store, study_uid: str, revision: int
) -> tuple[dict[str, list[Decision]], list[Decision]]:
    """The decisions recorded on one revision, oldest first: per finding label (and :data:`IMPRESSION`), and the
    whole draft's."""
    return decisions_by_revision(session, store, study_uid).get(revision, ({}, []))


def decisions_by_revision(
    session: Session, store: Store, study_uid: str
) -> dict[int, tuple[dict[str, list[Decision]], list[Decision]]]:
    """The decisions recorded on each revision of a study, oldest first: per finding label (and
    :data:`IMPRESSION`), and the whole draft's, as :func:`decisions_in` gives them for one."""
    # Read as the audit log's own readers do (record_columns, AuditRecord): a row edited in the database (a time
    # that is no time, a payload that is no JSON) is shown as such, not a 500 on the study for as long as it stays.
    table = AuditEventRow
    found: dict[int, tuple[dict[str, list[Decision]], list[Decision]]] = {}
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
        number = payload.get("revision")
        if not isinstance(number, int) or isinstance(number, bool):
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
            model_status=payload.get("model_status") if isinstance(payload.get("model_status"), str) else None,
        )
        per_finding, draft = found.setdefault(number, ({}, []))
        if kind == EventType.DRAFT_ASSESSED.value:
            draft.append(decision)
        else:
            per_finding.setdefault(str(payload.get("finding")), []).append(decision)
    return found


def _earlier(
    found: Mapping[int, tuple[dict[str, list[Decision]], list[Decision]]], revision: int
) -> tuple[EarlierDecisions, ...]:
    """The current decisions of each revision before ``revision`` that has any, newest first."""
    return tuple(
        EarlierDecisions(
            revision=number,
            findings=tuple((key, history[-1]) for key, history in per_finding.items() if history),
            draft=latest_decision(draft),
        )
        for number, (per_finding, draft) in sorted(found.items(), reverse=True)
        if number < revision and (per_finding or draft)
    )


#: Modalities of documents a study may hold (an echoed SR, a rejection note, a presentation state): never an image a
#: revision reads, so never one the page tells a radiologist to read in the PACS.
DOCUMENT_MODALITIES: Final = ("SR", "KO", "PR")


def latest_decision(decisions: Sequence[Decision]) -> Decision | None:
    """The current decision of a history (the last one), or None."""
    return decisions[-1] if decisions else None


def load_review(store: Store, study_uid: str, revision: int, zone: ZoneInfo = UTC_ZONE) -> StudyReview | None:
    """The study page's content for one revision, or None when no reading of it is recorded; its times are written
    in ``zone`` (the site's ``qa.time_zone``)."""
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
        study_images = _study_images(session, study.id, payload, revision) if study is not None else None
        by_revision = decisions_by_revision(session, store, study_uid)
    reading: Mapping[str, Any] = payload["reading"]
    reasoning = tuple((str(step.get("section")), str(step.get("text"))) for step in reading.get("reasoning", []))
    per_finding, draft = by_revision.get(revision, ({}, []))
    per_finding = dict(per_finding)  # the impression's history is taken out of this copy
    impression_history = tuple(per_finding.pop(IMPRESSION, ()))
    findings = tuple(
        FindingReview(
            label=str(f["label"]),
            status=str(f["status"]),
            confidence=f.get("confidence"),
            evidence=evidence_sentences(str(f["label"]), reasoning, f.get("evidence"), str(f["status"])),
            boxes=tuple(f.get("boxes") or ()),
            decision=latest_decision(per_finding.get(str(f["label"]), [])),
            history=tuple(per_finding.get(str(f["label"]), ())),
        )
        for f in reading.get("findings", [])
    )
    flags = tuple(item.flags.split(",")) if item is not None and item.flags else tuple(reading.get("flags", []))
    read_later = [number for number, state, at in revisions if number > revision and was_read(str(state), at)]
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
        impression_decision=latest_decision(impression_history),
        impression_history=impression_history,
        superseded_by=max(read_later) if read_later else None,
        zone=zone,
        study_images=study_images,
        earlier_decisions=_earlier(by_revision, revision),
    )


def _study_images(session: Session, study_id: int, payload: Mapping[str, Any], revision: int) -> int:
    """How many of the study's images this revision had to read: those its reading read (its ``inference_completed``
    inputs) and those of the study up to it that are still its own (none the PACS moved to another study or
    rejected, which the worker leaves out: :mod:`radtrace.worker.read_instances`), documents left out (an SR, a
    rejection note: no revision reads one). The page tells the radiologist
    to read the others in the PACS; never one now filed under another patient."""
    withdrawn = withdrawn_instances(session, study_id)
    documents = set(
        session.scalars(
            sa.select(Instance.sop_instance_uid).where(
                Instance.study_id == study_id, Instance.modality.in_(DOCUMENT_MODALITIES)
            )
        )
    )
    held = [
        sop for sop in revision_instances(session, study_id, revision) if sop not in withdrawn and sop not in documents
    ]
    return len(set(held) | set(recorded_inputs(payload)))


def _recorded_object(value: object) -> dict[str, Any]:
    """A reading's object field (identity, timings), or empty where it was edited into something else."""
    return value if isinstance(value, dict) else {}

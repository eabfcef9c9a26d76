"""Agreement between the model and the radiologists, per label, from the assessment events.

The review console records one ``finding_assessed`` audit event per decision on one finding of one draft, and
on its impression (``"finding": "(impression)"``, :data:`radtrace.console.review.IMPRESSION`: counted as a label
of its own, so QA sees how often the impression is agreed).
This module reads the event's *payload* (plain JSON values) and nothing else; the shape it consumes::

    {
        "revision": 1,                    # the study revision the draft belongs to (int)
        "finding": "Pleural Effusion",    # the model's label (str)
        "model_status": "present",        # what the model said: present | absent | uncertain
        "decision": "accept",             # accept | reject | modify
        "status": null,                   # with modify: the radiologist's status (present | absent | uncertain)
        "supersedes": null,               # seq of the decision this one replaces, or null
        ...                               # anything else is ignored
    }

together with the event's ``seq``, ``study_uid`` and ``recorded_at`` (its columns). A decision that a later
one supersedes (by ``supersedes``, or simply a later decision on the same study, revision and finding)
does not count: each finding of each draft counts once, as last decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from radtrace.qa.intervals import Z_95, Proportion

__all__ = ["DECISIONS", "Assessment", "LabelAgreement", "agreement_by_label", "assessment_from_event"]

DECISIONS: Final = ("accept", "reject", "modify")


@dataclass(frozen=True)
class Assessment:
    """One radiologist's decision on one finding of one draft."""

    seq: int
    study_uid: str
    revision: int
    label: str
    decision: str
    recorded_at: datetime | None = None
    model_status: str | None = None
    corrected_status: str | None = None
    supersedes: int | None = None


def assessment_from_event(
    seq: int, study_uid: str, payload: Mapping[str, Any], recorded_at: datetime | None = None
) -> Assessment | None:
    """The assessment a ``finding_assessed`` event records, or None when its payload lacks the shape above."""
    decision = payload.get("decision")
    label = payload.get("finding")
    revision = payload.get("revision")
    if decision not in DECISIONS or not isinstance(label, str) or not label or not isinstance(revision, int):
        return None
    supersedes = payload.get("supersedes")
    return Assessment(
        seq=seq,
        study_uid=study_uid,
        revision=revision,
        label=label,
        decision=str(decision),
        recorded_at=recorded_at,
        model_status=payload.get("model_status") if isinstance(payload.get("model_status"), str) else None,
        corrected_status=payload.get("status") if isinstance(payload.get("status"), str) else None,
        supersedes=supersedes if isinstance(supersedes, int) else None,
    )


@dataclass(frozen=True)
class LabelAgreement:
    """How the radiologists decided on one label's findings: counts, each share with its Wilson interval,
    and the studies behind each decision (for the "one click away" list)."""

    label: str
    total: int
    accepted: Proportion
    rejected: Proportion
    modified: Proportion
    studies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _current(assessments: Iterable[Assessment]) -> list[Assessment]:
    """The last decision on each (study, revision, label); superseded ones dropped."""
    chosen: dict[tuple[str, int, str], Assessment] = {}
    superseded = set()
    for assessment in sorted(assessments, key=lambda a: a.seq):
        if assessment.supersedes is not None:
            superseded.add(assessment.supersedes)
        chosen[(assessment.study_uid, assessment.revision, assessment.label)] = assessment
    return [a for a in chosen.values() if a.seq not in superseded]


def agreement_by_label(assessments: Iterable[Assessment], z: float = Z_95) -> dict[str, LabelAgreement]:
    """Per label (sorted), the share of its findings accepted, rejected and modified, each with its Wilson
    interval at ``z``, counting each finding of each draft once as last decided."""
    by_label: dict[str, list[Assessment]] = {}
    for assessment in _current(assessments):
        by_label.setdefault(assessment.label, []).append(assessment)
    result: dict[str, LabelAgreement] = {}
    for label in sorted(by_label):
        decided = by_label[label]
        counts = {decision: sum(1 for a in decided if a.decision == decision) for decision in DECISIONS}
        studies = {
            decision: tuple(sorted({a.study_uid for a in decided if a.decision == decision})) for decision in DECISIONS
        }
        result[label] = LabelAgreement(
            label=label,
            total=len(decided),
            accepted=Proportion.of(counts["accept"], len(decided), z),
            rejected=Proportion.of(counts["reject"], len(decided), z),
            modified=Proportion.of(counts["modify"], len(decided), z),
            studies=studies,
        )
    return result

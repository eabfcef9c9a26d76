"""Which studies go to the model: chest radiographs (CR/DX) only; the rest are ``skipped(reason)``.

A pure rule over what the listener recorded for each instance (SOP class, modality, Body Part
Examined) and the study's description. A PACS routes by rules of its own, and those misroute: a knee
DX, a CT of the chest, a secondary capture. Those are stored (nothing received is thrown away) and
their revision is skipped with a reason a person can read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from radtrace.dicom_listener.contexts import RADIOGRAPH_SOP_CLASSES

__all__ = ["Decision", "FilterRule", "InstanceFacts", "decide"]


@dataclass(frozen=True)
class InstanceFacts:
    """What the rule looks at for one instance."""

    sop_class_uid: str
    modality: str | None
    body_part: str | None


@dataclass(frozen=True)
class FilterRule:
    """What counts as a chest radiograph. The defaults follow PS3.16 CID 4031 (CHEST) and common descriptions."""

    modalities: frozenset[str] = frozenset({"CR", "DX"})
    sop_classes: frozenset[str] = RADIOGRAPH_SOP_CLASSES
    chest_body_parts: frozenset[str] = frozenset({"CHEST", "THORAX", "LUNG", "RIBS"})
    # Used only when no instance records a body part: words in the Study Description.
    chest_description: re.Pattern[str] = field(
        default_factory=lambda: re.compile(r"\b(CHEST|THORAX|THORACIC|CXR|LUNGS?|TORAX)\b", re.IGNORECASE)
    )


@dataclass(frozen=True)
class Decision:
    """Queue the revision for the model, or skip it with a reason."""

    queue: bool
    reason: str | None = None


def decide(
    instances: Sequence[InstanceFacts], study_description: str | None, rule: FilterRule | None = None
) -> Decision:
    """Whether a study (one revision's instances) goes to the model.

    It does when at least one instance is a CR/DX radiograph IOD with modality CR or DX and is of
    the chest: Body Part Examined names the chest, or, when no radiograph records a body part, the
    Study Description does.
    """
    rule = rule or FilterRule()
    if not instances:
        return Decision(False, "no instances")
    radiographs = [
        i for i in instances if i.sop_class_uid in rule.sop_classes and (i.modality or "").upper() in rule.modalities
    ]
    if not radiographs:
        modalities = sorted({(i.modality or "unknown").upper() for i in instances})
        return Decision(False, f"no CR/DX radiograph (modality {', '.join(modalities)})")
    parts = {(i.body_part or "").strip().upper() for i in radiographs} - {""}
    if parts & rule.chest_body_parts:
        return Decision(True)
    if parts:
        return Decision(False, f"not a chest radiograph (body part {', '.join(sorted(parts))})")
    if study_description and rule.chest_description.search(study_description):
        return Decision(True)
    return Decision(False, "not a chest radiograph (no body part, description does not name the chest)")

"""Which studies go to the model: chest radiographs (CR/DX) only; the rest are ``skipped(reason)``. And which
of those are read first: STAT ones.

A pure rule over what the listener recorded for each instance (SOP class, modality, Body Part
Examined, Requested Procedure Priority, calling AE) and the study's description, built from
``listener.routing``. A PACS routes by rules of its own, and those misroute: a knee DX, a CT of the
chest, a screenshot. Those are stored (nothing received is thrown away) and their revision is
skipped with a reason a person can read.

A CR or DX image sent without Modality (Type 1, yet old digitisers and gateways leave it out) has its IOD's modality:
the SOP class says what it is (PS3.3 A.2 and A.26 fix Modality to CR and DX). A Secondary Capture image names no
modality of its own and needs the attribute.

A Secondary Capture image whose Modality is CR or DX is a radiograph that was digitised or converted
(archives hold many such chest films, e.g. the NIH ChestX-ray14 set): it counts as a radiograph here, and the
worker flags its reading ``secondary-capture``. A Secondary Capture of any other modality is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)

from radtrace.config import RoutingSettings
from radtrace.dicom_listener.attributes import SECONDARY_CAPTURE_SOP_CLASSES, names_body_part
from radtrace.dicom_listener.contexts import RADIOGRAPH_SOP_CLASSES
from radtrace.store.models import Priority

__all__ = ["Decision", "FilterRule", "InstanceFacts", "decide", "never_read", "priority_of"]


#: The modality each radiograph IOD fixes (PS3.3 A.2, A.26): the one such an instance has when it was sent without it.
IOD_MODALITY: Final = {
    str(ComputedRadiographyImageStorage): "CR",
    str(DigitalXRayImageStorageForPresentation): "DX",
    str(DigitalXRayImageStorageForProcessing): "DX",
}


@dataclass(frozen=True)
class InstanceFacts:
    """What the rule looks at for one instance."""

    sop_class_uid: str
    modality: str | None
    body_part: str | None
    requested_priority: str | None = None
    calling_ae: str | None = None

    @property
    def modality_or_iods(self) -> str:
        """Modality as sent (upper case), else the one the SOP class fixes, else ``""``."""
        return (self.modality or "").strip().upper() or IOD_MODALITY.get(self.sop_class_uid, "")


def _upper(values: Sequence[str]) -> frozenset[str]:
    return frozenset(value.strip().upper() for value in values)


@dataclass(frozen=True)
class FilterRule:
    """What counts as a chest radiograph, and what makes it STAT: ``listener.routing`` made ready to match.

    Its defaults are those of :class:`radtrace.config.RoutingSettings` (PS3.16 CID 4031 CHEST and common
    descriptions): :meth:`default`.
    """

    modalities: frozenset[str]
    chest_body_parts: frozenset[str]
    # Used only when no instance records a body part: words in the Study Description.
    chest_description: re.Pattern[str]
    # Used only when no instance records a body part and the description does not name the chest: words that
    # name another part of the body. A study whose description names neither is read.
    other_anatomy_description: re.Pattern[str] | None
    stat_priorities: frozenset[str]
    stat_calling_aes: frozenset[str]
    stat_description: re.Pattern[str] | None
    sop_classes: frozenset[str] = RADIOGRAPH_SOP_CLASSES | SECONDARY_CAPTURE_SOP_CLASSES

    @classmethod
    def from_settings(cls, routing: RoutingSettings) -> FilterRule:
        """The rule ``listener.routing`` describes."""
        return cls(
            modalities=_upper(routing.modalities),
            chest_body_parts=_upper(routing.chest_body_parts),
            chest_description=re.compile(routing.chest_description, re.IGNORECASE),
            other_anatomy_description=(
                re.compile(routing.other_anatomy_description, re.IGNORECASE)
                if routing.other_anatomy_description
                else None
            ),
            stat_priorities=_upper(routing.stat_requested_priorities),
            stat_calling_aes=_upper(routing.stat_calling_ae_titles),
            stat_description=re.compile(routing.stat_description, re.IGNORECASE) if routing.stat_description else None,
        )

    @classmethod
    def default(cls) -> FilterRule:
        """The rule of the default settings."""
        return cls.from_settings(RoutingSettings())


@dataclass(frozen=True)
class Decision:
    """Queue the revision for the model, or skip it with a reason."""

    queue: bool
    reason: str | None = None
    priority: Priority = Priority.ROUTINE


def decide(
    instances: Sequence[InstanceFacts], study_description: str | None, rule: FilterRule | None = None
) -> Decision:
    """Whether a study (one revision's instances) goes to the model.

    It does when at least one instance is a CR/DX radiograph IOD (or a Secondary Capture) with modality
    CR or DX and is of the chest: Body Part Examined names the chest (is, or has as a word, a chest body part),
    or, when no radiograph records a body part, the Study Description names the chest or no other part of the body.
    A queued study is STAT when any instance or the description says so (:func:`priority_of`).
    """
    rule = rule or FilterRule.default()
    if not instances:
        return Decision(False, "no instances")
    radiographs = [
        i for i in instances if i.sop_class_uid in rule.sop_classes and i.modality_or_iods in rule.modalities
    ]
    if not radiographs:
        modalities = sorted({i.modality_or_iods or "UNKNOWN" for i in instances})
        if all(i.sop_class_uid in SECONDARY_CAPTURE_SOP_CLASSES for i in instances):
            return Decision(False, f"secondary capture, not a radiograph (modality {', '.join(modalities)})")
        return Decision(False, f"no CR/DX radiograph (modality {', '.join(modalities)})")
    parts = {(i.body_part or "").strip().upper() for i in radiographs} - {""}
    if any(names_body_part(part, rule.chest_body_parts) for part in parts):
        return Decision(True, priority=priority_of(instances, study_description, rule))
    if parts:
        return Decision(False, f"not a chest radiograph (body part {', '.join(sorted(parts))})")
    description = study_description or ""
    if rule.chest_description.search(description):
        return Decision(True, priority=priority_of(instances, study_description, rule))
    other = rule.other_anatomy_description.search(description) if rule.other_anatomy_description else None
    if other is None:  # anatomy stated nowhere (e.g. NIH ChestX-ray14 films): the model refuses a non-chest film
        return Decision(True, priority=priority_of(instances, study_description, rule))
    return Decision(False, f"not a chest radiograph (no body part, description names {other.group(0).upper()})")


def never_read(instance: InstanceFacts, rule: FilterRule | None = None) -> str | None:
    """Why the model reads nothing of ``instance`` whatever else its study holds (it is no CR/DX radiograph: an SR,
    a presentation state, a key object selection, an image of another modality), as :func:`decide` would skip a
    revision of it alone; ``None`` for a radiograph, whose body part and study description :func:`decide` weighs
    with the rest of its revision."""
    rule = rule or FilterRule.default()
    if instance.sop_class_uid in rule.sop_classes and instance.modality_or_iods in rule.modalities:
        return None
    return decide([instance], None, rule).reason


def priority_of(instances: Sequence[InstanceFacts], study_description: str | None, rule: FilterRule) -> Priority:
    """STAT when an instance's Requested Procedure Priority or calling AE, or the Study Description, says so."""
    for instance in instances:
        if (instance.requested_priority or "").strip().upper() in rule.stat_priorities:
            return Priority.STAT
        if (instance.calling_ae or "").strip().upper() in rule.stat_calling_aes:
            return Priority.STAT
    if study_description and rule.stat_description is not None and rule.stat_description.search(study_description):
        return Priority.STAT
    return Priority.ROUTINE

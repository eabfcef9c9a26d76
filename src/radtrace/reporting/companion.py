"""The companion document: the draft as a Basic Text SR that every viewer shows.

Many viewers show only part of a TID 1500 SR (OHIF displays its SCOORD/NUM groups and neither the coded
findings nor the TEXT items). With each TID 1500 draft radtrace therefore also writes (setting
``reporting.companion_document``, on by default) a Basic Text SR (PS3.3 A.34.1) of the same reading, in
the same study, in a series of its own next to the draft's (9901 SR, 9902 GSPS, 9903 this), that reads
top to bottom like a report:

* root CONTAINER "Diagnostic Imaging Report" (LN 18748-4, CID 7000), the model as device observer
  (TID 1002, as in the TID 1500 SR);
* the draft notice (``AI DRAFT, NOT VERIFIED``) as the first TEXT;
* "Impressions" (DCM 121072) holding the impression (DCM 121073), or a note that there is none;
* "Findings" (DCM 121070): one TEXT "Finding" (DCM 121071) per finding, present ones first, then
  uncertain, then absent, each with its confidence and box count;
* the model's flags and the source header notes, when there are any;
* "Model reasoning": the whole trace, one TEXT per section labelled by its section (or the model's raw
  words when nothing was parsed);
* a COMPOSITE reference to the TID 1500 SR it accompanies (also listed in the evidence sequences).

Texts are taken from the TID 1500 SR as built (already made safe by :func:`radtrace.reporting.text.dicom_text`
and flagged ``text-sanitised`` there when that changed them); the findings' lines are made safe by the
same function. Patient and study attributes are the SR's own (checked) values. UIDs are derived from the
SR's: one TID 1500 SR has exactly one companion, so building twice gives the same document. A later
revision's companion lists the earlier companions in Predecessor Documents.

Why Basic Text SR and not Encapsulated PDF: see docs/conformance.md ("Companion document").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr.sop import _SR
from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage, generate_uid

from radtrace.config import ReportingSettings
from radtrace.errors import ReportError
from radtrace.model.reading import Finding, FindingStatus, Reading
from radtrace.reporting import codes
from radtrace.reporting.codes import Code
from radtrace.reporting.sr import DRAFT_NOTICE_TEXT, MANUFACTURER, UTF8, observation_context, sr_uids
from radtrace.reporting.sr_header import STUDY_KEYWORDS, lo_value
from radtrace.reporting.text import dicom_text

__all__ = [
    "COMPANION_SERIES_DESCRIPTION",
    "COMPANION_SERIES_NUMBER",
    "COMPANION_TITLE",
    "DRAFT_BANNER",
    "build_companion",
    "companion_uids",
    "finding_line",
    "is_companion",
]

COMPANION_SERIES_DESCRIPTION: Final = "AI DRAFT TEXT - NOT VERIFIED - radtrace"
COMPANION_SERIES_NUMBER: Final = 9903
DRAFT_BANNER: Final = "AI DRAFT, NOT VERIFIED."
COMPANION_TITLE: Final = Code("18748-4", "LN", "Diagnostic Imaging Report", "DICOM PS3.16 CID 7000")
FINDINGS: Final = Code("121070", "DCM", "Findings", "DICOM PS3.16 CID 7001")
IMPRESSIONS: Final = Code("121072", "DCM", "Impressions", "DICOM PS3.16 CID 7001")
REASONING: Final = codes.local_code("RT-REASONING", "Model reasoning")
DRAFT_SR: Final = codes.local_code("RT-DRAFT-SR", "AI draft structured report (TID 1500)")
_STATUS_ORDER: Final = {FindingStatus.PRESENT: 0, FindingStatus.UNCERTAIN: 1, FindingStatus.ABSENT: 2}
_STATUS_WORD: Final = {
    FindingStatus.PRESENT: "present",
    FindingStatus.UNCERTAIN: "uncertain",
    FindingStatus.ABSENT: "absent",
}
# TEXT items of the TID 1500 SR the companion repeats, by code value, in the order they are shown.
_FLAGS_AND_NOTES: Final = (codes.READING_FLAGS.value, codes.IMAGE_NOTES.value, codes.HEADER_NOTES.value)


def companion_uids(sr: Dataset) -> tuple[str, str]:
    """(series, SOP instance) UIDs of the companion of the TID 1500 SR ``sr``: fixed by the SR's own UIDs
    (its series is per study and model, its instance per study, revision and model)."""
    series = generate_uid(entropy_srcs=["radtrace-companion-series", str(sr.SeriesInstanceUID)])
    instance = generate_uid(entropy_srcs=["radtrace-companion", str(sr.SOPInstanceUID)])
    return str(series), str(instance)


def is_companion(ds: Dataset) -> bool:
    """Whether ``ds`` is a companion document (a Basic Text SR), not a TID 1500 draft."""
    return str(ds.get("SOPClassUID", "")) == BasicTextSRStorage


def finding_line(finding: Finding) -> str:
    """One finding as a line of text: ``"Atelectasis: present (model confidence 0.82; 1 box)"``."""
    details = []
    if finding.confidence is not None:
        details.append(f"model confidence {finding.confidence:.2f}")
    if finding.boxes:
        details.append(f"{len(finding.boxes)} box{'es' if len(finding.boxes) > 1 else ''} in the structured report")
    label = codes.finding_code(finding.label).label
    line = f"{label}: {_STATUS_WORD[finding.status]}"
    return f"{line} ({'; '.join(details)})" if details else line


def _concept(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _text(code: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=_concept(code), value=value.rstrip(), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _section(code: Code, items: Sequence[hd.sr.TextContentItem]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=_concept(code), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence(list(items))
    container.ContinuityOfContent = "SEPARATE"  # each item shown with its label
    return container


def _sr_texts(sr: Dataset) -> list[tuple[Code, str]]:
    """Every TEXT item of the SR (at its root and in its containers, not in measurement groups) with its code,
    in document order."""
    found: list[tuple[Code, str]] = []

    def walk(items: Sequence[Dataset], depth: int) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0]
            code = Code(str(name.CodeValue), str(name.CodingSchemeDesignator), str(name.CodeMeaning), "the SR")
            if item.ValueType == "TEXT" and str(item.RelationshipType) == "CONTAINS":
                found.append((code, str(item.TextValue)))
            elif item.ValueType == "CONTAINER" and code.value != "126010" and depth < 2:  # not Imaging Measurements
                walk(item.get("ContentSequence", []), depth + 1)

    walk(sr.get("ContentSequence", []), 0)
    return found


def _findings(reading: Reading) -> list[hd.sr.TextContentItem]:
    ordered = sorted(reading.findings, key=lambda finding: _STATUS_ORDER[finding.status])
    lines = [dicom_text(finding_line(finding), "UT").text for finding in ordered]
    if not lines:
        lines = ["No finding was assessed: the model gave no findings (see its flags and its own words below)."]
    return [_text(codes.FINDING, line) for line in lines]


def build_companion(
    reading: Reading,
    sr: Dataset,
    *,
    settings: ReportingSettings,
    revision: int,
    predecessors: Sequence[Dataset] = (),
    content_datetime: datetime | None = None,
) -> Dataset:
    """The Basic Text SR companion of the TID 1500 SR ``sr`` built from ``reading`` (see the module docstring).

    ``predecessors`` are the earlier companions of the study (Predecessor Documents). Raises
    :class:`ReportError` when it cannot be built.
    """
    if str(sr.get("Modality", "")) != "SR" or is_companion(sr):
        raise ReportError("a companion document accompanies a TID 1500 SR draft")
    study_uid = str(sr.StudyInstanceUID)
    series_uid, sop_uid = companion_uids(sr)
    texts = _sr_texts(sr)
    by_value = {code.value: text for code, text in texts}
    notice = by_value.get(codes.DRAFT_NOTICE.value, DRAFT_NOTICE_TEXT)
    impression = by_value.get(codes.IMPRESSION.value)
    reasoning = [
        (code, text) for code, text in texts if code.value.startswith("RT-R-") or code.value == codes.RAW_OUTPUT.value
    ]
    items: list[hd.sr.ContentItem] = [_text(codes.DRAFT_NOTICE, f"{DRAFT_BANNER} {notice}")]
    items.append(
        _section(
            IMPRESSIONS,
            [_text(codes.IMPRESSION, impression or "The model gave no impression (see its flags and reasoning).")],
        )
    )
    items.append(_section(FINDINGS, _findings(reading)))
    items += [_text(code, text) for code, text in texts if code.value in _FLAGS_AND_NOTES]
    if reasoning:
        items.append(_section(REASONING, [_text(code, text) for code, text in reasoning]))
    items.append(
        hd.sr.CompositeContentItem(
            name=_concept(DRAFT_SR),
            referenced_sop_class_uid=str(sr.SOPClassUID),
            referenced_sop_instance_uid=str(sr.SOPInstanceUID),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    device_uid = sr_uids(study_uid, revision, reading.identity).device_observer_uid
    root = hd.sr.ContainerContentItem(name=_concept(COMPANION_TITLE), template_id=None)
    root.ContentSequence = hd.sr.ContentSequence([*observation_context(reading.identity, device_uid), *items])
    root.ContinuityOfContent = "SEPARATE"
    when = (content_datetime or datetime.now(UTC)).astimezone(UTC)
    try:
        document = _BasicTextSR(
            evidence=[sr],
            content=root,
            series_instance_uid=series_uid,
            series_number=COMPANION_SERIES_NUMBER,
            sop_instance_uid=sop_uid,
            sop_class_uid=BasicTextSRStorage,
            instance_number=revision,
            manufacturer=MANUFACTURER,
            is_complete=True,
            is_final=False,
            is_verified=False,
            institution_name=lo_value(settings.institution_name),
            previous_versions=[p for p in predecessors if str(p.SOPInstanceUID) != sop_uid] or None,
            series_description=COMPANION_SERIES_DESCRIPTION,
            manufacturer_model_name=lo_value(reading.identity.model_name),
            software_versions=f"radtrace codes {codes.CODE_TABLE_VERSION}",
            content_date=when.date(),
            content_time=when.time().replace(microsecond=0),
            specific_character_set=UTF8,
            coding_schemes=_coding_schemes(),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ReportError(f"companion document could not be built: {exc}") from exc
    # The patient and study as the SR has them (checked values), not only the ones highdicom copies.
    for element in sr:
        if element.tag.group == 0x0010 or element.keyword in STUDY_KEYWORDS:
            document[element.tag] = element
    # highdicom stamps these with the wall clock; the content time makes a rebuild byte-identical.
    document["InstanceCreationDate"].value = when.strftime("%Y%m%d")
    document["InstanceCreationTime"].value = when.strftime("%H%M%S")
    for item in document.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S+0000")
    return document


def _coding_schemes() -> list[CodingSchemeIdentificationItem]:
    return [
        CodingSchemeIdentificationItem(
            designator=codes.LOCAL_SCHEME,
            name=codes.LOCAL_SCHEME_NAME,
            version=codes.CODE_TABLE_VERSION,
            responsible_organization="radtrace",
        )
    ]


class _BasicTextSR(_SR):
    """highdicom's SR document base with the Basic Text SR SOP Class (highdicom ships no class for it)."""

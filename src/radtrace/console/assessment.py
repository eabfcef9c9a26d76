"""The assessment SR: a radiologist's decisions on one draft, as a DICOM SR in the same study as the AI SR.

Shaped after IHE Radiology's AI Result Assessment (AIRA): a new SR instance that references the AI result it
assesses (its SOP Instance UID, as a COMPOSITE item and in the evidence) and each assessed finding by the Tracking
Unique Identifier the AI SR gave it, never editing the AI SR. The supplement's own template and codes could not be
checked against its text here, so the concept names and values are local codes (coding scheme designator
``99RADTRACE``, documented in docs/conformance.md and docs/ui.md), except the DICOM ones listed in
:data:`DCM_CODES`. Comprehensive SR, COMPLETE, UNVERIFIED (a person recorded it, nobody signed it), UTF-8; the person
observer is the radiologist. Built from plain values; :func:`tracking_uids` reads the AI SR's findings back.
:func:`build_assessment_oru` says the same as an HL7 ORU^R01 for the RIS (optional: ``console.assessment_hl7``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid

from radtrace import __version__
from radtrace.config import ReportingSettings
from radtrace.console.decisions import checked_comment
from radtrace.reporting import codes as report_codes
from radtrace.reporting.hl7 import SR_UID, STUDY_UID, Observation, OruMessage, build_observation_oru, control_id_for
from radtrace.reporting.sr_header import lo_value, person_name
from radtrace.reporting.text import dicom_text

__all__ = [
    "LOCAL_SCHEME",
    "FindingAssessment",
    "ImpressionAssessment",
    "build_assessment_oru",
    "build_assessment_sr",
    "tracking_uids",
]

LOCAL_SCHEME: Final = "99RADTRACE"
_ROOT: Final = CodedConcept("RTA-0", LOCAL_SCHEME, "AI result assessment")
_ASSESSED_RESULT: Final = CodedConcept("RTA-1", LOCAL_SCHEME, "Assessed AI result")
_DRAFT_ASSESSMENT: Final = CodedConcept("RTA-2", LOCAL_SCHEME, "Assessment of the AI result set")
_REASON: Final = CodedConcept("RTA-3", LOCAL_SCHEME, "Reason for assessment")
_FINDING_ASSESSMENT: Final = CodedConcept("RTA-4", LOCAL_SCHEME, "AI finding assessment")
_ASSESSMENT: Final = CodedConcept("RTA-5", LOCAL_SCHEME, "Assessment")
_CORRECTED_PRESENCE: Final = CodedConcept("RTA-6", LOCAL_SCHEME, "Corrected presence")
_MODEL_PRESENCE: Final = CodedConcept("RTA-7", LOCAL_SCHEME, "AI presence")
_COMMENT: Final = CodedConcept("121106", "DCM", "Comment")
_TRACKING_UID: Final = CodedConcept("112040", "DCM", "Tracking Unique Identifier")
_TRACKING_ID: Final = CodedConcept("112039", "DCM", "Tracking Identifier")
_ASSESSMENT_SR_UID: Final = CodedConcept("RTA-8", LOCAL_SCHEME, "Assessment SR SOP Instance UID")  # HL7 only
_IMPRESSION_ASSESSMENT: Final = CodedConcept("RTA-9", LOCAL_SCHEME, "AI impression assessment")
_CORRECTED_IMPRESSION: Final = CodedConcept("RTA-10", LOCAL_SCHEME, "Corrected impression")
VERDICTS: Final[Mapping[str, CodedConcept]] = {
    "accept": CodedConcept("RTA-V1", LOCAL_SCHEME, "Accepted"),
    "reject": CodedConcept("RTA-V2", LOCAL_SCHEME, "Rejected"),
    "modify": CodedConcept("RTA-V3", LOCAL_SCHEME, "Modified"),
}
PRESENCE: Final[Mapping[str, CodedConcept]] = {
    "present": CodedConcept("RTA-P1", LOCAL_SCHEME, "Present"),
    "absent": CodedConcept("RTA-P2", LOCAL_SCHEME, "Absent"),
    "uncertain": CodedConcept("RTA-P3", LOCAL_SCHEME, "Uncertain"),
}
#: The DICOM (DCM) codes used, verified against PS3.16 Annex D: Comment, Tracking Identifier, Tracking UID.
DCM_CODES: Final = (_COMMENT, _TRACKING_ID, _TRACKING_UID)
_CONTAINS: Final = hd.sr.RelationshipTypeValues.CONTAINS
_HAS_PROPERTIES: Final = hd.sr.RelationshipTypeValues.HAS_PROPERTIES
_HAS_CONCEPT_MOD: Final = hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD


@dataclass(frozen=True)
class FindingAssessment:
    """A radiologist's current decision on one finding of the draft."""

    label: str
    model_status: str
    verdict: str
    status: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class ImpressionAssessment:
    """A radiologist's current decision on the draft's impression: accept, reject, or modify with their own."""

    verdict: str
    text: str | None = None
    comment: str | None = None


def _meaning(item: Dataset, keyword: str) -> str:
    sequence = item.get(keyword)
    return str(sequence[0].CodeMeaning) if sequence else ""


def tracking_uids(ai_sr: Dataset) -> dict[str, list[str]]:
    """Each finding label of a radtrace AI SR and the Tracking Unique Identifiers of its measurement groups."""
    found: dict[str, list[str]] = {}
    for item in ai_sr.get("ContentSequence", []):
        if item.ValueType != "CONTAINER" or _meaning(item, "ConceptNameCodeSequence") != "Imaging Measurements":
            continue
        for group in item.get("ContentSequence", []):
            label, uid = None, None
            for entry in group.get("ContentSequence", []):
                name = _meaning(entry, "ConceptNameCodeSequence")
                if entry.ValueType == "TEXT" and name == "Tracking Identifier":
                    label = str(entry.TextValue).split(" #")[0]
                elif entry.ValueType == "UIDREF" and name == "Tracking Unique Identifier":
                    uid = str(entry.UID)
            if label and uid:
                found.setdefault(label, []).append(uid)
    return found


def _text(name: CodedConcept, value: str, relationship: hd.sr.RelationshipTypeValues) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=dicom_text(value, "UT").text, relationship_type=relationship)


def _observer_name(observer: str) -> str:
    """A console user name as a PN of one component, the family name (the trailing caret says so, PS3.5 6.2.1.2):
    ``^`` and ``=`` in it are not delimiters, and the whole value is at most 64 bytes, as the SR builder writes a
    person's name."""
    return person_name(observer.replace("^", " ").replace("=", " "), "observer", []) or "unknown^"


def _finding(assessment: FindingAssessment, uids: Sequence[str]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=_FINDING_ASSESSMENT, relationship_type=_CONTAINS)
    items: list[hd.sr.ContentItem] = [_text(_TRACKING_ID, assessment.label[:64], _HAS_PROPERTIES)]
    items += [hd.sr.UIDRefContentItem(name=_TRACKING_UID, value=uid, relationship_type=_HAS_PROPERTIES) for uid in uids]
    if assessment.model_status in PRESENCE:
        items.append(hd.sr.CodeContentItem(name=_MODEL_PRESENCE, value=PRESENCE[assessment.model_status],
                                           relationship_type=_HAS_PROPERTIES))  # fmt: skip
    items.append(hd.sr.CodeContentItem(name=_ASSESSMENT, value=VERDICTS[assessment.verdict],
                                       relationship_type=_CONTAINS))  # fmt: skip
    if assessment.verdict == "modify" and assessment.status is not None and assessment.status in PRESENCE:
        items.append(hd.sr.CodeContentItem(name=_CORRECTED_PRESENCE, value=PRESENCE[assessment.status],
                                           relationship_type=_CONTAINS))  # fmt: skip
    if comment := checked_comment(assessment.comment):
        items.append(_text(_COMMENT, comment, _CONTAINS))
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _impression(assessment: ImpressionAssessment) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=_IMPRESSION_ASSESSMENT, relationship_type=_CONTAINS)
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(name=_ASSESSMENT, value=VERDICTS[assessment.verdict], relationship_type=_CONTAINS)
    ]
    if assessment.verdict == "modify" and (text := (assessment.text or "").strip()):
        items.append(_text(_CORRECTED_IMPRESSION, text, _CONTAINS))
    if comment := checked_comment(assessment.comment):
        items.append(_text(_COMMENT, comment, _CONTAINS))
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def build_assessment_sr(
    ai_sr: Dataset,
    *,
    observer: str,
    verdict: str,
    reason: tuple[str, str],
    comment: str | None,
    findings: Sequence[FindingAssessment],
    sop_instance_uid: str,
    when: datetime,
    institution: str,
    impression: ImpressionAssessment | None = None,
) -> Dataset:
    """The assessment SR of one decision set (see the module doc); ``reason`` is (code, meaning); ``impression``
    the decision on the draft's impression, when one was made (an "AI impression assessment" container: the
    verdict, the corrected impression for a modify, the comment)."""
    uids = tracking_uids(ai_sr)
    observer_context = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=_observer_name(observer)),
    )
    items: list[hd.sr.ContentItem] = [*observer_context]
    items.append(hd.sr.CompositeContentItem(
        name=_ASSESSED_RESULT, referenced_sop_class_uid=str(ai_sr.SOPClassUID),
        referenced_sop_instance_uid=str(ai_sr.SOPInstanceUID), relationship_type=_CONTAINS,
    ))  # fmt: skip
    items.append(hd.sr.CodeContentItem(name=_DRAFT_ASSESSMENT, value=VERDICTS[verdict], relationship_type=_CONTAINS))
    items.append(hd.sr.CodeContentItem(name=_REASON, value=CodedConcept(reason[0], LOCAL_SCHEME, reason[1]),
                                       relationship_type=_CONTAINS))  # fmt: skip
    if comment := checked_comment(comment):
        items.append(_text(_COMMENT, comment, _CONTAINS))
    items += [_finding(finding, uids.get(finding.label, [])) for finding in findings]
    if impression is not None:
        items.append(_impression(impression))
    root = hd.sr.ContainerContentItem(name=_ROOT)
    root.ContentSequence = hd.sr.ContentSequence(items)
    sr = hd.sr.ComprehensiveSR(
        evidence=[ai_sr],
        content=root,
        series_instance_uid=generate_uid(entropy_srcs=[sop_instance_uid, "series"]),
        series_number=9902,
        sop_instance_uid=UID(sop_instance_uid),
        instance_number=1,
        manufacturer="radtrace",
        manufacturer_model_name="radtrace review console",
        software_versions=__version__,
        institution_name=lo_value(institution),
        is_complete=True,
        is_verified=False,
        series_description="AI result assessment (radtrace)",
        content_date=when.date(),
        content_time=when.time().replace(tzinfo=None),
    )
    sr.SpecificCharacterSet = "ISO_IR 192"
    scheme = Dataset()  # PS3.16 8.2: a private coding scheme is identified in the instance that uses it
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "radtrace local codes for AI result assessment"
    scheme.CodingSchemeResponsibleOrganization = "radtrace"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def _code(concept: CodedConcept) -> report_codes.Code:
    source = report_codes.LOCAL if concept.scheme_designator == LOCAL_SCHEME else "DICOM PS3.16"
    return report_codes.Code(concept.value, concept.scheme_designator, concept.meaning, source)


def build_assessment_oru(
    ai_sr: Dataset,
    *,
    observer: str,
    verdict: str,
    reason: tuple[str, str],
    comment: str | None,
    findings: Sequence[FindingAssessment],
    sop_instance_uid: str,
    settings: ReportingSettings,
    when: datetime,
    impression: ImpressionAssessment | None = None,
) -> OruMessage:
    """The assessment SR ``sop_instance_uid`` as an ORU^R01 about the AI SR's patient and study: the draft verdict
    and reason (local codes, as in the SR), the comment, per assessed finding (OBX-4 = its position) the finding's
    code with the verdict as value, the corrected presence, the comment and the AI SR's Tracking UIDs, then the
    AI SR's, the study's and the assessment SR's UIDs. Result status ``reporting.hl7_result_status`` (never F); the
    control ID is fixed by the assessment SR, so a resend is recognisable."""
    uids = tracking_uids(ai_sr)
    items = [
        Observation("CWE", _code(_DRAFT_ASSESSMENT), _code(VERDICTS[verdict])),
        Observation("CWE", _code(_REASON), report_codes.local_code(reason[0], reason[1])),
    ]
    if comment := checked_comment(comment):
        items.append(Observation("TX", _code(_COMMENT), comment))
    for index, finding in enumerate(findings, 1):
        sub_id = str(index)
        items.append(Observation("CWE", report_codes.finding_code(finding.label).code,
                                 _code(VERDICTS[finding.verdict]), sub_id))  # fmt: skip
        if finding.verdict == "modify" and finding.status is not None and finding.status in PRESENCE:
            items.append(Observation("CWE", _code(_CORRECTED_PRESENCE), _code(PRESENCE[finding.status]), sub_id))
        if finding_comment := checked_comment(finding.comment):
            items.append(Observation("TX", _code(_COMMENT), finding_comment, sub_id))
        items += [Observation("ST", _code(_TRACKING_UID), uid, sub_id) for uid in uids.get(finding.label, [])]
    if impression is not None:  # after the findings, with the next sub-ID
        sub_id = str(len(findings) + 1)
        items.append(Observation("CWE", _code(_IMPRESSION_ASSESSMENT), _code(VERDICTS[impression.verdict]), sub_id))
        if impression.verdict == "modify" and (text := (impression.text or "").strip()):
            items.append(Observation("TX", _code(_CORRECTED_IMPRESSION), text, sub_id))
        if impression_comment := checked_comment(impression.comment):
            items.append(Observation("TX", _code(_COMMENT), impression_comment, sub_id))
    items += [
        Observation("ST", SR_UID, str(ai_sr.SOPInstanceUID)),
        Observation("ST", STUDY_UID, str(ai_sr.StudyInstanceUID)),
        Observation("ST", _code(_ASSESSMENT_SR_UID), sop_instance_uid),
    ]
    notes = [
        f"Assessment of an AI draft by {observer} in the radtrace review console; not a signed report.",
        "Codes: radtrace local codes (99RADTRACE) for the assessment, as in the assessment SR.",
    ]
    return build_observation_oru(ai_sr, items, settings=settings, control_id=control_id_for(sop_instance_uid),
                                 notes=notes, created_at=when)  # fmt: skip

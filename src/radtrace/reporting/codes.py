"""Finding codes: the versioned table mapping each model label to SNOMED CT (and RadLex where verified).

Every code carries its *source*, so a reviewer can check it: codes also listed in the DICOM standard's
context groups are taken from PS3.16 (as shipped in pydicom's code dictionary); other SNOMED CT codes
are SNOMED CT International concepts; RadLex IDs are given only where two independent published
mappings agree (otherwise ``None``: an unverified RadLex ID is worse than none). Labels with no exact
code get a documented *local* code in radtrace's private coding scheme ``99RADTRACE`` (PS3.3 8.2:
private schemes start with ``99``); the table lists why no standard code was used.

Support devices are additionally coded by device type when the reasoning names the device
(:func:`device_codes`). Changing any code is a new :data:`CODE_TABLE_VERSION`, recorded in every SR,
HL7 message and FHIR resource radtrace writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from radtrace.reporting.text import dicom_text

__all__ = [
    "CODE_TABLE_VERSION",
    "DEVICE_CODES",
    "FINDING_CODES",
    "LOCAL_SCHEME",
    "LOCAL_SCHEME_NAME",
    "Code",
    "FindingCode",
    "device_codes",
    "finding_code",
    "local_code",
]

CODE_TABLE_VERSION: Final = "2026.1"
LOCAL_SCHEME: Final = "99RADTRACE"
LOCAL_SCHEME_NAME: Final = "radtrace local codes"

SNOMED_FHIR_SYSTEM: Final = "http://snomed.info/sct"
DCM_FHIR_SYSTEM: Final = "http://dicom.nema.org/resources/ontology/DCM"
RADLEX_FHIR_SYSTEM: Final = "http://radlex.org"
LOCAL_FHIR_SYSTEM: Final = "urn:radtrace:codes"
LOINC_FHIR_SYSTEM: Final = "http://loinc.org"

_FHIR_SYSTEMS: Final = {
    "SCT": SNOMED_FHIR_SYSTEM,
    "DCM": DCM_FHIR_SYSTEM,
    "RADLEX": RADLEX_FHIR_SYSTEM,
    LOCAL_SCHEME: LOCAL_FHIR_SYSTEM,
    "LN": LOINC_FHIR_SYSTEM,
}
_HL7_SYSTEMS: Final = {"SCT": "SCT", "DCM": "DCM", "RADLEX": "RADLEX", LOCAL_SCHEME: LOCAL_SCHEME, "LN": "LN"}

PS3_16: Final = "DICOM PS3.16"
SNOMED_INTERNATIONAL: Final = "SNOMED CT International Edition"
LOCAL: Final = "radtrace local code"


@dataclass(frozen=True)
class Code:
    """One coded concept: value, scheme designator (DICOM: SCT, DCM, 99RADTRACE …) and meaning."""

    value: str
    scheme: str
    meaning: str
    source: str

    @property
    def fhir_system(self) -> str:
        """The FHIR ``Coding.system`` URI for the scheme."""
        return _FHIR_SYSTEMS[self.scheme]

    @property
    def hl7_system(self) -> str:
        """The HL7 v2 coding system name (CWE-3)."""
        return _HL7_SYSTEMS[self.scheme]


@dataclass(frozen=True)
class FindingCode:
    """How one model label is coded: the primary code, an optional RadLex ID, and why."""

    label: str
    code: Code
    radlex: Code | None = None
    note: str = ""

    @property
    def is_local(self) -> bool:
        """Whether no standard code exists for the label and a local one stands in."""
        return self.code.scheme == LOCAL_SCHEME


def _sct(value: str, meaning: str, source: str = SNOMED_INTERNATIONAL) -> Code:
    return Code(value, "SCT", meaning, source)


def _radlex(value: str, meaning: str) -> Code:
    return Code(value, "RADLEX", meaning, "RadLex (RSNA); ID agreed by two independent published mappings")


def local_code(value: str, meaning: str) -> Code:
    """A code in radtrace's private scheme ``99RADTRACE``."""
    return Code(value, LOCAL_SCHEME, meaning, LOCAL)


_CHEXPERT: Final[tuple[FindingCode, ...]] = (
    FindingCode("Atelectasis", _sct("46621007", "Atelectasis"), _radlex("RID28493", "atelectasis")),
    FindingCode("Cardiomegaly", _sct("8186001", "Cardiomegaly")),
    FindingCode("Consolidation", _sct("95436008", "Lung consolidation"), _radlex("RID43255", "consolidation")),
    FindingCode(
        "Edema",
        _sct("19242006", "Pulmonary edema", f"{PS3_16} CID 3700"),
        note="CheXpert 'Edema' means pulmonary edema",
    ),
    FindingCode(
        "Enlarged Cardiomediastinum",
        local_code("RT-F-ECM", "Enlarged cardiomediastinum"),
        note="no SNOMED CT concept for an enlarged cardiomediastinal silhouette as such",
    ),
    FindingCode("Fracture", _sct("125605004", "Fracture of bone")),
    FindingCode(
        "Lung Lesion",
        local_code("RT-F-LLES", "Lung lesion (nodule or mass)"),
        note="CheXpert groups nodule and mass; no single SNOMED CT concept is exact",
    ),
    FindingCode(
        "Lung Opacity",
        Code("112001", "DCM", "Opacity", f"{PS3_16} CID 6102"),
        note="DICOM chest CAD 'Opacity'; not restricted to the lung in its definition",
    ),
    FindingCode("No Finding", Code("111286", "DCM", "No abnormality", f"{PS3_16} CID 6030")),
    FindingCode("Pleural Effusion", _sct("60046008", "Pleural effusion", f"{PS3_16} CID 645")),
    FindingCode(
        "Pleural Other",
        local_code("RT-F-PLO", "Other pleural abnormality"),
        note="CheXpert's residual class (thickening, plaques …) has no single code",
    ),
    FindingCode("Pneumonia", _sct("233604007", "Pneumonia")),
    FindingCode("Pneumothorax", _sct("36118008", "Pneumothorax", f"{PS3_16} CID 6102")),
    FindingCode(
        "Support Devices",
        local_code("RT-F-DEV", "Support device present"),
        note="a class, not a concept; the device itself is coded by type where the reasoning names it",
    ),
)

#: Label (case-insensitive key) → its codes. Labels outside the table get :func:`finding_code`'s local code.
FINDING_CODES: Final[dict[str, FindingCode]] = {entry.label.casefold(): entry for entry in _CHEXPERT}

#: Device types recognised in reasoning text: (pattern, code). First match per device wins.
_CID_7151: Final = f"{PS3_16} CID 7151"
DEVICE_CODES: Final[tuple[tuple[re.Pattern[str], Code], ...]] = (
    (re.compile(r"\b(endotracheal|ET)\s+tube\b|\bETT\b", re.I), _sct("26412008", "Endotracheal tube", _CID_7151)),
    (
        re.compile(r"\bcentral (venous )?(line|catheter)\b|\b(CVC|PICC)( line| catheter)?\b", re.I),
        _sct("52124006", "Central venous catheter", f"{PS3_16} CID 74"),
    ),
    (re.compile(r"\b(pacemaker|ICD|defibrillator)\b", re.I), _sct("14106009", "Cardiac pacemaker", _CID_7151)),
    (
        re.compile(r"\b(chest|thoracostomy|pleural) (tube|drain)\b", re.I),
        Code("112173", "DCM", "Chest tube", _CID_7151),
    ),
    (re.compile(r"\b(catheter|line)\b", re.I), _sct("19923001", "Catheter", _CID_7151)),
    (re.compile(r"\btube\b", re.I), _sct("83059008", "Tube", f"{PS3_16} CID 69")),
)


def _slug(label: str) -> str:
    # Code Value is SH (16 characters): prefixes are 5, so the slug gets 11.
    return re.sub(r"[^A-Z0-9]+", "-", label.upper()).strip("-")[:11].strip("-") or "UNNAMED"


def finding_code(label: str) -> FindingCode:
    """The codes for a model label; an unknown label gets a local code derived from its name."""
    known = FINDING_CODES.get(label.strip().casefold())
    if known is not None:
        return known
    # The model's label is the meaning: made safe once, for the strictest place it goes (SR Code Meaning, LO), and the
    # label every draft names it by (the companion's and the GSPS' lines too: the raw label put a control character
    # in their text).
    meaning = dicom_text(label.strip(), "LO").text or "Unnamed finding"
    return FindingCode(meaning, local_code(f"RT-X-{_slug(label)}", meaning), note="label not in the table")


_NEGATED: Final = re.compile(r"\b(no|not|without|removed|absent|resolved)\b", re.I)


def device_codes(text: str) -> tuple[Code, ...]:
    """Device types the text names, in table order, each at most once (more specific patterns first).

    Clauses (split at ``. ; ,``) that negate ("no central line", "tube removed") are ignored.
    """
    clauses = [clause for clause in re.split(r"[.;,\n]", text) if not _NEGATED.search(clause)]
    remaining = " . ".join(clauses)
    found: list[Code] = []
    for pattern, code in DEVICE_CODES:
        if pattern.search(remaining):
            if code not in found:
                found.append(code)
            remaining = pattern.sub(" ", remaining)  # "central venous catheter" is not also a generic catheter
    return tuple(found)


# Concepts used in report structure (not findings).
PRESENT: Final = _sct("52101004", "Present", f"{PS3_16} CID 240")
ABSENT: Final = _sct("272519000", "Absent", f"{PS3_16} CID 240")
INDETERMINATE: Final = _sct("82334004", "Indeterminate", f"{PS3_16} CID 4220")
PRESENCE: Final = Code("121052", "DCM", "Presence of property", PS3_16)
FINDING: Final = Code("121071", "DCM", "Finding", PS3_16)
IMPRESSION: Final = Code("121073", "DCM", "Impression", PS3_16)
DEVICE: Final = Code("121007", "DCM", "Device", PS3_16)
CHEST_XRAY: Final = _sct("399208008", "Plain chest X-ray")
REASONING_SHA256: Final = local_code("RT-TRACE-SHA256", "SHA-256 of the model's reasoning trace (UTF-8)")
RAW_OUTPUT: Final = local_code("RT-RAW", "Model raw output")
RAW_OUTPUT_SHA256: Final = local_code("RT-RAW-SHA256", "SHA-256 of the model's raw output (UTF-8)")
DRAFT_NOTICE: Final = local_code("RT-DRAFT", "AI draft notice")
READING_FLAGS: Final = local_code("RT-FLAGS", "Model output flags")
HEADER_NOTES: Final = local_code("RT-HDR", "Source header attributes omitted or normalised")
IMAGE_NOTES: Final = local_code("RT-IMG", "How the images read were taken")
NOT_ASSESSED: Final = local_code("RT-F-NA", "No finding assessed (model output without findings)")
CONFIDENCE: Final = local_code("RT-CONF", "Model confidence")
#: A sentence of the model's reasoning that is a finding's evidence (radtrace.model.evidence), in its group or OBX.
EVIDENCE: Final = local_code("RT-EVID", "Model evidence")
#: In the SR group of a finding's second or later box: the Tracking Identifier of its first box's group, which holds
#: the finding's evidence (written once per finding).
EVIDENCE_IN: Final = local_code("RT-EVID-IN", "Model evidence given in")


def reasoning_code(section: str) -> Code:
    """The local code naming one section of the reasoning trace (TEXT items)."""
    return local_code(f"RT-R-{_slug(section)}", f"Model reasoning: {section}")

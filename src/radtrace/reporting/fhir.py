"""The FHIR draft: a collection Bundle with a DiagnosticReport, one Observation per finding (its evidence
sentences as notes, those the review console shows: :func:`radtrace.model.evidence.finding_evidence`), an
Observation of the patient's age at the study where the drafts have one (LOINC 30525-0 or 29553-5, an ``Age`` in
UCUM units: :mod:`radtrace.reporting.draft_age`; not among the report's results), the model as a Device and the
Patient, validated with fhir.resources (R4B models: FHIR R4's technical correction,
identical for these resources' elements used here).

The DiagnosticReport's status comes from settings (``preliminary`` by default; ``final`` is not
allowed). The study is referenced by identifier (``urn:dicom:uid``), not by an ImagingStudy resource
radtrace does not own. Resource IDs are derived from the SR's SOP Instance UID, so re-building gives
the same Bundle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.errors import ReportError
from radtrace.model.evidence import finding_evidence
from radtrace.model.reading import FindingStatus, Reading
from radtrace.reporting import codes
from radtrace.reporting.codes import Code
from radtrace.reporting.draft_age import UCUM_SYSTEM, draft_age
from radtrace.reporting.draft_header import DraftHeader, draft_flags, draft_header
from radtrace.reporting.draft_notes import image_notes, labels_sanitised, output_flags
from radtrace.reporting.header import SourceHeader, name_group
from radtrace.reporting.sr import (
    DRAFT_NOTICE_TEXT,
    draft_identity,
    reasoning_sha256,
    sr_uids,
)
from radtrace.reporting.text import draft_text, fhir_text

__all__ = ["build_fhir_bundle"]

DICOM_UID_SYSTEM: Final = "urn:dicom:uid"
_PRESENCE: Final = {
    FindingStatus.PRESENT: codes.PRESENT,
    FindingStatus.ABSENT: codes.ABSENT,
    FindingStatus.UNCERTAIN: codes.INDETERMINATE,
}
_OBSERVATION_STATUS: Final = {"preliminary": "preliminary", "registered": "registered", "partial": "preliminary"}
_GENDER: Final = {"F": "female", "M": "male", "O": "other"}


def _coding(code: Code) -> dict[str, str]:
    return {"system": code.fhir_system, "code": code.value, "display": code.meaning}


def _concept(code: Code, *also: Code | None) -> dict[str, Any]:
    return {"coding": [_coding(c) for c in (code, *also) if c is not None], "text": code.meaning}


def _study_datetime(header: SourceHeader) -> str | None:
    if header.study_date is None:
        return None
    date = header.study_date.isoformat()
    offset = header.timezone_offset
    if header.study_time is not None and offset:
        return f"{date}T{header.study_time.strftime('%H:%M:%S')}{offset[:3]}:{offset[3:]}"
    return date  # a FHIR dateTime with a time needs a zone; DICOM times without one stay a date


def _patient(draft: DraftHeader) -> dict[str, Any]:
    """The Patient: every value of Patient ID the drafts carry as an identifier, every value of Patient Name as a name
    (:func:`~radtrace.reporting.draft_header.draft_header`: the SR's and the ORU's values, its notes say what was
    left out or replaced)."""
    header = draft.source
    patient: dict[str, Any] = {"resourceType": "Patient"}
    issuer = draft.issuer_of_patient_id
    assigner = {"assigner": {"display": issuer}} if issuer else {}
    if draft.patient_ids:
        patient["identifier"] = [{"value": value, **assigner} for value in draft.patient_ids]
    names = []
    for value in draft.patient_names:
        (family, given, middle, _, _), _ = name_group(value)
        given_names = [name for name in (given, middle) if name.strip()]
        if family.strip() or given_names:
            names.append({"family": family.strip() or None, "given": given_names or None})
    if names:
        patient["name"] = names
    if header.birth_date:
        patient["birthDate"] = header.birth_date.isoformat()
    if header.sex in _GENDER:
        patient["gender"] = _GENDER[header.sex]
    return patient


def _age(
    draft: DraftHeader, patient_url: str, study_ref: dict[str, Any], effective: str | None, when: str, status: str
) -> dict[str, Any] | None:
    """The patient's age at the study, where the drafts have one (:func:`~radtrace.reporting.draft_age.draft_age`: the
    SR's Patient's Age; a FHIR Patient has no age element): an Observation coded LOINC 30525-0 "Age", or 29553-5 "Age
    calculated" where it was derived from the birth and study dates, its value an ``Age`` (UCUM ``a``, ``mo``,
    ``wk``, ``d``), effective at the study, derived from the study's header. Not among the report's results: it is
    no finding of the model's."""
    age = draft_age(draft.source)
    if age is None:
        return None
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "code": _concept(age.code),
        "subject": {"reference": patient_url},
        "issued": when,
        "valueQuantity": {
            "value": age.quantity.value,
            "unit": age.quantity.unit,
            "system": UCUM_SYSTEM,
            "code": age.quantity.ucum,
        },
        "derivedFrom": [study_ref],
    }
    if effective:
        observation["effectiveDateTime"] = effective
    return observation


def _text(value: str) -> str:
    """The model's text as every draft carries it (:func:`draft_text`), which a FHIR string holds unchanged."""
    return fhir_text(draft_text(value).text).text


def _blank(value: str) -> bool:
    """Whether a FHIR ``string`` cannot hold ``value``: empty or only whitespace (Unicode's, U+3000 and U+2028
    included: fhir.resources' ``[ \\r\\n\\t\\S]+`` refuses them, and with them the whole Bundle)."""
    return not value.strip()


def build_fhir_bundle(
    reading: Reading,
    source: Dataset,
    *,
    settings: ReportingSettings,
    revision: int,
    created_at: datetime | None = None,
    others: Sequence[Dataset] = (),
) -> str:
    """The FHIR R4 Bundle (JSON) for one reading of one study revision, validated before it is returned. ``source``
    is the image whose patient and study it reports, ``others`` the other images the model was shown: the header
    notes of all are in the conclusion, as in the SR's and the ORU's header notes."""
    status = settings.fhir_status
    if status not in _OBSERVATION_STATUS:  # the setting refuses "final"; a draft must never claim it
        raise ReportError(f"FHIR status {status!r} is not allowed for a draft")
    draft = draft_header(source, others)
    header = draft.source
    study_uid = header.study_instance_uid
    uids = sr_uids(study_uid, revision, reading.identity)

    def urn(*parts: str) -> str:
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join((uids.sop_instance_uid, *parts)))}"

    when = (created_at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    study_ref = {"type": "ImagingStudy", "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"}}
    effective = _study_datetime(header)
    model_texts = [reading.impression or "", reading.reasoning_text, *(f.evidence or "" for f in reading.findings)]
    sanitised = any(draft_text(text).changed for text in model_texts) or labels_sanitised(reading)
    identity = draft_identity(reading.identity)  # the SR's and the ORU's names of the model
    patient_url, device_url, report_url = urn("patient"), urn("device"), urn("report")

    device: dict[str, Any] = {
        "resourceType": "Device",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uids.device_observer_uid}"}],
        "manufacturer": "radtrace",
        "deviceName": [{"name": identity.model_name, "type": "model-name"}],
        "modelNumber": f"{identity.profile} {identity.profile_version}",
        "version": [{"value": identity.revision or identity.profile_version}],
        "note": [{"text": f"weights sha256 {identity.weights_sha256}"}] if identity.weights_sha256 else None,
    }
    observations: list[tuple[str, dict[str, Any]]] = []
    for index, finding in enumerate(reading.findings, 1):
        coded = codes.finding_code(finding.label)
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "status": _OBSERVATION_STATUS[status],
            "category": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}
                    ]
                }
            ],
            "code": _concept(coded.code, coded.radlex),
            "subject": {"reference": patient_url},
            "issued": when,
            "valueCodeableConcept": _concept(_PRESENCE[finding.status]),
            "device": {"reference": device_url},
            "derivedFrom": [study_ref],
        }
        if effective:
            observation["effectiveDateTime"] = effective
        if finding.confidence is not None:
            observation["component"] = [
                {
                    "code": _concept(codes.CONFIDENCE),
                    "valueQuantity": {
                        "value": finding.confidence,
                        "unit": "1",
                        "system": "http://unitsofmeasure.org",
                        "code": "1",
                    },
                }
            ]
        # the sentences the review console shows as its evidence (one rule: radtrace.model.evidence), one note each
        notes = [{"text": text} for text in map(_text, finding_evidence(reading, finding)) if not _blank(text)]
        if notes:
            observation["note"] = notes
        observations.append((urn("observation", str(index)), observation))

    age = _age(draft, patient_url, study_ref, effective, when, _OBSERVATION_STATUS[status])
    trace = _text(reading.reasoning_text)
    patient = _patient(draft)
    accession = draft.accession_number
    flags = output_flags(reading, sanitised=sanitised, extra=draft_flags(draft.notes))
    header_notes = "\n".join(str(note) for note in draft.notes)
    impression = _text(reading.impression) if reading.impression else None
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uids.sop_instance_uid}"}],
        "status": status,
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
                ]
            }
        ],
        "code": _concept(codes.CHEST_XRAY),
        "subject": {"reference": patient_url},
        "issued": when,
        "imagingStudy": [study_ref],
        "result": [{"reference": url} for url, _ in observations],
        "conclusion": "\n".join(
            part
            for part in (
                DRAFT_NOTICE_TEXT,
                impression,
                flags and f"Model output flags: {flags}",
                image_notes(reading),
                header_notes and f"Header notes:\n{header_notes}",
            )
            if part
        ),
    }
    if effective:
        report["effectiveDateTime"] = effective
    if accession:
        report["identifier"].append(
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": accession,
            }
        )
    if trace:
        report["presentedForm"] = [
            {
                "contentType": "text/plain; charset=utf-8",
                "language": "en",
                "data": base64.b64encode(trace.encode("utf-8")).decode("ascii"),
                "title": f"Model reasoning trace (SHA-256 {reasoning_sha256(reading)})",
                "hash": base64.b64encode(hashlib.sha1(trace.encode("utf-8")).digest()).decode("ascii"),  # noqa: S324 - FHIR Attachment.hash is SHA-1
            }
        ]
    entries = [
        (report_url, report),
        *observations,
        *([(urn("age"), age)] if age else []),
        (patient_url, patient),
        (device_url, {k: v for k, v in device.items() if v is not None}),
    ]
    bundle = {
        "resourceType": "Bundle",
        "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uids.sop_instance_uid}"},
        "type": "collection",
        "timestamp": when,
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
    }
    try:
        validated = Bundle.model_validate(bundle)
    except ValidationError as exc:
        raise ReportError(f"FHIR bundle failed validation: {exc.error_count()} error(s)") from exc
    return json.dumps(json.loads(validated.model_dump_json(exclude_none=True)), ensure_ascii=False, indent=1)

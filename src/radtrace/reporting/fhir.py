"""The FHIR draft: a collection Bundle with a DiagnosticReport, one Observation per finding, the model
as a Device and the Patient, validated with fhir.resources (R4B models: FHIR R4's technical correction,
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
from datetime import UTC, datetime
from typing import Any, Final

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.errors import ReportError
from radtrace.model.reading import FindingStatus, Reading
from radtrace.reporting import codes
from radtrace.reporting.codes import Code
from radtrace.reporting.sr import DRAFT_NOTICE_TEXT, reasoning_sha256, sr_uids

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


def _fhir_date(value: str) -> str | None:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else None


def _study_datetime(source: Dataset) -> str | None:
    date = _fhir_date(str(source.get("StudyDate", "") or ""))
    time = str(source.get("StudyTime", "") or "").split(".")[0]
    if date is None:
        return None
    offset = str(source.get("TimezoneOffsetFromUTC", "") or "")
    if len(time) >= 6 and time[:6].isdigit() and len(offset) == 5 and offset[0] in "+-":
        return f"{date}T{time[:2]}:{time[2:4]}:{time[4:6]}{offset[:3]}:{offset[3:]}"
    return date  # a FHIR dateTime with a time needs a zone; DICOM times without one stay a date


def _patient(source: Dataset) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if source.get("PatientID"):
        patient["identifier"] = [{"value": str(source.PatientID)}]
    name = str(source.get("PatientName", "") or "").split("=")[0]
    if name:
        family, given, *rest = [*name.split("^"), ""]
        patient["name"] = [{"family": family or None, "given": [g for g in (given, *rest[:1]) if g] or None}]
    birth = _fhir_date(str(source.get("PatientBirthDate", "") or ""))
    if birth:
        patient["birthDate"] = birth
    if source.get("PatientSex") in _GENDER:
        patient["gender"] = _GENDER[str(source.PatientSex)]
    return patient


def build_fhir_bundle(
    reading: Reading,
    source: Dataset,
    *,
    settings: ReportingSettings,
    revision: int,
    created_at: datetime | None = None,
) -> str:
    """The FHIR R4 Bundle (JSON) for one reading of one study revision, validated before it is returned."""
    status = settings.fhir_status
    if status not in _OBSERVATION_STATUS:  # the setting refuses "final"; a draft must never claim it
        raise ReportError(f"FHIR status {status!r} is not allowed for a draft")
    study_uid = str(source.StudyInstanceUID)
    uids = sr_uids(study_uid, revision, reading.identity)

    def urn(*parts: str) -> str:
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join((uids.sop_instance_uid, *parts)))}"

    when = (created_at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    study_ref = {"type": "ImagingStudy", "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"}}
    effective = _study_datetime(source)
    identity = reading.identity
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
        if finding.evidence:
            observation["note"] = [{"text": finding.evidence}]
        observations.append((urn("observation", str(index)), observation))

    trace = reading.reasoning_text
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
        "conclusion": "\n".join(part for part in (DRAFT_NOTICE_TEXT, reading.impression, _flags(reading)) if part),
    }
    if effective:
        report["effectiveDateTime"] = effective
    if str(source.get("AccessionNumber", "") or ""):
        report["identifier"].append(
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": str(source.AccessionNumber),
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
        (patient_url, _patient(source)),
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


def _flags(reading: Reading) -> str | None:
    if not reading.flags:
        return None
    return "Model output flags: " + ", ".join(sorted(flag.value for flag in reading.flags))

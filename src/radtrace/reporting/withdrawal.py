"""The withdrawal of a draft already sent: an IHE IOCM rejection note for the PACS, a corrected ORU for the RIS.

A draft read from an image the PACS later re-sent under another patient or study, or rejected (``revisions.
reassigned_at`` / ``rejected_at``), was read from another patient's lungs, or from an image the PACS no longer stands
by. What radtrace had sent of it is withdrawn as clinical systems withdraw a result:

* the PACS gets a Key Object Selection Document (PS3.3 A.35.4) titled with the IOCM rejection code (DCM 113037
  "Rejected for Patient Safety Reasons", PS3.16 CID 7011): a result about the wrong patient is a patient-safety
  rejection, not a quality one (113001) nor a wrong worklist entry (113038, which is about the images' own order).
  Its Current Requested Procedure Evidence Sequence names radtrace's own SR, companion and GSPS instances that
  were sent to that PACS, each also a COMPOSITE item of the TID 2010 content, with the reason as the Key Object
  Description. An IOCM Image Manager hides the referenced instances; any PACS keeps the note beside them in the study;
* the RIS gets the draft's ORU^R01 again with OBR-25 ``C`` (HL7 v2.5 table 0123 "Correction to results": the
  table has no "withdrawn", and ``X`` "Order canceled" would cancel the order, which stands) and each OBX it carried
  with OBX-11 ``W`` (table 0085 "Post original as wrong, e.g. transmitted for wrong patient"), an NTE saying why
  first. Patient, visit and order segments are those of the ORU sent, byte for byte: the correction reaches the
  order the preliminary result was filed under. Its control ID (MSH-10) is fixed by the original's;
* a FHIR consumer reading the file drop gets the draft's Bundle again with the DiagnosticReport and its Observations
  ``entered-in-error`` (the same ids and identifiers: it replaces the preliminary report), the conclusion saying why.

Each is built once, when the withdrawal is queued (:mod:`radtrace.reporting.dispatch.withdrawals`), and stored as
any outbox payload: every retry sends the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from fhir.resources.R4B.bundle import Bundle
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from radtrace.errors import ReportError
from radtrace.reporting.codes import Code
from radtrace.reporting.hl7 import OruMessage, escape

__all__ = [
    "FHIR_WITHDRAWN_STATUS",
    "KOS_SOP_CLASS",
    "OBR_RESULT_STATUS",
    "OBX_RESULT_STATUS",
    "REJECTED_FOR_PATIENT_SAFETY",
    "REJECTION_TITLES",
    "WITHDRAWAL_SERIES_NUMBER",
    "build_rejection_note",
    "build_withdrawal_fhir",
    "build_withdrawal_oru",
    "note_bytes",
    "withdrawal_control_id",
]

KOS_SOP_CLASS: Final = "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection Document Storage
REJECTED_FOR_PATIENT_SAFETY: Final = Code("113037", "DCM", "Rejected for Patient Safety Reasons", "DICOM PS3.16")
#: The IOCM rejection note titles (PS3.16 CID 7011 "Rejected for Patient Safety Reasons" and its siblings), by code:
#: a draft withdrawn because the PACS rejected the image it read mirrors the title the PACS gave (for quality, a wrong
#: worklist entry, retention expired); one withdrawn because the image was re-filed under another patient says 113037.
REJECTION_TITLES: Final = {
    code.value: code
    for code in (
        Code("113001", "DCM", "Rejected for Quality Reasons", "DICOM PS3.16"),
        REJECTED_FOR_PATIENT_SAFETY,
        Code("113038", "DCM", "Incorrect Modality Worklist Entry", "DICOM PS3.16"),
        Code("113039", "DCM", "Data Retention Policy Expired", "DICOM PS3.16"),
    )
}
KEY_OBJECT_DESCRIPTION: Final = Code("113012", "DCM", "Key Object Description", "DICOM PS3.16")
#: After the SR's 9901, the GSPS's 9902 and the companion's 9903: a viewer lists the note as radtrace's fourth series.
WITHDRAWAL_SERIES_NUMBER: Final = 9904
OBR_RESULT_STATUS: Final = "C"  # table 0123: Correction to results
#: FHIR R4 DiagnosticReport.status and Observation.status of a withdrawn draft: "erroneously created or not valid".
FHIR_WITHDRAWN_STATUS: Final = "entered-in-error"
OBX_RESULT_STATUS: Final = "W"  # table 0085: Post original as wrong, e.g. transmitted for wrong patient
#: Copied from the withdrawn SR: the Patient and General Study modules (the note lives in the SR's study).
_PATIENT_STUDY: Final = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDsSequence",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription",
)  # fmt: skip
_TYPE_2: Final = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip
_MAX_UT_NOTE: Final = 1024  # the Key Object Description: a sentence, never a text


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    return item


def _referenced(dataset: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    return item


def build_rejection_note(
    withdrawn: Sequence[Dataset],
    reason: str,
    *,
    destination: str,
    created_at: datetime | None = None,
    title: Code = REJECTED_FOR_PATIENT_SAFETY,
) -> Dataset:
    """The IOCM rejection note (Key Object Selection Document, titled ``title``: DCM 113037 unless the PACS rejected
    the image read for another of :data:`REJECTION_TITLES`) naming ``withdrawn``: radtrace's own instances of one
    draft as sent to the PACS ``destination`` (SR first), all of one study. Its UIDs are fixed by the SR's and the
    destination's."""
    if not withdrawn:
        raise ReportError("a rejection note needs the instances it withdraws")
    first = withdrawn[0]
    study_uid = str(first.StudyInstanceUID)
    if any(str(ds.StudyInstanceUID) != study_uid for ds in withdrawn):
        raise ReportError("the instances a rejection note withdraws are not of one study")
    when = (created_at or datetime.now(UTC)).astimezone(UTC)
    sr_uid = str(first.SOPInstanceUID)
    note = Dataset()
    note.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 192")
    note.SOPClassUID = KOS_SOP_CLASS
    note.SOPInstanceUID = generate_uid(entropy_srcs=["radtrace-withdrawal", sr_uid, destination])
    note.InstanceCreationDate, note.InstanceCreationTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    note.TimezoneOffsetFromUTC = "+0000"
    for keyword in _PATIENT_STUDY:
        if keyword in first:
            note[keyword] = first[keyword]
    for keyword in _TYPE_2:
        if keyword not in note:
            setattr(note, keyword, "")
    note.Modality = "KO"
    note.SeriesInstanceUID = generate_uid(entropy_srcs=["radtrace-withdrawal-series", study_uid])
    note.SeriesNumber = WITHDRAWAL_SERIES_NUMBER
    note.SeriesDescription = "AI DRAFT WITHDRAWN"
    note.ReferencedPerformedProcedureStepSequence = DicomSequence()
    note.Manufacturer = "radtrace"
    note.InstanceNumber = 1
    note.ContentDate, note.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    series: dict[str, list[Dataset]] = {}
    for ds in withdrawn:
        series.setdefault(str(ds.SeriesInstanceUID), []).append(_referenced(ds))
    evidence = Dataset()
    evidence.StudyInstanceUID = study_uid
    evidence.ReferencedSeriesSequence = DicomSequence()
    for series_uid, references in series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedSOPSequence = DicomSequence(references)
        evidence.ReferencedSeriesSequence.append(item)
    note.CurrentRequestedProcedureEvidenceSequence = DicomSequence([evidence])
    # SR Document Content (TID 2010 Key Object Selection): the title, why, and each withdrawn instance
    note.ValueType = "CONTAINER"
    note.ConceptNameCodeSequence = DicomSequence([_code_item(title)])
    note.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    note.ContentTemplateSequence = DicomSequence([template])
    description = Dataset()
    description.RelationshipType = "CONTAINS"
    description.ValueType = "TEXT"
    description.ConceptNameCodeSequence = DicomSequence([_code_item(KEY_OBJECT_DESCRIPTION)])
    description.TextValue = reason[:_MAX_UT_NOTE]
    content = [description]
    for ds in withdrawn:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "COMPOSITE"
        item.ReferencedSOPSequence = DicomSequence([_referenced(ds)])
        content.append(item)
    note.ContentSequence = DicomSequence(content)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = note.SOPClassUID
    meta.MediaStorageSOPInstanceUID = note.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    note.file_meta = meta
    return note


def note_bytes(note: Dataset) -> bytes:
    """The rejection note as a DICOM Part 10 file (what is stored, sent and dropped)."""
    buffer = io.BytesIO()
    note.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def withdrawal_control_id(original: str) -> str:
    """The withdrawal's MSH-10 (ST 20), fixed by the withdrawn ORU's control ID: retries and re-queues reuse it."""
    return "RW" + hashlib.sha256(original.encode()).hexdigest()[:18].upper()


def _hl7_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _field(fields: list[str], number: int, value: str) -> None:
    while len(fields) <= number:
        fields.append("")
    fields[number] = value


def build_withdrawal_oru(sent: bytes, reason: str, *, created_at: datetime | None = None) -> OruMessage:
    """The correction withdrawing the ORU^R01 ``sent`` (the draft's, as delivered): its MSH (new MSH-7 and MSH-10),
    PID, PV1, ORC and OBR (OBR-22 now, OBR-25 ``C``), an NTE with ``reason``, and each of its OBX with OBX-11 ``W``.
    Parsed back with hl7apy STRICT; raises :class:`ReportError` when it is not valid."""
    when = _hl7_datetime(created_at or datetime.now(UTC))
    try:
        text = sent.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError("the ORU to withdraw is not UTF-8") from exc
    segments = [segment for segment in text.replace("\n", "\r").split("\r") if segment]
    out: list[str] = []
    control = ""
    notes_added = False
    for segment in segments:
        fields = segment.split("|")
        name = fields[0]
        if name == "MSH":  # MSH-n is fields[n - 1]: MSH-1 is the separator itself
            control = fields[9] if len(fields) > 9 else ""
            if not control:
                raise ReportError("the ORU to withdraw has no control ID (MSH-10)")
            _field(fields, 6, when)
            _field(fields, 9, withdrawal_control_id(control))
        elif name == "OBR":
            _field(fields, 22, when)
            _field(fields, 25, OBR_RESULT_STATUS)
        elif name == "NTE":
            continue  # the draft's notes (an AI draft, its model): replaced by why it is withdrawn
        elif name == "OBX":
            _field(fields, 11, OBX_RESULT_STATUS)
        out.append("|".join(fields))
        if name == "OBR" and not notes_added:
            notes_added = True
            withdrawn = f"Preliminary AI draft result withdrawn (message {control}): {reason}"
            out.append(f"NTE|1|L|{escape(withdrawn)}")
            out.append("NTE|2|L|" + escape("Its observations below are posted as wrong (OBX-11 W); do not use them."))
    if not control or not notes_added:
        raise ReportError("the ORU to withdraw has no MSH or OBR segment")
    message = "\r".join(out) + "\r"
    try:
        parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    except HL7apyException as exc:
        raise ReportError(f"the withdrawal ORU is not valid HL7: {exc}") from exc
    return OruMessage(text=message, control_id=withdrawal_control_id(control))


def build_withdrawal_fhir(sent: bytes, reason: str, *, created_at: datetime | None = None) -> bytes:
    """The FHIR Bundle withdrawing the draft's Bundle ``sent`` (as dropped): the same resources, the same ids and
    identifiers (a consumer replaces what it holds), the DiagnosticReport and each Observation ``entered-in-error``
    (FHIR R4 diagnostic-report-status, observation-status: "erroneously created ... should not be used"), the report's
    conclusion saying why, its reasoning trace dropped; the Bundle's timestamp ``created_at``. Validated as the draft
    is (fhir.resources); raises :class:`ReportError` when ``sent`` is not such a Bundle."""
    try:
        bundle = json.loads(sent.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError("the FHIR draft to withdraw is not JSON") from exc
    entries = bundle.get("entry") if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle" else None
    resources = [entry.get("resource") for entry in entries or () if isinstance(entry, dict)]
    reports = [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "DiagnosticReport"]
    if not reports:
        raise ReportError("the FHIR draft to withdraw has no DiagnosticReport")
    for resource in resources:
        if isinstance(resource, dict) and resource.get("resourceType") in ("DiagnosticReport", "Observation"):
            resource["status"] = FHIR_WITHDRAWN_STATUS
    for report in reports:
        report["conclusion"] = (
            f"Preliminary AI draft result withdrawn (entered in error): {reason}\n"
            "Its observations are entered in error too; do not use them."
        )
        report.pop("presentedForm", None)
    bundle["timestamp"] = (
        (created_at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
    try:
        validated = Bundle.model_validate(bundle)
    except ValidationError as exc:
        raise ReportError(f"the FHIR withdrawal failed validation: {exc.error_count()} error(s)") from exc
    text = json.dumps(json.loads(validated.model_dump_json(exclude_none=True)), ensure_ascii=False, indent=1)
    return text.encode("utf-8")

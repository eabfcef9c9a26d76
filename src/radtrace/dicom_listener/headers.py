"""Read what the listener needs from a received file, and refuse what cannot be parsed.

Only the header is decoded: values larger than a few KiB (the pixel data) are skipped, but their
lengths are checked against the file, so a truncated transfer is caught without reading it. Every
other element is converted, so a malformed value (a wrong VR or length) fails here rather than in
the worker. Any failure is a :class:`~radtrace.errors.DicomInputError` with a patient-free reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from radtrace.dicom_listener.spool import check_uid
from radtrace.errors import DicomInputError

__all__ = ["ReceivedHeader", "read_header"]

_DEFER_BYTES: Final = 4096
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF


@dataclass(frozen=True)
class ReceivedHeader:
    """The identifiers and routing facts of one received instance."""

    study_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str | None
    transfer_syntax_uid: str
    modality: str | None
    body_part: str | None
    accession: str | None
    study_description: str | None
    requested_priority: str | None = None
    patient_id: str | None = None  # for the audit event only (QA searches by it); never logged
    patient_id_issuer: str | None = None


def _requested_priority(ds: object) -> str | None:
    """Requested Procedure Priority (0040,1003): top level, or in a Request Attributes item (images).

    Only a routing hint: a malformed nested value is treated as absent rather than failing the instance.
    """
    try:
        value = getattr(ds, "RequestedProcedurePriority", None)
        for item in getattr(ds, "RequestAttributesSequence", None) or ():
            if value is not None:
                break
            value = getattr(item, "RequestedProcedurePriority", None)
    except Exception:  # pydicom raises many types for a malformed nested element
        return None
    return _text(value, 16)


def _text(value: object, limit: int) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text[:limit] or None


def read_header(path: Path) -> ReceivedHeader:
    """Parse a Part 10 file's header; :class:`DicomInputError` if it is not a complete, parsable dataset."""
    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # pydicom warns about many malformations instead of raising
            ds = dcmread(path, defer_size=_DEFER_BYTES)
            if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                # Inflated in memory by pydicom: positions are not file offsets, and nothing is deferred.
                ds = dcmread(path)
            for tag in list(ds.keys()):
                raw = ds.get_item(tag, keep_deferred=True)
                if isinstance(raw, RawDataElement) and raw.value is None and raw.length not in (0, _UNDEFINED_LENGTH):
                    if raw.value_tell is None or raw.value_tell + raw.length > size:
                        raise DicomInputError(f"dataset is truncated inside element {tag}")
                else:
                    ds[tag]  # converting the value is the check
            meta = ds.file_meta
    except DicomInputError:
        raise
    except (InvalidDicomError, EOFError) as exc:
        raise DicomInputError(f"not a DICOM dataset: {type(exc).__name__}") from exc
    except Exception as exc:  # pydicom raises many types for malformed input; all mean the same here
        raise DicomInputError(f"dataset cannot be parsed ({type(exc).__name__})") from exc
    study_uid = check_uid(ds.get("StudyInstanceUID"), "Study Instance UID")
    sop_uid = check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID")
    sop_class = check_uid(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID"), "SOP Class UID")
    series = ds.get("SeriesInstanceUID")
    return ReceivedHeader(
        study_uid=study_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        series_uid=check_uid(series, "Series Instance UID") if series else None,
        transfer_syntax_uid=check_uid(meta.get("TransferSyntaxUID"), "Transfer Syntax UID"),
        modality=_text(ds.get("Modality"), 16),
        body_part=_text(ds.get("BodyPartExamined"), 16),
        accession=_text(ds.get("AccessionNumber"), 64),
        study_description=_text(ds.get("StudyDescription"), 64),
        requested_priority=_requested_priority(ds),
        patient_id=_text(ds.get("PatientID"), 64),
        patient_id_issuer=_text(ds.get("IssuerOfPatientID"), 64),
    )

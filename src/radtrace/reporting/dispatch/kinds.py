"""What the outbox delivers: the kinds of payload, the built reports of one revision, and which (kind, destination,
payload) the settings ask for (:func:`planned_deliveries`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from radtrace.config import DispatchSettings
from radtrace.reporting.dispatch.cstore import describe_destination

__all__ = [
    "ASSESSMENT_KINDS",
    "DRAFT_KINDS",
    "KIND_ASSESSMENT",
    "KIND_ASSESSMENT_FILE",
    "KIND_ASSESSMENT_HL7",
    "KIND_COMPANION",
    "KIND_FHIR",
    "KIND_FILE",
    "KIND_GSPS",
    "KIND_HL7",
    "KIND_SR",
    "KIND_WITHDRAWAL",
    "KIND_WITHDRAWAL_FILE",
    "KIND_WITHDRAWAL_HL7",
    "NOT_DRAFT_KINDS",
    "WITHDRAWAL_KINDS",
    "PlannedDelivery",
    "ReportFiles",
    "file_drop_deliveries",
    "payload_suffix",
    "planned_deliveries",
]

KIND_SR: Final = "sr"
KIND_GSPS: Final = "gsps"
KIND_COMPANION: Final = "companion"  # the Basic Text SR beside the TID 1500 SR (radtrace.reporting.companion)
KIND_HL7: Final = "hl7"
KIND_FHIR: Final = "fhir"
KIND_FILE: Final = "file"
#: A radiologist's assessment SR (radtrace.console.assessment): not part of the revision's draft, so it neither
#: records ``report_created`` nor counts when settlement decides the revision's dispatched/failed state.
KIND_ASSESSMENT: Final = "assessment"
KIND_ASSESSMENT_HL7: Final = "assessment-hl7"  # the same assessment as an ORU for the RIS (console.assessment_hl7)
KIND_ASSESSMENT_FILE: Final = "assessment-file"  # the assessment SR (and its ORU) written into the file drop
#: The kinds that carry a radiologist's assessment, not the revision's draft.
ASSESSMENT_KINDS: Final = (KIND_ASSESSMENT, KIND_ASSESSMENT_HL7, KIND_ASSESSMENT_FILE)
#: The withdrawal of a draft already sent (radtrace.reporting.dispatch.withdrawals): the IOCM rejection note to a
#: PACS, the corrected ORU to the RIS, both into the file drop.
KIND_WITHDRAWAL: Final = "withdrawal"
KIND_WITHDRAWAL_HL7: Final = "withdrawal-hl7"
KIND_WITHDRAWAL_FILE: Final = "withdrawal-file"
#: The kinds that withdraw a draft already sent.
WITHDRAWAL_KINDS: Final = (KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7, KIND_WITHDRAWAL_FILE)
#: The kinds of a revision's rows that are not its draft: a radiologist's assessment, a draft's withdrawal. They are
#: delivered as any row but never decide the revision's state (settlement, the reconciler's unsettled revisions), and
#: ``radtrace study retry`` leaves them alone.
NOT_DRAFT_KINDS: Final = (*ASSESSMENT_KINDS, *WITHDRAWAL_KINDS)
#: The kinds that carry the revision's draft: never sent once the revision is marked (reassigned or rejected).
DRAFT_KINDS: Final = (KIND_SR, KIND_GSPS, KIND_COMPANION, KIND_HL7, KIND_FHIR, KIND_FILE)
_SUFFIX: Final = {KIND_SR: ".dcm", KIND_GSPS: ".dcm", KIND_COMPANION: ".dcm", KIND_HL7: ".hl7", KIND_FHIR: ".json",
                  KIND_ASSESSMENT: ".dcm", KIND_ASSESSMENT_HL7: ".hl7", KIND_WITHDRAWAL: ".dcm",
                  KIND_WITHDRAWAL_HL7: ".hl7"}  # fmt: skip


def payload_suffix(kind: str, destination: str) -> str:
    """A payload file's suffix: by kind, or the file-drop destination's own, else ``.bin``."""
    return _SUFFIX.get(kind) or "".join(Path(destination).suffixes[-2:]) or ".bin"


@dataclass(frozen=True)
class ReportFiles:
    """The built reports of one revision, as bytes."""

    sr_sop_instance_uid: str
    sr: bytes
    hl7: bytes | None = None
    fhir: bytes | None = None
    gsps: bytes | None = None
    companion: bytes | None = None


@dataclass(frozen=True)
class PlannedDelivery:
    """One payload for one destination."""

    kind: str
    destination: str
    payload: bytes


def planned_deliveries(settings: DispatchSettings, reports: ReportFiles) -> list[PlannedDelivery]:
    """Every (kind, destination, payload) the settings ask for: each PACS, the RIS, the file drop."""
    planned = [PlannedDelivery(KIND_SR, describe_destination(pacs), reports.sr) for pacs in settings.pacs]
    if reports.gsps is not None:
        planned += [PlannedDelivery(KIND_GSPS, describe_destination(pacs), reports.gsps) for pacs in settings.pacs]
    if reports.companion is not None:
        planned += [
            PlannedDelivery(KIND_COMPANION, describe_destination(pacs), reports.companion) for pacs in settings.pacs
        ]
    if settings.ris is not None and reports.hl7 is not None:
        planned.append(PlannedDelivery(KIND_HL7, f"{settings.ris.host}:{settings.ris.port}", reports.hl7))
    planned += file_drop_deliveries(
        settings, KIND_FILE, reports.sr_sop_instance_uid,
        [(".dcm", reports.sr), (".hl7", reports.hl7), (".fhir.json", reports.fhir), (".gsps.dcm", reports.gsps),
         (".companion.dcm", reports.companion)],
    )  # fmt: skip
    return planned


def file_drop_deliveries(
    settings: DispatchSettings, kind: str, uid: str, files: Sequence[tuple[str, bytes | None]]
) -> list[PlannedDelivery]:
    """The file drop's deliveries (none without ``dispatch.file_drop_dir``): ``<folder>/<uid><suffix>`` for each
    (suffix, payload) of ``files`` that is not None; ``uid`` is the document's SOP Instance UID, so no patient data
    is in a name, and a retry writes the same name again (:func:`radtrace.reporting.dispatch.filedrop.drop_file`)."""
    if settings.file_drop_dir is None:
        return []
    stem = settings.file_drop_dir / uid
    return [PlannedDelivery(kind, f"{stem}{suffix}", payload) for suffix, payload in files if payload is not None]

"""All drafts of one reading at once: the SR, the HL7 ORU that names it, the FHIR Bundle, the GSPS
when ``reporting.gsps`` is on and the reading has boxes, and the companion Basic Text SR when
``reporting.companion_document`` is on (the default).

This is what the worker calls after inference; the result goes to
:meth:`radtrace.reporting.dispatch.outbox.Outbox.enqueue` through
:func:`radtrace.reporting.dispatch.outbox.planned_deliveries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.model.reading import Reading
from radtrace.reporting.companion import build_companion, is_companion
from radtrace.reporting.dispatch.outbox import ReportFiles
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.gsps import build_gsps
from radtrace.reporting.hl7 import build_oru
from radtrace.reporting.sr import build_sr, sr_bytes

__all__ = ["build_drafts"]


def build_drafts(
    reading: Reading,
    sources: Sequence[Dataset],
    *,
    settings: ReportingSettings,
    revision: int,
    predecessors: Sequence[Dataset] = (),
    created_at: datetime | None = None,
) -> ReportFiles:
    """Build the SR, the ORU^R01 and the FHIR Bundle of one reading (pure: no I/O, no network).

    ``predecessors`` are the study's earlier SR documents: the TID 1500 ones are the SR's predecessors,
    the companion documents (Basic Text SR) the companion's.
    """
    when = created_at or datetime.now(UTC)
    drafts = [ds for ds in predecessors if not is_companion(ds)]
    sr = build_sr(reading, sources, settings=settings, revision=revision, predecessors=drafts, content_datetime=when)
    companion = (
        build_companion(
            reading,
            sr,
            settings=settings,
            revision=revision,
            predecessors=[ds for ds in predecessors if is_companion(ds)],
            content_datetime=when,
        )
        if settings.companion_document
        else None
    )
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    first_shown, *others = [by_uid[image.sop_instance_uid] for image in reading.images]  # the SR's (build_sr)
    oru = build_oru(
        reading,
        first_shown,
        settings=settings,
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        created_at=when,
        others=others,
    )
    fhir = build_fhir_bundle(reading, first_shown, settings=settings, revision=revision, created_at=when, others=others)
    gsps = (
        build_gsps(reading, sources, settings=settings, revision=revision, content_datetime=when)
        if settings.gsps
        else None
    )
    return ReportFiles(
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        sr=sr_bytes(sr),
        hl7=oru.encode(),
        fhir=fhir.encode("utf-8"),
        gsps=sr_bytes(gsps) if gsps is not None else None,
        companion=sr_bytes(companion) if companion is not None else None,
    )

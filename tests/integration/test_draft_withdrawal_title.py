"""A draft withdrawn because the PACS rejected the image it read mirrors the PACS's rejection title (CID 7011).

The PACS rejects a film for quality (an IHE IOCM rejection note titled DCM 113001, as dcm4che's mkkos makes one) after
radtrace's draft reached it: the title is stored with the mark (``revisions.rejection_code``) and the rejection note
radtrace sends to withdraw its draft is titled 113001 too (before: always 113037 "Rejected for Patient Safety
Reasons", which stays the title for an image re-filed under another patient). Real NIH film, in-process listener,
demo pipeline, real Orthanc, MLLP RIS; SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from listener_support import audit_payloads
from orthanc_support import Orthanc
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study
from reassigned_support import rejection_note, send
from withdrawal_support import (
    deliver,
    orthanc_fixture,  # noqa: F401  (the module's Orthanc)
    outbox_rows,
    reconcile,
    withdrawal_site,
)
from worker_support import wait_until

pytestmark = pytest.mark.integration


def test_a_draft_read_from_an_image_the_pacs_rejected_for_quality_is_withdrawn_under_the_pacss_own_title(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc
) -> None:
    """The PACS rejects the film for quality (DCM 113001, CID 7011) after the draft reached Orthanc: the title is
    stored with the mark, and the rejection note radtrace sends mirrors it (was always 113037)."""
    study, sop = generate_uid(), generate_uid()
    with withdrawal_site(tmp_path, store, listener_port, orthanc) as site:
        with site.reading(study, sop, ("P8", "EIGHT^PAT", "ACC8")) as film:
            deliver(site.pipeline, [row.id for row in outbox_rows(store, study)])
            note = rejection_note(tmp_path / "quality.dcm", film, "113001", "Rejected for Quality Reasons")
            assert send([note], listener_port) == [0x0000]
            wait_until(lambda: len(audit_payloads(store, "instance_rejection_noted")) == 1)
        with store.session() as session:
            assert session.scalar(sa.select(Revision.rejection_code).join(Study).where(Study.study_uid == study)) == (
                "113001"
            )
        queued = reconcile(site.settings, store)
        assert len(queued) == 2  # the PACS's note, the RIS's correction
        deliver(site.pipeline, queued)
    [note_id] = orthanc.study_instances(study, "KO")
    title = orthanc.dataset(note_id).ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113001", "DCM", "Rejected for Quality Reasons"
    )  # fmt: skip

"""A draft withdrawn by radtrace (an image it read was rejected by the PACS or moved to another patient) is never
named as a predecessor of a later draft of its study.

Before, a later revision's SR and companion named every earlier revision's in their Predecessor Documents Sequence,
the withdrawn one too: PS3.3 C.17.2 (Table C.17-2) has that sequence "refer to SR SOP Instances (e.g., prior or
preliminary reports) whose content has been wholly or partially included in this document", and the new draft
includes nothing of a draft about an image the PACS no longer stands by, which radtrace's own IHE IOCM rejection note
has taken out of the PACS. A viewer following the sequence (dsr2html links it under "Predecessor Docs") offered the
withdrawn draft as the new one's earlier version, a link the PACS answers with nothing (IOCM hides it). Now the
withdrawn revision's SR and companion are left out, whether kept under <data_dir>/drafts or held by the outbox (a
file drop here); the earlier draft that stands is still named. Real film (tests/data/real-cxr, NIH ChestX-ray14),
in-process listener, demo pipeline, both stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from listener_support import audit_payloads, running
from radtrace.reporting.dispatch import withdrawals
from radtrace.store.engine import Store
from reassigned_support import film_as, new_pipeline, read_first, read_inputs, rejection_note, send
from withdrawn_drafts_support import (
    dciodvfy_problems,
    dropping_settings,
    kept,
    predecessors,
    predecessors_shown,
    read_strict,
)
from worker_support import wait_until

pytestmark = pytest.mark.integration


def test_a_later_draft_names_the_earlier_draft_that_stands_and_not_the_withdrawn_one(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """Revision 1 reads the PA film; revision 2 (an AP film added) is read, dropped, and withdrawn when the PACS
    rejects the AP film; revision 3 (another AP film) names revision 1's SR and companion, not revision 2's."""
    settings = dropping_settings(tmp_path, store, listener_port)
    study, pa_sop, ap_sop, again_sop = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)

    def film(name: str, sop: str, view: str) -> Path:
        return film_as(tmp_path / name, study_uid=study, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                       accession="A", ViewPosition=view, BodyPartExamined="CHEST")  # fmt: skip

    with running(settings, store):
        read_first(pipeline, store, listener_port, film("pa.dcm", pa_sop, "PA"), study)
        ap = film("ap.dcm", ap_sop, "AP")
        read_first(pipeline, store, listener_port, ap, study, revision=2)
        assert pipeline.outbox.deliver_due()  # both drafts dropped: the outbox holds their SRs too
        note = rejection_note(tmp_path / "note.dcm", ap, "113037", "Rejected for Patient Safety Reasons")
        assert send([note], listener_port) == [0x0000]
        wait_until(lambda: len(audit_payloads(store, "instance_rejection_noted")) == 1)
        [withdrawn] = withdrawals.sweep(pipeline.outbox)  # revision 2's: its rejection note into the drop
        assert withdrawn.queued
        pipeline.outbox.deliver_due()
        read_first(pipeline, store, listener_port, film("again.dcm", again_sop, "AP"), study, revision=3)

    assert ap_sop not in read_inputs(store, study, 3)  # the rejected film is not read again
    first, second, third = (read_strict(kept(settings, study, n)) for n in (1, 2, 3))
    companions = [read_strict(kept(settings, study, n, "companion.dcm")) for n in (1, 2, 3)]
    assert predecessors(second) == [str(first.SOPInstanceUID)]  # named while it stood
    assert predecessors(third) == [str(first.SOPInstanceUID)]  # before: revision 2's SR as well
    assert predecessors(companions[2]) == [str(companions[0].SOPInstanceUID)]
    assert predecessors_shown(kept(settings, study, 3)) == [str(first.SOPInstanceUID)]
    assert dciodvfy_problems(kept(settings, study, 3)) == []
    assert dciodvfy_problems(kept(settings, study, 3, "companion.dcm")) == []


def test_a_draft_after_the_only_earlier_one_was_withdrawn_names_no_predecessor(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """The PACS rejects the only film revision 1 read (its dropped draft withdrawn); a later film opens revision 2:
    its SR and companion carry no Predecessor Documents Sequence at all (before: revision 1's), and are valid."""
    settings = dropping_settings(tmp_path, store, listener_port)
    study, sop, later_sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        first = film_as(tmp_path / "a.dcm", study_uid=study, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                        accession="A", ViewPosition="PA", BodyPartExamined="CHEST")  # fmt: skip
        read_first(pipeline, store, listener_port, first, study)
        assert pipeline.outbox.deliver_due()
        note = rejection_note(tmp_path / "note.dcm", first, "113001", "Rejected for Quality Reasons")
        assert send([note], listener_port) == [0x0000]
        wait_until(lambda: len(audit_payloads(store, "instance_rejection_noted")) == 1)
        later = film_as(tmp_path / "later.dcm", study_uid=study, sop_uid=later_sop, patient_id="P1",
                        name="ONE^PAT", accession="A", ViewPosition="AP", BodyPartExamined="CHEST")  # fmt: skip
        read_first(pipeline, store, listener_port, later, study, revision=2)
    for name in ("sr.dcm", "companion.dcm"):
        document = read_strict(kept(settings, study, 2, name))
        assert "PredecessorDocumentsSequence" not in document
        assert dciodvfy_problems(kept(settings, study, 2, name)) == []

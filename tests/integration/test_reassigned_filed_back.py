"""The PACS undoes a wrong-patient correction byte for byte (A -> B -> A): A reads its image again, B's draft is
withdrawn.

Found by review: image X of patient P1 was read in study A and A's draft sent; the PACS moved X to study B (patient P2)
and radtrace withdrew A's draft and read X for B; then the PACS undid its correction, re-sending X under A exactly as
it first had (the same bytes). Before, the listener took that copy for a duplicate of A's first version: nothing was
stored or queued, the newest copy of X stayed in B, so no later reading of A could read X (it counted as moved away),
A was left with no valid draft while its image was back, and B's draft, read from P1's image, stood. Now a copy is a
duplicate only of a version in the study where the PACS filed the image last: X back in A is A's next version, A's
next revision reads it (audited as every reading; the worklist lists its draft, unflagged), B's revision that read X is
flagged and its dropped draft withdrawn; A's first revision keeps its flag and its draft stays withdrawn, and A's new
SR does not name it as a predecessor. Real film (tests/data/real-cxr, NIH ChestX-ray14), in-process listener, demo
pipeline, a file drop as destination, the review console; both stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from console_support import add_user, console_client, sign_in, study_path
from listener_support import audit_payloads, running
from radtrace.dicom_listener.reassigned import flagged_revisions
from radtrace.reporting.dispatch import withdrawals
from radtrace.store.engine import Store
from radtrace.worker.pipeline import Result
from reassigned_support import film_as, new_pipeline, read_first, read_inputs, revision_states, send, worklist_row
from withdrawn_drafts_support import dciodvfy_problems, dropping_settings, kept, predecessors, read_strict
from worker_support import wait_until

pytestmark = pytest.mark.integration

FLAG_LABEL = "image re-sent under another patient/study"


def _withdrawn(store: Store) -> list[tuple[str, int]]:
    with store.session() as session:
        return [(r.study_uid, r.revision) for r in flagged_revisions(session)]


def test_an_image_filed_back_byte_for_byte_is_read_again_by_its_own_study_and_withdrawn_from_the_other(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = dropping_settings(tmp_path, store, listener_port)
    drop = settings.dispatch.file_drop_dir
    assert drop is not None
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    add_user(store, "rad.one", "radiologist")
    with running(settings, store), console_client(store, settings) as client:
        filed = film_as(tmp_path / "a.dcm", study_uid=study_a, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                        accession="ACCA")  # fmt: skip
        read_first(pipeline, store, listener_port, filed, study_a)
        assert pipeline.outbox.deliver_due()  # A's draft dropped
        moved = film_as(tmp_path / "b.dcm", study_uid=study_b, sop_uid=sop, patient_id="P2", name="TWO^PAT",
                        accession="ACCB")  # fmt: skip
        read_first(pipeline, store, listener_port, moved, study_b)
        assert send([moved], listener_port) == [0x0000]  # B's copy again: a duplicate, as before
        wait_until(lambda: len(audit_payloads(store, "instance_duplicate")) == 1)
        assert pipeline.outbox.deliver_due()  # B's draft dropped
        assert [len(w.queued) > 0 for w in withdrawals.sweep(pipeline.outbox)] == [True]  # A's, read from P2's image
        pipeline.outbox.deliver_due()

        # the PACS undoes its correction: X under A again, byte for byte as A first had it
        assert send([filed], listener_port) == [0x0000]
        wait_until(lambda: revision_states(store, study_a) == [(1, "reported"), (2, "queued")])  # before: nothing
        assert pipeline.process(study_a, 2).result is Result.REPORTED
        assert revision_states(store, study_b) == [(1, "reported")]
        [withdrawn_b] = withdrawals.sweep(pipeline.outbox)  # B's draft, read from P1's image
        assert withdrawn_b.queued
        pipeline.outbox.deliver_due()

        sign_in(client, "rad.one")
        worklist = client.get("/console/worklist?filter=all").text
        assert FLAG_LABEL not in worklist_row(worklist, study_path(store, study_a, 2))  # A's new draft, unflagged
        assert FLAG_LABEL in worklist_row(worklist, study_path(store, study_b, 1))

    assert read_inputs(store, study_a, 2) == [sop]  # read again, from A's own copy
    assert _withdrawn(store) == sorted([(study_a, 1), (study_b, 1)])  # A's first revision keeps its flag
    assert len(audit_payloads(store, "instance_duplicate")) == 1  # the return was not one
    events = [json.loads(p) for p in audit_payloads(store, "instance_reassigned")]
    assert [(e["new_study_uid"], e["revisions"], e.get("filed_back")) for e in events] == [
        (study_b, [1], None),
        (study_a, [1], {"revision": 2}),
    ]
    assert [(json.loads(p)["sop_instance_uid"], json.loads(p)["version"]) for p in
            audit_payloads(store, "instance_new_version")] == [(sop, 2), (sop, 3)]  # fmt: skip

    sr_a1, sr_a2, sr_b = (read_strict(kept(settings, uid, n)) for uid, n in ((study_a, 1), (study_a, 2), (study_b, 1)))
    withdrawal_notes = sorted(path.name for path in drop.glob("*.withdrawal.dcm"))
    assert withdrawal_notes == sorted(f"{sr.SOPInstanceUID}.withdrawal.dcm" for sr in (sr_a1, sr_b))
    assert (drop / f"{sr_a2.SOPInstanceUID}.dcm").is_file()  # A's new draft delivered, and not withdrawn
    assert predecessors(sr_a2) == []  # A's first draft was withdrawn: not the new one's predecessor
    assert str(sr_a2.PatientID) == "P1"
    assert dciodvfy_problems(kept(settings, study_a, 2)) == []

"""The PACS undoes a patient change within one study byte for byte (A/P1 -> A/P9 -> A/P1): A reads its image again
under P1, the P9-era draft is withdrawn.

Found by review (open item of the A -> B -> A fix, 6ebbd1d): image X of patient P1 was read in study A and A's draft
sent; the PACS re-filed study A under patient P9 (the same Study UID) and radtrace withdrew A's first draft and read X
again under P9; then the PACS undid the change, re-sending X exactly as it first had (the same bytes). Every version
was in study A, so the listener took the copy for a duplicate of version 1: nothing was stored or queued, the newest
copy of X stayed P9's, and the P9-era draft, naming P9 for P1's image, stood. Now a copy is a duplicate only of a
version held under the study and Patient ID where the PACS filed the image last: X back under P1 is A's version 3,
A's revision 3 reads it under P1, the P9-era revision 2 is flagged and its dropped draft withdrawn (audited
``instance_reassigned`` with ``filed_back``), and the new SR names neither withdrawn draft as a predecessor. Real film
(tests/data/real-cxr, NIH ChestX-ray14), in-process listener, demo pipeline, a file drop as destination; both stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from listener_support import audit_payloads, running
from radtrace.dicom_listener.reassigned import flagged_revisions
from radtrace.reporting.dispatch import withdrawals
from radtrace.store.engine import Store
from radtrace.worker.pipeline import Result
from reassigned_support import film_as, new_pipeline, read_first, read_inputs, revision_states, send
from withdrawn_drafts_support import dciodvfy_problems, dropping_settings, kept, predecessors, read_strict
from worker_support import wait_until

pytestmark = pytest.mark.integration


def test_an_image_filed_back_under_its_first_patient_byte_for_byte_is_read_again_and_the_other_draft_withdrawn(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = dropping_settings(tmp_path, store, listener_port)
    drop = settings.dispatch.file_drop_dir
    assert drop is not None
    study, sop = generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        filed = film_as(tmp_path / "p1.dcm", study_uid=study, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                        accession="ACCA")  # fmt: skip
        read_first(pipeline, store, listener_port, filed, study)
        assert pipeline.outbox.deliver_due()  # the P1 draft dropped
        changed = film_as(tmp_path / "p9.dcm", study_uid=study, sop_uid=sop, patient_id="P9", name="NINE^PAT",
                          accession="ACCA")  # fmt: skip
        read_first(pipeline, store, listener_port, changed, study, revision=2)
        assert pipeline.outbox.deliver_due()  # the P9 draft dropped
        assert [len(w.queued) > 0 for w in withdrawals.sweep(pipeline.outbox)] == [True]  # revision 1's (P1's)
        pipeline.outbox.deliver_due()

        # the PACS undoes its change: X under P1 again, byte for byte as first filed
        assert send([filed], listener_port) == [0x0000]
        wait_until(lambda: revision_states(store, study) == [(1, "reported"), (2, "reported"), (3, "queued")])
        assert pipeline.process(study, 3).result is Result.REPORTED
        [withdrawn] = withdrawals.sweep(pipeline.outbox)  # revision 2's, naming P9 for P1's image
        assert withdrawn.queued
        pipeline.outbox.deliver_due()

    assert read_inputs(store, study, 3) == [sop]  # read again, under P1
    with store.session() as session:
        assert [(r.study_uid, r.revision) for r in flagged_revisions(session)] == [(study, 1), (study, 2)]
    assert audit_payloads(store, "instance_duplicate") == []  # before: the return was one
    events = [json.loads(p) for p in audit_payloads(store, "instance_reassigned")]
    assert [(e["new_study_uid"], e["changed"], e["revisions"], e.get("filed_back")) for e in events] == [
        (study, ["patient"], [1], None),
        (study, ["patient"], [2], {"revision": 3}),
    ]
    assert [(json.loads(p)["sop_instance_uid"], json.loads(p)["version"]) for p in
            audit_payloads(store, "instance_new_version")] == [(sop, 2), (sop, 3)]  # fmt: skip

    sr1, sr2, sr3 = (read_strict(kept(settings, study, n)) for n in (1, 2, 3))
    assert [str(sr.PatientID) for sr in (sr1, sr2, sr3)] == ["P1", "P9", "P1"]
    notes = sorted(path.name for path in drop.glob("*.withdrawal.dcm"))
    assert notes == sorted(f"{sr.SOPInstanceUID}.withdrawal.dcm" for sr in (sr1, sr2))
    assert (drop / f"{sr3.SOPInstanceUID}.dcm").is_file()  # the new P1 draft delivered, and not withdrawn
    assert predecessors(sr3) == []  # both earlier drafts withdrawn: neither is the new one's predecessor
    assert dciodvfy_problems(kept(settings, study, 3)) == []


def test_a_stale_copy_under_the_same_patient_is_still_a_duplicate(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """Unchanged: an old copy of version 1 re-sent after a corrected version 2 under the same patient (the name
    corrected) is version 1's duplicate, not a version 3."""
    settings = dropping_settings(tmp_path, store, listener_port)
    study, sop = generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        first = film_as(tmp_path / "v1.dcm", study_uid=study, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                        accession="ACCA")  # fmt: skip
        read_first(pipeline, store, listener_port, first, study)
        corrected = film_as(tmp_path / "v2.dcm", study_uid=study, sop_uid=sop, patient_id="P1", name="ONE^PATIENT",
                            accession="ACCA")  # fmt: skip
        read_first(pipeline, store, listener_port, corrected, study, revision=2)
        assert send([first], listener_port) == [0x0000]
        wait_until(lambda: len(audit_payloads(store, "instance_duplicate")) == 1)
    [duplicate] = [json.loads(p) for p in audit_payloads(store, "instance_duplicate")]
    assert (duplicate["version"], duplicate["revision"]) == (1, 1)
    assert revision_states(store, study) == [(1, "reported"), (2, "reported")]
    assert audit_payloads(store, "instance_reassigned") == []

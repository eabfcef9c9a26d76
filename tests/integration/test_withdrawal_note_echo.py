"""radtrace's own rejection note, forwarded back by a PACS that routes whole studies, flags nothing.

A draft withdrawn from a PACS (:mod:`radtrace.reporting.dispatch.withdrawals`) is withdrawn by an IHE IOCM rejection
note naming radtrace's SR and companion. A PACS that forwards a study again when it changes (Orthanc's routing in
tests/e2e/test_pacs_loop) sends the study back: radtrace's SRs (kept with the study's latest revision, as in
test_outside_sr_echo) and that note. Before, the listener read the note as the PACS rejecting the SRs it held: the
revision holding them, a later reading of the study about other images, was flagged ``rejected`` (an
``instance_rejection_noted`` event, a flag on the console, its own draft withdrawn in turn). Now a note naming only
documents flags nothing: it is kept with the latest revision, audited once (``instance_received``, ``not_read``),
opens no revision. Real NIH film, in-process listener, demo pipeline, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from listener_support import audit_payloads, rows, running
from radtrace.reporting.dispatch.withdrawals import REASSIGNED_REASON
from radtrace.reporting.draft_store import drafts_root
from radtrace.reporting.withdrawal import build_rejection_note, note_bytes
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Revision, Study
from reassigned_support import SETTLE_S, demo_listener_settings, film_as, new_pipeline, read_first, received, send
from worker_support import wait_until

pytestmark = pytest.mark.integration


def _marks(store: Store, study_uid: str) -> list[tuple[int, bool, bool]]:
    with store.session() as session:
        found = session.execute(
            sa.select(Revision.number, Revision.reassigned_at.is_not(None), Revision.rejected_at.is_not(None))
            .join(Study).where(Study.study_uid == study_uid).order_by(Revision.number)
        ).all()  # fmt: skip
    return [(int(number), bool(reassigned), bool(rejected)) for number, reassigned, rejected in found]


def test_radtraces_own_rejection_note_sent_back_with_its_srs_flags_no_reading(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = demo_listener_settings(tmp_path, store, listener_port)
    study_a, study_b, moved_sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        film = film_as(tmp_path / "x.dcm", study_uid=study_a, sop_uid=moved_sop, patient_id="P1", name="ONE^PAT",
                       accession="ACCA")  # fmt: skip
        read_first(pipeline, store, listener_port, film, study_a)
        # the PACS files the film under another patient: revision 1's draft is to be withdrawn
        moved = film_as(tmp_path / "moved.dcm", study_uid=study_b, sop_uid=moved_sop, patient_id="P2",
                        name="TWO^PAT", accession="ACCB")  # fmt: skip
        assert send([moved], listener_port) == [0x0000]
        wait_until(lambda: _marks(store, study_a) == [(1, True, False)])
        # a new film of study A: revision 2 reads it
        later = film_as(tmp_path / "y.dcm", study_uid=study_a, sop_uid=generate_uid(), patient_id="P1",
                        name="ONE^PAT", accession="ACCA")  # fmt: skip
        read_first(pipeline, store, listener_port, later, study_a, revision=2)
        # the PACS forwards study A back: revision 1's SR and companion, then the note that withdraws them
        draft = drafts_root(settings) / study_a / "1"
        echoed = [draft / "sr.dcm", draft / "companion.dcm"]
        assert send(echoed, listener_port) == [0x0000, 0x0000]
        note = build_rejection_note([pydicom.dcmread(path, stop_before_pixels=True) for path in echoed],
                                    REASSIGNED_REASON, destination="ORTHANC@127.0.0.1:4242")  # fmt: skip
        (tmp_path / "note.dcm").write_bytes(note_bytes(note))
        assert send([tmp_path / "note.dcm"], listener_port) == [0x0000]
        note_uid = str(note.SOPInstanceUID)
        wait_until(lambda: note_uid in {row.sop_instance_uid for row in rows(store, Instance)})
        time.sleep(SETTLE_S * 4)  # a revision opened by the echo would be queued (or skipped) by now

    received(store, study_a, [(1, "reported"), (2, "reported")])
    assert _marks(store, study_a) == [(1, True, False), (2, False, False)]
    assert audit_payloads(store, "instance_rejection_noted") == []
    kept = [json.loads(p) for p in audit_payloads(store, "instance_received")]
    [note_received] = [p for p in kept if p["sop_instance_uid"] == note_uid]
    assert (note_received["revision"], "modality KO" in note_received["not_read"]) == (2, True), note_received
    held = {row.sop_instance_uid: row for row in rows(store, Instance)}
    assert held[note_uid].rejected_at is None
    assert all(row.rejected_at is None for row in held.values())

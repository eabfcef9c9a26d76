"""A draft already sent, read from an image the PACS later moved to another patient or rejected, is withdrawn.

Found trying radtrace from outside: study A's draft (SR and companion to the PACS, ORU^R01 to the RIS) was read from
an image of patient P2 filed under P1. The PACS corrected it (the same SOP Instance UID re-sent under study B, patient
P2) and radtrace marked A's revision (``reassigned_at``), but the draft it had sent stayed in the PACS and the RIS as
P1's preliminary result, read from P2's lungs; a draft not yet sent was still sent. Now each peer that got the draft
gets its withdrawal, once: the PACS an IHE IOCM rejection note (KOS, DCM 113037) naming radtrace's SR and companion,
the RIS the ORU again with OBR-25 C and each OBX-11 W; a draft not yet sent is never sent, nor withdrawn; each is
audited ``report_withdrawn``. Real film (tests/data/real-cxr, NIH ChestX-ray14), in-process listener, demo pipeline,
a real Orthanc as the PACS, an MLLP RIS; both stores.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import hl7
import pydicom
import pytest
import sqlalchemy as sa
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom.uid import generate_uid

from listener_support import audit_payloads
from orthanc_support import Orthanc
from radtrace.errors import RadtraceError
from radtrace.logging import study_key
from radtrace.reporting.dispatch import claims, withdrawals
from radtrace.reporting.dispatch.outbox import KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7
from radtrace.reporting.withdrawal import build_rejection_note, note_bytes
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.reconciler import Reconciler
from radtrace.worker.settlement import WITHDRAWN_PREFIX
from radtrace.worker.status import collect_status
from reassigned_support import cli_env, send
from tests_support import DICOMDIR_WARNING, dciodvfy_lines, radtrace
from withdrawal_support import (
    deliver,
    orthanc_fixture,  # noqa: F401  (the module's Orthanc)
    outbox_rows,
    re_send_under_another_patient,
    reconcile,
    withdrawal_site,
)
from worker_support import wait_until

pytestmark = pytest.mark.integration


def _revision(store: Store, study_uid: str) -> list[tuple[RevisionState, str]]:
    with store.session() as session:
        rows = session.execute(
            sa.select(Revision.state, Revision.reason).join(Study).where(Study.study_uid == study_uid)
            .order_by(Revision.number)
        ).all()  # fmt: skip
    return [(RevisionState(state), str(reason)) for state, reason in rows]


def _strict(message: hl7.Message) -> None:
    text = str(message).replace("\n", "\r")
    parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()


def test_a_sent_draft_of_an_image_re_sent_under_another_patient_is_withdrawn_once_from_the_pacs_and_the_ris(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc
) -> None:
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    with withdrawal_site(tmp_path, store, listener_port, orthanc) as site:
        with site.reading(study_a, sop):
            drafts = outbox_rows(store, study_a)
            deliver(site.pipeline, [row.id for row in drafts])  # the SR and companion in Orthanc, the ORU in the RIS
            payloads = [site.pipeline.outbox.payloads.read(row.payload_path, row.payload_sha256)
                        for row in drafts if row.kind in ("sr", "companion")]  # fmt: skip
            sent = {str(pydicom.dcmread(io.BytesIO(payload)).SOPInstanceUID) for payload in payloads}
            assert len(sent) == 2
            assert len(site.ris.received) == 1
            assert reconcile(site.settings, store) == []  # nothing to withdraw before the correction

            re_send_under_another_patient(store, listener_port, tmp_path / "b.dcm", study_b, sop)

        queued = reconcile(site.settings, store)
        assert len(queued) == 2
        deliver(site.pipeline, queued)
        # at-least-once and idempotent: another pass, and every due delivery, send nothing again
        assert reconcile(site.settings, store) == []
        assert site.pipeline.outbox.deliver_due() == []
        assert [d.attempted for d in (site.pipeline.deliveries.dispatch(i).delivery for i in queued)] == [False, False]

        [draft_oru, withdrawal] = site.ris.received
    # the PACS: one rejection note in study A naming radtrace's SR and companion, valid per dciodvfy
    [note_id] = orthanc.study_instances(study_a, "KO")
    note = orthanc.dataset(note_id)
    title = note.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113037", "DCM")
    assert (note.PatientID, note.AccessionNumber) == ("P1", "ACCA")
    [evidence] = note.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == study_a
    named = {str(ref.ReferencedSOPInstanceUID) for series in evidence.ReferencedSeriesSequence
             for ref in series.ReferencedSOPSequence}  # fmt: skip
    assert named == sent
    note.save_as(tmp_path / "note.dcm", enforce_file_format=True)
    checked = dciodvfy_lines(tmp_path / "note.dcm")
    assert "KeyObjectSelectionDocument" in checked
    assert [line for line in checked if "Error" in line or ("Warning" in line and DICOMDIR_WARNING not in line)] == []
    # the RIS: the same order and patient, corrected (OBR-25 C), every observation posted as wrong (OBX-11 W)
    _strict(withdrawal)
    assert str(withdrawal.segment("PID")) == str(draft_oru.segment("PID"))
    assert str(withdrawal.segment("OBR")[3]) == str(draft_oru.segment("OBR")[3]) == "ACCA"
    assert (str(draft_oru.segment("OBR")[25]), str(withdrawal.segment("OBR")[25])) == ("P", "C")
    observations = withdrawal.segments("OBX")
    assert len(observations) == len(draft_oru.segments("OBX"))
    assert {str(obx[11]) for obx in observations} == {"W"}
    why = str(withdrawal.segment("NTE")[3])
    assert "withdrawn" in why
    assert "another patient" in why
    assert str(withdrawal.segment("MSH")[10]) != str(draft_oru.segment("MSH")[10])
    # audited once; shown by `radtrace study show`
    [event] = [json.loads(p) for p in audit_payloads(store, "report_withdrawn")]
    assert event["cancelled"] == []
    assert sorted(w["kind"] for w in event["withdrawals"]) == [KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7]
    show = radtrace("study", "show", study_a, env=cli_env(site.settings, store))
    assert show.returncode == 0, show.stdout + show.stderr
    shown = " ".join(show.stdout.split())
    assert f"withdrawal {orthanc.ae_title}" in shown
    assert f"withdrawal-hl7 {site.ris.host}:{site.ris.port}" in shown
    assert orthanc.study_instances(study_b, "KO") == []  # the corrected study's own draft is not withdrawn


def test_a_draft_not_yet_sent_when_its_image_is_rejected_is_never_sent_nor_withdrawn(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc
) -> None:
    """The PACS rejects the image (an IOCM rejection note: radtrace's own builder makes it) before the dispatcher
    took the draft: the dispatcher rung for it cancels it, nothing reaches the PACS or the RIS."""
    study, sop = generate_uid(), generate_uid()
    with withdrawal_site(tmp_path, store, listener_port, orthanc) as site:
        with site.reading(study, sop, ("P7", "SEVEN^PAT", "ACC7")) as film:
            rejection = build_rejection_note([pydicom.dcmread(film, stop_before_pixels=True)], "wrong patient",
                                             destination="PACS")  # fmt: skip
            (tmp_path / "reject.dcm").write_bytes(note_bytes(rejection))
            assert send([tmp_path / "reject.dcm"], listener_port) == [0x0000]
            wait_until(lambda: len(audit_payloads(store, "instance_rejection_noted")) == 1)

        drafts = outbox_rows(store, study)
        first = site.pipeline.deliveries.dispatch(drafts[0].id).delivery  # its doorbell rang before the sweep
        assert (first.withdrawn, first.attempted, first.state, first.wake) == (True, False, OutboxState.CANCELLED, ())
        assert reconcile(site.settings, store) == []
        assert site.pipeline.outbox.deliver_due() == []
        rows = outbox_rows(store, study)
        assert {(row.kind, row.state, row.attempts) for row in rows} == {
            (row.kind, OutboxState.CANCELLED, 0) for row in drafts
        }
        assert all(str(row.last_error).startswith(withdrawals.CANCELLED_PREFIX) for row in rows)
        assert site.ris.received == []
    assert orthanc.study_instances(study) == []
    [event] = [json.loads(p) for p in audit_payloads(store, "report_withdrawn")]
    assert (len(event["cancelled"]), event["withdrawals"]) == (len(drafts), [])
    assert "rejected by the PACS" in event["reason"]
    [(state, reason)] = _revision(store, study)
    assert (state, reason.startswith(WITHDRAWN_PREFIX)) == (RevisionState.REPORTED, True)


def test_a_withdrawal_cut_off_between_its_steps_is_done_whole_once_by_the_next_pass(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the draft rows were cancelled but before the withdrawals were stored leaves nothing half done
    (one transaction); the next pass cancels, queues and audits it once, and the RIS gets one withdrawal."""
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    with withdrawal_site(tmp_path, store, listener_port, orthanc) as site:
        with site.reading(study_a, sop):
            drafts = outbox_rows(store, study_a)
            [oru] = [row for row in drafts if row.kind == "hl7"]
            deliver(site.pipeline, [oru.id])  # the ORU reached the RIS; the SR and companion are still pending
            re_send_under_another_patient(store, listener_port, tmp_path / "b.dcm", study_b, sop)

        real = withdrawals.build_withdrawal_oru

        def crash(*args: object, **kwargs: object) -> object:
            raise RadtraceError("killed between cancelling the drafts and storing the withdrawals")

        monkeypatch.setattr(withdrawals, "build_withdrawal_oru", crash)
        assert reconcile(site.settings, store) == []  # logged; nothing committed
        assert {row.state for row in outbox_rows(store, study_a) if row.id != oru.id} == {OutboxState.PENDING}
        assert audit_payloads(store, "report_withdrawn") == []
        monkeypatch.setattr(withdrawals, "build_withdrawal_oru", real)

        [queued] = reconcile(site.settings, store)
        deliver(site.pipeline, [queued])
        assert reconcile(site.settings, store) == []
        assert site.pipeline.outbox.deliver_due() == []
        assert [str(m.segment("OBR")[25]) for m in site.ris.received] == ["P", "C"]
        _strict(site.ris.received[1])
    assert orthanc.study_instances(study_a) == []  # the SR and companion were never sent: nothing to withdraw there
    [event] = [json.loads(p) for p in audit_payloads(store, "report_withdrawn")]
    assert sorted(c["kind"] for c in event["cancelled"]) == ["companion", "sr"]
    assert [w["kind"] for w in event["withdrawals"]] == [KIND_WITHDRAWAL_HL7]


def test_a_draft_in_flight_when_the_mark_lands_is_waited_for_and_withdrawn_once_its_dispatcher_was_killed(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc
) -> None:
    """The ORU's send is in flight (claimed by a live dispatcher) when the correction arrives: nothing is cancelled or
    queued while it may still be sent. Its dispatcher is then killed -9 mid-send: the next pass releases the claim and
    withdraws, and as that send may have reached the RIS, the RIS gets the withdrawal; the SR and companion, never
    attempted, are cancelled and the PACS gets nothing."""
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    with withdrawal_site(tmp_path, store, listener_port, orthanc) as site:
        dispatcher = subprocess.Popen(["sleep", "120"])  # the dispatcher sending the ORU
        try:
            with site.reading(study_a, sop):
                [oru] = [row for row in outbox_rows(store, study_a) if row.kind == "hl7"]
                holder = claims.claim_text(f"radtrace@{socket.gethostname()}:{dispatcher.pid}", *claims.namespace(),
                                           claims.start_ticks(str(dispatcher.pid)))  # fmt: skip
                with store.session() as session:
                    session.execute(
                        sa.update(OutboxMessage).where(OutboxMessage.id == oru.id)
                        .values(attempts=1, claimed_by=holder, heartbeat_at=utc_now(),
                                next_attempt_at=utc_now() + timedelta(seconds=300))
                    )  # fmt: skip
                re_send_under_another_patient(store, listener_port, tmp_path / "b.dcm", study_b, sop)

            assert reconcile(site.settings, store) == []  # its send may still reach the RIS: waited for
            assert {row.state for row in outbox_rows(store, study_a)} == {OutboxState.PENDING}
            assert audit_payloads(store, "report_withdrawn") == []
        finally:
            dispatcher.kill()
            dispatcher.wait()

        [queued] = reconcile(site.settings, store)  # the claim of the killed dispatcher released, then withdrawn
        deliver(site.pipeline, [queued])
        assert reconcile(site.settings, store) == []
        assert site.pipeline.outbox.deliver_due() == []
        [withdrawal] = site.ris.received
        _strict(withdrawal)
        assert str(withdrawal.segment("OBR")[25]) == "C"
    assert orthanc.study_instances(study_a) == []
    [event] = [json.loads(p) for p in audit_payloads(store, "report_withdrawn")]
    assert sorted((c["kind"], c["attempts"]) for c in event["cancelled"]) == [("companion", 0), ("hl7", 1), ("sr", 0)]
    assert [w["kind"] for w in event["withdrawals"]] == [KIND_WITHDRAWAL_HL7]


def test_a_draft_withdrawn_half_sent_is_cancelled_never_failed_and_no_retry_sends_it(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc, caplog: pytest.LogCaptureFixture
) -> None:
    """The SR and companion reached Orthanc; the PACS rejects the film before the ORU went to the RIS. The ORU's
    delivery is ``cancelled`` (not ``failed``: no failed-delivery figure, no alert), the revision stays ``reported``
    with a reason saying where its draft was withdrawn (never "failed"), the PACS's withdrawal does not decide its
    state, and neither ``radtrace dispatch retry`` nor ``radtrace study retry`` makes the cancelled ORU pending again
    (the withdrawal audited once)."""
    study, sop = generate_uid(), generate_uid()
    with withdrawal_site(tmp_path, store, listener_port, orthanc) as site:
        with site.reading(study, sop, ("P9", "NINE^PAT", "ACC9")) as film:
            drafts = outbox_rows(store, study)
            with caplog.at_level(logging.INFO, logger="radtrace.reporting.dispatch.outbox"):
                deliver(site.pipeline, [row.id for row in drafts if row.kind != "hl7"])
            [sr] = [row for row in drafts if row.kind == "sr"]
            lines = [r.getMessage() for r in caplog.records if r.name == "radtrace.reporting.dispatch.outbox"]
            # the outbox's line names the study as the worker's and the listener's do
            line = f"study {study_key(study)} revision 1: outbox {sr.id} sr {sr.destination}: delivered (attempt 1)"
            assert line in lines, lines
            rejection = build_rejection_note([pydicom.dcmread(film, stop_before_pixels=True)], "wrong patient",
                                             destination="PACS")  # fmt: skip
            (tmp_path / "reject.dcm").write_bytes(note_bytes(rejection))
            assert send([tmp_path / "reject.dcm"], listener_port) == [0x0000]
            wait_until(lambda: len(audit_payloads(store, "instance_rejection_noted")) == 1)

        [withdrawal] = reconcile(site.settings, store)
        deliver(site.pipeline, [withdrawal])
        assert site.ris.received == []
    rows = {row.kind: row for row in outbox_rows(store, study)}
    assert (rows["hl7"].state, rows[KIND_WITHDRAWAL].state) == (OutboxState.CANCELLED, OutboxState.DELIVERED)
    [(state, reason)] = _revision(store, study)
    assert state is RevisionState.REPORTED
    assert reason.startswith(f"{WITHDRAWN_PREFIX} hl7 {site.ris.host}:{site.ris.port}: ")
    assert "rejected by the PACS" in reason
    assert "failed" not in reason
    # settled: the reconciler does not ring it again to settle; no failed delivery counted
    rung: list[int] = []
    reconciler = Reconciler(
        site.settings, store, ring_process=lambda *_: True, ring_dispatch=lambda i: not rung.append(i)
    )
    assert (reconciler.run_once().settles, rung) == ([], [])
    status = collect_status(site.settings, store, with_queues=False)
    assert (status.outbox["failed"], status.outbox["cancelled"]) == (0, 1)
    env = cli_env(site.settings, store)
    shown = radtrace("status", "--no-broker", env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert ("withdrawn drafts: 1 (1 deliveries cancelled before they were sent; withdrawals sent to the peers the "
            "drafts reached: 1 delivered)") in " ".join(shown.stdout.split())  # fmt: skip
    # no retry revives the cancelled ORU
    retried = radtrace("dispatch", "retry", f"{site.ris.host}:{site.ris.port}", env=env)
    assert retried.returncode != 0, retried.stdout
    again = radtrace("study", "retry", study, env=env)
    assert again.returncode != 0, again.stdout
    assert {row.id: row.state for row in outbox_rows(store, study)}[rows["hl7"].id] is OutboxState.CANCELLED
    assert _revision(store, study)[0][0] is RevisionState.REPORTED
    assert len(audit_payloads(store, "report_withdrawn")) == 1

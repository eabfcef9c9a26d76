"""A draft delivery the peer refused outright is not withdrawn; one that may have reached the peer is.

Found in review: every draft row attempted at least once counted as reached, so an ORU the RIS refused (an HL7 AR:
it stored nothing) got a corrected ORU withdrawing it, which the RIS would refuse too: a failed-withdrawal alarm for
nothing. Now a draft delivery the peer refused (a C-STORE failure status, an AR or CR) on every attempt it made
gets no withdrawal (its recorded outcome, ``last_outcome`` refused and ``reached`` false:
:mod:`radtrace.reporting.dispatch.outcomes`); one whose attempt was cut off (the connection dropped before the ACK)
still does, and so does one refused after an earlier attempt that may have reached the peer (its attempts counted
again from 0 by ``radtrace dispatch retry``; ``reached`` stays set). Real film (tests/data/real-cxr), in-process
listener, demo pipeline, a real Orthanc as the PACS, an MLLP RIS; both stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from listener_support import audit_payloads, running
from mllp_support import mllp_receiver
from orthanc_support import Orthanc, running_orthanc
from radtrace.audit.events import Actor
from radtrace.reporting.dispatch.kinds import KIND_HL7, KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7
from radtrace.reporting.dispatch.redelivery import redeliver_failed
from radtrace.store.engine import Store
from radtrace.store.models import DeliveryOutcome, OutboxMessage, OutboxState
from reassigned_support import film_as, send
from withdrawal_support import (
    outbox_rows,
    pipeline_of,
    read_film,
    reconcile,
    withdrawal_settings,
)
from worker_support import wait_until

pytestmark = pytest.mark.integration

REFUSED, FAILED = DeliveryOutcome.REFUSED, DeliveryOutcome.FAILED  # the ORU's outcome as recorded (outcomes)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def _withdrawn_after(
    tmp_path: Path, store: Store, port: int, orthanc: Orthanc, script: tuple[str, ...], *, retried: bool = False
) -> tuple[list[OutboxMessage], list[str]]:
    """Study A read and its draft dispatched (the RIS answering per ``script``; with ``retried``, the failed ORU
    retried once as ``radtrace dispatch retry`` does), then its image re-sent under another patient: the draft rows
    and the kinds of the withdrawals the next reconciler pass queued."""
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    with mllp_receiver(script) as ris:
        settings = withdrawal_settings(tmp_path, store, port, orthanc, ris, max_attempts=1)
        pipeline = pipeline_of(settings, store)
        with running(settings, store):
            read_film(pipeline, store, port, tmp_path / "a.dcm", study_a, sop)
            for row in outbox_rows(store, study_a):
                pipeline.deliveries.dispatch(row.id)
            if retried:
                done = redeliver_failed(store, settings.dispatch, f"{ris.host}:{ris.port}", Actor(user="ops"))
                assert len(done.outbox_ids) == 1
                pipeline.deliveries.dispatch(done.outbox_ids[0])
            drafts = outbox_rows(store, study_a)
            moved = film_as(tmp_path / "b.dcm", study_uid=study_b, sop_uid=sop, patient_id="P2", name="TWO^PAT",
                            accession="ACCB")  # fmt: skip
            assert send([moved], port) == [0x0000]
            wait_until(lambda: len(audit_payloads(store, "instance_reassigned")) == 1)
        queued = reconcile(settings, store)
    kinds = sorted(row.kind for row in outbox_rows(store, study_a) if row.id in queued)
    return drafts, kinds


def test_an_oru_the_ris_refused_gets_no_withdrawal_while_the_pacs_that_stored_the_sr_does(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc
) -> None:
    drafts, kinds = _withdrawn_after(tmp_path, store, listener_port, orthanc, ("AR",))
    [oru] = [row for row in drafts if row.kind == KIND_HL7]
    assert (oru.state, oru.attempts, oru.last_outcome, oru.reached) == (OutboxState.FAILED, 1, REFUSED, False)
    assert "rejected the message (AR)" in str(oru.last_error)
    assert {row.state for row in drafts if row.kind != KIND_HL7} == {OutboxState.DELIVERED}
    assert kinds == [KIND_WITHDRAWAL]  # the PACS's rejection note only: no corrected ORU for an ORU never stored
    [event] = [json.loads(p) for p in audit_payloads(store, "report_withdrawn")]
    assert [w["kind"] for w in event["withdrawals"]] == [KIND_WITHDRAWAL]


def test_an_oru_whose_connection_was_cut_before_the_ack_is_withdrawn(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc
) -> None:
    drafts, kinds = _withdrawn_after(tmp_path, store, listener_port, orthanc, ("close",))
    [oru] = [row for row in drafts if row.kind == KIND_HL7]
    assert (oru.state, oru.attempts, oru.last_outcome, oru.reached) == (OutboxState.FAILED, 1, FAILED, True)
    assert str(oru.last_error).startswith("gave up after 1 attempts")
    assert kinds == [KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7]


def test_an_oru_refused_after_an_earlier_attempt_was_cut_off_is_withdrawn(
    tmp_path: Path, store: Store, listener_port: int, orthanc: Orthanc
) -> None:
    """The first attempt's connection dropped before the ACK (the RIS may have filed it); the operator retried (its
    attempts counted from 0 again) and the RIS then refused the same message: it may still hold the first one."""
    drafts, kinds = _withdrawn_after(tmp_path, store, listener_port, orthanc, ("close", "AR"), retried=True)
    [oru] = [row for row in drafts if row.kind == KIND_HL7]
    assert (oru.state, oru.attempts, oru.last_outcome, oru.reached) == (OutboxState.FAILED, 1, REFUSED, True)
    assert "rejected the message (AR)" in str(oru.last_error)
    assert kinds == [KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7]

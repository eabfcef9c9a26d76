"""Which peers get a draft's withdrawal is decided from each delivery's recorded outcome, not from its error's wording.

Before, a draft delivery the peer refused was told from ``last_error``'s wording (a prefix per sender): a refusal
worded otherwise counted as reached, and a revision whose draft every peer had refused was selected again by every
reconciler pass (its withdrawal looked at, nothing to queue, pass after pass). Now the senders raise a refusal
(:mod:`radtrace.reporting.dispatch.outcomes`), the outbox records ``last_outcome`` and ``reached``, and the
withdrawal reads those. Real peers: a pynetdicom SCP answering failure statuses, dcmtk's storescp refusing the
association, an MLLP RIS answering AR, AE or closing without an ACK. Drafts from the real-film reporting cases, the
store on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dicom_peer_support import answering_scp, storescp
from mllp_support import mllp_receiver
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings, ReportingSettings
from radtrace.reporting.companion import build_companion
from radtrace.reporting.dispatch import withdrawals
from radtrace.reporting.dispatch.kinds import KIND_COMPANION, KIND_HL7, KIND_SR, KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7
from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles, planned_deliveries
from radtrace.reporting.hl7 import build_oru
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import DeliveryOutcome, OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.study_detail import study_detail
from reporting_support import sr_cases
from tests_support import radtrace

pytestmark = pytest.mark.integration

SWEEPS = 3


def _outbox(
    store: Store, tmp_path: Path, pacs_port: int, ris_port: int, pacs_ae: str = "FAKEPACS", max_attempts: int = 1
) -> Outbox:
    settings = DispatchSettings(pacs=[{"ae_title": pacs_ae, "host": "127.0.0.1", "port": pacs_port}],
                                ris={"host": "127.0.0.1", "port": ris_port, "timeout_s": 10},
                                max_attempts=max_attempts, backoff_initial_s=0.1)  # fmt: skip
    return Outbox(store, AuditRecorder(store), settings, tmp_path / "payloads")


def _draft(outbox: Outbox, store: Store, key: str) -> int:
    """A reported revision's draft (SR, companion, ORU) enqueued to the PACS and the RIS: the revision's id. The study
    (of the "typical" reporting case) gets one revision more each time."""
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    uid = str(sr.SOPInstanceUID)
    companion = build_companion(reading, sr, settings=ReportingSettings(), revision=1)
    oru = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=uid)
    reports = ReportFiles(uid, sr_bytes(sr), oru.encode(), companion=sr_bytes(companion))
    study_uid = str(sources[0].StudyInstanceUID)
    with store.session() as session:
        study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
        if study is None:
            study = Study(study_uid=study_uid, study_key=key * 16, accession="RTACC0000009")
        number = 1 + len(study.revisions) if study.id is not None else 1
        revision = Revision(study=study, number=number, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        revision_id = revision.id
    outbox.enqueue(revision_id, planned_deliveries(outbox.settings, reports), sr_sop_instance_uid=uid)
    return revision_id


def _rows(store: Store, revision_id: int) -> dict[str, OutboxMessage]:
    with store.session() as session:
        rows = session.scalars(sa.select(OutboxMessage).where(OutboxMessage.revision_id == revision_id))
        return {row.kind: row for row in rows}


def _mark(store: Store, revision_id: int) -> None:
    with store.session() as session:
        session.execute(sa.update(Revision).where(Revision.id == revision_id).values(reassigned_at=utc_now()))


@pytest.fixture
def looked_at(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The revisions each sweep selected and looked at (one :func:`withdrawals.withdraw` each)."""
    selected: list[int] = []
    withdraw: Callable[..., withdrawals.Withdrawn] = withdrawals.withdraw

    def counted(outbox: Outbox, revision_id: int) -> withdrawals.Withdrawn:
        selected.append(revision_id)
        return withdraw(outbox, revision_id)

    monkeypatch.setattr(withdrawals, "withdraw", counted)
    return selected


@pytest.fixture
def failing_pacs() -> Iterator[int]:
    """A PACS answering the SR 0xA900 (its data set does not match the SOP class): the port."""
    with answering_scp() as scp:
        scp.statuses.append(0xA900)
        yield scp.port


def test_a_draft_every_peer_refused_gets_no_withdrawal_and_is_not_selected_pass_after_pass(
    store: Store, tmp_path: Path, failing_pacs: int, looked_at: list[int]
) -> None:
    """The PACS answered the SR 0xA900 and refused the companion's SOP class, the RIS answered AR: no peer stored
    anything. The reconciler's sweep queues no withdrawal, and does not select the revision again each pass (it did
    every pass: 3 of 3)."""
    with mllp_receiver(("AR",)) as ris:
        outbox = _outbox(store, tmp_path, failing_pacs, ris.port)
        revision_id = _draft(outbox, store, "r")
        assert {d.state for d in outbox.deliver_due()} == {OutboxState.FAILED}
    rows = _rows(store, revision_id)
    assert {kind: (row.last_outcome, row.reached) for kind, row in rows.items()} == {
        KIND_SR: (DeliveryOutcome.REFUSED, False),
        KIND_COMPANION: (DeliveryOutcome.REFUSED, False),
        KIND_HL7: (DeliveryOutcome.REFUSED, False),
    }
    _mark(store, revision_id)
    for _ in range(SWEEPS):
        assert withdrawals.sweep(outbox) == []
    assert looked_at == []  # before: [revision_id] * 3
    assert set(_rows(store, revision_id)) == {KIND_SR, KIND_COMPANION, KIND_HL7}  # no withdrawal queued


def test_refusals_worded_otherwise_count_as_refusals_a_held_pacs_and_a_ris_answering_ae(
    store: Store, tmp_path: Path, looked_at: list[int]
) -> None:
    """dcmtk's storescp rejects the association for good (A-ASSOCIATE-RJ 1/1/1: the PACS goes on hold, nothing sent)
    and the RIS answers AE on the ORU's only attempt ("gave up after 1 attempts: … answered AE"). Neither stored the
    draft; before, both counted as reached (their wording was not one of the refusals listed) and each was sent a
    withdrawal it would refuse too."""
    with storescp("--refuse", "-aet", "DCMTKPACS") as pacs_port, mllp_receiver(("AE",)) as ris:
        outbox = _outbox(store, tmp_path, pacs_port, ris.port, pacs_ae="DCMTKPACS")
        revision_id = _draft(outbox, store, "s")
        deliveries = outbox.deliver_due()
    assert any(d.held for d in deliveries)
    rows = _rows(store, revision_id)
    assert (rows[KIND_SR].state, rows[KIND_SR].last_outcome, rows[KIND_SR].reached) == (
        OutboxState.PENDING, DeliveryOutcome.REFUSED, False
    )  # fmt: skip
    assert (rows[KIND_HL7].state, rows[KIND_HL7].last_outcome, rows[KIND_HL7].reached) == (
        OutboxState.FAILED, DeliveryOutcome.REFUSED, False
    )  # fmt: skip
    _mark(store, revision_id)
    [done] = withdrawals.sweep(outbox)  # the held rows still pending: cancelled
    assert done.queued == ()  # before: a rejection note to the PACS and a corrected ORU to the RIS
    assert len(done.cancelled) == 2
    assert withdrawals.sweep(outbox) == []
    assert looked_at == [revision_id]


def test_a_delivery_cut_off_before_the_answer_may_have_reached_the_peer_and_is_withdrawn(
    store: Store, tmp_path: Path
) -> None:
    """The PACS stored the SR and companion; the RIS closed the connection without an ACK (it may have filed the
    ORU): ``failed``, reached. Both peers get a withdrawal."""
    with answering_scp() as pacs, mllp_receiver(("close",)) as ris:
        outbox = _outbox(store, tmp_path, pacs.port, ris.port)
        revision_id = _draft(outbox, store, "t")
        outbox.deliver_due()
    rows = _rows(store, revision_id)
    assert (rows[KIND_SR].last_outcome, rows[KIND_SR].reached) == (DeliveryOutcome.DELIVERED, True)
    assert (rows[KIND_HL7].state, rows[KIND_HL7].last_outcome, rows[KIND_HL7].reached) == (
        OutboxState.FAILED, DeliveryOutcome.FAILED, True
    )  # fmt: skip
    _mark(store, revision_id)
    [done] = withdrawals.sweep(outbox)
    assert sorted(row.kind for row in _rows(store, revision_id).values() if row.id in done.queued) == [
        KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7
    ]  # fmt: skip


def test_an_attempt_never_recorded_then_a_refusal_still_counts_as_reached(store: Store, tmp_path: Path) -> None:
    """The ORU's first attempt was claimed and its dispatcher died before recording it (the send may have reached
    the RIS); its claim ran out, and the next attempt was refused (AR). The refusal does not clear what the lost
    attempt may have left at the RIS: withdrawn."""
    with answering_scp() as pacs, mllp_receiver(("AR",)) as ris:
        outbox = _outbox(store, tmp_path, pacs.port, ris.port, max_attempts=3)
        revision_id = _draft(outbox, store, "u")
        oru = _rows(store, revision_id)[KIND_HL7]
        assert isinstance(outbox._claim(oru.id), tuple)  # a dispatcher that dies here: nothing recorded
        with store.session() as session:  # its lease over
            session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == oru.id)
                            .values(next_attempt_at=utc_now(), claimed_by=None))  # fmt: skip
        outbox.deliver_due()
        assert len(ris.received) == 1
    rows = _rows(store, revision_id)
    assert (rows[KIND_HL7].attempts, rows[KIND_HL7].last_outcome, rows[KIND_HL7].reached) == (
        2, DeliveryOutcome.REFUSED, True
    )  # fmt: skip
    _mark(store, revision_id)
    [done] = withdrawals.sweep(outbox)
    assert sorted(row.kind for row in _rows(store, revision_id).values() if row.id in done.queued) == [
        KIND_WITHDRAWAL, KIND_WITHDRAWAL_HL7
    ]  # fmt: skip


def test_dispatch_retry_says_how_many_deliveries_the_peer_refused_and_how_many_failed(
    store: Store, tmp_path: Path
) -> None:
    """Two drafts' ORUs to the RIS: the first answered AR (refused), the second's connection closed without an ACK
    (failed). ``radtrace study show`` and ``radtrace dispatch retry``, which asks for both again, say which was which
    (each said only "failed")."""
    with answering_scp() as pacs, mllp_receiver(("AR", "close")) as ris:
        outbox = _outbox(store, tmp_path, pacs.port, ris.port)
        first = _draft(outbox, store, "v")
        outbox.deliver_due()
        second = _draft(outbox, store, "v")
        outbox.deliver_due()
        destination = f"127.0.0.1:{ris.port}"
        assert [_rows(store, revision)[KIND_HL7].last_outcome for revision in (first, second)] == [
            DeliveryOutcome.REFUSED, DeliveryOutcome.FAILED
        ]  # fmt: skip
        detail = study_detail(store, str(sr_cases()["typical"][1][0].StudyInstanceUID))
        assert detail is not None  # radtrace study show tells them apart too
        assert [rev.deliveries[f"{KIND_HL7} {destination}"] for rev in detail.revisions] == [
            "failed (refused by the peer)", "failed"
        ]  # fmt: skip
        env = {"RADTRACE_DATA_DIR": str(tmp_path / "radtrace"),
               "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False),
               "RADTRACE_DISPATCH__RIS": json.dumps({"host": "127.0.0.1", "port": ris.port})}  # fmt: skip
        shown = radtrace("dispatch", "retry", destination, env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    said = " ".join(shown.stdout.split())
    assert f"2 failed deliveries to {destination} are pending again (1 refused by the peer, 1 failed);" in said

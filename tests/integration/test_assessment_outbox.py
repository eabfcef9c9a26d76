"""Assessment SRs leave radtrace through the outbox: one row per whole-draft decision and PACS, queued in the
decision's own transaction (no ``report_created``), the dispatcher rung; a retried enqueue adds nothing; a
revision's dispatched/failed state is its draft's alone; and the SR arrives in a real Orthanc, valid."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import redis
import sqlalchemy as sa
from alembic import command
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset

from console_support import add_user, console_client, csrf_of, reported_study, sign_in
from mllp_support import mllp_receiver
from orthanc_support import running_orthanc
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import ReportingSettings, Settings, load_settings
from radtrace.console.assessment import build_assessment_oru
from radtrace.errors import DispatchRejectedError, PermanentError, ReportError
from radtrace.model.reader import StudyReader
from radtrace.reporting.codes import finding_code as finding_codes
from radtrace.reporting.dispatch.outbox import KIND_ASSESSMENT, KIND_ASSESSMENT_HL7, Outbox, Sender
from radtrace.reporting.hl7 import SR_UID, control_id_for, unescape
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import _config
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.testing.services import RedisNamespace, free_port
from radtrace.worker.app import DISPATCH_TASK
from radtrace.worker.pipeline import StudyPipeline, payload_dir
from radtrace.worker.settlement import Deliveries
from tests_support import dciodvfy_errors

pytestmark = pytest.mark.integration


def _settings(tmp_path: Path, store: Store, pacs_port: int, ae_title: str = "PACS", **extra: Any) -> Settings:
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "profile": "deepmedix-r1", "device": "cpu"},
        **{
            "console": {"sync_interval_s": 0},
            **extra,
            "dispatch": {
                "pacs": [{"ae_title": ae_title, "host": "127.0.0.1", "port": pacs_port}],
                **extra.get("dispatch", {}),
            },
        },
    )


def _decide(client: Any, study_uid: str, verdicts: list[tuple[str, str]]) -> None:
    base = f"/console/studies/{study_uid}/1"
    page = client.get(base).text
    token = csrf_of(page)
    label = re.findall(r'name="label" value="([^"]+)"', page)[0]
    client.post(f"{base}/findings", data={"csrf_token": token, "label": label, "decision": "accept"})
    for verdict, reason in verdicts:
        answer = client.post(
            f"{base}/draft", follow_redirects=False, data={"csrf_token": token, "decision": verdict, "reason": reason}
        )
        assert answer.status_code == 303


def _events(store: Store, event_type: str) -> list[dict[str, Any]]:
    with store.session() as session:
        return [
            json.loads(p)
            for p in session.scalars(
                sa.select(AuditEventRow.payload)
                .where(AuditEventRow.event_type == event_type)
                .order_by(AuditEventRow.seq)
            )
        ]


def _rows(store: Store, kind: str | None = None) -> list[OutboxMessage]:
    with store.session() as session:
        query = sa.select(OutboxMessage).order_by(OutboxMessage.id)
        if kind is not None:
            query = query.where(OutboxMessage.kind == kind)
        return list(session.scalars(query))


def _revision(store: Store, study_uid: str) -> Revision:
    with store.session() as session:
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == study_uid))
        assert revision is not None
        return revision


class _Observer:
    def __init__(self) -> None:
        self.finished: list[str] = []

    def observe(self, stage: str, seconds: float) -> None:
        pass

    def finished_in(self, state: str) -> None:
        self.finished.append(state)


@pytest.fixture
def reader(tmp_path: Path) -> StudyReader:
    settings = load_settings(
        data_dir=tmp_path / "radtrace",
        model={"backend": "demo", "demo": True, "profile": "deepmedix-r1", "device": "cpu"},
    )
    return StudyReader(settings.model, data_dir=settings.data_dir)


def test_each_draft_decision_queues_its_own_assessment_sr_once_and_rings_the_dispatcher(
    store: Store, tmp_path: Path, reader: StudyReader
) -> None:
    settings = _settings(tmp_path, store, free_port())  # nobody listens: nothing is delivered here
    study_uid = reported_study(settings, store, reader, seed=71)
    drafts = _rows(store)
    assert drafts
    assert all(row.document_uid == "" for row in drafts)
    add_user(store, "dr.out", "radiologist")
    rung: list[int] = []
    with console_client(store, settings) as client:
        client.app.state.console.ring_dispatch = lambda outbox_id: rung.append(outbox_id) or True
        sign_in(client, "dr.out")
        _decide(client, study_uid, [("accept", "RT-A2"), ("reject", "RT-R2")])  # a changed mind: a second SR
    decisions = _events(store, "draft_assessed")
    assessments = _rows(store, KIND_ASSESSMENT)
    assert [row.document_uid for row in assessments] == [d["assessment_sr"]["sop_instance_uid"] for d in decisions]
    assert len({row.document_uid for row in assessments}) == 2
    assert all(
        row.state is OutboxState.PENDING and row.destination == "PACS@127.0.0.1:" + str(settings.dispatch.pacs[0].port)
        for row in assessments
    )
    assert rung == [row.id for row in assessments]  # each rung after its decision was committed
    for decision, row in zip(decisions, assessments, strict=True):
        assert decision["outbox"] == [
            {"id": row.id, "kind": KIND_ASSESSMENT, "destination": row.destination, "sha256": row.payload_sha256}
        ]
        kept = settings.data_dir / "assessments" / decision["assessment_sr"]["path"]
        assert (payload_dir(settings) / row.payload_path).read_bytes() == kept.read_bytes()
        assert row.payload_sha256 == decision["assessment_sr"]["sha256"]
    assert len(_events(store, "report_created")) == 1  # the draft's; an assessment is its own event

    # A retried enqueue of the same SR (same SOP Instance UID) adds nothing and answers the same rows.
    outbox = Outbox(store, AuditRecorder(store), settings.dispatch, payload_dir(settings))
    first = assessments[0]
    payload = (payload_dir(settings) / first.payload_path).read_bytes()
    for _ in range(2):
        staged = outbox.staged()
        with store.session(immediate=True) as session:
            again = outbox.add_assessments(session, first.revision_id, first.document_uid, payload, staged=staged)
        assert staged.files == []  # the payload is kept already: nothing written again
        assert [row["id"] for row in again] == [first.id]
    assert len(_rows(store, KIND_ASSESSMENT)) == 2
    with store.session() as session, pytest.raises(DispatchRejectedError):
        outbox.add_assessments(session, first.revision_id, "", payload, staged=outbox.staged())
    assert _revision(store, study_uid).state is RevisionState.REPORTED
    # A later revision's draft names the earlier drafts as predecessors, never a radiologist's assessment.
    with store.session() as session:
        later = Revision(study_id=_revision(store, study_uid).study_id, number=2, state=RevisionState.QUEUED)
        session.add(later)
        session.flush()
        later_id = later.id
    earlier = outbox.earlier_srs(later_id)
    assert earlier
    assert not {str(ds.SOPInstanceUID) for ds in earlier} & {row.document_uid for row in assessments}


def test_the_revision_state_is_settled_by_its_draft_rows_alone(
    store: Store, tmp_path: Path, reader: StudyReader
) -> None:
    settings = _settings(tmp_path, store, free_port())
    study_uid = reported_study(settings, store, reader, seed=72)
    drafts = _rows(store)
    revision_id = drafts[0].revision_id

    def refused(destination: str, payload: bytes) -> str | None:
        raise DispatchRejectedError("refused by the test PACS")

    def stored(destination: str, payload: bytes) -> str | None:
        return None

    senders: dict[str, Sender] = {row.kind: stored for row in drafts}
    senders[KIND_ASSESSMENT] = refused
    outbox = Outbox(store, AuditRecorder(store), settings.dispatch, payload_dir(settings), senders=senders)
    observer = _Observer()
    deliveries = Deliveries(store, outbox, AuditRecorder(store), observer, utc_now)
    staged = outbox.staged()
    with store.session(immediate=True) as session:
        ids = [
            int(str(r["id"]))
            for uid in ("1.2.3.4.1", "1.2.3.4.2")
            for r in outbox.add_assessments(session, revision_id, uid, b"assessment " + uid.encode(), staged=staged)
        ]
    staged.keep()

    # An assessment failing for good while the draft is pending changes nothing.
    failed = deliveries.dispatch(ids[0])
    assert failed.delivery.state is OutboxState.FAILED
    assert failed.revision_state is RevisionState.REPORTED
    assert observer.finished == []
    # The draft delivered: dispatched, though one assessment failed and one is still pending.
    results = [deliveries.dispatch(row.id) for row in drafts]
    assert results[-1].revision_state is RevisionState.DISPATCHED
    assert _revision(store, study_uid).state is RevisionState.DISPATCHED
    assert observer.finished == ["dispatched"]
    assert _rows(store, KIND_ASSESSMENT)[1].state is OutboxState.PENDING
    assert not [e for e in _events(store, "study_failed")]


def test_a_revision_with_assessment_rows_only_is_never_settled_by_them(
    store: Store, tmp_path: Path, reader: StudyReader
) -> None:
    settings = _settings(tmp_path, store, free_port())
    reported_study(settings, store, reader, seed=73)
    with store.session() as session:  # as if no draft row had ever been queued (e.g. no PACS at report time)
        session.execute(sa.delete(OutboxMessage))
        revision_id = session.scalar(sa.select(Revision.id))
    assert revision_id is not None
    outbox = Outbox(
        store,
        AuditRecorder(store),
        settings.dispatch,
        payload_dir(settings),
        senders={KIND_ASSESSMENT: lambda destination, payload: None},
    )
    staged = outbox.staged()
    with store.session(immediate=True) as session:
        [row] = outbox.add_assessments(session, revision_id, "1.2.3.4.9", b"x", staged=staged)
    staged.keep()
    result = Deliveries(store, outbox, AuditRecorder(store), _Observer(), utc_now).dispatch(int(str(row["id"])))
    assert result.delivery.state is OutboxState.DELIVERED
    assert result.revision_state is RevisionState.REPORTED


def _outbox_row(revision: Revision, kind: str, document_uid: str | None = None) -> OutboxMessage:
    row = OutboxMessage(
        revision=revision,
        kind=kind,
        destination="PACS@127.0.0.1:104",
        payload_path="p.dcm",
        payload_sha256="0" * 64,
        state=OutboxState.PENDING,
        attempts=0,
    )
    if document_uid is not None:
        row.document_uid = document_uid
    return row


def test_migration_0007_keeps_one_draft_row_per_destination_and_allows_many_assessments(database_url: str) -> None:
    store = Store.from_url(database_url)
    try:
        with store.engine.connect() as connection:
            command.upgrade(_config(connection), "0006")
            command.upgrade(_config(connection), "head")
            connection.commit()
        columns = {c["name"]: c for c in sa.inspect(store.engine).get_columns("outbox")}
        assert not columns["document_uid"]["nullable"]
        uniques = [sorted(u["column_names"]) for u in sa.inspect(store.engine).get_unique_constraints("outbox")]
        assert uniques == [sorted(["revision_id", "kind", "destination", "document_uid"])]
        with store.session() as session:
            study = Study(study_uid="1.2.826.0.1.3680043.10.1", study_key="k" * 16)
            revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
            session.add_all(
                [
                    study,
                    revision,
                    _outbox_row(revision, "sr"),
                    _outbox_row(revision, KIND_ASSESSMENT, "1.1"),
                    _outbox_row(revision, KIND_ASSESSMENT, "1.2"),
                ]
            )
        with pytest.raises(PermanentError, match="IntegrityError"), store.session() as session:  # 2nd draft row
            session.add(_outbox_row(session.get_one(Revision, revision.id), "sr"))
        with store.session() as session:
            assert session.scalars(sa.select(OutboxMessage.document_uid).order_by(OutboxMessage.id)).all() == [
                "",
                "1.1",
                "1.2",
            ]
            session.execute(sa.delete(OutboxMessage).where(OutboxMessage.kind == KIND_ASSESSMENT))
        with store.engine.connect() as connection:
            command.downgrade(_config(connection), "0006")
            connection.commit()
        uniques = [sorted(u["column_names"]) for u in sa.inspect(store.engine).get_unique_constraints("outbox")]
        assert uniques == [sorted(["revision_id", "kind", "destination"])]
        assert "document_uid" not in {c["name"] for c in sa.inspect(store.engine).get_columns("outbox")}
    finally:
        store.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_assessment_sr_arrives_in_a_real_orthanc_in_the_study_and_validates(
    store: Store, tmp_path: Path, reader: StudyReader
) -> None:
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        settings = _settings(tmp_path, store, orthanc.dicom_port, orthanc.ae_title)
        study_uid = reported_study(settings, store, reader, seed=74)
        pipeline = StudyPipeline(settings, store, reader, worker="dispatcher")  # what the dispatch task runs
        draft_ids = [row.id for row in _rows(store)]
        assert pipeline.dispatch(draft_ids[0]).delivery.state is OutboxState.DELIVERED
        add_user(store, "dr.pacs", "radiologist")
        rung: list[int] = []
        with console_client(store, settings) as client:
            client.app.state.console.ring_dispatch = lambda outbox_id: rung.append(outbox_id) or True
            sign_in(client, "dr.pacs")
            _decide(client, study_uid, [("reject", "RT-R2"), ("accept", "RT-A2")])
        assert len(rung) == 2
        for outbox_id in [*rung, *draft_ids[1:]]:  # the doorbells, in the order a dispatcher may meet them
            assert pipeline.dispatch(outbox_id).delivery.state is OutboxState.DELIVERED
        assert _revision(store, study_uid).state is RevisionState.DISPATCHED
        held = orthanc.srs(study_uid)
        [ai_sr] = [ds for ds in held if ds.SeriesDescription != "AI result assessment (radtrace)"]
        assert len(held) == 3  # the AI SR and both assessment SRs (a changed mind never edits the first)
        for decision in _events(store, "draft_assessed"):
            uid = decision["assessment_sr"]["sop_instance_uid"]
            [instance_id] = orthanc.find_instance(uid)
            study = orthanc.get(f"/instances/{instance_id}/study")
            assert isinstance(study, dict)
            assert study["MainDicomTags"]["StudyInstanceUID"] == study_uid
            received = httpx.get(f"{orthanc.url}/instances/{instance_id}/file", timeout=30).content
            kept = (settings.data_dir / "assessments" / decision["assessment_sr"]["path"]).read_bytes()
            with pydicom_config.strict_reading():
                sent, arrived = pydicom.dcmread(io.BytesIO(kept)), pydicom.dcmread(io.BytesIO(received))
            assert arrived.SOPInstanceUID == sent.SOPInstanceUID == uid
            assert arrived.ContentSequence == sent.ContentSequence
            evidence = arrived.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
            assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ai_sr.SOPInstanceUID
            path = tmp_path / f"{uid}.dcm"
            path.write_bytes(received)
            assert dciodvfy_errors(path) == []
        delivered = [e for e in _events(store, "dispatch_delivered") if e["kind"] == KIND_ASSESSMENT]
        assert sorted(e["outbox_id"] for e in delivered) == sorted(rung)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_console_rings_the_real_dispatch_doorbell_for_each_queued_assessment(
    store: Store, tmp_path: Path, reader: StudyReader, redis_namespace: RedisNamespace
) -> None:
    broker = {"url": redis_namespace.url, "key_prefix": redis_namespace.prefix}
    settings = _settings(tmp_path, store, free_port(), broker=broker)
    study_uid = reported_study(settings, store, reader, seed=75)
    add_user(store, "dr.bell", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.bell")
        _decide(client, study_uid, [("accept", "RT-A2")])
    [row] = _rows(store, KIND_ASSESSMENT)
    queue = redis.Redis.from_url(redis_namespace.url)
    messages = queue.lrange(redis_namespace.key(settings.broker.dispatch_queue), 0, -1)
    assert len(messages) == 1
    message = json.loads(messages[0])
    assert message["headers"]["task"] == DISPATCH_TASK
    args, _, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [row.id]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_with_assessment_hl7_the_ris_also_gets_the_assessment_as_an_oru_never_final(
    store: Store, tmp_path: Path, reader: StudyReader
) -> None:
    comment = "pleura fine | not ^ & a ~ \\ effusion"
    with mllp_receiver(["AA"]) as ris:
        ris_setting = {"host": ris.host, "port": ris.port}
        settings = _settings(
            tmp_path, store, free_port(), dispatch={"ris": ris_setting}, reporting={"hl7_result_status": "R"},
            console={"sync_interval_s": 0, "assessment_hl7": True},
        )  # fmt: skip
        study_uid = reported_study(settings, store, reader, seed=76)
        add_user(store, "dr.ris", "radiologist")
        with console_client(store, settings) as client:
            client.app.state.console.ring_dispatch = lambda outbox_id: True
            sign_in(client, "dr.ris")
            base = f"/console/studies/{study_uid}/1"
            page = client.get(base).text
            token = csrf_of(page)
            label = re.findall(r'name="label" value="([^"]+)"', page)[0]
            # A status other than the model's (the same one is refused): which the demo reading gives depends on the
            # study the factory made.
            model_status = re.findall(r'<tr id="finding-0" class="finding-row status-(\w+)"', page)[0]
            status = "present" if model_status == "absent" else "absent"
            modified = {"label": label, "decision": "modify", "status": status, "comment": comment}
            assert client.post(f"{base}/findings", data={"csrf_token": token, **modified}).status_code < 400
            client.post(f"{base}/draft", data={"csrf_token": token, "decision": "reject", "reason": "RT-R2"})
        [decision] = _events(store, "draft_assessed")
        sr_uid = decision["assessment_sr"]["sop_instance_uid"]
        rows = {row.kind: row for row in _rows(store) if row.document_uid}
        assert set(rows) == {KIND_ASSESSMENT, KIND_ASSESSMENT_HL7}
        assert rows[KIND_ASSESSMENT_HL7].destination == f"{ris.host}:{ris.port}"
        assert sorted(r["kind"] for r in decision["outbox"]) == [KIND_ASSESSMENT, KIND_ASSESSMENT_HL7]
        pipeline = StudyPipeline(settings, store, reader, worker="dispatcher")
        result = pipeline.dispatch(rows[KIND_ASSESSMENT_HL7].id)
    assert result.delivery.state is OutboxState.DELIVERED
    assert result.revision_state is RevisionState.REPORTED  # the draft's own rows decide that
    [message] = ris.received
    assert ris.control_ids == [control_id_for(sr_uid)]
    text = str(message)
    parsed = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    parsed.validate()  # hl7apy STRICT, as the draft's ORU
    obr = message.segment("OBR")
    assert str(obr[25]) == "R"
    segments = [s for s in message if str(s[0]) == "OBX"]
    assert {str(s[11]) for s in segments} == {"R"}  # preliminary-class status on every observation, never F
    values = {(str(s[3]).split("^")[0], str(s[4])): str(s[5]) for s in segments}
    assert values[("RTA-2", "")] == "RTA-V2^Rejected^99RADTRACE"
    assert values[("RTA-3", "")] == "RT-R2^Finding reported that is not there^99RADTRACE"
    finding_code = finding_codes(label).code.value
    assert values[(finding_code, "1")].startswith("RTA-V3^Modified")
    assert values[("RTA-6", "1")] == {"absent": "RTA-P2^Absent", "present": "RTA-P1^Present"}[status] + "^99RADTRACE"
    assert unescape(values[("121106", "1")]) == comment
    assert values[("RTA-8", "")] == sr_uid
    ai_sr_uid = _revision(store, study_uid).sr_sop_instance_uid
    assert values[(SR_UID.value, "")] == ai_sr_uid
    assert values[("110180", "")] == study_uid
    assert "dr.ris" in str(message.segments("NTE")[0][3])


def test_an_assessment_oru_refuses_final_status(tmp_path: Path) -> None:
    ai_sr = Dataset()
    ai_sr.SOPInstanceUID, ai_sr.StudyInstanceUID, ai_sr.PatientID = "1.2.3", "1.2.4", "P1"
    final = ReportingSettings.model_construct(**{**ReportingSettings().model_dump(), "hl7_result_status": "F"})
    with pytest.raises(ReportError, match="'F' is not allowed"):
        build_assessment_oru(ai_sr, observer="dr", verdict="accept", reason=("RT-A1", "Agree"), comment=None,
                             findings=[], sop_instance_uid="1.2.5", settings=final, when=utc_now())  # fmt: skip

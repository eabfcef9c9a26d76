"""Helpers of tests/integration/test_reassigned_*, images the PACS moves or rejects after radtrace read them:
the NIH real film filed under a study and patient, sending it to an in-process listener, a study's revisions, the
worklist row of a study page and the environment of the ``radtrace`` command; :func:`first_read`, the opening those
tests share (a site running, patient P1's film read as revision 1 of a new study, the console signed in if asked)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from console_support import add_user, console_client, sign_in
from listener_support import audit_payloads, running
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings, load_settings
from radtrace.dicom_listener.rejection_note import KOS_SOP_CLASS
from radtrace.dicom_listener.scu import send_files
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Priority, Revision, RevisionState, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from tests_support import as_part10
from worker_support import wait_until

NIH = Path(__file__).resolve().parent / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
SETTLE_S = 0.5


def demo_listener_settings(tmp_path: Path, store: Store, port: int, **sections: dict[str, Any]) -> Settings:
    """A demo-model site whose in-process listener on 127.0.0.1:``port`` admits 'PACS' (``sections`` added)."""
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "device": "cpu"},
        listener={
            "host": "127.0.0.1",
            "port": port,
            "allowed_callers": [{"ae_title": "PACS"}],
            "settle_seconds": SETTLE_S,
            "min_free_bytes": 0,
        },
        **sections,
    )


def reassigned_settings(tmp_path: Path, store: Store, port: int) -> Settings:
    return demo_listener_settings(tmp_path, store, port, console={"sync_interval_s": 0})


def new_pipeline(settings: Settings, store: Store) -> StudyPipeline:
    return StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")


def received(store: Store, study_uid: str, revisions: list[tuple[int, str]]) -> None:
    """Wait until the study's revisions are ``revisions`` ((number, state), by number)."""
    wait_until(lambda: revision_states(store, study_uid) == revisions)


def read_first(pipeline: StudyPipeline, store: Store, port: int, film: Path, study_uid: str, revision: int = 1) -> None:
    """Send ``film`` (answered 0x0000), wait for revision ``revision`` of its study to be queued, read it: reported."""
    assert send([film], port) == [0x0000]
    wait_until(lambda: (revision, "queued") in revision_states(store, study_uid))
    assert pipeline.process(study_uid, revision).result is Result.REPORTED


def read_filed(
    tmp_path: Path, pipeline: StudyPipeline, store: Store, port: int, *, study_uid: str, sop_uid: str, accession: str
) -> Path:
    """The NIH film of patient P1 (ONE^PAT) filed under ``study_uid`` as ``sop_uid`` at ``tmp_path/a.dcm``, sent
    through the running listener on ``port`` and read as revision 1 (:func:`read_first`): the film."""
    film = film_as(tmp_path / "a.dcm", study_uid=study_uid, sop_uid=sop_uid, patient_id="P1", name="ONE^PAT",
                   accession=accession)  # fmt: skip
    read_first(pipeline, store, port, film, study_uid)
    return film


@dataclass(frozen=True)
class FirstRead:
    """What :func:`first_read` opened: the site, its pipeline, the study and image read, the film's path, and the
    console client (``None`` unless a radiologist was signed in)."""

    settings: Settings
    pipeline: StudyPipeline
    study_uid: str
    sop_uid: str
    film: Path
    client: TestClient | None

    @property
    def console(self) -> TestClient:
        """The console client, signed in as the radiologist :func:`first_read` was given."""
        assert self.client is not None, "first_read(..., radiologist=...) opens the console"
        return self.client


@contextlib.contextmanager
def first_read(
    tmp_path: Path, store: Store, port: int, *, accession: str, radiologist: str | None = None
) -> Iterator[FirstRead]:
    """The reassignment tests' opening: a demo site (:func:`reassigned_settings`) whose listener runs on ``port``
    for the ``with`` block, and the NIH film of patient P1 filed under a new study and SOP Instance UID and read as
    revision 1 (:func:`read_filed`). With ``radiologist``, that account is added first, the console client is opened
    beside the listener before the read, and it is signed in after it."""
    settings = reassigned_settings(tmp_path, store, port)
    study_uid, sop_uid = generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    if radiologist is not None:
        add_user(store, radiologist, "radiologist")
    with contextlib.ExitStack() as opened:
        opened.enter_context(running(settings, store))
        client = opened.enter_context(console_client(store, settings)) if radiologist is not None else None
        film = read_filed(tmp_path, pipeline, store, port, study_uid=study_uid, sop_uid=sop_uid, accession=accession)
        if client is not None and radiologist is not None:
            sign_in(client, radiologist)
        yield FirstRead(settings, pipeline, study_uid, sop_uid, film, client)


def read_again_after_withdrawal(
    tmp_path: Path,
    pipeline: StudyPipeline,
    store: Store,
    port: int,
    withdrawn_by: str,
    *,
    study_uid: str,
    first_sop: str,
    later_sop: str,
    other_study_uid: str | None = None,
) -> None:
    """Study ``study_uid`` (patient P1) read twice through the running listener on ``port``: its PA chest film
    ``first_sop`` read as revision 1; that film then withdrawn by the PACS, ``moved`` to ``other_study_uid`` (patient
    P2: queued there) or ``rejected`` (an IOCM rejection note, 113037: noted); then its AP chest film ``later_sop``
    read as revision 2."""
    pa, ap = {"ViewPosition": "PA", "BodyPartExamined": "CHEST"}, {"ViewPosition": "AP", "BodyPartExamined": "CHEST"}
    film = film_as(tmp_path / "pa.dcm", study_uid=study_uid, sop_uid=first_sop, patient_id="P1", name="ONE^PAT",
                   accession="A", **pa)  # fmt: skip
    read_first(pipeline, store, port, film, study_uid)
    if withdrawn_by == "moved":
        assert other_study_uid is not None
        moved = film_as(tmp_path / "moved.dcm", study_uid=other_study_uid, sop_uid=first_sop, patient_id="P2",
                        name="TWO^PAT", accession="B", **pa)  # fmt: skip
        assert send([moved], port) == [0x0000]
        received(store, other_study_uid, [(1, "queued")])
    else:
        assert withdrawn_by == "rejected", withdrawn_by
        rejected_for_patient_safety(tmp_path, store, port, film)
    later = film_as(tmp_path / "ap.dcm", study_uid=study_uid, sop_uid=later_sop, patient_id="P1", name="ONE^PAT",
                    accession="A", **ap)  # fmt: skip
    read_first(pipeline, store, port, later, study_uid, revision=2)


def read_then_moved(
    tmp_path: Path, pipeline: StudyPipeline, store: Store, port: int, *, study_a: str, study_b: str, sop: str
) -> Path:
    """Image ``sop`` filed under study ``study_a`` (patient P1) and read there, then re-sent by the PACS under study
    ``study_b`` (patient P2) and read there too, through the running listener on ``port``: the film as first filed."""
    film = film_as(tmp_path / "a.dcm", study_uid=study_a, sop_uid=sop, patient_id="P1", name="ONE^PAT", accession="A")
    read_first(pipeline, store, port, film, study_a)
    moved = film_as(tmp_path / "b.dcm", study_uid=study_b, sop_uid=sop, patient_id="P2", name="TWO^PAT", accession="B")
    read_first(pipeline, store, port, moved, study_b)
    return film


def read_inputs(store: Store, study_uid: str, revision: int) -> list[str]:
    """The SOP Instance UIDs the model read for a revision (its ``inference_completed`` event)."""
    with store.session() as session:
        payloads = session.scalars(
            sa.select(AuditEventRow.payload).where(
                AuditEventRow.study_uid == study_uid, AuditEventRow.event_type == "inference_completed"
            )
        ).all()
    found = [json.loads(p) for p in payloads]
    return [i["sop_instance_uid"] for p in found if p.get("revision") == revision for i in p["inputs"]]


def film_as(
    target: Path, *, study_uid: str, sop_uid: str, patient_id: str, name: str, accession: str, **extra: str
) -> Path:
    """The NIH film filed under ``study_uid`` and ``patient_id`` with SOP Instance UID ``sop_uid`` (and ``extra``
    attributes by keyword, e.g. ViewPosition)."""
    ds = pydicom.dcmread(NIH)
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.AccessionNumber = accession
    as_part10(ds, syntax=None).save_as(target, enforce_file_format=True)
    return target


def insert_study(
    connection: sa.Connection,
    uid: str,
    state: RevisionState,
    at: datetime,
    *,
    study_key: str | None = None,
    **revision: Any,
) -> tuple[int, int]:
    """Study ``uid`` (its key ``study_key``, else the UID's last 16 characters) and its revision 1 in ``state``,
    inserted straight into the tables as of ``at`` (``revision``: more of the revision's columns): their ids."""
    study_id = connection.execute(
        sa.insert(Study.__table__).values(study_uid=uid, study_key=study_key or uid[-16:].rjust(16, "k"),
                                          created_at=at)
        .returning(Study.__table__.c.id)
    ).scalar_one()  # fmt: skip
    revision_id = connection.execute(
        sa.insert(Revision.__table__).values(study_id=study_id, number=1, state=state, opened_at=at, updated_at=at,
                                             priority=Priority.ROUTINE, **revision)
        .returning(Revision.__table__.c.id)
    ).scalar_one()  # fmt: skip
    return int(study_id), int(revision_id)


def insert_instance(
    connection: sa.Connection, study_id: int, revision_id: int, sop: str, version: int, at: datetime, *, sha256: str
) -> None:
    """Version ``version`` of CR image ``sop`` in the revision, inserted straight into the table as of ``at`` (its
    spooled file ``<sop>.<version>.dcm``, of one byte, is not written)."""
    connection.execute(
        sa.insert(Instance.__table__).values(
            study_id=study_id, revision_id=revision_id, sop_instance_uid=sop, version=version,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1", transfer_syntax_uid="1.2.840.10008.1.2.1",
            path=f"{sop}.{version}.dcm", size_bytes=1, sha256=sha256, received_at=at,
        )
    )  # fmt: skip


def revision_states(store: Store, study_uid: str) -> list[tuple[int, str]]:
    with store.session() as session:
        found = session.execute(
            sa.select(Revision.number, Revision.state)
            .join(Study)
            .where(Study.study_uid == study_uid)
            .order_by(Revision.number)
        ).all()
    return [(int(number), RevisionState(state).value) for number, state in found]


def send(files: list[Path], port: int) -> list[int | None]:
    return [r.status for r in send_files(files, "127.0.0.1", port, calling_ae="PACS", called_ae="RADTRACE")]


def cli_env(settings: Settings, store: Store) -> dict[str, str]:
    return {
        "RADTRACE_DATA_DIR": str(settings.data_dir),
        "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False),
    }


def worklist_row(html: str, path: str) -> str:
    """The worklist's table row that links to ``path``."""
    for row in re.findall(r"<tr\b.*?</tr>", html, flags=re.S):
        if path in row:
            return str(row)
    raise AssertionError(f"no worklist row links to {path}")


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def rejection_note(target: Path, film: Path, code: str, meaning: str) -> Path:
    """A KOS in the film's study, titled ``code``, naming the film (as dcm4che's mkkos makes a rejection note)."""
    image = pydicom.dcmread(film, stop_before_pixels=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = KOS_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyTime"):
        if keyword in image:
            setattr(ds, keyword, image[keyword].value)
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), "KO", 999, 1
    ds.ContentDate, ds.ContentTime, ds.ValueType = "20261206", "040000", "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code(code, meaning)])
    sop = Dataset()
    sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedSOPSequence = image.SeriesInstanceUID, Sequence([sop])
    study = Dataset()
    study.StudyInstanceUID, study.ReferencedSeriesSequence = image.StudyInstanceUID, Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    ds.save_as(target, enforce_file_format=True)
    return target


def rejected_for_patient_safety(tmp_path: Path, store: Store, port: int, film: Path) -> None:
    """The PACS rejects ``film`` for patient safety reasons: its IOCM rejection note (113037, ``note.dcm``) sent to
    the running listener on ``port`` (answered 0x0000), and the first ``instance_rejection_noted`` audited."""
    note = rejection_note(tmp_path / "note.dcm", film, "113037", "Rejected for Patient Safety Reasons")
    assert send([note], port) == [0x0000]
    wait_until(lambda: len(audit_payloads(store, "instance_rejection_noted")) == 1)


def marks_shown(html: str) -> str:
    """The marks the study page's Checked form says it showed (its ``marks_shown`` field)."""
    found = re.findall(r'name="marks_shown" value="([^"]*)"', html)
    assert found, "no Checked form on the page"
    return str(found[0])

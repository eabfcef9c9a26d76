"""A film whose Specific Character Set is a term pydicom does not know ('ISO_IR 999') gives one warning line in the
listener's log and one in the worker's, naming the study by its key and no patient value.

Found on a hospital's first night: pydicom warns twice in each read ("Unknown encoding 'ISO_IR 999' - using default
encoding instead"), and the listener read the instance twice (header, pixel budget), the worker twice (header,
pixels): 4 lines each for one instance, none saying which study. Film: the Fuji CR chest film of tests/data/real-cxr
with (0008,0005) 'ISO_IR 999', canary patient values and new UIDs, sent to a running ``radtrace listen`` (a process of
its own, its log read back), then read to drafts by the worker's pipeline (demo backend) in this process, with
radtrace's log handler installed as the worker's entry point does.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid

from radtrace.config import load_settings
from radtrace.dicom_charset import without_charset_warnings
from radtrace.dicom_listener.scu import send_files
from radtrace.logging import configure_logging, study_key
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.testing.abuse import ListenerProcess
from radtrace.testing.services import free_port
from radtrace.worker.pipeline import Result, StudyPipeline
from tests_support import as_part10
from worker_support import wait_until

pytestmark = pytest.mark.integration

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"
NAME, PATIENT_ID, ACCESSION = "Canaryfam^Canarygiv", "CANARYPID77", "CANARYACC77"
WARNING = "Unknown encoding 'ISO_IR 999' - using default encoding instead"


def _film(target: Path) -> str:
    """The Fuji film relabelled 'ISO_IR 999' (written as ISO_IR 100, then the term's bytes replaced: pydicom will
    not write a term it does not know)."""
    ds = pydicom.dcmread(FUJI, force=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.add(DataElement(0x00080005, "CS", "ISO_IR 100"))
    ds.PatientName, ds.PatientID, ds.AccessionNumber = NAME, PATIENT_ID, ACCESSION
    as_part10(ds, syntax=None).save_as(target, enforce_file_format=True)
    data = target.read_bytes()
    assert data.count(b"ISO_IR 100") == 1
    target.write_bytes(data.replace(b"ISO_IR 100", b"ISO_IR 999"))
    return str(ds.StudyInstanceUID)


def _queued(store: Store, study_uid: str) -> bool:
    with store.session() as session:
        state = session.scalar(sa.select(Revision.state).join(Study).where(Study.study_uid == study_uid))
    return state is RevisionState.QUEUED


def _assert_said_once(log: str, study_uid: str) -> None:
    lines = [line for line in log.splitlines() if "Unknown encoding" in line]
    assert len(lines) == 1, lines
    assert WARNING in lines[0]
    assert f"(study {study_key(study_uid)})" in lines[0]
    for value in (*NAME.split("^"), PATIENT_ID, ACCESSION, study_uid):
        assert value not in log, f"{value!r} in the log"


def test_an_unknown_character_set_is_one_line_in_the_listener_and_one_in_the_worker(tmp_path: Path) -> None:
    film = tmp_path / "film.dcm"
    study_uid = _film(film)
    port = free_port()
    data_dir = tmp_path / "radtrace"
    with ListenerProcess(data_dir, port, log_level="INFO", settle_seconds="0.5") as listener:
        with without_charset_warnings():  # the sending side reads the film too (this process: not counted)
            [sent] = send_files([film], "127.0.0.1", port, calling_ae="PACS", called_ae="RADTRACE")
        assert sent.status == 0x0000, sent
        store = Store.from_url(listener.database_url)
        try:
            wait_until(lambda: _queued(store, study_uid))
        finally:
            store.dispose()
    _assert_said_once(listener.log.read_text(encoding="utf-8"), study_uid)

    (tmp_path / "drop").mkdir()
    settings = load_settings(
        data_dir=data_dir,
        store={"url": listener.database_url},
        model={"backend": "demo", "demo": True, "device": "cpu"},
        dispatch={"file_drop_dir": tmp_path / "drop"},
    )
    worker_log = io.StringIO()
    handler = configure_logging("text", "INFO", stream=worker_log)
    store = Store.from_url(listener.database_url)
    try:
        pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")
        result = pipeline.process(study_uid, 1)
        assert result.result is Result.REPORTED, result
    finally:
        logging.getLogger().removeHandler(handler)
        store.dispose()
    _assert_said_once(worker_log.getvalue(), study_uid)

"""While the listener handles an instance, or the worker a revision, nothing logged can carry that study's patient
name, ID, birth date or accession: not a library's message quoting them as plain text, not an exception's text in
a logged traceback.

The log filter's patterns catch the forms it knows (``PatientName=...``, a dataset, pydicom's "Invalid value for VR
PN: ..."); free text such as ``could not match DOE^JOHN to order A123`` only :func:`radtrace.logging.redacting`
catches, and only while the values are registered. The "library" here is a logger call injected into the handling
path (and an exception raised there), each quoting canaries: values found nowhere else (the canary letters of
tests/e2e/test_logging_canaries.py).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest

from draft_process_support import LIBRARY as CHILD_LIBRARY
from draft_process_support import talkative
from listener_support import listener_settings, running
from radtrace.dicom_listener import handlers
from radtrace.dicom_listener.dcmtk import storescu
from radtrace.logging import configure_logging
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.studies import ImageSpec, StudySpec, make_study, write_study
from radtrace.worker import pipeline, reading_record
from radtrace.worker.drafting import PoolDrafter
from radtrace.worker.pipeline import StudyPipeline
from worker_support import revision_row, spool_study, worker_settings

pytestmark = pytest.mark.integration

# Letters no hexadecimal digest, timestamp or UID can hold: a canary cannot turn up by chance.
_LETTERS = "GHJKMNPQRSTVWXYZ"
LIBRARY = "pydicom.injected"  # a library's logger: radtrace's own code does not write these lines


def _canaries(prefix: str) -> StudySpec:
    run = "".join(secrets.choice(_LETTERS) for _ in range(6))
    return StudySpec(
        patient_name=f"{prefix}FAM{run}^{prefix}GIV{run}",
        patient_id=f"{prefix}PID{run}",
        birth_date="18730417",
        accession=f"{prefix}ACC{run}",
    )


def _sought(spec: StudySpec) -> list[str]:
    family, given = spec.patient_name.split("^")
    return [family, given, spec.patient_id, spec.accession, spec.birth_date]


def _library_says(ds: Any, where: str) -> None:
    """What a library might log about the data set in hand: its values as plain text, no keyword beside them."""
    logging.getLogger(LIBRARY).warning(
        "%s: could not match %s (%s, born %s) to order %s",
        where,
        str(ds.PatientName),
        str(ds.PatientID),
        str(ds.PatientBirthDate),
        str(ds.AccessionNumber),
    )


def _assert_redacted(output: str, specs: Sequence[StudySpec], *, injected: int) -> None:
    lines = [line for line in output.splitlines() if LIBRARY in line]
    assert len(lines) >= injected, f"the injected logger wrote {len(lines)} lines: the test would prove nothing"
    assert all("<redacted>" in line for line in lines)
    for spec in specs:
        for value in _sought(spec):
            leaked = [line for line in output.splitlines() if value.lower() in line.lower()]
            assert not leaked, f"{value!r} reached the log: {leaked[:3]}"


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")
def test_what_is_logged_while_the_listener_handles_an_instance_never_names_its_patient(
    tmp_path: Path, store: Store, listener_port: int, captured_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored, failing = _canaries("S"), _canaries("F")
    files = [
        *write_study(make_study(stored, [ImageSpec(view="PA")]), tmp_path / "stored"),
        *write_study(make_study(failing, [ImageSpec(view="PA")]), tmp_path / "failing"),
    ]
    record_instance = handlers.record_instance

    def recording(*args: Any, **kwargs: Any) -> Any:
        staged = args[3]
        ds = pydicom.dcmread(staged.path, stop_before_pixels=True)
        _library_says(ds, "storing")
        if str(ds.PatientID) == failing.patient_id:  # a library's error quoting the name: logged with its traceback
            raise ValueError(f"cannot index {ds.PatientName} under {ds.PatientID}")
        return record_instance(*args, **kwargs)

    monkeypatch.setattr(handlers, "record_instance", recording)
    with running(listener_settings(tmp_path, listener_port), store):
        storescu(files, listener_port)  # exits 1: the second instance was answered 0110
    output = captured_log.getvalue()
    assert "unexpected failure handling C-STORE" in output
    assert re.search(r"ValueError: cannot index <redacted> under <redacted>", output), output[-2000:]
    _assert_redacted(output, [stored, failing], injected=2)


def test_what_is_logged_while_the_worker_handles_a_revision_never_names_its_patient(
    tmp_path: Path, store: Store, tiny_model_dir: Path, captured_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    wsettings = worker_settings(tmp_path, str(store.engine.url.render_as_string(hide_password=False)), tiny_model_dir)
    read, failing = _canaries("R"), _canaries("F")
    read_uid, _ = spool_study(wsettings, store, make_study(read, [ImageSpec(view="PA")]))
    failing_uid, _ = spool_study(wsettings, store, make_study(failing, [ImageSpec(view="PA")]))
    identity_conflict, headers_only, enqueue_built = (
        pipeline.identity_conflict,
        reading_record.headers_only,
        pipeline.enqueue_built,
    )

    def conflict(images: list[StudyImage]) -> Any:  # where a revision's headers are first looked at
        _library_says(images[0].dataset, "gathering")
        if str(images[0].dataset.PatientID) == failing.patient_id:
            raise ValueError(f"cannot index {images[0].dataset.PatientName} under {images[0].dataset.PatientID}")
        return identity_conflict(images)

    def headers(ds: Any) -> Any:  # where a reading is recorded and its drafts are built
        _library_says(ds, "drafting")
        return headers_only(ds)

    def enqueue(*args: Any, **kwargs: Any) -> Any:  # where the built drafts are enqueued and the revision finished
        logging.getLogger(LIBRARY).warning("enqueueing: %s of %s", read.patient_name, read.accession)
        return enqueue_built(*args, **kwargs)

    class LoggingReader:  # the model reading the batch
        def __init__(self, reader: StudyReader) -> None:
            self.reader = reader

        def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | Any]:
            for images in studies:
                _library_says(images[0].dataset, "reading")
            return self.reader.read_each(studies)

    monkeypatch.setattr(pipeline, "identity_conflict", conflict)
    monkeypatch.setattr(reading_record, "headers_only", headers)
    monkeypatch.setattr(pipeline, "enqueue_built", enqueue)
    worker = StudyPipeline(wsettings, store, LoggingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir)))
    results = dict(worker.process_batch(read_uid, 1, size=2))

    assert revision_row(store, read_uid).state is RevisionState.REPORTED
    assert (failing_uid, 1) in results  # taken into the batch; its attempt failed with the library's error
    assert "unexpected error processing revision" in captured_log.getvalue()
    output = captured_log.getvalue()
    assert re.search(r"ValueError: cannot index <redacted> under <redacted>", output), output[-2000:]
    _assert_redacted(output, [read, failing], injected=5)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_what_a_draft_process_logs_while_building_a_studys_drafts_never_names_its_patient(
    tmp_path: Path, store: Store, tiny_model_dir: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, fmt: str,
) -> None:  # fmt: skip
    """``model.draft_processes = 1`` (the default): the drafts are built in a spawned process, whose stderr is the
    worker's. A library logging there writes through radtrace's handler, in the worker's format, with the study's
    values redacted."""
    wsettings = worker_settings(
        tmp_path, str(store.engine.url.render_as_string(hide_password=False)), tiny_model_dir,
        model={"draft_processes": 1}, logging={"format": fmt, "level": "INFO"},
    )  # fmt: skip
    configure_logging(fmt, "INFO", stream=io.StringIO())  # the worker's own handler (its lines are not looked at)
    spec = _canaries("D")
    study = make_study(spec, [ImageSpec(view="PA")])
    uid, _ = spool_study(wsettings, store, study)
    headers_only = reading_record.headers_only
    monkeypatch.setattr(reading_record, "headers_only", lambda ds: talkative(headers_only(ds)))
    drafter = PoolDrafter(wsettings, 1)
    try:
        worker = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                               drafter=drafter)  # fmt: skip
        worker.process_batch(uid, 1)
    finally:
        drafter.close()
    err = capfd.readouterr().err

    assert revision_row(store, uid).state is RevisionState.REPORTED
    for value in _sought(spec):
        leaked = [line for line in err.splitlines() if value.lower() in line.lower()]
        assert not leaked, f"{value!r} reached the worker's stderr: {leaked[:3]}"
    for value in (uid, *(str(ds.SOPInstanceUID) for ds in study)):  # a log line names a study by its study_key
        assert value not in err, f"{value!r} reached the worker's stderr"
    lines = [line for line in err.splitlines() if CHILD_LIBRARY in line]
    assert lines, f"the draft process's library wrote nothing: the test would prove nothing ({err[-1000:]!r})"
    for line in lines:
        if fmt == "json":
            entry = json.loads(line)
            assert (entry["level"], entry["logger"]) == ("WARNING", CHILD_LIBRARY)
            message = entry["message"]
            assert entry["process"] != os.getpid()  # written by the draft process
        else:
            assert re.match(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING {CHILD_LIBRARY}: ", line), line
            message = line
        assert re.search(r"could not match <redacted> \(<redacted>, born <redacted>\) to order <redacted>", message)

"""Leniency with a record, through a real listener on SQLite and PostgreSQL: an instance with header deviations is
stored and its deviations kept on its row and in its audit event; an unusable key attribute is refused with a
status comment that names the element. A study of two patients ends skipped with a warning and a security
audit event, and is never read."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from listener_support import associate, audit_payloads, listener_settings, rows, running
from radtrace.dicom_listener.attributes import by_keyword
from radtrace.dicom_listener.policy import STATUS_MISSING_IDENTIFIERS, STATUS_SUCCESS
from radtrace.logging import study_key
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Instance, RevisionState
from radtrace.testing.ablation import FACTORY_SOURCES, apply_change
from radtrace.testing.studies import ImageSpec, StudySpec, make_image
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import audit_events, revision_row, spool_study, worker_settings

pytestmark = pytest.mark.integration


def _variant_file(tmp_path: Path, keyword: str, kind: str) -> Path:
    changed = apply_change(FACTORY_SOURCES["factory-dx"]()[:1], by_keyword(keyword), kind, f"records/{keyword}/{kind}")
    assert changed is not None
    path = tmp_path / f"{keyword}-{kind}.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # invalid on purpose
        changed[0].save_as(path, enforce_file_format=True)
    return path


def _store(path: Path, port: int) -> Dataset:
    assoc = associate(path, port)
    try:
        status: Dataset = assoc.send_c_store(path)
    finally:
        assoc.release()
    return status


def test_deviations_are_kept_on_the_instance_row_and_in_its_audit_event(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    path = _variant_file(tmp_path, "InstitutionName", "over-long")
    with running(settings, store):
        status = _store(path, listener_port)
    assert status.Status == STATUS_SUCCESS
    [instance] = rows(store, Instance)
    expected = {"tag": "(0008,0080)", "keyword": "InstitutionName", "problem": "longer than 64 characters (VR LO)"}
    assert instance.deviations == [expected]
    [payload] = audit_payloads(store, "instance_received")
    assert json.loads(payload)["deviations"] == [expected]
    assert "XXXX" not in payload  # the value itself is never recorded


def test_a_valid_instance_records_no_deviations(tmp_path: Path, store: Store, listener_port: int) -> None:
    settings = listener_settings(tmp_path, listener_port)
    path = tmp_path / "valid.dcm"
    make_image(StudySpec(), ImageSpec(rows=96, columns=80)).save_as(path, enforce_file_format=True)
    with running(settings, store):
        assert _store(path, listener_port).Status == STATUS_SUCCESS
    [instance] = rows(store, Instance)
    assert instance.deviations is None
    assert "deviations" not in json.loads(audit_payloads(store, "instance_received")[0])


def test_an_unusable_key_attribute_is_refused_with_a_comment_naming_the_element(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    path = _variant_file(tmp_path, "StudyInstanceUID", "malformed")
    with running(settings, store):
        status = _store(path, listener_port)
    assert status.Status == STATUS_MISSING_IDENTIFIERS
    assert status.ErrorComment == "(0020,000D) Study Instance UID: not a valid UID"
    assert rows(store, Instance) == []


def test_a_study_of_two_patients_is_skipped_with_a_warning_and_a_security_event_and_never_read(
    tmp_path: Path, store: Store, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = worker_settings(tmp_path, store.engine.url.render_as_string(hide_password=False), tiny_model_dir)
    first = make_image(StudySpec(patient_id="RTPATIENTA"), ImageSpec(view="PA", rows=96, columns=80))
    second = make_image(StudySpec(patient_id="RTPATIENTB"), ImageSpec(view="LL", rows=96, columns=80))
    second.StudyInstanceUID = first.StudyInstanceUID
    study_uid, number = spool_study(settings, store, [first, second])
    reader = StudyReader(settings.model, data_dir=settings.data_dir)

    with caplog.at_level(logging.WARNING, logger="radtrace.worker.pipeline"):
        result = StudyPipeline(settings, store, reader, worker="w1").process(study_uid, number)

    assert (result.result, result.reason) == (Result.SKIPPED, "patient identity conflict")
    assert revision_row(store, study_uid).state is RevisionState.SKIPPED
    assert reader._backend is None  # the model was never loaded, let alone shown the images
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(study_key(study_uid) in line and "patient identity conflict" in line for line in warned)
    assert not any("RTPATIENT" in line or study_uid in line for line in warned)
    events = {kind: (outcome, payload) for kind, outcome, payload in audit_events(store)}
    assert events["patient_identity_conflict"][0] == "serious_failure"
    assert events["patient_identity_conflict"][1]["identities"] == 2
    assert events["study_skipped"][1]["reason"] == "patient identity conflict"
    assert "inference_completed" not in events


def test_a_secondary_capture_chest_film_is_read_and_its_reading_flagged(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    settings = worker_settings(tmp_path, store.engine.url.render_as_string(hide_password=False), tiny_model_dir)
    [film] = FACTORY_SOURCES["factory-sc"]()
    study_uid, number = spool_study(settings, store, [film])
    reader = StudyReader(settings.model, data_dir=settings.data_dir)

    result = StudyPipeline(settings, store, reader, worker="w1").process(study_uid, number)

    assert result.result is Result.REPORTED
    [reading] = [payload["reading"] for kind, _, payload in audit_events(store) if kind == "inference_completed"]
    assert reading["images"][0]["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.7"
    assert "secondary-capture" in reading["images"][0]["view_flags"]

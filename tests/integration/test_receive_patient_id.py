"""QA finds a study by Patient ID: the receive event carries it (and its issuer) in the audit log, and only
there: the listener's log lines never do (issue 15)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from listener_support import listener_settings, running
from radtrace.audit.events import Actor
from radtrace.audit.queries import AuditQuery, run_query
from radtrace.dicom_listener.scu import send_files
from radtrace.store.engine import Store
from radtrace.testing.studies import StudySpec, make_study, write_study

pytestmark = pytest.mark.integration

PATIENT_ID = "QA-PATIENT-4711"


def test_the_receive_event_carries_the_patient_id_and_issuer_and_no_log_line_does(
    tmp_path: Path, store: Store, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    datasets = make_study(StudySpec(seed=31, patient_id=PATIENT_ID))
    for ds in datasets:
        ds.IssuerOfPatientID = "HOSPITAL-A"
    files = write_study(datasets, tmp_path / "in")
    settings = listener_settings(tmp_path, listener_port)
    with caplog.at_level(logging.DEBUG), running(settings, store):
        results = send_files(files, "127.0.0.1", listener_port, called_ae="RADTRACE", calling_ae="PACS")
    assert all(result.ok for result in results)

    page = run_query(store, AuditQuery.parse(patient_id=PATIENT_ID), Actor(user="qa"))
    received = [event for event in page.events if event.event_type == "instance_received"]
    assert len(received) == len(files)
    for event in received:
        assert event.payload["patient_id_issuer"] == "HOSPITAL-A"
    assert PATIENT_ID not in caplog.text

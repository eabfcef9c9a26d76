"""Drafts are always kept: with no destination configured, the worker stores SR, HL7 and FHIR under
<data_dir>/drafts, names them with their SHA-256 in report_created, and `radtrace drafts` reads them back."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from hl7apy.parser import parse_message

from radtrace.audit.api import create_api
from radtrace.audit.events import Actor, EventType
from radtrace.audit.tokens import create_token
from radtrace.config import Settings, load_settings
from radtrace.errors import DispatchError, DispatchRejectedError, ModelError, ReportError
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import DRAFT_FILES, drafts_root, failure_event_type, read_draft
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.studies import make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from tests_support import radtrace
from worker_support import audit_events, outbox_rows, spool_study

pytestmark = pytest.mark.integration


@pytest.fixture
def no_destinations(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        model={"path": tiny_model_dir, "device": "cpu", "max_new_tokens": 48},
    )


@pytest.fixture
def sqlite_store(no_destinations: Settings) -> Iterator[Store]:
    no_destinations.data_dir.mkdir(parents=True)
    store = Store.from_url(no_destinations.store_url)
    upgrade(store)
    yield store
    store.dispose()


def test_with_no_destination_the_drafts_are_kept_hashed_audited_and_readable(
    no_destinations: Settings, sqlite_store: Store, tmp_path: Path
) -> None:
    settings = no_destinations
    study_uid, number = spool_study(settings, sqlite_store, make_study())
    reader = StudyReader(settings.model, data_dir=settings.data_dir)

    result = StudyPipeline(settings, sqlite_store, reader, worker="w1").process(study_uid, number)

    assert result.result is Result.REPORTED
    assert outbox_rows(sqlite_store) == []  # nothing to deliver ...
    folder = drafts_root(settings) / study_uid / "1"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [DRAFT_FILES["sr"], DRAFT_FILES["hl7"], DRAFT_FILES["fhir"], DRAFT_FILES["companion"]]
    )  # ... yet every draft is kept, and no temporary file is left
    created = [payload for kind, _, payload in audit_events(sqlite_store) if kind == "report_created"]
    assert len(created) == 1
    recorded = {item["kind"]: item for item in created[0]["drafts"]}
    assert set(recorded) == {"sr", "hl7", "fhir", "companion"}
    for item in recorded.values():
        path = drafts_root(settings) / item["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"]
    sr = pydicom.dcmread(folder / "sr.dcm")
    assert sr.StudyInstanceUID == study_uid
    assert str(sr.SOPInstanceUID) == created[0]["sr_sop_instance_uid"]
    assert parse_message((folder / "oru.hl7").read_text().replace("\n", "\r"), find_groups=False).msh

    view = read_draft(drafts_root(settings), study_uid)
    assert (view.study_uid, view.revision, view.sr_sop_instance_uid) == (study_uid, 1, str(sr.SOPInstanceUID))
    assert view.verification == "UNVERIFIED"
    assert any("not verified" in notice.lower() for notice in view.notices)

    # the CLI reads the same folder from the settings alone, and each use is audited
    env = {"RADTRACE_DATA_DIR": str(settings.data_dir), "RADTRACE_LISTENER__MIN_FREE_BYTES": "0"}
    listed = radtrace("drafts", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert study_uid in listed.stdout
    shown = radtrace("drafts", "show", study_uid, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "Impression" in shown.stdout
    assert "Reasoning" in shown.stdout
    assert str(sr.SOPInstanceUID) in shown.stdout
    exported = radtrace("drafts", "export", study_uid, "--to", str(tmp_path / "out"), env=env)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "sr.dcm").read_bytes() == (folder / "sr.dcm").read_bytes()
    kinds = [kind for kind, _, _ in audit_events(sqlite_store)]
    assert kinds[-2:] == ["draft_accessed", "draft_exported"]

    missing = radtrace("drafts", "show", "1.2.3.4", env=env)
    assert missing.returncode == 1
    assert "no draft is kept" in missing.stderr

    # the QA API serves them to a token holder, and records each use with the token's name
    secret = create_token(sqlite_store, "qa.reviewer", "qa", Actor(user="admin")).secret
    with TestClient(create_api(sqlite_store, drafts_dir=drafts_root(settings))) as client:
        base = f"/v1/studies/{study_uid}/drafts"
        assert client.get(base).status_code == 401
        headers = {"Authorization": f"Bearer {secret}"}
        assert [d["revision"] for d in client.get(base, headers=headers).json()] == [1]
        body = client.get(f"{base}/1", headers=headers).json()
        assert body["sr_sop_instance_uid"] == str(sr.SOPInstanceUID)
        assert body["verification"] == "UNVERIFIED"
        download = client.get(f"{base}/1/sr", headers=headers)
        assert download.status_code == 200
        assert download.content == (folder / "sr.dcm").read_bytes()
        companion = client.get(f"{base}/1/companion", headers=headers)
        assert companion.status_code == 200
        assert pydicom.dcmread(io.BytesIO(companion.content)).StudyInstanceUID == study_uid
        assert client.get(f"{base}/2", headers=headers).status_code == 404
        assert client.get("/v1/studies/1.2.3/drafts", headers=headers).status_code == 404
    used = [(kind, payload) for kind, _, payload in audit_events(sqlite_store)][-3:]
    assert [(kind, payload["via"]) for kind, payload in used] == [
        ("draft_accessed", "api"),
        ("draft_exported", "api"),
        ("draft_exported", "api"),  # the companion document
    ]


def test_a_read_only_command_never_creates_a_database(tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "elsewhere")}
    result = radtrace("status", "--no-broker", env=env)
    assert result.returncode == 1
    assert "no radtrace database at" in result.stderr
    assert str(tmp_path / "elsewhere") in result.stderr
    assert not (tmp_path / "elsewhere" / "radtrace.db").exists()
    assert not os.path.exists(tmp_path / "elsewhere")


def test_a_draft_that_cannot_be_built_is_a_report_failure_not_an_inference_failure() -> None:
    assert failure_event_type(ReportError("HL7 ORU could not be built")) is EventType.REPORT_FAILED
    assert failure_event_type(ModelError("CUDA out of memory")) is EventType.INFERENCE_FAILED
    assert EventType.REPORT_FAILED.value == "report_failed"


def test_a_report_the_outbox_could_not_queue_is_a_report_failure_not_an_inference_failure() -> None:
    """The reading worked; storing the outbox's payload copies (a full disk: the attempt waits uncounted, or another
    I/O error) or reading an earlier SR to name as predecessor did not. Before: inference_failed."""
    full = DispatchError("cannot store a payload under /data/outbox: No space left on device")
    full.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert failure_event_type(full) is EventType.REPORT_FAILED
    assert failure_event_type(DispatchError("cannot store a payload under /d: Input/output error")) is (
        EventType.REPORT_FAILED
    )
    assert failure_event_type(DispatchRejectedError("earlier SR payload x.dcm cannot be read")) is (
        EventType.REPORT_FAILED
    )

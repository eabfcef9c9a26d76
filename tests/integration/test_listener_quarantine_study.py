"""An instance the listener refuses and quarantines is found by its study: QA asking `radtrace audit query
--study-uid` or `--accession` about a study the PACS says it sent learns that its image was refused and why,
instead of finding nothing (`radtrace study show` then says the study was never received). Only a Study
Instance UID that is itself valid is named; the refusal's DICOM status is unchanged."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from listener_support import listener_settings, running
from radtrace.audit.events import Actor
from radtrace.audit.queries import AuditQuery, run_query
from radtrace.dicom_listener.dcmtk import storescu
from radtrace.store.engine import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]

NIH = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
QA = Actor(user="qa", host="test")


def _truncated_film(target: Path, study_uid: str, accession: str) -> Path:
    """The NIH film under new UIDs with a third of its Pixel Data: refused at receive (0xC000)."""
    ds = pydicom.dcmread(NIH)
    with warnings.catch_warnings():  # pydicom warns about the invalid UID this test sends on purpose
        warnings.simplefilter("ignore")
        ds.StudyInstanceUID = study_uid
    ds.SOPInstanceUID, ds.AccessionNumber = generate_uid(), accession
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(target, enforce_file_format=True)
    return target


def _events(store: Store, **where: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """What `radtrace audit query` finds with these filters (its own audit_queried rows left out)."""
    page = run_query(store, AuditQuery.model_validate(where), QA)
    found = [e for e in page.events if e.event_type != "audit_queried"]
    return [(e.event_type, e.study_uid, e.accession, e.payload.get("reason")) for e in found]


def test_a_quarantined_instance_is_audited_under_its_study(tmp_path: Path, store: Store, listener_port: int) -> None:
    study_uid = generate_uid()
    film = _truncated_film(tmp_path / "truncated.dcm", study_uid, "ACC-TRUNC")
    bad_uid = _truncated_film(tmp_path / "bad-uid.dcm", "1.2.abc", "ACC-BADUID")
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store):
        sent = [storescu([path], listener_port, options=["-v"]) for path in (film, bad_uid)]
    assert all("Received Store Response (Error: CannotUnderstand)" in run.stderr for run in sent), [
        run.stderr for run in sent
    ]

    reason = "(7FE0,0010) Pixel Data: too short for Rows x Columns x Bits"
    by_study = _events(store, study_uid=study_uid)
    assert by_study == [("instance_quarantined", study_uid, "ACC-TRUNC", reason)]
    assert _events(store, accession="ACC-TRUNC") == by_study
    # a Study Instance UID that is not a UID is not written as one: the event names no study, but its accession
    [(kind, study, accession, why)] = _events(store, accession="ACC-BADUID")
    assert (kind, study, accession) == ("instance_quarantined", None, "ACC-BADUID")
    assert str(why).startswith("(0020,000D) Study Instance UID")

"""A JPEG 2000 film whose codestream declares 3 components under Samples per Pixel 1 is refused at receive:
the listener stored it (it compared rows and columns only) and the study failed later in the worker, where the
sender never hears of it. Now the C-STORE answers 0xC213 naming (0028,0002), and the refusal is audited
(instance_quarantined, with its reason) like the other pixel-budget refusals; the real film is stored."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from listener_support import listener_settings, running
from radtrace.audit.events import Actor
from radtrace.audit.queries import AuditQuery, run_query
from radtrace.dicom_listener.policy import STATUS_PIXEL_MISMATCH
from radtrace.store.engine import Store
from radtrace.testing.decode_abuse import REAL_FILMS, RG1_J2K, j2k_components_film

pytestmark = pytest.mark.integration

REASON = "(0028,0002) Samples per Pixel: 1, codestream 3 components"


def test_a_codestream_with_other_components_than_samples_per_pixel_is_refused_and_audited(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    from radtrace.dicom_listener.scu import send_files

    film = j2k_components_film(tmp_path / "j2k-3-components-1-sample.dcm")
    real = tmp_path / "real.dcm"
    ds = pydicom.dcmread(REAL_FILMS / RG1_J2K)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(real, enforce_file_format=True)
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store):
        results = send_files([film, real], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    assert [r.status for r in results] == [STATUS_PIXEL_MISMATCH, 0x0000]
    page = run_query(store, AuditQuery.model_validate({"study_uid": ds.StudyInstanceUID}), Actor(user="qa", host="t"))
    refused = [e.payload.get("reason") for e in page.events if e.event_type == "instance_quarantined"]
    assert refused == [REASON]
    assert [e.event_type for e in page.events].count("instance_received") == 1
    assert [p.read_text().strip() for p in settings.quarantine_dir.glob("*.reason.txt")] == [REASON]

"""A CR or DX film whose sender left out Modality (0008,0060): found trying radtrace from outside.

Modality is Type 1, yet old digitisers and badly configured gateways send CR and DX films without it. The SOP
class says what the film is: a CR Image Storage instance is a CR (PS3.3 A.2: Modality is CR), a DX one a DX
(A.26). Before, such a chest film was stored (0x0000) and its study skipped as "no CR/DX radiograph (modality
UNKNOWN)": a chest radiograph never read, with a reason that says it is not one. Now a CR or DX IOD without
Modality counts as its IOD's modality; a Secondary Capture without Modality names no modality and is still
skipped. Each film is one of tests/data/real-cxr with Modality removed, sent to a running listener; the worker's
pipeline (demo backend) then reads the CR film to a draft.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from listener_support import running
from radtrace.config import load_settings
from radtrace.dicom_listener.scu import send_files
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from tests_support import as_part10
from worker_support import wait_until

pytestmark = pytest.mark.integration

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
#: film -> what completion makes of its study once Modality is removed
EXPECTED = {
    "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm": ("queued", None),  # CR Image Storage
    "canine-dx-thorax-lateral-mono1-small.dcm": ("queued", None),  # DX for Presentation (the worker then judges)
    "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm": (
        "skipped",
        "secondary capture, not a radiograph (modality UNKNOWN)",
    ),
}


def _without_modality(film: Path, target: Path) -> str:
    ds = pydicom.dcmread(film, force=True)
    del ds.Modality
    ds.StudyInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    as_part10(ds, syntax=None).save_as(target, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def _state(store: Store, study_uid: str) -> tuple[str, str | None] | None:
    with store.session() as session:
        found = session.execute(
            sa.select(Revision.state, Revision.reason).join(Study).where(Study.study_uid == study_uid)
        ).first()
    if found is None or found[0] is RevisionState.RECEIVING:
        return None
    return RevisionState(found[0]).value, found[1]


def test_a_cr_or_dx_film_without_modality_is_read_as_its_sop_class_says(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    studies = {name: _without_modality(REAL / name, tmp_path / name) for name in EXPECTED}
    settings = load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "device": "cpu"},
        listener={"host": "127.0.0.1", "port": listener_port, "allowed_callers": [{"ae_title": "PACS"}],
                  "settle_seconds": 0.5, "min_free_bytes": 0},
    )  # fmt: skip
    with running(settings, store):
        results = send_files(
            [tmp_path / name for name in EXPECTED], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE"
        )
        assert [r.status for r in results] == [0x0000] * len(EXPECTED), results
        wait_until(lambda: all(_state(store, uid) is not None for uid in studies.values()))
    assert {name: _state(store, uid) for name, uid in studies.items()} == EXPECTED
    # the worker reads the CR film without Modality to a draft
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")
    fuji = studies["fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"]
    assert pipeline.process(fuji, 1).result is Result.REPORTED

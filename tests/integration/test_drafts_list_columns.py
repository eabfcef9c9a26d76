"""``radtrace drafts list`` says which draft is which: the study key the log lines name, accession, study date,
modality and state, in aligned columns, and ``--json`` holds the same.

Found on a hospital's first night: with several films sent, the list named each draft by its Study UID only, and
telling them apart took ``drafts show`` for each. Films: NEMA's RG1 CR chest (JPEG 2000; its own accession and study
date) and the NIH DX frontal (neither) of tests/data/real-cxr, sent to a running listener and read to drafts by the
worker's pipeline (demo backend).
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from listener_support import running
from radtrace.config import load_settings
from radtrace.dicom_listener.scu import send_files
from radtrace.logging import study_key
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from tests_support import radtrace
from worker_support import wait_until

pytestmark = pytest.mark.integration

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
RG1, NIH = REAL / "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm", REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"


def _state(store: Store, study_uid: str) -> RevisionState | None:
    with store.session() as session:
        return session.scalar(sa.select(Revision.state).join(Study).where(Study.study_uid == study_uid))


def test_drafts_list_names_each_draft_by_key_accession_date_modality_and_state(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    settings = load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": url},
        model={"backend": "demo", "demo": True, "device": "cpu"},
        listener={"host": "127.0.0.1", "port": listener_port, "settle_seconds": 0.5, "min_free_bytes": 0,
                  "allowed_callers": [{"ae_title": "PACS"}]},
    )  # fmt: skip
    rg1, nih = (str(pydicom.dcmread(film, stop_before_pixels=True).StudyInstanceUID) for film in (RG1, NIH))
    with running(settings, store):
        for sent in send_files([RG1, NIH], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE"):
            assert sent.status == 0x0000, sent
        wait_until(lambda: all(_state(store, uid) is RevisionState.QUEUED for uid in (rg1, nih)))
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")
    for uid in (rg1, nih):
        assert pipeline.process(uid, 1).result is Result.REPORTED

    env = {"RADTRACE_DATA_DIR": str(settings.data_dir), "RADTRACE_STORE__URL": url}
    listed = radtrace("drafts", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    header = next((line for line in lines if line.startswith("study key")), "")
    assert header, listed.stdout
    names = ("study key", "accession", "study date", "modality", "rev", "state", "written", "Study UID")
    starts = [header.index(name) for name in names]
    rows = {uid: next(line for line in lines if line.startswith(study_key(uid))) for uid in (rg1, nih)}
    ends = [*starts[1:], None]
    cells = {uid: [row[a:b].strip() for a, b in zip(starts, ends, strict=True)] for uid, row in rows.items()}
    assert cells[rg1][:6] == [study_key(rg1), "exam Number", "2004-08-26", "CR", "1", "reported"], listed.stdout
    assert cells[nih][:6] == [study_key(nih), "—", "—", "DX", "1", "reported"], listed.stdout
    for uid in (rg1, nih):
        assert cells[uid][7] == uid  # whole, on the draft's line, to paste into drafts show

    as_json = {entry["study_uid"]: entry for entry in json.loads(radtrace("drafts", "list", "--json", env=env).stdout)}
    assert {key: as_json[rg1][key] for key in ("study_key", "accession", "study_date", "modality", "state")} == {
        "study_key": study_key(rg1), "accession": "exam Number", "study_date": "2004-08-26", "modality": "CR",
        "state": "reported",
    }  # fmt: skip
    assert (as_json[nih]["accession"], as_json[nih]["study_date"], as_json[nih]["modality"]) == (None, None, "DX")
    assert set(as_json[nih]) >= {"revision", "files", "modified"}  # what it held before

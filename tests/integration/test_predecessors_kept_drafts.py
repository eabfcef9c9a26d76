"""A later revision's drafts name the earlier revision's SR and companion as predecessors also where no PACS, RIS
or file drop is configured: the quick start (`make run DEMO=1`) keeps drafts only, so the earlier SRs are in
``<data_dir>/drafts`` and not in the outbox."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store
from radtrace.testing.studies import StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import outbox_rows, revision_row, spool_study, worker_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def drafts_only(tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    return worker_settings(tmp_path, url, tiny_model_dir, dispatch={"file_drop_dir": None})


def _read_strict(path: Path) -> pydicom.Dataset:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
        return pydicom.dcmread(path)


def _predecessors(sr: pydicom.Dataset) -> list[str]:
    return [
        str(item.ReferencedSOPInstanceUID)
        for study in sr.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]


def _dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("dciodvfy not found on PATH: install dicom3tools (apt-get install dicom3tools)")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]


def test_a_later_revision_names_the_kept_earlier_sr_when_no_destination_is_configured(
    drafts_only: Settings, store: Store
) -> None:
    assert (drafts_only.dispatch.file_drop_dir, drafts_only.dispatch.pacs, drafts_only.dispatch.ris) == (None, [], None)
    reader = StudyReader(drafts_only.model, data_dir=drafts_only.data_dir)
    pa, lateral = make_study(StudySpec(seed=21))
    study_uid, _ = spool_study(drafts_only, store, [pa])
    spool_study(drafts_only, store, [lateral], number=2)  # arrived after revision 1 was queued
    pipeline = StudyPipeline(drafts_only, store, reader)

    assert pipeline.process(study_uid, 1).result is Result.REPORTED
    assert pipeline.process(study_uid, 2).result is Result.REPORTED
    assert outbox_rows(store) == []  # nothing to deliver: the drafts are only kept

    kept = drafts_root(drafts_only) / study_uid
    first_sr, first_companion = (_read_strict(kept / "1" / name) for name in ("sr.dcm", "companion.dcm"))
    second_sr, second_companion = (_read_strict(kept / "2" / name) for name in ("sr.dcm", "companion.dcm"))
    assert str(second_sr.SOPInstanceUID) == revision_row(store, study_uid, 2).sr_sop_instance_uid
    assert _predecessors(first_sr) == []
    assert _predecessors(second_sr) == [str(first_sr.SOPInstanceUID)]
    assert _predecessors(second_companion) == [str(first_companion.SOPInstanceUID)]
    assert _dciodvfy_errors(kept / "2" / "sr.dcm") == []

"""A later revision reads each earlier SR once when a destination is configured: the kept drafts of the earlier
revisions, and from the outbox only the SRs of a revision that has none kept (from before drafts were kept).

Before, ``StudyPipeline._predecessors`` read the kept drafts and then every earlier SR payload in the outbox (the same
documents, enqueued by the same build), dropping the copies by SOP Instance UID only after reading them: with a
file drop configured, revision 2 opened four SR files for two predecessors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest

from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store
from radtrace.testing.studies import StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import outbox_rows, spool_study, worker_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def with_file_drop(tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    return worker_settings(tmp_path, url, tiny_model_dir)  # a file drop: every draft is also an outbox payload


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file pydicom.dcmread opens by path while the test runs."""
    paths: list[Path] = []
    real = pydicom.dcmread

    def counting(fp: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(fp, str | Path):
            paths.append(Path(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    return paths


def _predecessors(path: Path) -> list[str]:
    sr = pydicom.dcmread(path)
    return [
        str(item.ReferencedSOPInstanceUID)
        for study in sr.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]


def _two_revisions(settings: Settings, store: Store, seed: int) -> tuple[StudyPipeline, str]:
    pa, lateral = make_study(StudySpec(seed=seed))
    study_uid, _ = spool_study(settings, store, [pa])
    spool_study(settings, store, [lateral], number=2)
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir))
    assert pipeline.process(study_uid, 1).result is Result.REPORTED
    return pipeline, study_uid


def test_a_later_revision_reads_each_earlier_sr_once_with_a_destination(
    with_file_drop: Settings, store: Store, opened: list[Path]
) -> None:
    pipeline, study_uid = _two_revisions(with_file_drop, store, seed=31)
    assert {row.kind for row in outbox_rows(store)} >= {"file"}  # revision 1's SR and companion are payloads too
    kept = drafts_root(with_file_drop) / study_uid
    opened.clear()

    assert pipeline.process(study_uid, 2).result is Result.REPORTED

    srs = [path for path in opened if path.suffix == ".dcm" and "spool" not in path.parts]
    assert sorted(srs) == sorted([kept / "1" / "sr.dcm", kept / "1" / "companion.dcm"]), srs
    first = {name: str(pydicom.dcmread(kept / "1" / name).SOPInstanceUID) for name in ("sr.dcm", "companion.dcm")}
    assert _predecessors(kept / "2" / "sr.dcm") == [first["sr.dcm"]]
    assert _predecessors(kept / "2" / "companion.dcm") == [first["companion.dcm"]]


def test_a_revision_with_no_kept_drafts_still_names_its_outbox_sr(
    with_file_drop: Settings, store: Store, opened: list[Path]
) -> None:
    """Drafts from before drafts were kept: only the outbox has revision 1's SR, and it is read from there (once)."""
    pipeline, study_uid = _two_revisions(with_file_drop, store, seed=32)
    kept = drafts_root(with_file_drop) / study_uid
    first_sr = str(pydicom.dcmread(kept / "1" / "sr.dcm").SOPInstanceUID)
    shutil.rmtree(kept / "1")
    opened.clear()

    assert pipeline.process(study_uid, 2).result is Result.REPORTED

    payloads = with_file_drop.data_dir / "outbox"
    srs = [path for path in opened if path.suffix == ".dcm" and "spool" not in path.parts]
    assert all(payloads in path.parents for path in srs), srs
    assert len(srs) == len(set(srs)) == 2, srs  # its SR and its companion, one file each
    assert _predecessors(kept / "2" / "sr.dcm") == [first_sr]

"""Hostile stored films through the real pipeline, in one batch: each study ends failed with the reason naming what
was wrong, at its first attempt (the film will not change), and the film beside them is read and reported.

The films are radtrace.testing.decode_abuse's, derived from tests/data/real-cxr; their decode in a child process,
with its memory and time, is tests/unit/test_worker_decode_abuse.py. Here: what a radiologist and QA see.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.decode_abuse import hostile_films
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import audit_events, revision_row, spool_study, worker_settings

pytestmark = pytest.mark.integration

#: Films whose study must fail, each a different way a stored film is hostile; the first killed the worker
#: (GDCM's std::terminate), the next three failed with no reason or a wrong one, or were read as a black picture.
FAILING = (
    "j2k-3-components-1-sample",
    "rescale-overflows",
    "native-rgb-bits-stored-0",
    "float-pixel-data-with-nan",
    "j2k-bomb-header-small",
    "rle-segment-decodes-to-512-mib",
    "j2k-truncated-10pc",
    "native-rows-doubled",
)


def test_hostile_films_in_one_batch_fail_each_with_its_reason_and_the_good_film_is_reported(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    url = str(store.engine.url.render_as_string(hide_password=False))
    settings = worker_settings(tmp_path, url, tiny_model_dir, model={"batch_size": 16, "batch_wait_ms": 0})
    films = {film.name: film for film in hostile_films(tmp_path / "films")}
    studies: dict[str, str] = {}
    for index, name in enumerate((*FAILING, "deflated-film")):
        ds = pydicom.dcmread(films[name].path)
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["hostile", name])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["sop", name])
        ds.AccessionNumber = f"HOSTILE{index}"
        studies[name], _ = spool_study(settings, store, [ds])

    reader = StudyReader(
        settings.model, data_dir=settings.data_dir, max_source_pixels=settings.listener.max_image_pixels
    )
    results = dict(StudyPipeline(settings, store, reader).process_batch(studies["deflated-film"], 1))

    assert results[(studies["deflated-film"], 1)].result is Result.REPORTED
    reasons = {}
    for name in FAILING:
        assert results[(studies[name], 1)].result is Result.FAILED, name
        revision = revision_row(store, studies[name])
        assert (revision.state, revision.attempts) == (RevisionState.FAILED, 1), name
        reasons[name] = str(revision.reason)
    assert {name: films[name].reason in reason for name, reason in reasons.items()} == dict.fromkeys(FAILING, True), (
        reasons
    )
    failed = [payload["reason"] for kind, _, payload in audit_events(store) if kind == "study_failed"]
    assert sorted(failed) == sorted(reasons.values())

"""The study page's "prepared" picture is the picture the model was given, pixel for pixel.

The console rendered the spooled file itself (its own dcmread, the model settings' pixel budget, the header as
received), while the worker reads through prepare_study: the header normalised (a malformed window dropped, ...),
the profile's budget and the listener's image size limit. On a real film whose header the worker normalises the
two pictures differed, so a radiologist judging a finding was not looking at what the model had looked at.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from console_support import add_user, console_client, console_settings, sign_in, study_path
from radtrace.dicom_listener.attributes import by_keyword
from radtrace.model.backends.demo import DemoBackend
from radtrace.model.profiles.base import Profile
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import StudyInput
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study
from radtrace.testing.ablation import apply_change, load_film
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import spool_study

pytestmark = pytest.mark.integration

FILMS = Path(__file__).parents[1] / "data" / "real-cxr"


class Recording(DemoBackend):
    """The demo backend, keeping every study's pictures as the model was given them."""

    def __init__(self) -> None:
        super().__init__(enabled=True)
        self.studies: list[StudyInput] = []

    def read_batch(self, studies: Sequence[StudyInput], profile: Profile) -> list[Reading]:
        self.studies += studies
        return super().read_batch(studies, profile)


@pytest.mark.parametrize(
    ("film", "keyword", "kind", "profile"),
    [
        ("nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm", "WindowWidth", "malformed", "nv-reason-cxr"),
        ("fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm", "WindowCenter", "malformed", "nv-reason-cxr"),
        # the film as it is, under a profile whose pixel budget (504 x 504) is not the model settings' default
        # (476 x 476): the console's own rendering was smaller than the model's picture for every study
        ("nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm", None, None, "deepmedix-r1"),
    ],
)
def test_the_prepared_picture_is_the_one_the_model_was_given(
    sqlite_store: Store, tmp_path: Path, film: str, keyword: str | None, kind: str | None, profile: str
) -> None:
    store = sqlite_store
    settings = console_settings(tmp_path, store, profile=profile)
    changed = load_film(FILMS / film)
    if keyword is not None and kind is not None:
        changed = apply_change(changed, by_keyword(keyword), kind, f"console/{keyword}/{kind}")
    assert changed is not None
    changed[0].AccessionNumber = "ACC-REAL-1"  # the Fuji film has none; the console's tests read it
    backend = Recording()
    reader = StudyReader(settings.model, backend=backend, data_dir=settings.data_dir,
                         max_source_pixels=settings.listener.max_image_pixels)  # fmt: skip
    study_uid, number = spool_study(settings, store, changed)
    result = StudyPipeline(settings, store, reader, worker="console-test").process(study_uid, number)
    assert result.result is Result.REPORTED, result
    [given] = backend.studies
    source = given.sources[0]
    if keyword is not None:
        assert source.preparation[0]["step"] == "header"  # the worker did normalise this header
        assert any(line.startswith(keyword) for line in source.preparation[0]["normalised"])
    with store.session() as session:
        assert session.scalar(sa.select(Revision.state).join(Study).where(Study.study_uid == study_uid))
    add_user(store, "dr.image", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.image")
        image = f"{study_path(store, study_uid, number)}/images/0"  # the first image the model read
        answer = client.get(f"{image}/prepared.png")
        assert answer.status_code == 200, answer.text
        shown = np.asarray(Image.open(io.BytesIO(answer.content)))
        assert shown.shape == given.pictures[0].pixels.shape
        assert np.array_equal(shown, given.pictures[0].pixels)
        original = client.get(f"{image}/original.png")
        assert original.status_code == 200, original.text
        full = np.asarray(Image.open(io.BytesIO(original.content)))
        assert full.shape[:2] == (source.rows, source.columns)


def test_a_study_with_images_the_model_did_not_read_says_so_beside_the_ones_it_did(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """NEMA's RG1 chest film sent twice in one study (JPEG 2000 and JPEG-LS, as a PACS holds both), and a study of a
    frontal and a lateral under a frontal-only profile: the model reads one image. Before: the page showed that one
    and nothing else, so the draft looked like a reading of the whole study."""
    store = sqlite_store
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir,
                         max_source_pixels=settings.listener.max_image_pixels)  # fmt: skip
    rg1 = [
        load_film(FILMS / f"nema-rg1-cr-chest-pa-mono1-{kind}.dcm")[0] for kind in ("j2k-lossy", "jpegls-near-lossless")
    ]
    assert rg1[0].StudyInstanceUID == rg1[1].StudyInstanceUID
    studies = []
    for datasets in (rg1, make_study(StudySpec(seed=91), [ImageSpec(view="PA"), ImageSpec(view="LL")])):
        study_uid, number = spool_study(settings, store, datasets)
        assert StudyPipeline(settings, store, reader, worker="console-test").process(study_uid, number).result \
            is Result.REPORTED  # fmt: skip
        studies.append(study_uid)
    add_user(store, "dr.views", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.views")
        for study_uid in studies:
            page = client.get(study_path(store, study_uid)).text
            assert page.count('<figure class="viewer"') == 1
            note = re.search(r'data-testid="images-not-read">(.*?)</p>', page, re.S)
            assert note is not None, "the page does not say the study has an image the model did not read"
            assert " ".join(note.group(1).split()) == (
                "The model read 1 of this study's 2 images; the other is not shown here and not in this draft: "
                "read it in the PACS."
            )

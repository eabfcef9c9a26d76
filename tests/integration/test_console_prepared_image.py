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

from console_support import add_user, console_client, console_settings, reported_study, sign_in, study_path
from radtrace.audit.schema import AuditEventRow
from radtrace.dicom_listener.attributes import by_keyword
from radtrace.model.backends.demo import DemoBackend
from radtrace.model.profiles.base import Profile
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import StudyInput
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Revision, Study
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


def test_the_pictures_are_made_once_per_revision_and_never_served_for_a_changed_file(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every request for "as the model read it" prepared the whole study again, and every "original"
    decoded the file again (bench/console_pages.py: 1.0 s and 2.0 s a request for the real JPEG-LS film, at load
    average ~10): each image, each switch between the two and each reload paid it. Now both are kept per revision,
    keyed by the spooled files' SHA-256 as hashed on each request: a file changed since is made again, and refused."""
    from radtrace.console import images

    store = sqlite_store
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    study_uid = reported_study(settings, store, reader, seed=93)
    made = {"prepared": 0, "original": 0}
    prepare, display = StudyReader.prepare, images.display_values

    def counted_prepare(self: StudyReader, *args: object, **kwargs: object) -> object:
        made["prepared"] += 1
        return prepare(self, *args, **kwargs)  # type: ignore[arg-type]

    def counted_display(*args: object, **kwargs: object) -> object:
        made["original"] += 1
        return display(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(StudyReader, "prepare", counted_prepare)
    monkeypatch.setattr(images, "display_values", counted_display)
    add_user(store, "dr.cache", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.cache")
        image = f"{study_path(store, study_uid)}/images/0"
        for kind in ("prepared", "original"):
            answers = [client.get(f"{image}/{kind}.png") for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 200]
            assert answers[0].content == answers[1].content == answers[2].content
        assert made == {"prepared": 1, "original": 1}
        # each request is still an image_viewed audit event
        with store.session() as session:
            viewed = session.scalar(sa.select(sa.func.count()).select_from(AuditEventRow)
                                    .where(AuditEventRow.event_type == "image_viewed"))  # fmt: skip
        assert viewed == 6
        # the spooled file changes: never answered from the cache, refused as before
        with store.session() as session:
            [path] = session.scalars(sa.select(Instance.path).join(Study).where(Study.study_uid == study_uid)).all()
        spooled = settings.spool_dir / path
        spooled.write_bytes(spooled.read_bytes() + b"\0\0")
        for kind in ("prepared", "original"):
            assert client.get(f"{image}/{kind}.png").status_code == 404
        spooled.unlink()
        assert client.get(f"{image}/prepared.png").status_code == 404
    # bounded: the least recently used pictures go first
    cache = images.PictureCache(max_bytes=1000)
    for n in range(10):
        cache.put((f"2.25.{n}", 1, ("d",), "prepared"), {"1.2.3": bytes(200)})
    assert cache.size_bytes <= 1000
    assert cache.get(("2.25.9", 1, ("d",), "prepared"), "1.2.3") is not None
    assert cache.get(("2.25.0", 1, ("d",), "prepared"), "1.2.3") is None
    cache.put(("2.25.big", 1, ("d",), "original"), {"1.2.3": bytes(400)})  # over a quarter of the bound: not kept
    assert cache.get(("2.25.big", 1, ("d",), "original"), "1.2.3") is None

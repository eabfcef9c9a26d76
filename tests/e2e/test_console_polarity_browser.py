"""A draft made from a probable negative, as a radiologist meets it in a real browser (Debian's Chromium).

The NIH film with its Photometric Interpretation swapped (the negative a wrong header makes) and the same film as
stored are read by the worker's pipeline (demo backend) and served by uvicorn on a free port. On the worklist the
negative's row carries the 'suspected negative' flag and the other none; from the row, the study page opens with
the warning in view above the images, naming the image and the score, under the console's Content Security Policy
(the tab fails on any console error).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from browser_support import Page, expect, needs_chromium, screenshot, sign_in, tab, wait_until
from console_support import add_user, console_settings, serving
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.ablation import load_film
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import spool_study

pytestmark = [pytest.mark.e2e, needs_chromium]

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"


@dataclass
class Site:
    url: str
    studies: dict[str, str]


def _film(name: str, seed: int, photometric: str) -> list[Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        [ds] = load_film(FILM)
    ds = copy.deepcopy(ds)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["polarity-browser", name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["polarity-browser", name, "series"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["polarity-browser", name])
    ds.PatientID, ds.PatientName, ds.AccessionNumber = f"RT{seed:07d}", f"FILM^{name.upper()}", f"ACC{seed:06d}"
    ds.PhotometricInterpretation = photometric
    return [ds]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("polarity-browser")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = {}
    for name, seed, photometric in (("negative", 41, "MONOCHROME1"), ("stored", 42, "MONOCHROME2")):
        study_uid, number = spool_study(settings, store, _film(name, seed, photometric))
        result = StudyPipeline(settings, store, reader, worker="browser-test").process(study_uid, number)
        assert result.result is Result.REPORTED, result
        studies[name] = study_uid
    add_user(store, "dr.film", "radiologist")
    with serving(store, settings) as url:
        yield Site(url, studies)
    store.dispose()


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    with tab(browser, height=860, timeout_ms=10_000) as opened:
        yield opened


def test_the_negative_is_flagged_on_the_worklist_and_warned_above_the_images(
    site: Site, page: Page, tmp_path: Path
) -> None:
    sign_in(page, site.url, "dr.film")
    page.goto(f"{site.url}/console/worklist?filter=all")
    negative = page.locator("#worklist tr.row", has_text="RT0000041")
    stored = page.locator("#worklist tr.row", has_text="RT0000042")
    expect(negative.locator(".pill.flag", has_text="suspected negative")).to_be_visible()
    expect(stored).to_be_visible()
    expect(stored.locator(".pill.flag", has_text="suspected negative")).to_have_count(0)
    page.goto(f"{site.url}/console/worklist?filter=flagged")
    expect(page.locator("#worklist tr.row", has_text="RT0000041")).to_be_visible()

    page.locator("#worklist tr.row", has_text="RT0000041").get_by_role("link").click()
    warning = page.get_by_role("alert").filter(has_text="Check the image polarity before trusting this draft")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("Frontal image · ")
    expect(warning).to_contain_text("looks like a negative (polarity score -0.55; the header says MONOCHROME1)")
    wait_until(page, "document.querySelector('.viewer img') !== null")
    box, image = warning.bounding_box(), page.locator(".viewer").first.bounding_box()
    assert box is not None
    assert image is not None
    assert box["y"] + box["height"] <= min(image["y"], 860)  # in view when the page opens, above the images
    screenshot(page, tmp_path, "negative-study.png", full_page=False)

    page.goto(f"{site.url}/console/worklist?filter=all")
    page.locator("#worklist tr.row", has_text="RT0000042").get_by_role("link").click()
    expect(page.locator(".viewer").first).to_be_visible()
    expect(page.locator("#polarity-warning")).to_have_count(0)

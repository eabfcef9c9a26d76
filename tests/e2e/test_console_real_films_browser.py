"""Drafts of real films, as a radiologist meets them in a real browser (Debian's Chromium).

Real films from tests/data/real-cxr, rewritten as senders write them, are read by the worker's pipeline (demo
backend) and served by uvicorn on a free port, under the console's Content Security Policy (each tab fails on any
console error):

- the NIH film with its Photometric Interpretation swapped (the negative a wrong header makes) and as stored: the
  negative's row carries the 'suspected negative' flag and the other none; its study page opens with the warning in
  view above the images, naming the image and the score;
- the Fuji CR film re-encoded as JPEG Baseline (film_variants_support.jpeg_baseline: no Lossy Image Compression
  element, the transfer syntax alone says it), and the same film with Burned In Annotation YES and a UTF-8 patient
  name under no Specific Character Set: their worklist rows say 'lossy image', 'burned-in annotation' and
  'character set assumed' in words (also in the row's keyboard announcement), and the 'flagged' filter lists them
  while it leaves out the film as stored; the lossy film's page says why beside the image;
- the Fuji film decided on revision 1 by one radiologist, then sent again with a repeat exposure and read as
  revision 2: another radiologist sees on the worklist and on revision 2's page what was decided on the earlier
  images, follows the link to revision 1, and decides revision 2 with nothing carried over.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from browser_support import Page, expect, needs_chromium, screenshot, sign_in, tab, wait_until
from console_support import add_user, console_settings, serving, study_path
from film_variants_support import film, jpeg_baseline
from radtrace.config import Settings
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
    store: Store
    settings: Settings
    reader: StudyReader
    studies: dict[str, str]

    def read(self, datasets: list[Dataset], number: int = 1) -> str:
        """Spool ``datasets`` as revision ``number`` and read it by the worker's pipeline; its Study UID."""
        study_uid, number = spool_study(self.settings, self.store, datasets, number=number)
        result = StudyPipeline(self.settings, self.store, self.reader, worker="browser-test").process(study_uid, number)
        assert result.result is Result.REPORTED, result
        return study_uid


def _identify(ds: Dataset, name: str, seed: int, *, study: str | None = None) -> Dataset:
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["real-films-browser", study or name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["real-films-browser", name, "series"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=["real-films-browser", name]
    )
    ds.PatientID, ds.AccessionNumber = f"RT{seed:07d}", f"ACC{seed:06d}"
    return ds


def _nih(name: str, seed: int, photometric: str) -> list[Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        [ds] = load_film(FILM)
    ds = _identify(copy.deepcopy(ds), name, seed)
    ds.PatientName = f"FILM^{name.upper()}"
    ds.PhotometricInterpretation = photometric
    return [ds]


def _fuji(name: str, seed: int, *, study: str | None = None) -> Dataset:
    ds, _stored = film("fuji")  # CR, PA, no flag as stored
    return _identify(ds, name, seed, study=study)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("real-films-browser")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store)
    found = Site("", store, settings, StudyReader(settings.model, data_dir=settings.data_dir), {})
    for name, seed, photometric in (("negative", 41, "MONOCHROME1"), ("stored", 42, "MONOCHROME2")):
        found.studies[name] = found.read(_nih(name, seed, photometric))
    lossy, stored = film("fuji")
    found.studies["lossy"] = found.read([_identify(jpeg_baseline(lossy, stored).dataset, "lossy", 43)])
    annotated = _fuji("annotated", 44)
    annotated.BurnedInAnnotation = "YES"
    assert "SpecificCharacterSet" not in annotated  # the name below is declared in no character set
    annotated["PatientName"] = DataElement(0x00100010, "PN", "MÜLLER^JÖRG".encode())  # UTF-8, declared nowhere
    found.studies["annotated"] = found.read([annotated])
    found.studies["decided"] = found.read([_fuji("decided", 45)])
    add_user(store, "dr.film", "radiologist")
    add_user(store, "dr.two", "radiologist")
    with serving(store, settings) as url:
        found.url = url
        yield found
    store.dispose()


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    with tab(browser, height=860, timeout_ms=10_000) as opened:
        yield opened


def _row(page: Page, patient_id: str) -> Any:
    return page.locator("#worklist tr.row", has_text=patient_id)


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


def test_a_lossy_an_annotated_and_an_assumed_name_image_are_flagged_in_words_on_the_worklist(
    site: Site, page: Page
) -> None:
    """Before: the worklist listed neither 'lossy image' nor 'burned-in annotation' (the drafts' SR, ORU and audit
    did), and the JPEG film, with no other flag, was missing from the 'flagged' filter."""
    sign_in(page, site.url, "dr.film")
    page.goto(f"{site.url}/console/worklist?filter=all")
    lossy, annotated, stored = _row(page, "RT0000043"), _row(page, "RT0000044"), _row(page, "RT0000045")
    expect(lossy.locator(".pill.flag")).to_have_text(["lossy image"])
    expect(annotated.locator(".pill.flag")).to_have_text(["burned-in annotation", "character set assumed"])
    expect(annotated).to_contain_text("MÜLLER, JÖRG")
    expect(stored.locator(".pill.flag")).to_have_count(0)
    # said, not only shown: the row's announcement when the keyboard selects it names the flags
    assert lossy.get_attribute("data-announce").endswith(", flagged: lossy image")
    place = [i for i, text in enumerate(page.locator("#worklist tr.row").all_inner_texts()) if "RT0000043" in text]
    for _ in range(place[0]):  # the first row is selected when the page opens
        page.keyboard.press("j")
    expect(page.locator("#worklist tr.row.selected")).to_contain_text("RT0000043")
    expect(page.locator("#announce")).to_have_text(re.compile(r"^Selected: routine, .*, flagged: lossy image$"))

    page.goto(f"{site.url}/console/worklist?filter=flagged")
    expect(_row(page, "RT0000043")).to_be_visible()
    expect(_row(page, "RT0000044")).to_be_visible()
    expect(_row(page, "RT0000045")).to_have_count(0)
    _row(page, "RT0000043").get_by_role("link").click()
    expect(page.get_by_test_id("flags")).to_have_text("lossy image")
    # and beside the image, from the reading itself (so also for a worklist row added before the flag existed)
    expect(page.get_by_test_id("image-marks")).to_have_text(
        "lossy image the image was lossy compressed: artefacts may hide or mimic a fine finding"
    )


def test_decisions_on_earlier_images_are_named_on_the_new_revision_and_none_carried_over(
    site: Site, browser: object, page: Page
) -> None:
    """The 'Decided on earlier images' card, driven as radiologists meet it: one decides revision 1, a repeat
    exposure is read as revision 2, another opens revision 2 from the worklist."""
    study_uid = site.studies["decided"]
    first = f"{site.url}{study_path(site.store, study_uid, 1)}"
    with tab(browser, height=860, timeout_ms=10_000) as one:
        sign_in(one, site.url, "dr.film")
        one.goto(first)
        expect(one.get_by_test_id("earlier-decisions")).to_have_count(0)  # nothing earlier than revision 1
        label = one.locator("#findings tr.finding-row").first.get_attribute("data-label")
        one.get_by_role("button", name=f"Accept {label}", exact=True).click()
        expect(one.get_by_test_id("decision-0")).to_contain_text("accepted by dr.film")
        one.get_by_role("button", name="Reject the impression").click()
        expect(one.get_by_test_id("impression-decision")).to_contain_text("rejected by dr.film")
        expect(one.locator("#draft-reason")).to_have_value("RT-A2")
        one.locator("#draft-accept").click()
        expect(one.get_by_test_id("draft-decision")).to_contain_text("accepted by dr.film: RT-A2")

    # the study is sent again with a repeat exposure, read as revision 2
    site.read([_fuji("decided-repeat", 45, study="decided")], number=2)

    sign_in(page, site.url, "dr.two")
    page.goto(f"{site.url}/console/worklist?filter=unassessed")
    row = _row(page, "RT0000045")
    expect(row).to_have_count(1)  # revision 1's row is replaced by revision 2's
    expect(row.get_by_test_id("earlier")).to_have_text(
        "revision 1 accepted by dr.film (earlier images; not carried over)"
    )
    expect(row).to_contain_text("new")
    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/2$"))
    card = page.get_by_role("note").filter(has_text="Decided on earlier images")
    expect(card).to_be_visible()
    expect(card).to_contain_text("before the images of revision 2 were read")
    expect(card).to_contain_text("none is carried over here; decide this draft here")
    expect(card).to_contain_text("Revision 1: whole draft accepted by dr.film (RT-A2 Agrees after minor corrections")
    expect(card).to_contain_text(f"{label} accepted by dr.film")
    expect(card).to_contain_text("the impression rejected by dr.film")
    expect(page.get_by_test_id("earlier-0")).to_contain_text("On revision 1 (earlier images)")
    expect(page.get_by_test_id("earlier-0")).to_contain_text("accepted by dr.film; not carried over")
    # nothing carried over: revision 2 starts undecided, its form on "Agrees with my reading"
    expect(page.get_by_test_id("decision-0")).to_have_count(0)
    expect(page.get_by_test_id("draft-decision")).to_have_count(0)
    expect(page.locator("#draft-reason")).to_have_value("RT-A1")

    # the card's link opens revision 1, read-only now that revision 2 replaces it, with its own decisions
    card.get_by_role("link", name="Revision 1").click()
    expect(page).to_have_url(re.compile(r"/1$"))
    expect(page.locator("#superseded")).to_contain_text("revision 2 of this study has been read since")
    expect(page.get_by_test_id("draft-decision")).to_contain_text("accepted by dr.film: RT-A2")
    expect(page.locator("#draft-accept")).to_have_count(0)
    page.go_back()

    # dr.two decides revision 2: recorded there; revision 1's card stays as it was
    expect(page).to_have_url(re.compile(r"/2$"))
    page.locator("#draft-accept").click()
    expect(page.get_by_test_id("draft-decision")).to_contain_text("accepted by dr.two: RT-A1")
    expect(card).to_contain_text("Revision 1: whole draft accepted by dr.film")
    page.goto(f"{site.url}/console/worklist?filter=all")
    expect(_row(page, "RT0000045")).to_contain_text("accepted by dr.two")
    expect(_row(page, "RT0000045").get_by_test_id("earlier")).to_have_count(0)

"""A patient ID or accession number carrying bidirectional controls is shown as it is stored, character by character
(Debian's Chromium under Playwright, uvicorn on a free local port).

A value with a right-to-left override (U+202E) up to a pop (U+202C) was drawn reversed inside the worklist's
isolated cell and the study page's header: ``RT42<RLO>0019<PDF>7`` read ``RT4291007``, another patient's ID, with
nothing on the page to say so. Each control is now written as a visible escape (``⟨U+202E⟩``) and the identifier is
laid out left to right in stored order: the characters the browser draws, read left to right by their position on
screen, are the stored characters in order with each control as its escape.

A patient name is drawn in its own direction, isolated, with the bidirectional controls written as escapes too
(console/names.py): ``DOE^<RLO>NAVI<PDF>`` was drawn "DOE, IVAN" on the worklist and the study page heading; a
Persian name with a zero-width non-joiner is drawn right to left as written, no escape in it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from browser_support import expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, reported_study, serving, study_path
from radtrace.console.schema import ReviewItem
from radtrace.console.worklist import sync_review_items
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import RevisionState, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from worker_support import spool_study

pytestmark = [pytest.mark.e2e, needs_chromium]

#: A right-to-left override up to a pop inside the ID; a left-to-right override over Hebrew letters, with a
#: right-to-left mark, in the accession.
PATIENT_ID = "RT42\u202e0019\u202c7"
ACCESSION = "ACC\u202d\u05d0\u05d1\u202c5\u200f6"
SHOWN_PATIENT_ID = "RT42⟨U+202E⟩0019⟨U+202C⟩7"
SHOWN_ACCESSION = "ACC⟨U+202D⟩\u05d0\u05d1⟨U+202C⟩5⟨U+200F⟩6"

#: A right-to-left override up to a pop in the given name: drawn as stored it reads "DOE, IVAN".
OVERRIDDEN_NAME = "DOE^\u202eNAVI\u202c"
SHOWN_OVERRIDDEN_NAME = "DOE, ⟨U+202E⟩NAVI⟨U+202C⟩"
#: The Persian family name Alizadeh (a zero-width non-joiner after Ali) and the given name Mahsa.
PERSIAN_NAME = "\u0639\u0644\u06cc\u200c\u0632\u0627\u062f\u0647^\u0645\u0647\u0633\u0627"
SHOWN_PERSIAN_NAME = "\u0639\u0644\u06cc\u200c\u0632\u0627\u062f\u0647, \u0645\u0647\u0633\u0627"

#: Wide enough that no ID or name in these rows wraps (a line break would read as a space between two characters).
WIDE = {"width": 1920, "height": 900}

#: The characters the browser draws in an element, as they are drawn: line by line, each left to right.
DRAWN_LEFT_TO_RIGHT = """(element) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const drawn = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const box = range.getBoundingClientRect();
      if (box.width > 0) drawn.push([box.top, box.bottom, box.left, node.data[i]]);
    }
  }
  const middle = (entry) => (entry[0] + entry[1]) / 2;
  drawn.sort((a, b) => middle(a) - middle(b));
  const lines = [];
  for (const entry of drawn) {  // a box whose middle is below the line's first box starts the next line
    const last = lines[lines.length - 1];
    if (last && middle(entry) <= last[0][1]) last.push(entry); else lines.push([entry]);
  }
  return lines.map((line) => line.sort((a, b) => a[2] - b[2]).map((entry) => entry[3]).join("")).join("\\n");
}"""


@dataclass
class Site:
    url: str
    store: Store
    study: str
    #: the studies named OVERRIDDEN_NAME and PERSIAN_NAME
    named: dict[str, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-identifiers")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    study = reported_study(settings, store, reader, seed=71, name="OVERRIDE^OTTO")
    named = {name: reported_study(settings, store, reader, seed=seed, name="PLAIN^NAME")
             for seed, name in ((72, OVERRIDDEN_NAME), (73, PERSIAN_NAME))}  # fmt: skip
    add_user(store, "dr.bidi", "radiologist")
    sync_review_items(store, settings.spool_dir)  # the worklist's row, then its identifiers as a PACS sent them
    with store.session("giving the study identifiers with bidi controls") as session:
        session.execute(sa.update(Study).where(Study.study_uid == study).values(accession=ACCESSION))
        session.execute(sa.update(ReviewItem).where(ReviewItem.study_uid == study)
                        .values(patient_id=PATIENT_ID, accession=ACCESSION))  # fmt: skip
        for name, named_study in named.items():  # the names as received (the header's charset decoded)
            session.execute(sa.update(ReviewItem).where(ReviewItem.study_uid == named_study).values(patient_name=name))
    # one the model could not read (the failed list), its name in its header as a PACS sent it (UTF-8)
    failed = make_study(StudySpec(patient_id="RT0000074", accession="ACC000074", seed=74), [ImageSpec()])
    for dataset in failed:
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.PatientName = OVERRIDDEN_NAME
    spool_study(settings, store, failed, state=RevisionState.FAILED)
    with serving(store, settings) as url:
        yield Site(url, store, study, named)
    store.dispose()


def _drawn(locator: Any) -> str:
    return " ".join(str(locator.evaluate(DRAWN_LEFT_TO_RIGHT)).split())


def test_ids_with_bidi_controls_read_in_stored_order_on_the_worklist_and_the_study_page(
    browser: Any, site: Site
) -> None:
    with tab(browser) as page:
        page.set_viewport_size(WIDE)
        sign_in(page, site.url, "dr.bidi")
        page.goto(f"{site.url}/console/worklist")
        row = page.locator("#worklist tr.row").filter(has_text="OVERRIDE")
        expect(row).to_have_count(1)
        assert _drawn(row.locator("td:nth-child(2) .sub")) == SHOWN_PATIENT_ID
        assert _drawn(row.locator("td:nth-child(4)")) == SHOWN_ACCESSION
        assert f"accession {SHOWN_ACCESSION}" in str(row.get_attribute("data-announce"))

        page.goto(f"{site.url}{study_path(site.store, site.study)}")
        expect(page.get_by_test_id("patient")).to_contain_text("OVERRIDE, OTTO")
        header = _drawn(page.locator(".study-head .sub").first)
        assert f"ID {SHOWN_PATIENT_ID} · " in header, header
        assert f"accession {SHOWN_ACCESSION} · " in header, header
        assert page.title().startswith(f"Study {SHOWN_ACCESSION} ")


def test_names_are_isolated_and_their_bidi_controls_shown_as_escapes(browser: Any, site: Site) -> None:
    with tab(browser) as page:
        page.set_viewport_size(WIDE)
        sign_in(page, site.url, "dr.bidi")
        page.goto(f"{site.url}/console/worklist")
        row = page.locator("#worklist tr.row").filter(has_text="RT0000072")
        expect(row).to_have_count(1)
        name = row.locator("td:nth-child(2) a")
        assert _drawn(name) == SHOWN_OVERRIDDEN_NAME  # before: 'DOE, IVAN'
        expect(name.locator(".control")).to_have_count(2)
        assert _drawn(row.locator("td:nth-child(2) .sub")) == "RT0000072"  # the ID after it, in stored order
        assert _drawn(row.locator("td:nth-child(4)")) == "ACC000072"
        assert f"routine, {SHOWN_OVERRIDDEN_NAME}, accession ACC000072" in str(row.get_attribute("data-announce"))

        persian = page.locator("#worklist tr.row").filter(has_text="RT0000073")
        expect(persian).to_have_count(1)
        name = persian.locator("td:nth-child(2) a")
        assert name.evaluate("(e) => e.textContent") == SHOWN_PERSIAN_NAME  # the non-joiner kept, nothing escaped
        expect(name.locator(".control")).to_have_count(0)
        assert name.evaluate("(e) => getComputedStyle(e).direction") == "rtl"  # read in its own direction
        drawn_right_to_left = SHOWN_PERSIAN_NAME.replace("\u200c", "")[::-1]  # the non-joiner has no width
        assert _drawn(name) == " ".join(drawn_right_to_left.split())
        assert _drawn(persian.locator("td:nth-child(2) .sub")) == "RT0000073"
        assert f"routine, {SHOWN_PERSIAN_NAME}, accession" in str(persian.get_attribute("data-announce"))

        page.goto(f"{site.url}/console/worklist?filter=failed")
        failed = page.locator("#failed-list tr.row").filter(has_text="RT0000074")
        expect(failed).to_have_count(1)
        assert _drawn(failed.locator("td:nth-child(2) .patient-name")) == SHOWN_OVERRIDDEN_NAME
        assert _drawn(failed.locator("td:nth-child(2) .sub")) == "RT0000074"

        page.goto(f"{site.url}{study_path(site.store, site.named[OVERRIDDEN_NAME])}")
        heading = page.get_by_test_id("patient").locator(".patient-name")
        assert _drawn(heading) == SHOWN_OVERRIDDEN_NAME  # before: 'DOE, IVAN'
        assert "ID RT0000072 · " in _drawn(page.locator(".study-head .sub").first)

        page.goto(f"{site.url}{study_path(site.store, site.named[PERSIAN_NAME])}")
        heading = page.get_by_test_id("patient").locator(".patient-name")
        assert heading.evaluate("(e) => e.textContent") == SHOWN_PERSIAN_NAME
        assert heading.evaluate("(e) => getComputedStyle(e).direction") == "rtl"

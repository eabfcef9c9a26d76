"""A night shift in a real browser (Debian's Chromium under Playwright, uvicorn on a local port): a study whose
reading carries a 20,000-character reasoning token and hostile text (HTML/JS, right-to-left overrides, CRLF), a
double-clicked decision, the browser's back button, and two radiologists deciding the same finding from two tabs.

The hostile reading is recorded as the worker records one (a later ``inference_completed`` of the same revision),
so the pages show it exactly as they would show a model's output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import PASSWORD, add_user, console_settings, reported_study, serving, study_path
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import RevisionState
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from worker_support import spool_study

pytestmark = [pytest.mark.e2e, needs_chromium]

HOSTILE_LABEL = "<script>alert('label')</script>"
RLO = "\u202e"
#: A long name (the worklist's widest column), on a row whose view is unknown
EDGE_NAME = "Wolfeschlegelsteinhausenbergerdorff^Hubert Blaine Wolfe Schlegel"


@dataclass
class Site:
    url: str
    store: Store
    studies: dict[str, str]

    def decisions(self, study_uid: str) -> list[tuple[str | None, dict[str, Any]]]:
        table = AuditEventRow
        with self.store.session() as session:
            rows = session.execute(
                sa.select(table.actor_user, table.payload)
                .where(table.study_uid == study_uid, table.event_type.in_(["finding_assessed", "draft_assessed"]))
                .order_by(table.seq)
            ).all()
        return [(user, json.loads(payload)) for user, payload in rows]


def _record_reading(store: Store, study_uid: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Record a second reading of revision 1: the first, changed by ``edit`` (its ``reading``)."""
    with store.session() as session:
        text = session.scalar(
            sa.select(AuditEventRow.payload).where(
                AuditEventRow.study_uid == study_uid, AuditEventRow.event_type == "inference_completed"
            )
        )
    assert text is not None
    payload = json.loads(text)
    edit(payload["reading"])
    AuditRecorder(store).record(
        AuditEvent(EventType.INFERENCE_COMPLETED, Actor(user="worker"), study_uid=study_uid, payload=payload)
    )


def _hostile(reading: dict[str, Any]) -> None:
    """A 20k-character token and hostile text in every field."""
    reading["reasoning"] = [
        {"section": "image quality", "text": "Image quality: adequate. " + "A" * 20_000 + ". Effusion seen.\r\nCR"},
        {"section": "lungs", "text": "The lungs show a small opacity near the hilum. " * 400},
        *reading["reasoning"][1:],
    ]
    reading["findings"][0]["label"] = HOSTILE_LABEL
    reading["findings"][1]["evidence"] = f"{RLO}override in the evidence"
    reading["impression"] = "שלום עולם <b>not bold</b>\r\nsecond line " + "B" * 3000


def _long_evidence(reading: dict[str, Any]) -> None:
    """The first finding's evidence a long sentence (its row several lines high), the view of its image unknown, the
    second finding the label with the longest word."""
    reading["images"][0]["view"] = None
    reading["findings"][1]["label"] = "Enlarged Cardiomediastinum"
    reading["findings"][0]["evidence"] = "The finding is described at length: " + "a long observation, " * 40 + "end."


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-night")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = {
        "hostile": reported_study(settings, store, reader, seed=81, name=f"EVIL^<script>alert(1)</script>{RLO}"),
        "double": reported_study(settings, store, reader, seed=82, name="DOUBLE^DORA"),
        "shared": reported_study(settings, store, reader, seed=83, name="SHARED^SAM"),
        "impression": reported_study(settings, store, reader, seed=85, name="IMPRESSION^IDA"),
        "edge": reported_study(settings, store, reader, seed=86, name=EDGE_NAME),
    }
    _record_reading(store, studies["hostile"], _hostile)
    _record_reading(store, studies["edge"], _long_evidence)
    spool_study(settings, store, make_study(StudySpec(patient_id="RT0000084", seed=84), [ImageSpec()]),
                state=RevisionState.FAILED)  # fmt: skip
    for name in ("dr.night", "dr.day"):
        add_user(store, name, "radiologist")
    add_user(store, "qa.lead", "qa")
    with serving(store, settings) as url:
        yield Site(url, store, studies)
    store.dispose()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """A tab in which no dialog may open (an injected script would open one); 401, 403, 409 and 422 are provoked."""
    with tab(
        browser,
        height=900,
        timeout_ms=10_000,
        allowed=("status of 401", "status of 403", "status of 409", "status of 422"),
    ) as opened:
        dialogs: list[str] = []
        opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        yield opened
        assert dialogs == []


def test_hostile_and_very_long_text_is_inert_and_the_study_stays_usable(page: Page, site: Site) -> None:
    sign_in(page, site.url, "dr.night")
    # No '=' in the name: it is PN's group delimiter, and the console writes the groups apart (console/names.py).
    expect(page.locator("#worklist")).to_contain_text("EVIL, <script>alert(1)</script>")
    page.goto(f"{site.url}{study_path(site.store, site.studies['hostile'])}")
    expect(page.get_by_test_id("patient")).to_contain_text("EVIL, <script>alert(1)</script>")
    expect(page.locator("#finding-0 td.label")).to_have_text(HOSTILE_LABEL)
    expect(page.get_by_test_id("impression")).to_contain_text("<b>not bold</b>")
    # the page does not grow sideways: the 20k-character token and the long impression wrap
    width, viewport = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width <= viewport, f"the page is {width} px wide in a {viewport} px window"
    accept = page.locator("#finding-0 button.accept").bounding_box()
    assert accept is not None
    assert accept["x"] >= 0
    assert accept["x"] + accept["width"] <= viewport
    # a right-to-left override in one piece of model text does not reorder the text around it
    isolated = page.locator("#finding-1 td.evidence q").first.evaluate("q => getComputedStyle(q).unicodeBidi")
    assert isolated in ("isolate", "isolate-override", "plaintext")
    page.keyboard.press("a")  # the hostile finding can be decided like any other
    expect(page.get_by_test_id("decision-0")).to_contain_text("accepted by dr.night")
    assert [(user, p["finding"]) for user, p in site.decisions(site.studies["hostile"])] == [
        ("dr.night", HOSTILE_LABEL)
    ]


def test_a_double_clicked_decision_is_recorded_once_and_back_shows_it(page: Page, site: Site) -> None:
    study_uid = site.studies["double"]
    sign_in(page, site.url, "dr.night")
    page.goto(f"{site.url}{study_path(site.store, study_uid)}")
    page.locator("#finding-0 button.accept").dblclick()
    expect(page.get_by_test_id("decision-0")).to_contain_text("accepted by dr.night")
    page.go_back()  # the page before the submit is fetched again (no-store): it shows the decision too
    expect(page.get_by_test_id("decision-0")).to_contain_text("accepted by dr.night")
    page.locator("#finding-0 button.reject").click()  # from that page, a changed mind is recorded
    expect(page.get_by_test_id("decision-0")).to_contain_text("rejected by dr.night")
    decided = [(p["finding"] is not None, p["decision"]) for _user, p in site.decisions(study_uid)]
    assert decided == [(True, "accept"), (True, "reject")]


def test_a_click_on_accept_in_a_row_running_past_the_windows_edge_is_recorded(browser: Any, site: Site) -> None:
    """Pressing Accept with the mouse in a finding row whose end is below the window: the row, taking the focus,
    scrolled itself into view between the press and the release, the release landed off the button, and no click
    happened (nothing recorded, the page jumped)."""
    with tab(browser, height=500) as page:
        sign_in(page, site.url, "dr.night")
        page.goto(f"{site.url}{study_path(site.store, site.studies['edge'])}")
        row, accept = page.locator("#finding-0"), page.locator("#finding-0 button.accept")
        # the button's bottom 4 px above the window's bottom, the rest of its row below the window
        accept.evaluate("b => window.scrollBy(0, b.getBoundingClientRect().bottom - window.innerHeight + 4)")
        box, row_box, height = accept.bounding_box(), row.bounding_box(), page.evaluate("window.innerHeight")
        assert box is not None
        assert row_box is not None
        assert box["y"] + box["height"] <= height < row_box["y"] + row_box["height"] - 60
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        expect(page.get_by_test_id("decision-0")).to_contain_text("accepted by dr.night")


def test_on_a_laptop_the_worklist_writes_each_view_whole_beside_a_long_name(browser: Any, site: Site) -> None:
    """1366 by 768: the View column of a row with a long patient name read "unknow" over "n" (its cells could be
    broken anywhere, so the table squeezed the short columns to give the name its width)."""
    with tab(browser, height=768) as page:
        page.set_viewport_size({"width": 1366, "height": 768})
        sign_in(page, site.url, "dr.day")
        row = page.locator("#worklist tr.row", has_text="Wolfeschlegelsteinhausenbergerdorff")
        view = row.locator("td").nth(5)  # Priority, Patient, Age/Sex, Accession, Study date, View
        expect(view).to_have_text("unknown")
        tops = "[...r.getClientRects()].map((x) => Math.round(x.top))"
        lines = view.evaluate(
            f"td => {{ const r = document.createRange(); r.selectNodeContents(td); return new Set({tops}).size; }}"
        )
        assert lines == 1


def test_on_a_laptop_no_finding_label_is_broken_inside_a_word(browser: Any, site: Site) -> None:
    """1366 by 768: "Enlarged Cardiomediastinum" read "Cardiomediastin" over "um" (label cells may break anywhere, so
    hostile text cannot widen the page, and the column was narrower than the longest label's word)."""
    with tab(browser, height=768) as page:
        page.set_viewport_size({"width": 1366, "height": 768})
        sign_in(page, site.url, "dr.day")
        page.goto(f"{site.url}{study_path(site.store, site.studies['edge'])}")
        expect(page.locator("#finding-1 td.label")).to_have_text("Enlarged Cardiomediastinum")
        broken = page.locator("#findings td.label").evaluate_all(
            """cells => cells.flatMap((cell) => {
                 const words = [], texts = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
                 for (let text = texts.nextNode(); text; text = texts.nextNode()) {  // the label's <bdi> holds it
                   for (const m of text.data.matchAll(/\\S+/g)) {
                     const r = document.createRange();
                     r.setStart(text, m.index);
                     r.setEnd(text, m.index + m[0].length);
                     if (new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size > 1) words.push(m[0]);
                   }
                 }
                 return words;
               })"""
        )
        assert broken == []


def test_two_radiologists_on_one_finding_the_second_is_told_not_overwritten(browser: Any, site: Site) -> None:
    study_uid = site.studies["shared"]
    url = f"{site.url}{study_path(site.store, study_uid)}"
    with tab(browser, allowed=("status of 409",)) as night, tab(browser, allowed=("status of 409",)) as day:
        sign_in(night, site.url, "dr.night")
        sign_in(day, site.url, "dr.day")
        night.goto(url)
        day.goto(url)
        night.locator("#finding-0 button.accept").click()
        expect(night.get_by_test_id("decision-0")).to_contain_text("accepted by dr.night")
        day.locator("#finding-0 button.reject").click()
        expect(day.locator("#conflict-reason")).to_contain_text("dr.night recorded “accepted”")
        day.locator("#reload-study").click()
        expect(day.get_by_test_id("decision-0")).to_contain_text("accepted by dr.night")
        day.keyboard.press("r")
        expect(day.get_by_test_id("decision-0")).to_contain_text("rejected by dr.day")
    assert [(user, p["decision"]) for user, p in site.decisions(study_uid)] == [
        ("dr.night", "accept"),
        ("dr.day", "reject"),
    ]


def test_a_hand_edited_focus_in_the_address_does_not_break_the_keyboard(page: Page, site: Site) -> None:
    sign_in(page, site.url, "dr.day")
    page.goto(f"{site.url}{study_path(site.store, site.studies['hostile'])}?focus=abc")
    expect(page.locator("#finding-0")).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("j")
    expect(page.locator("#finding-1")).to_have_class(re.compile(r"\bselected\b"))


def test_a_qa_lead_who_picks_from_after_to_gets_the_reason_and_the_form_back(page: Page, site: Site) -> None:
    sign_in(page, site.url, "qa.lead")
    page.goto(f"{site.url}/console/dashboard")
    page.locator("input[name=from]").fill("2026-03-02")
    page.locator("input[name=to]").fill("2026-03-01")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#dashboard-error")).to_have_text("from (2026-03-02) is after to (2026-03-01)")
    expect(page.get_by_test_id("who")).to_contain_text("qa.lead")  # a console page, not a bare JSON body
    expect(page.locator("input[name=from]")).to_have_value("2026-03-02")
    page.locator("input[name=from]").fill("2026-02-01")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_test_id("scope")).to_contain_text("2026-02-01 to 2026-03-01 (UTC)")


def test_a_decision_after_the_session_ended_says_so_and_sign_in_leads_back_to_the_study(page: Page, site: Site) -> None:
    study_uid = site.studies["shared"]
    sign_in(page, site.url, "dr.night")
    page.goto(f"{site.url}{study_path(site.store, study_uid)}")
    before = len(site.decisions(study_uid))
    page.context.clear_cookies()  # the session is gone (idle timeout, or signed out in another tab)
    page.locator("#finding-1 button.reject").click()
    expect(page.locator("#signed-out")).to_contain_text("Nothing was recorded")
    page.locator("#sign-in-again").click()
    page.get_by_label("User name").fill("dr.night")
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{site.url}{study_path(site.store, study_uid)}")
    expect(page.locator("#finding-1")).to_be_visible()
    assert len(site.decisions(study_uid)) == before


def test_a_modification_sent_after_the_session_ended_is_shown_back_whole(page: Page, site: Site) -> None:
    """Before: the signed-out page showed the comment alone ("Your comment, as you typed it"), not which finding
    it was for, nor that it was a modification, nor the status chosen: that choice was lost."""
    study_uid = site.studies["shared"]
    sign_in(page, site.url, "dr.night")
    page.goto(f"{site.url}{study_path(site.store, study_uid)}")
    label = page.locator("#finding-2").get_attribute("data-label")
    before = len(site.decisions(study_uid))
    page.locator("#finding-2 select.status").select_option("uncertain")
    page.locator("#finding-2 input.comment").fill("could be a skin fold")
    page.context.clear_cookies()  # the session ended while the radiologist was choosing
    page.locator("#finding-2 button.modify").click()
    expect(page.locator("#signed-out")).to_contain_text("Nothing was recorded")
    expect(page.locator("#unsent-decision")).to_have_text(f"Modify {label} to uncertain")
    expect(page.get_by_test_id("typed")).to_have_value("could be a skin fold")
    assert len(site.decisions(study_uid)) == before


def test_an_impression_sent_from_a_page_of_an_ended_session_is_shown_back(page: Page, site: Site) -> None:
    """The radiologist signed in again in another tab (the worklist had sent them to the sign-in form), then sent
    the impression typed in the study's tab. Before: 'missing or wrong CSRF token: reload the page and try again',
    and the typed impression was gone (reloading showed the model's)."""
    study_uid = site.studies["double"]
    sign_in(page, site.url, "dr.day")
    page.goto(f"{site.url}{study_path(site.store, study_uid)}")
    page.locator("#impression-text").fill("No acute cardiopulmonary process.\nLines as before.")
    other = page.context.new_page()  # a new session, a new CSRF token
    other.goto(f"{site.url}/console/worklist")
    other.get_by_role("button", name="Sign out").click()
    sign_in(other, site.url, "dr.day")
    other.close()
    before = len(site.decisions(study_uid))
    page.locator("#impression button.modify").click()
    expect(page.locator("#stale-session")).to_contain_text("Nothing was recorded")
    expect(page.locator("#unsent-decision")).to_have_text("Modify the impression to your text")
    expect(page.get_by_test_id("typed")).to_have_value("No acute cardiopulmonary process.\nLines as before.")
    page.locator("#reload-study").click()
    expect(page).to_have_url(f"{site.url}{study_path(site.store, study_uid)}")
    assert len(site.decisions(study_uid)) == before


def test_the_second_radiologists_own_impression_is_shown_back_with_the_conflict(browser: Any, site: Site) -> None:
    """Before: the conflict page said what the first radiologist recorded, and the second one's typed impression
    was gone (Reload the study shows the first one's text)."""
    study_uid = site.studies["impression"]
    url = f"{site.url}{study_path(site.store, study_uid)}"
    with tab(browser, allowed=("status of 409",)) as night, tab(browser, allowed=("status of 409",)) as day:
        sign_in(night, site.url, "dr.night")
        sign_in(day, site.url, "dr.day")
        night.goto(url)
        day.goto(url)
        night.locator("#impression-text").fill("Night: small left effusion.")
        night.locator("#impression button.modify").click()
        expect(night.get_by_test_id("impression-decision")).to_contain_text("modified by dr.night")
        day.locator("#impression-text").fill("Day: no effusion, a skin fold.")
        day.locator("#impression button.modify").click()
        expect(day.locator("#conflict-reason")).to_contain_text("dr.night recorded “modified”")
        expect(day.locator("#unsent-decision")).to_have_text("Modify the impression to your text")
        expect(day.get_by_test_id("typed")).to_have_value("Day: no effusion, a skin fold.")
    assert [(user, p["decision"]) for user, p in site.decisions(study_uid)] == [("dr.night", "modify")]


def test_leaving_a_study_with_a_typed_impression_not_sent_asks_first(browser: Any, site: Site) -> None:
    """Before: a corrected impression typed, Escape, then n (next study) or a link, and the page was left at once:
    the text was gone, nothing said so."""
    url = f"{site.url}{study_path(site.store, site.studies['shared'])}"
    with tab(browser) as page:
        asked: list[str] = []
        page.on("dialog", lambda dialog: (asked.append(dialog.type), dialog.dismiss()))
        sign_in(page, site.url, "dr.day")
        page.goto(url)
        page.locator("#impression-text").fill("Typed for minutes, not sent yet.")
        page.keyboard.press("Escape")
        page.keyboard.press("n")  # the next study
        page.wait_for_timeout(300)
        assert asked == ["beforeunload"]
        expect(page).to_have_url(url)
        expect(page.locator("#impression-text")).to_have_value("Typed for minutes, not sent yet.")
        page.locator("#impression-text").fill(page.locator("#impression-text").evaluate("t => t.defaultValue"))
        page.keyboard.press("Escape")
        page.keyboard.press("n")  # nothing typed is left: the page is left without a question
        page.wait_for_url(lambda address: address != url)
        assert asked == ["beforeunload"]


def test_a_refused_request_in_the_browser_is_a_console_page_with_its_reason(page: Page, site: Site) -> None:
    study_uid = site.studies["double"]
    sign_in(page, site.url, "dr.day")
    page.goto(f"{site.url}{study_path(site.store, study_uid)}")
    other = page.context.new_page()  # signs out and in again in another tab: a new session, a new CSRF token
    other.goto(f"{site.url}/console/worklist")
    other.get_by_role("button", name="Sign out").click()
    sign_in(other, site.url, "dr.day")
    other.close()
    before = len(site.decisions(study_uid))
    page.locator("#finding-2 button.accept").click()  # its page's token is the ended session's
    expect(page.locator("#stale-session")).to_contain_text("Nothing was recorded")
    expect(page.get_by_test_id("who")).to_contain_text("dr.day")  # a console page, not a bare JSON body
    assert len(site.decisions(study_uid)) == before
    page.goto(f"{site.url}/console/worklist?filter=bogus")
    expect(page.locator("#problem-reason")).to_contain_text("filter")


def test_the_active_failed_filter_is_readable(page: Page, site: Site) -> None:
    sign_in(page, site.url, "dr.day")
    page.goto(f"{site.url}/console/worklist?filter=failed")
    colours = page.locator("a[data-filter=failed]").evaluate(
        "a => [getComputedStyle(a).color, getComputedStyle(a).backgroundColor]"
    )
    assert colours[0] != colours[1]
    assert _contrast(*colours) >= 4.5, colours  # WCAG AA for normal text


def _contrast(foreground: str, background: str) -> float:
    def luminance(css: str) -> float:
        channels = [int(part) / 255 for part in re.findall(r"\d+", css)[:3]]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)

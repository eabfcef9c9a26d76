"""The review console in a real browser: Debian's Chromium driven by Playwright against uvicorn on a local port.

Four studies read by the real pipeline (demo backend; one DeepMedix-style reading with boxes, one AP film) wait
in the worklist. A radiologist signs in, checks the order and the filters, takes the first study with the
keyboard alone (accept a finding, reject another with a comment, accept the draft, change their mind, next
study) and signs out; a qa user can read but not decide; a POST without the CSRF token is refused. The audit
log is checked after each. Screenshots of the worklist and the study page are written to ``tmp_path``, and to
``docs/`` when ``CONSOLE_SCREENSHOTS=docs`` (how docs/ui.md's pictures are made).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from browser_support import Page, expect, needs_chromium, screenshot, sign_in, tab, wait_until
from console_support import add_user, console_settings, reported_study, serving, study_path
from radtrace.audit.chain import verify_chain
from radtrace.audit.schema import AuditEventRow
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.studies import ImageSpec

pytestmark = [pytest.mark.e2e, needs_chromium]


@dataclass
class Site:
    url: str
    store: Store
    studies: dict[str, str]

    def events(self, *types: str) -> list[tuple[str, str | None, dict[str, object]]]:
        table = AuditEventRow
        with self.store.session() as session:
            rows = session.execute(
                sa.select(table.event_type, table.actor_user, table.payload)
                .where(table.event_type.in_(types))
                .order_by(table.seq)
            ).all()
        return [(kind, user, json.loads(payload)) for kind, user, payload in rows]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-browser")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    plain = console_settings(root, store)
    boxes = console_settings(root, store, profile="deepmedix-r1")
    studies = {
        "stat": reported_study(boxes, store, StudyReader(boxes.model, data_dir=boxes.data_dir), seed=31, stat=True,
                               age_s=30, name="DOE^JANE"),
    }  # fmt: skip
    reader = StudyReader(plain.model, data_dir=plain.data_dir)
    studies["oldest"] = reported_study(plain, store, reader, seed=32, age_s=7200, name="ROE^RICHARD")
    studies["ap"] = reported_study(plain, store, reader, seed=33, age_s=3600, image=ImageSpec(view="AP"),
                                   name="POE^EDGAR")  # fmt: skip
    studies["newest"] = reported_study(plain, store, reader, seed=34, age_s=600, name="LOE^LUCY")
    add_user(store, "dr.keys", "radiologist")
    add_user(store, "qa.quinn", "qa")
    with serving(store, plain) as url:
        yield Site(url, store, studies)
    store.dispose()


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    """A fresh browser tab; afterwards, no console error but the 403s of the refusals the qa test provokes."""
    with tab(browser, height=860, timeout_ms=10_000, allowed=("status of 403",)) as opened:
        yield opened


def _sign_in(page: Page, site: Site, name: str) -> None:
    page.goto(f"{site.url}/console/worklist")
    expect(page).to_have_url(f"{site.url}/console/login")
    sign_in(page, site.url, name)


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    wait_until(page, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, tmp_path, name)


def _patients(page: Page) -> list[str]:
    return [text.strip() for text in page.locator("#worklist tbody tr.row td:nth-child(2) a").all_inner_texts()]


def _filter(page: Page, site: Site, name: str) -> None:
    page.locator(f"a[data-filter={name}]").click()
    expect(page).to_have_url(f"{site.url}/console/worklist?filter={name}")
    page.wait_for_load_state("load")


def test_worklist_lists_stat_first_then_oldest_and_filters(page: Page, site: Site, tmp_path: Path) -> None:
    _sign_in(page, site, "dr.keys")
    assert _patients(page) == ["DOE, JANE", "ROE, RICHARD", "POE, EDGAR", "LOE, LUCY"]
    first = page.locator("#worklist tbody tr.row").first
    expect(first).to_contain_text("STAT")
    expect(page.locator("#worklist tbody tr.row").nth(2)).to_contain_text("AP / portable")
    expect(page.get_by_test_id("total")).to_have_text("4 drafts")
    _screenshot(page, tmp_path, "ui-worklist.png")
    # each filter is a link: a new page, read only once it has loaded (reading at once raced the navigation and
    # found the table of the page being left, or none)
    names = page.locator("#worklist tbody tr.row td:nth-child(2) a")
    _filter(page, site, "flagged")
    expect(names).to_have_text(["POE, EDGAR"])
    _filter(page, site, "mine")
    expect(names).to_have_count(0)
    _filter(page, site, "all")
    expect(names).to_have_count(4)
    # j moves the selection, Enter opens it
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("patient")).to_contain_text("ROE, RICHARD")


def test_a_radiologist_reviews_a_study_with_the_keyboard_alone(page: Page, site: Site, tmp_path: Path) -> None:
    _sign_in(page, site, "dr.keys")
    page.keyboard.press("n")  # start reading: the STAT study
    expect(page.get_by_test_id("patient")).to_contain_text("DOE, JANE")
    expect(page.locator(".box").first).to_be_attached()  # the DeepMedix boxes are drawn on the image
    rows = page.locator("#findings tr.finding-row")
    first_label = rows.nth(0).get_attribute("data-label")
    second_label = rows.nth(1).get_attribute("data-label")
    expect(rows.nth(0)).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("a")  # accept the selected finding; the next one is selected after the reload
    expect(page.get_by_test_id("decision-0")).to_contain_text("accepted by dr.keys")
    expect(rows.nth(1)).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("c")  # comment on it, Enter rejects
    page.keyboard.type("no opacity there")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("decision-1")).to_contain_text("rejected by dr.keys: “no opacity there”")
    # evidence: the sentences of the reasoning that concern the selected finding are highlighted
    expect(page.locator(".sentence.highlight").first).to_be_visible()
    page.keyboard.press("o")  # the original at full resolution
    expect(page.locator(".viewer img").first).to_have_attribute("src", re.compile(r"original\.png$"))
    page.keyboard.press("+")
    # a finding was rejected: the reason starts on "agrees after corrections", not "agrees with my reading"
    expect(page.locator("#draft-reason")).to_have_value("RT-A2")
    page.locator("#draft-reject").click()  # Reject with an accepting reason contradicts itself: nothing is sent
    expect(page.locator("#draft-form .unchanged")).to_contain_text("is not a reason for rejecting the draft")
    expect(page.get_by_test_id("draft-decision")).to_have_count(0)
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+A")  # whole draft: accept with the default reason
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("draft-decision")).to_contain_text("accepted by dr.keys: RT-A2")
    expect(page.locator("#assessment-sr")).to_be_visible()  # the assessment SR of this decision is kept
    page.evaluate("window.scrollTo(0, 0)")
    _screenshot(page, tmp_path, "ui-study.png")
    page.keyboard.press("Shift+R")  # a changed mind: reject, reason "missed finding"
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("draft-decision")).to_contain_text("rejected by dr.keys: RT-R1")
    expect(page.get_by_test_id("draft-decision")).to_contain_text("1 earlier, superseded")
    expect(page.get_by_test_id("draft-out-of-date")).to_have_count(0)
    # a finding changed after the whole draft: the page says the draft's assessment SR does not carry it
    status = "absent" if "status-absent" not in (rows.nth(0).get_attribute("class") or "") else "present"
    page.get_by_label(f"corrected status of {first_label}").select_option(status)
    page.get_by_role("button", name=f"Modify {first_label} to the chosen status").click()
    expect(page.get_by_test_id("draft-out-of-date")).to_be_visible()
    expect(page.get_by_test_id("draft-out-of-date")).to_contain_text(
        f"{first_label} (changed to {status} by dr.keys). The whole-draft decision and its assessment SR"
    )
    page.keyboard.press("n")  # next study: the oldest routine one
    expect(page.get_by_test_id("patient")).to_contain_text("ROE, RICHARD")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{site.url}/console/login")

    decided = [(kind, user, p) for kind, user, p in site.events("finding_assessed", "draft_assessed")
               if p.get("revision") == 1]  # fmt: skip
    assert [(kind, user, p.get("finding"), p["decision"], p.get("comment")) for kind, user, p in decided] == [
        ("finding_assessed", "dr.keys", first_label, "accept", None),
        ("finding_assessed", "dr.keys", second_label, "reject", "no opacity there"),
        ("draft_assessed", "dr.keys", None, "accept", None),
        ("draft_assessed", "dr.keys", None, "reject", None),
        ("finding_assessed", "dr.keys", first_label, "modify", None),
    ]
    assert decided[3][2]["supersedes"] is not None
    viewed = {p["rendering"] for kind, user, p in site.events("image_viewed") if user == "dr.keys"}
    assert viewed == {"prepared", "original"}
    kinds = [kind for kind, user, _ in site.events("console_login", "study_opened", "console_logout")
             if user == "dr.keys"]  # fmt: skip
    assert kinds[-3:] == ["study_opened", "study_opened", "console_logout"]
    assert verify_chain(site.store).ok


def test_qa_reads_but_cannot_decide_and_a_post_without_csrf_is_refused(page: Page, site: Site) -> None:
    _sign_in(page, site, "qa.quinn")
    page.goto(f"{site.url}{study_path(site.store, site.studies['newest'])}")
    expect(page.get_by_test_id("patient")).to_contain_text("LOE, LUCY")
    expect(page.locator(".note")).to_contain_text("only radiologists record decisions")
    assert page.locator(".finding-form").count() == 0
    page.keyboard.press("a")  # the shortcut finds no form to submit
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    url = f"{site.url}{study_path(site.store, site.studies['newest'])}/draft"
    refused = page.request.post(url, form={"csrf_token": token, "decision": "accept", "reason": "RT-A1"})
    assert refused.status == 403
    assert "only a radiologist" in refused.text()
    no_token = page.request.post(url, form={"decision": "accept", "reason": "RT-A1"})
    assert no_token.status == 403
    assert "CSRF" in no_token.text()
    assert not [user for _, user, _ in site.events("finding_assessed", "draft_assessed") if user == "qa.quinn"]


def test_a_key_pressed_as_soon_as_the_study_shows_is_not_lost(page: Page, site: Site) -> None:
    """The study page's script was deferred: the page showed while the script that handles the keys was still on
    its way, and a key pressed then was dropped (what made the keyboard test flaky on a busy machine). Now the
    script is in the head, so nothing shows before it, and keys pressed before the page is set up are replayed."""
    add_user(site.store, "dr.quick", "radiologist")
    _sign_in(page, site, "dr.quick")
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    network.send("Network.setCacheDisabled", {"cacheDisabled": True})
    network.send("Network.emulateNetworkConditions",
                 {"offline": False, "latency": 700, "downloadThroughput": -1, "uploadThroughput": -1})  # fmt: skip
    page.goto(f"{site.url}{study_path(site.store, site.studies['ap'])}", wait_until="commit")
    expect(page.get_by_test_id("patient")).to_contain_text("POE, EDGAR")
    page.keyboard.press("a")  # at once, as a radiologist who knows the study does
    expect(page.get_by_test_id("decision-0")).to_contain_text("accepted by dr.quick")
    page.keyboard.press("c")  # and typing straight after: the comment gets every character
    page.keyboard.type("fine")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("decision-1")).to_contain_text("rejected by dr.quick: “fine”")


def test_the_impression_is_decided_with_the_keyboard_after_the_findings(page: Page, site: Site) -> None:
    add_user(site.store, "dr.impression", "radiologist")
    _sign_in(page, site, "dr.impression")
    page.goto(f"{site.url}{study_path(site.store, site.studies['oldest'])}")
    findings = page.locator("#findings tr.finding-row").count()
    for index in range(findings):  # a, a, a …: after the last finding the impression is selected
        expect(page.locator("#findings tr.finding-row").nth(index)).to_have_class(re.compile(r"\bselected\b"))
        page.keyboard.press("a")
        expect(page.get_by_test_id(f"decision-{index}")).to_contain_text("accepted by dr.impression")
    impression = page.locator("#impression")
    expect(impression).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("m")  # edit the impression, Enter records it as modified
    expect(page.locator("#impression-text")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("No acute cardiopulmonary disease.")
    page.keyboard.press("Shift+Enter")  # a new line, not a submit
    page.keyboard.type("Follow-up not needed.")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("impression-decision")).to_contain_text("modified by dr.impression")
    expect(page.get_by_test_id("impression-decision")).to_contain_text("Follow-up not needed.")
    expect(impression).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("Shift+A")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("draft-decision")).to_contain_text("accepted by dr.impression")
    decided = [p for _kind, user, p in site.events("finding_assessed", "draft_assessed") if user == "dr.impression"]
    assert decided[-2]["finding"] == "(impression)"
    assert decided[-2]["impression"] == "No acute cardiopulmonary disease.\nFollow-up not needed."
    assert decided[-1]["impression"] == "modify"


def test_before_the_page_is_set_up_only_the_consoles_keys_are_held_back(page: Page, site: Site) -> None:
    """Keys pressed before the page is set up are kept for the console, but only its own: Tab, Ctrl+L, F5 and the
    like were held back too (their default prevented), so the browser ignored them while a page loaded."""
    held: list[Any] = []
    probe = (f'<!doctype html><html><head><script src="{site.url}/console/static/console.js"></script><script>'
             'window.seen = []; document.addEventListener("keydown", (e) => seen.push([e.key, e.defaultPrevented]));'
             f'</script></head><body><script src="{site.url}/console/static/hold.js"></script><p>after</p></body>'
             "</html>")  # fmt: skip
    page.route("**/console/static/probe.html", lambda route: route.fulfill(body=probe, content_type="text/html"))
    # the page stays mid-parse until hold.js is answered
    page.route("**/console/static/hold.js", lambda route: held.append(route))
    page.goto(f"{site.url}/console/static/probe.html", wait_until="commit")
    wait_until(page, "window.seen !== undefined")
    expect(page.locator("p")).to_have_count(0)  # still before the end of the page
    for key in ("Tab", "Control+l", "F6", "x"):
        page.keyboard.press(key)
    seen = page.evaluate("window.seen")
    assert seen == [["Tab", False], ["Control", False], ["l", False], ["F6", False], ["x", True]]
    held[0].fulfill(body="", content_type="text/javascript")
    expect(page.locator("p")).to_have_count(1)

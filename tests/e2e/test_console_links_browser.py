"""No Study Instance UID (nor any other UID) in any request a real browser makes while a radiologist reviews
(Debian's Chromium under Playwright, uvicorn on a free local port).

A study link shared while signed out, the sign-in that returns to it, the pictures the script switches between,
a finding decided with the keyboard, the whole draft accepted "then next", the worklist opened with Enter (the
script's row link) and "next study": every request's URL (so the history, a proxy's log) is checked against a UID
pattern, and none carries a Referer. Before handles, the first study link already held the UID.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from browser_support import Page, expect, needs_chromium, tab, wait_until
from console_support import PASSWORD, add_user, console_settings, reported_study, serving, study_path
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = [pytest.mark.e2e, needs_chromium]

UID_IN_TEXT = re.compile(r"\d+(?:\.\d+){3,}")


@dataclass
class Site:
    url: str
    store: Store
    studies: list[str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-links")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = [reported_study(settings, store, reader, seed=seed, age_s=age, name=name)
               for seed, age, name in ((61, 900, "ROE^RITA"), (62, 600, "DOE^DORA"))]  # fmt: skip
    add_user(store, "dr.links", "radiologist")
    with serving(store, settings) as url:
        yield Site(url, store, studies)
    store.dispose()


@pytest.fixture
def requests_seen(browser: Any) -> Iterator[tuple[Page, list[tuple[str, str | None]]]]:
    """A tab, and every request it made: (URL, its Referer header)."""
    seen: list[tuple[str, str | None]] = []
    with tab(browser, timeout_ms=10_000) as page:
        page.on("request", lambda request: seen.append((request.url, request.headers.get("referer"))))
        yield page, seen


def test_a_review_session_sends_no_uid_in_any_url(
    requests_seen: tuple[Page, list[tuple[str, str | None]]], site: Site
) -> None:
    page, seen = requests_seen
    first = study_path(site.store, site.studies[0])
    page.goto(f"{site.url}{first}")  # a link shared with a colleague who is signed out
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.get_by_label("User name").fill("dr.links")
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{site.url}{first}")  # back at the study after signing in
    expect(page.get_by_test_id("patient")).to_contain_text("ROE, RITA")
    page.keyboard.press("o")  # the original picture, then the prepared one again (the script's data-* links)
    expect(page.locator(".viewer img").first).to_have_attribute("src", re.compile(r"original\.png$"))
    page.keyboard.press("p")
    expect(page.locator(".viewer img").first).to_have_attribute("src", re.compile(r"prepared\.png$"))
    wait_until(page, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.keyboard.press("a")  # accept the selected finding
    expect(page.get_by_test_id("decision-0")).to_contain_text("accepted by dr.links")
    page.locator("#then-next").check()
    page.locator("#draft-accept").click()  # the whole draft, then the next study
    expect(page.get_by_test_id("patient")).to_contain_text("DOE, DORA")
    page.get_by_role("link", name="Worklist").first.click()
    expect(page.locator("#worklist tbody tr.row")).to_have_count(1)
    page.keyboard.press("Enter")  # the selected row, opened by the script
    expect(page.get_by_test_id("patient")).to_contain_text("DOE, DORA")
    page.keyboard.press("n")  # next study: none left, the worklist
    expect(page).to_have_url(f"{site.url}/console/worklist")

    urls = [unquote(urlsplit(url)._replace(scheme="", netloc="").geturl()) for url, _ in seen]  # not 127.0.0.1
    assert len(urls) > 15
    assert any("/images/" in url for url in urls)
    assert [url for url in urls if UID_IN_TEXT.search(url)] == []
    assert not [url for url in urls if any(uid in url for uid in site.studies)]
    assert not [referer for _, referer in seen if referer], seen  # Referrer-Policy: no-referrer

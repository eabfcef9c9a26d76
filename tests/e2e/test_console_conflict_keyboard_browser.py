"""A radiologist reviewing with the keyboard alone who is told a decision was not recorded (another radiologist
decided the finding first, or the draft was refused) goes on with Enter: the page's way on is focused, with its
visible ring (Debian's Chromium under Playwright, uvicorn on a local port).

Before, the conflict page and the refusal page left the focus on the document: Enter did nothing, the console's
keys (n, j, a) did nothing there, and the way back to the study was five Tab stops away, behind the menu.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from browser_support import expect, needs_chromium, sign_in, tab
from console_support import ServedStudy, served_study

pytestmark = [pytest.mark.e2e, needs_chromium]

_RING = "e => e.matches(':focus-visible') && getComputedStyle(e).outlineStyle !== 'none'"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStudy]:
    with served_study(
        tmp_path_factory.mktemp("conflict-keyboard"), 43, {"dr.night": "radiologist", "dr.keys": "radiologist"}
    ) as served:
        yield served


def test_after_a_conflict_enter_reloads_the_study_and_the_keys_go_on(browser: Any, site: ServedStudy) -> None:
    url = f"{site.url}{site.path}"
    with tab(browser, allowed=("status of 409",)) as keys, tab(browser) as night:
        sign_in(keys, site.url, "dr.keys")
        sign_in(night, site.url, "dr.night")
        keys.goto(url)
        night.goto(url)
        night.locator("#finding-0 button.accept").click()
        expect(night.get_by_test_id("decision-0")).to_contain_text("accepted by dr.night")
        keys.keyboard.press("r")  # on the page loaded before dr.night's decision
        expect(keys.locator("#conflict-reason")).to_contain_text("dr.night recorded")
        reload = keys.locator("#reload-study")
        expect(reload).to_be_focused()
        assert reload.evaluate(_RING), "the focused way on has no visible ring"
        keys.keyboard.press("Enter")
        expect(keys.get_by_test_id("decision-0")).to_contain_text("accepted by dr.night")
        keys.keyboard.press("r")
        expect(keys.get_by_test_id("decision-0")).to_contain_text("rejected by dr.keys")


def test_after_a_refused_decision_enter_leads_back_to_the_study(browser: Any, site: ServedStudy) -> None:
    with tab(browser, allowed=("status of 422",)) as keys:
        sign_in(keys, site.url, "dr.keys")
        keys.goto(f"{site.url}{site.path}")
        keys.keyboard.press("c")  # a comment with a control character is refused (422) with its reason
        keys.keyboard.insert_text("see \u0007 bell")
        keys.keyboard.press("Enter")
        back = keys.locator("#problem-back")
        expect(back).to_be_focused()
        assert back.evaluate(_RING), "the focused way on has no visible ring"
        keys.keyboard.press("Enter")
        expect(keys).to_have_url(f"{site.url}{site.path}")

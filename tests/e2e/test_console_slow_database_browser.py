"""A decision sent while the database is slow says at once that it is being sent (Debian's Chromium under
Playwright at 1366x768, uvicorn on a local port, keyboard only).

On a night shift with the database slow to answer, a radiologist pressed ``a`` and for seconds nothing on the page
changed: no sign the key was taken, so they pressed again or moved on. Now the finding's form says "Sending
(accepting)… the page changes when it is recorded" (a status, heard by a screen reader) until the answer comes,
and the page then shows the decision recorded. The slow database is a gate the test holds shut: the request waits
on it inside the decision's recording, as it would on a lock or a slow disk.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from browser_support import expect, needs_chromium, sign_in, tab
from console_support import ServedStudy, served_study
from radtrace.console import study_decisions

pytestmark = [pytest.mark.e2e, needs_chromium]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStudy]:
    with served_study(tmp_path_factory.mktemp("slow-database"), 47, {"dr.slow": "radiologist"}) as served:
        yield served


def test_a_decision_waiting_on_a_slow_database_says_it_is_being_sent(
    browser: Any, site: ServedStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, waiting = threading.Event(), threading.Event()
    record = study_decisions.decide_finding

    def slow(*args: Any, **kwargs: Any) -> Any:
        waiting.set()
        assert gate.wait(60), "the test never opened the gate"
        return record(*args, **kwargs)

    monkeypatch.setattr(study_decisions, "decide_finding", slow)
    with tab(browser) as page:
        page.set_viewport_size({"width": 1366, "height": 768})
        # What the form says is logged from the page as it changes: the page cannot be queried while its navigation
        # waits on the server (Playwright waits for the navigation to end first).
        page.add_init_script(
            """new MutationObserver(() => {
                 const said = document.querySelector('#finding-0 form.finding-form .sending');
                 if (said && !said.dataset.logged) {
                   said.dataset.logged = '1';
                   console.log('sending: ' + JSON.stringify([said.textContent, said.getAttribute('role'),
                                                             said.closest('form').getAttribute('aria-busy')]));
                 }
               }).observe(document, {subtree: true, childList: true, characterData: true});"""
        )
        sign_in(page, site.url, "dr.slow")
        page.goto(f"{site.url}{site.path}")
        expect(page.locator("#finding-0 form.finding-form .sending")).to_have_count(0)
        try:
            with page.expect_console_message(lambda message: message.text.startswith("sending: ")) as logged:
                page.keyboard.press("a")
            assert waiting.wait(30), "the decision never reached the server"
            assert json.loads(logged.value.text.removeprefix("sending: ")) == [
                "Sending (accepting)… the page changes when it is recorded.",
                "status",
                "true",
            ]
        finally:
            gate.set()
        expect(page.get_by_test_id("decision-0")).to_contain_text("accepted by dr.slow")
        expect(page.locator(".sending")).to_have_count(0)

"""The review page for a radiologist on the keyboard and a screen reader (Debian's Chromium under Playwright, uvicorn
on a local port): what the accessibility tree names each finding row, its decision controls and the impression;
where the focus goes with j / k and after a decision; the Tab order through the whole page, each stop with a visible
focus ring and a name; accept, reject and modify with the keyboard alone.

Before: a finding row given the focus had no accessible name (a screen reader said "row" or read the cells' raw
text), the controls named the finding but never its current decision, j / k moved only a highlight (the focus
stayed where it was), and after a decision the focus was back at the top of the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, finding_decisions, reported_study, serving, study_path
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = [pytest.mark.e2e, needs_chromium]


@dataclass
class Site:
    url: str
    store: Store
    studies: dict[str, str]

    def decisions(self, study_uid: str) -> list[dict[str, Any]]:
        return finding_decisions(self.store, study_uid)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-keyboard")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = {name: reported_study(settings, store, reader, seed=seed, name=f"KEY^{name.upper()}")
               for name, seed in (("names", 91), ("path", 92), ("tab", 93))}  # fmt: skip
    add_user(store, "dr.keys", "radiologist")
    with serving(store, settings) as url:
        yield Site(url, store, studies)
    store.dispose()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    with tab(browser, height=900) as opened:
        yield opened


def _finding(page: Page, index: int) -> tuple[str, str]:
    row = page.locator(f"#finding-{index}")
    return str(row.get_attribute("data-label")), str(row.locator("td .pill").first.inner_text())


def _has_visible_ring(page: Page) -> bool:
    """Whether the focused element draws a focus ring of at least 2 px (not 'none')."""
    style = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()"
    )
    return bool(style[0] != "none" and style[1] >= 2)


def test_each_finding_row_and_control_is_named_with_its_current_decision(page: Page, site: Site) -> None:
    study_uid = site.studies["names"]
    sign_in(page, site.url, "dr.keys")
    page.goto(f"{site.url}{study_path(site.store, study_uid)}")
    label, status = _finding(page, 0)
    undecided = f"{label}: model says {status}, not decided"
    row = page.get_by_role("row", name=undecided, exact=True)
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("id", "finding-0")
    expect(page.get_by_role("group", name=f"Decision on {undecided}", exact=True)).to_be_visible()
    accept = page.get_by_role("button", name=f"Accept {label}", exact=True)
    expect(accept).to_have_accessible_description(undecided)
    expect(page.get_by_role("combobox", name=f"corrected status of {label}")).to_have_accessible_description(undecided)
    expect(page.locator("#impression")).to_have_accessible_name("Impression: not decided")

    page.keyboard.press("a")  # finding 0 accepted; the page comes back with finding 1 selected
    decided = f"{label}: model says {status}, accepted by dr.keys"
    expect(page.locator("#finding-0")).to_have_accessible_name(decided)
    expect(page.get_by_role("button", name=f"Accept {label}", exact=True)).to_have_accessible_description(decided)
    expect(page.get_by_role("group", name=f"Decision on {decided}", exact=True)).to_be_visible()
    # the row that has the focus now is named: the next finding and its state, as a screen reader says it
    focused = page.locator("#finding-1")
    expect(focused).to_be_focused()
    label_1, status_1 = _finding(page, 1)
    expect(focused).to_have_accessible_name(f"{label_1}: model says {status_1}, not decided")
    first = page.locator(":focus").aria_snapshot().splitlines()[0]  # YAML: quoted, the name holds a colon
    assert f'row "{label_1}: model says {status_1}, not decided"' in first, first


def test_j_and_k_move_the_focus_and_tab_goes_on_into_that_findings_controls(page: Page, site: Site) -> None:
    sign_in(page, site.url, "dr.keys")
    page.goto(f"{site.url}{study_path(site.store, site.studies['path'])}")
    page.keyboard.press("j")
    expect(page.locator("#finding-1")).to_be_focused()
    assert _has_visible_ring(page)
    page.keyboard.press("k")
    expect(page.locator("#finding-0")).to_be_focused()
    label, _ = _finding(page, 0)
    steps = [f"comment on {label}", f"corrected status of {label}", f"Accept {label}", f"Reject {label}",
             f"Modify {label} to the chosen status"]  # fmt: skip
    for name in steps:
        page.keyboard.press("Tab")
        expect(page.locator(":focus")).to_have_accessible_name(name)
        assert _has_visible_ring(page), name


def test_accept_reject_and_modify_with_the_keyboard_alone(page: Page, site: Site) -> None:
    study_uid = site.studies["path"]
    sign_in(page, site.url, "dr.keys")
    page.goto(f"{site.url}{study_path(site.store, study_uid)}")
    labels = [_finding(page, i)[0] for i in range(3)]
    page.keyboard.press("Tab")  # from the selected first finding? no: the page's first stop; go to it with j, k
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    page.keyboard.press("k")
    for _ in range(3):
        page.keyboard.press("Tab")  # comment, status, Accept
    expect(page.locator(":focus")).to_have_accessible_name(f"Accept {labels[0]}")
    page.keyboard.press("Enter")
    expect(page.locator("#finding-1")).to_be_focused()  # the next finding, where the keyboard goes on
    for _ in range(4):
        page.keyboard.press("Tab")  # comment, status, Accept, Reject
    expect(page.locator(":focus")).to_have_accessible_name(f"Reject {labels[1]}")
    page.keyboard.press(" ")
    expect(page.locator("#finding-2")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.type("cannot exclude a skin fold")
    page.keyboard.press("Tab")  # the status, still the model's ('uncertain'): Enter sends nothing and says why
    page.keyboard.press("Enter")
    expect(page.locator("#finding-2 .unchanged")).to_have_text(
        "The model says uncertain: choose another status to modify it, or accept it."
    )
    expect(page.get_by_label(f"comment on {labels[2]}")).to_have_value("cannot exclude a skin fold")
    page.keyboard.type("a")  # type-ahead picks 'absent', Enter records the modification
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("decision-2")).to_contain_text("changed to absent by dr.keys")
    assert [(d["finding"], d["decision"], d.get("status"), d.get("comment")) for d in site.decisions(study_uid)] == [
        (labels[0], "accept", None, None),
        (labels[1], "reject", None, None),
        (labels[2], "modify", "absent", "cannot exclude a skin fold"),
    ]


def test_the_whole_page_tab_order_has_a_name_and_a_visible_ring_at_every_stop(page: Page, site: Site) -> None:
    sign_in(page, site.url, "dr.keys")
    page.goto(f"{site.url}{study_path(site.store, site.studies['tab'])}")
    findings = page.locator("#findings tr.finding-row").count()
    stops: list[str] = []
    for _ in range(80):
        page.keyboard.press("Tab")
        focused = page.locator(":focus")
        if focused.count() == 0:
            break
        where = page.evaluate(
            "(() => { const e = document.activeElement;"
            " const r = e.closest('tr.finding-row, #impression, #draft-form, figure, header, .study-nav');"
            " return (r ? (r.id || r.tagName.toLowerCase()) : '') + ' ' + e.tagName.toLowerCase(); })()"
        )
        expect(focused).to_have_accessible_name(re.compile(r"\w"))
        assert _has_visible_ring(page), where
        stops.append(where.split()[0])
        if where.startswith("draft-form button") and page.evaluate("document.activeElement.id") == "draft-reject":
            break
    order = [stop for n, stop in enumerate(stops) if n == 0 or stops[n - 1] != stop]
    assert order == ["header", "nav", "figure", *[f"finding-{i}" for i in range(findings)], "impression", "draft-form"]

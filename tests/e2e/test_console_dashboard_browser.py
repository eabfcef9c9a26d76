"""The QA dashboard in a real browser: Debian's Chromium driven by Playwright against uvicorn on a local port.

90 days of history (tests/dashboard_support.py: about 100 studies a day, ~9,000 studies and ~65,000 audit events,
with Pleural Effusion's prevalence raised from 15 % to 35 % over the last 20 days and 30 % of one day's studies
failing 10 days ago) are written straight into a SQLite database. A qa user opens the dashboard from the menu and
finds the planted drift flagged, on that label alone, and the burst day flagged, on that day alone; switches to
weeks; downloads a chart's CSV; follows an agreement count to its studies. A radiologist has no dashboard.
Screenshots go to ``tmp_path``, and to ``docs/`` when ``CONSOLE_SCREENSHOTS=docs`` (docs/ui.md's pictures).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser_support import Page, expect, needs_chromium, screenshot, sign_in, tab
from console_support import add_user, console_settings, serving
from dashboard_support import Seeded, seed_history
from qa_support import PREVALENCE
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = [pytest.mark.e2e, needs_chromium]


@dataclass
class Site:
    url: str
    seeded: Seeded


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("dashboard-browser")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    seeded = seed_history(store, days=90, per_day=(80, 120))
    add_user(store, "qa.quinn", "qa")
    add_user(store, "dr.keys", "radiologist")
    with serving(store, console_settings(root, store)) as url:
        yield Site(url, seeded)
    store.dispose()


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    with tab(browser) as opened:
        yield opened


def test_the_planted_drift_and_burst_are_flagged_and_nothing_else(page: Page, site: Site, tmp_path: Path) -> None:
    sign_in(page, site.url, "qa.quinn")
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="QA dashboard")).to_be_visible()
    drift = page.get_by_test_id("drift-alerts")
    expect(drift.locator(".alert")).to_have_count(1)
    expect(drift.locator(".alert")).to_have_attribute("data-label", site.seeded.drift_label)
    expect(drift).to_contain_text(f"{site.seeded.drift_label}: above its limits")
    bursts = page.get_by_test_id("failure-bursts")
    expect(bursts.locator(".alert")).to_have_count(1)
    expect(bursts.locator(".alert")).to_have_attribute("data-period", site.seeded.burst_day.isoformat())
    # On the charts: the drifting label's p-chart is framed and carries the red points, no other label's does.
    for label in PREVALENCE:
        figure = page.locator(f'#drift figure[data-label="{label}"]')
        expect(figure).to_have_count(1)
        flagged = figure.locator("circle.chart-flag").count()
        if label == site.seeded.drift_label:
            expect(figure).to_have_class("drifting")
            assert flagged >= 7
        else:
            assert flagged == 0, label
    failures = page.locator("#drift figure").filter(has_text="Failed reading attempts of read + failed")
    expect(failures.locator("circle.chart-flag")).to_have_count(1)
    screenshot(page, tmp_path, "ui-dashboard.png")
    box = page.locator("#drift .small-multiples").first.bounding_box()
    assert box is not None
    top = box["y"] + float(page.evaluate("window.scrollY")) - 60
    screenshot(page, tmp_path, "ui-dashboard-drift.png", full_page=True,
                clip={"x": 0, "y": top, "width": 1360, "height": min(box["height"] + 70, 900)})  # fmt: skip

    page.locator("select[name=period]").select_option("week")  # the period form's "by" select
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/console/dashboard?*period=week*")
    expect(page.get_by_test_id("drift-alerts").locator(".alert")).to_have_count(1)  # the rule is daily either way
    expect(page.get_by_test_id("scope")).to_contain_text("by week")


def test_a_chart_downloads_its_numbers_and_a_count_leads_to_its_studies(page: Page, site: Site, tmp_path: Path) -> None:
    sign_in(page, site.url, "qa.quinn")
    page.goto(f"{site.url}/console/dashboard")
    with page.expect_download() as download:
        page.locator('a[data-csv="prevalence"]').click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {row["label"] for row in rows if row["drift_alert"] == "True"} == {site.seeded.drift_label}
    assert download.value.suggested_filename.startswith("radtrace-prevalence-")

    row = page.locator(f'#agreement-table tr[data-label="{site.seeded.drift_label}"]')
    rejected = row.locator('a[data-decision="reject"]')
    count = int(rejected.inner_text())
    assert count > 0
    box = page.locator("#agreement").bounding_box()  # in the viewport: add the scroll for the page's coordinates
    assert box is not None
    top = box["y"] + float(page.evaluate("window.scrollY"))
    screenshot(page, tmp_path, "ui-dashboard-agreement.png", full_page=True,
                clip={"x": 0, "y": top, "width": 1360, "height": min(box["height"], 700)})  # fmt: skip
    rejected.click()
    expect(page.get_by_role("heading", name=f"{site.seeded.drift_label}: rejected")).to_be_visible()
    expect(page.locator("#studies tbody tr")).to_have_count(count)
    first = page.locator("#studies tbody tr a").first
    # the study is shown by its UID and linked by its handle
    assert first.inner_text().startswith("1.2.826.0.1.3680043.10.1017.")
    assert re.fullmatch(r"/console/studies/[A-Za-z0-9_-]{24}/\d+", first.get_attribute("href") or "")


def test_a_radiologist_has_no_dashboard(page: Page, site: Site) -> None:
    sign_in(page, site.url, "dr.keys")
    expect(page.get_by_role("link", name="Dashboard")).to_have_count(0)
    for url in ("/console/dashboard", "/console/dashboard/volume.csv"):
        answer = page.request.get(f"{site.url}{url}")  # with the tab's session cookie
        assert answer.status == 403
        assert "qa and admin" in answer.json()["detail"]

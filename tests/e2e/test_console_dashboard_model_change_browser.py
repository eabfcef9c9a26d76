"""The QA dashboard in a real browser over a model version rollout and a small service: what a QA lead reads off
the charts over time.

40 days of history (tests/dashboard_support.py, 20 to 30 studies a day, 30 % assessed): model rev-2026-10 reads
the first 30 days, rev-2026-12 the last 10. Before, nothing on the page but the "Model versions" bars at its foot
said a new version came in: a step in agreement or prevalence at the rollout looked like drift of the cases.
And a day's share accepted was a bare percentage (a day's 1 of 4 decisions showed as 25 %, like a day's 250 of
1000). Now the rollout is named under the period form and marked on every chart over time, and each point of a
share says its n in its tooltip, hollow when under ``dashboard.FEW`` cases, as the CSV's counts say.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, serving
from dashboard_support import seed_history
from radtrace.console.dashboard import FEW
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = [pytest.mark.e2e, needs_chromium]
NEW = ("NV-Reason-CXR-3B", "rev-2026-12")


@dataclass
class Site:
    url: str
    rollout: date


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("dashboard-model-change")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    today = datetime.now(UTC).date()
    seed_history(store, days=30, per_day=(20, 30), today=today - timedelta(days=10))
    seed_history(store, days=10, per_day=(20, 30), today=today, seed=23, model=NEW)
    with store.engine.connect() as connection:  # the new version's first reading, as the audit log has it
        first = connection.execute(
            sa.text("SELECT min(recorded_at) FROM audit_events WHERE event_type = 'inference_completed'"
                    " AND model_version = :version"), {"version": NEW[1]}
        ).scalar_one()  # fmt: skip
    add_user(store, "qa.quinn", "qa")
    with serving(store, console_settings(root, store)) as url:
        yield Site(url, datetime.fromisoformat(str(first)).date())
    store.dispose()


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    with tab(browser) as opened:
        yield opened


def test_a_model_rollout_is_named_and_marked_on_every_chart_over_time(page: Page, site: Site) -> None:
    sign_in(page, site.url, "qa.quinn")
    page.goto(f"{site.url}/console/dashboard")
    named = page.get_by_test_id("model-changes")
    expect(named).to_contain_text(f"{' '.join(NEW)} first read on {site.rollout}")
    over_time = ["#latency figure", "#agreement-periods figure", "#drift .small-multiples figure[data-label]",
                 "#drift > figure"]  # fmt: skip
    figures = page.locator(", ".join(over_time))
    assert figures.count() >= 1 + 7 + 6 + 2  # latency, agreement per day, prevalence, failures and refusals
    for n in range(figures.count()):
        if figures.nth(n).locator("svg.chart-series").count() == 0:
            continue  # the latency row's second figure is the per-stage bars, not a chart over time
        marker = figures.nth(n).locator("line.chart-marker")
        expect(marker).to_have_count(1)
        expect(marker.locator("title")).to_have_text(f"{' '.join(NEW)}: first reading {site.rollout}")
    # The marker stands at the rollout day's left edge: the first point right of it is that day's.
    chart = page.locator('#agreement-periods figure[data-label="Cardiomegaly"]')
    at = float(chart.locator("line.chart-marker").get_attribute("x1") or "nan")
    after = [c for c in chart.locator("circle").all() if float(c.get_attribute("cx") or "nan") > at]
    assert site.rollout.strftime("%d %b") in (after[0].locator("title").text_content() or "")


def test_each_share_over_time_says_its_n_and_a_small_one_is_hollow(page: Page, site: Site) -> None:
    sign_in(page, site.url, "qa.quinn")
    page.goto(f"{site.url}/console/dashboard")
    expect(page.locator("#agreement")).to_contain_text(f"a hollow point rests on fewer than {FEW}")
    answer = page.request.get(f"{site.url}/console/dashboard/agreement_periods.csv")
    rows = list(csv.DictReader(io.StringIO(answer.text())))
    label = "Cardiomegaly"
    mine = [row for row in rows if row["label"] == label]
    chart = page.locator(f'#agreement-periods figure[data-label="{label}"]')
    points = chart.locator("circle")
    expect(points).to_have_count(len(mine))
    titles = [title.text_content() or "" for title in points.locator("title").all()]
    for row, title in zip(mine, titles, strict=True):
        assert f"({row['accepted']} of {row['decisions']} decisions)" in title, (row, title)
    few = [row for row in mine if int(row["decisions"]) < FEW]
    assert few, "the seeded service is small enough for a day under FEW decisions"
    expect(chart.locator("circle.chart-few")).to_have_count(len(few))
    # The prevalence and failure shares say theirs too.
    prevalence = page.locator(f'#drift figure[data-label="{label}"] circle title').first
    expect(prevalence).to_contain_text(" readings)")
    expect(page.locator("#drift > figure circle title").first).to_contain_text(" attempts)")


def test_the_alert_boxes_say_not_checked_where_there_is_no_baseline_or_no_data(page: Page, site: Site) -> None:
    """A window from go-live (no reading in the baseline before it) and one without any study: before, both said
    "No label drifted." and "No failure burst." in green, though nothing was checked."""
    sign_in(page, site.url, "qa.quinn")
    first = datetime.now(UTC).date() - timedelta(days=39)  # the seeded history's first day: nothing before it
    page.goto(f"{site.url}/console/dashboard?from={first}")
    drift, bursts = page.get_by_test_id("drift-alerts"), page.get_by_test_id("failure-bursts")
    baseline = f"({first - timedelta(days=28)} to {first - timedelta(days=1)})"
    expect(drift.get_by_test_id("drift-unchecked")).to_have_text(
        f"Not checked: no reading in the baseline {baseline}, so no control limits to hold the window's shares against."
    )
    expect(drift.locator(".ok")).to_have_count(0)
    expect(bursts.get_by_test_id("bursts-unchecked")).to_contain_text(f"no reading attempt in the baseline {baseline}")
    expect(bursts.locator(".ok")).to_have_count(0)
    answer = page.request.get(f"{site.url}/console/dashboard/failures.csv?from={first}")
    rows = list(csv.DictReader(io.StringIO(answer.text())))
    failed, attempts = sum(int(r["failed_attempts"]) for r in rows), sum(int(r["attempts"]) for r in rows)
    expect(bursts).to_contain_text(f"In the window {failed} of {attempts} attempts failed.")

    page.goto(f"{site.url}/console/dashboard?from=2020-01-01&to=2020-01-31")
    expect(drift.get_by_test_id("drift-unchecked")).to_have_text("Not checked: no study read in this window.")
    expect(bursts.get_by_test_id("bursts-unchecked")).to_have_text("Not checked: no reading attempt in this window.")
    expect(page.locator(".alert-box .ok")).to_have_count(0)

    page.goto(f"{site.url}/console/dashboard")  # 30 days with a baseline before them: checked, as before
    expect(page.locator(".alert-box [data-testid$='-unchecked']")).to_have_count(0)

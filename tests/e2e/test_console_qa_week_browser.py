"""A QA lead's Monday morning on the dashboard, in a real browser (Debian's Chromium under Playwright).

A month of history written straight into a SQLite database (tests/dashboard_support.py): NV-Reason-CXR-3B
rev-2026-10 until four days ago, then rev-2026-12, on whose readings the radiologists reject and modify findings
far more often (50 % accepted instead of 80 %); failed studies with three different reasons, skipped studies,
readings at every hour of the day. The lead asks what changed with the new version, how the week went, and
checks the page's answers against counts made here from the rows themselves.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, serving
from dashboard_support import MODEL, seed_history
from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Instance, OutboxMessage, Revision

pytestmark = [pytest.mark.e2e, needs_chromium]

NEW_MODEL = ("NV-Reason-CXR-3B", "rev-2026-12")
#: How radiologists decide the new version's findings: far fewer accepted than the old one's 80 %.
NEW_DECISIONS = (("accept", 0.50), ("reject", 0.35), ("modify", 0.15))
ROLLOUT_DAYS = 4


@dataclass
class Site:
    url: str
    store: Store
    today: date


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("qa-week")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    today = datetime.now(UTC).date()
    reasons = ("model timeout", "image could not be decoded", "model server unavailable")  # as a real week has
    seed_history(store, days=31, per_day=(40, 60), assessed=0.5, today=today - timedelta(days=ROLLOUT_DAYS),
                 failure_reasons=reasons)  # fmt: skip
    seed_history(store, days=ROLLOUT_DAYS, per_day=(40, 60), assessed=0.5, today=today, seed=99, model=NEW_MODEL,
                 decisions=NEW_DECISIONS, failure_reasons=reasons)  # fmt: skip
    add_user(store, "qa.monday", "qa")
    with serving(store, console_settings(root, store)) as url:
        yield Site(url, store, today)
    store.dispose()


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    with tab(browser) as opened:
        yield opened


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def _decisions_by_model(store: Store, first: date, last: date) -> dict[tuple[str, str], Counter[str]]:
    """(label, model) -> decisions, counted here from the audit rows: each finding decision under the model of
    the same study's reading (the seed decides each finding of a study once)."""
    with store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.event_type, AuditEventRow.study_uid, AuditEventRow.recorded_at,
                      AuditEventRow.model_name, AuditEventRow.model_version, AuditEventRow.payload)
            .where(AuditEventRow.event_type.in_([EventType.INFERENCE_COMPLETED.value,
                                                 EventType.FINDING_ASSESSED.value]))
        ).all()  # fmt: skip
    model_of = {uid: f"{name} {version}" for kind, uid, _, name, version, _ in rows if kind == "inference_completed"}
    counts: dict[tuple[str, str], Counter[str]] = {}
    for kind, uid, at, _, _, payload in rows:
        if kind == EventType.FINDING_ASSESSED.value and _midnight(first) <= at < _midnight(last + timedelta(days=1)):
            fields = json.loads(payload)
            counts.setdefault((fields["finding"], model_of[uid]), Counter())[fields["decision"]] += 1
    return counts


def test_agreement_by_model_version_shows_the_new_version_decided_worse_label_by_label(page: Page, site: Site) -> None:
    first = site.today - timedelta(days=6)
    sign_in(page, site.url, "qa.monday")
    page.goto(f"{site.url}/console/dashboard?from={first}&to={site.today}&period=day")
    expected = _decisions_by_model(site.store, first, site.today)
    old, new = f"{MODEL[0]} {MODEL[1]}", f"{NEW_MODEL[0]} {NEW_MODEL[1]}"
    assert {model for _, model in expected} == {old, new}  # the window holds days of both versions
    table = page.locator("#agreement-models")
    for (label, model), counts in expected.items():
        row = table.locator(f'tr[data-label="{label}"][data-model="{model}"]')
        expect(row).to_have_count(1)
        expect(row.locator("td").nth(2)).to_have_text(str(sum(counts.values())))
        for decision in ("accept", "reject", "modify"):
            expect(row.locator(f'td[data-decision="{decision}"]')).to_contain_text(str(counts[decision]))
    accepted = {key: counts["accept"] / sum(counts.values()) for key, counts in expected.items()}
    assert sum(accepted[(label, old)] > accepted[(label, new)] for label, model in expected if model == new) >= 5

    with page.expect_download() as download:
        page.locator('a[data-csv="agreement_models"]').click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    findings = [row for row in rows if row["label"] != "(whole draft)"]
    assert {(row["label"], row["model"]): int(row["decisions"]) for row in findings} == {
        key: sum(counts.values()) for key, counts in expected.items()
    }
    assert len(rows) == table.locator("tbody tr").count()  # the CSV holds what the table shows, row for row


def test_a_week_view_says_which_days_it_counts(page: Page, site: Site) -> None:
    wednesday = site.today - timedelta(days=(site.today.weekday() - 2) % 7)  # the latest Wednesday up to today
    monday = wednesday - timedelta(days=2)
    sign_in(page, site.url, "qa.monday")
    page.goto(f"{site.url}/console/dashboard?from={wednesday}&to={site.today}&period=week")
    with site.store.session() as session:
        received = session.scalar(
            sa.select(sa.func.count()).select_from(Revision)
            .where(Revision.opened_at >= _midnight(monday), Revision.opened_at < _midnight(site.today + timedelta(1)))
        )  # fmt: skip
    volume = page.locator("#volume tr").filter(has_text="received (revisions opened)")
    expect(volume.locator("td.num")).to_have_text(str(received))  # whole weeks: from the Monday
    expect(page.get_by_test_id("scope")).to_contain_text(f"{monday} to {site.today} (UTC)")
    page.locator('#agreement-table a[data-decision="accept"]').first.click()  # the studies behind a count
    expect(page.get_by_test_id("scope")).to_contain_text(f"{monday} to {site.today} (UTC)")


def test_failures_and_latency_match_the_rows(page: Page, site: Site) -> None:
    first = site.today - timedelta(days=6)
    sign_in(page, site.url, "qa.monday")
    page.goto(f"{site.url}/console/dashboard?from={first}&to={site.today}&period=day")
    with site.store.session() as session:
        reasons = dict(
            session.execute(
                sa.select(Revision.reason, sa.func.count())
                .where(
                    Revision.state == "failed",
                    Revision.finished_at >= _midnight(first),
                    Revision.finished_at < _midnight(site.today + timedelta(days=1)),
                )
                .group_by(Revision.reason)
            ).all()
        )
    # Each failed revision here failed once (none was retried; its study_failed event has the revision's reason):
    # its attempts by reason, then the studies.
    shown = page.locator("#volume tr.bad:not([data-testid=failed-studies])")
    expect(shown).to_have_count(len(reasons))
    for reason, count in reasons.items():
        expect(shown.filter(has_text=f"failed attempt: {reason}").locator("td.num")).to_have_text(str(count))
    assert sum(reasons.values()) >= 2
    expect(page.get_by_test_id("failed-studies").locator("td.num")).to_have_text(str(sum(reasons.values())))

    with site.store.session() as session:  # last image → first SR delivered, per revision read in the window
        totals = [
            (delivered - received).total_seconds()
            for received, delivered in session.execute(
                sa.select(
                    sa.select(sa.func.max(Instance.received_at)).where(Instance.revision_id == Revision.id)
                    .scalar_subquery(),
                    sa.select(sa.func.min(OutboxMessage.delivered_at)).where(OutboxMessage.revision_id == Revision.id)
                    .scalar_subquery(),
                ).where(Revision.reported_at >= _midnight(first),
                        Revision.reported_at < _midnight(site.today + timedelta(days=1)))
            )
        ]  # fmt: skip
    cuts = statistics.quantiles(totals, n=100, method="inclusive")  # linear between closest ranks
    p50, p95 = cuts[49], cuts[94]
    row = page.locator('#latency-table tr[data-stage="total"]')
    expect(row.locator("td.num").nth(0)).to_have_text(str(len(totals)))
    expect(row.locator("td.num").nth(1)).to_have_text(f"{p50:.0f} s")
    expect(row.locator("td.num").nth(2)).to_have_text(f"{p95:.0f} s")
    with page.expect_download() as download:
        page.locator('a[data-csv="latency"]').click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    whole = next(row for row in rows if row["period"] == "whole window" and row["stage"] == "total")
    assert float(whole["p50_s"]) == pytest.approx(p50, abs=0.01)
    assert float(whole["p95_s"]) == pytest.approx(p95, abs=0.01)


#: Per chart on the page: its title, its description, and per line its dash pattern, per bar stack its segments
#: and the hatched overlays drawn on them.
CHARTS_JS = """[...document.querySelectorAll('svg.chart')].map(svg => ({
  title: svg.querySelector('title').textContent,
  desc: svg.querySelector('desc').textContent,
  labelledby: (svg.getAttribute('aria-labelledby') || '').split(' ').map(id => document.getElementById(id) !== null),
  lines: [...svg.querySelectorAll('polyline.chart-line')].map(l =>
    [l.getAttribute('class'), l.getAttribute('stroke-dasharray') || '']),
  stacks: [...svg.querySelectorAll('rect.chart-bar')].map(r => r.getAttribute('class')),
  hatches: svg.querySelectorAll('rect.chart-hatch').length,
}))"""


def test_every_chart_is_readable_without_colour(page: Page, site: Site) -> None:
    first = site.today - timedelta(days=6)
    sign_in(page, site.url, "qa.monday")
    page.goto(f"{site.url}/console/dashboard?from={first}&to={site.today}&period=day")
    charts = page.evaluate(CHARTS_JS)
    assert len(charts) > 10
    for chart in charts:
        assert chart["labelledby"] == [True, True], chart["title"]  # name and description both resolve
        dashes = {cls.split()[-1]: dash for cls, dash in chart["lines"]}
        assert len(set(dashes.values())) == len(dashes), (chart["title"], dashes)  # each line its own dash
        stacks = [cls.split()[-1] for cls in chart["stacks"] if "chart-bar-0" not in cls.split()]
        if "chart-bars" in page.locator("svg.chart").nth(charts.index(chart)).get_attribute("class"):
            assert chart["hatches"] == len(stacks), chart["title"]  # every later stack hatched

    # The model switch read from the chart's description alone: each day's readings per version, as the CSV has them.
    models = next(chart for chart in charts if chart["title"] == "Model versions")
    with page.expect_download() as download:
        page.locator('a[data-csv="models"]').click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert {row["model"] for row in rows} == {f"{MODEL[0]} {MODEL[1]}", f"{NEW_MODEL[0]} {NEW_MODEL[1]}"}
    said = dict(part.split(": ", 1) for part in models["desc"].split(". ", 1)[1].split("; "))
    for row in rows:
        day = date.fromisoformat(row["period"]).strftime("%d %b")
        assert f"{row['model']} {row['readings']}" in said[day], (day, said[day])
    latency = next(chart for chart in charts if chart["title"] == "Last image → SR at the PACS")
    assert f"{site.today.strftime('%d %b')}: p50 " in latency["desc"]


def test_agreement_per_finding_over_time_matches_a_hand_count(page: Page, site: Site) -> None:
    first = site.today - timedelta(days=6)
    with site.store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.recorded_at, AuditEventRow.payload).where(
                AuditEventRow.event_type == EventType.FINDING_ASSESSED.value,
                AuditEventRow.recorded_at >= _midnight(first),
                AuditEventRow.recorded_at < _midnight(site.today + timedelta(days=1)),
            )
        ).all()
    expected: dict[tuple[str, str], Counter[str]] = {}  # (UTC day, label) -> decisions
    for at, payload in rows:
        fields = json.loads(payload)
        expected.setdefault((at.date().isoformat(), fields["finding"]), Counter())[fields["decision"]] += 1
    sign_in(page, site.url, "qa.monday")
    page.goto(f"{site.url}/console/dashboard?from={first}&to={site.today}&period=day")
    with page.expect_download() as download:
        page.locator('a[data-csv="agreement_periods"]').click()
    shown = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    findings = {(row["period"], row["label"]): row for row in shown if row["label"] != "(whole draft)"}
    assert set(findings) == set(expected)
    for key, counts in expected.items():
        row = findings[key]
        assert (int(row["decisions"]), int(row["accepted"]), int(row["rejected"]), int(row["modified"])) == (
            sum(counts.values()),
            counts["accept"],
            counts["reject"],
            counts["modify"],
        ), key
    # The chart says the same, point by point, in its text alternative.
    label = "Pleural Effusion"
    desc = page.locator(f'#agreement-periods figure[data-label="{label}"] svg desc').text_content() or ""
    for (day, name), counts in expected.items():
        if name == label:
            share = f"{counts['accept'] / sum(counts.values()) * 100:.0f}%"
            assert f"{date.fromisoformat(day).strftime('%d %b')}: accepted {share}" in desc

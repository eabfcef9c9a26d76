"""The QA dashboard over real SQLite and PostgreSQL: roles, figures against the seeded truth, CSV, bad input, audit.

A 60-day history (tests/dashboard_support.py: about 100 studies a day, a drift planted in one label for the last
20 days, a failure burst 10 days ago) is written straight into the tables; the dashboard's numbers, computed by
SQL aggregates, must equal what the seed itself counts in Python.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import Seeded, seed_history
from radtrace.audit.schema import AuditEventRow
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Instance, Revision, Study
from radtrace.testing.services import temporary_postgres_database

pytestmark = pytest.mark.integration


@dataclass
class Site:
    store: Store
    seeded: Seeded
    clients: dict[str, TestClient]
    today: date

    def csv(self, chart: str, query: str = "") -> list[dict[str, str]]:
        answer = self.clients["qa"].get(f"/console/dashboard/{chart}.csv{query}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/csv")
        return list(csv.DictReader(io.StringIO(answer.text)))

    def events(self, kind: str) -> list[tuple[str | None, dict[str, object]]]:
        with self.store.session() as session:
            rows = session.execute(
                sa.select(AuditEventRow.actor_user, AuditEventRow.payload)
                .where(AuditEventRow.event_type == kind)
                .order_by(AuditEventRow.seq)
            ).all()
        return [(user, json.loads(payload)) for user, payload in rows]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One seeded history per database for the whole module (seeding is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'radtrace.db'}"
        if request.param == "postgresql":
            url = stack.enter_context(temporary_postgres_database())
        store = Store.from_url(url)
        stack.callback(store.dispose)
        upgrade(store)
        yield from _site(store, tmp_path)


def _site(store: Store, tmp_path: Path) -> Iterator[Site]:
    seeded = seed_history(store, days=60, per_day=(90, 110))
    settings = console_settings(tmp_path, store)
    clients = {}
    for name, role in (("qa", "qa"), ("admin", "admin"), ("radiologist", "radiologist")):
        add_user(store, f"{name}.dash", role)
        clients[name] = console_client(store, settings).__enter__()
        sign_in(clients[name], f"{name}.dash")
    yield Site(store, seeded, clients, datetime.now(UTC).date())
    for client in clients.values():
        client.__exit__(None, None, None)


def test_qa_and_admin_see_the_dashboard_a_radiologist_does_not(site: Site) -> None:
    for role in ("qa", "admin"):
        page = site.clients[role].get("/console/dashboard")
        assert page.status_code == 200
        assert "QA dashboard" in page.text
        assert "Single site" in page.text
    for url in ("/console/dashboard", "/console/dashboard/volume.csv",
                "/console/dashboard/agreement?label=Atelectasis&decision=accept"):  # fmt: skip
        refused = site.clients["radiologist"].get(url)
        assert refused.status_code == 403, url
        assert "qa and admin" in refused.json()["detail"]
    with TestClient(site.clients["qa"].app, base_url="http://testserver") as stranger:
        answer = stranger.get("/console/dashboard", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login"


def test_the_planted_drift_and_burst_are_flagged_and_nothing_else(site: Site) -> None:
    page = site.clients["qa"].get("/console/dashboard").text
    drift_box = page.split('data-testid="drift-alerts"')[1].split("</div>")[0]
    assert f'data-label="{site.seeded.drift_label}"' in drift_box
    assert drift_box.count('class="alert"') == 1  # the drifting label only (its runs are listed in one line)
    burst_box = page.split('data-testid="failure-bursts"')[1].split("</div>")[0]
    assert burst_box.count('class="alert"') == 1
    assert f'data-period="{site.seeded.burst_day}"' in burst_box
    flagged = {row["label"] for row in site.csv("prevalence") if row["drift_alert"] == "True"}
    assert flagged == {site.seeded.drift_label}
    bursts = [row["period"] for row in site.csv("failures") if row["burst"] == "True"]
    assert bursts == [site.seeded.burst_day.isoformat()]


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def test_figures_equal_the_seeded_truth(site: Site) -> None:
    first = site.today - timedelta(days=29)
    in_window = [(when, labels) for when, labels in site.seeded.readings if when.date() >= first]
    totals = Counter(_day(when) for when, _ in in_window)
    present = Counter((_day(when), label) for when, labels in in_window for label in labels)
    rows = site.csv("prevalence")
    assert {row["period"] for row in rows} == {(first + timedelta(days=i)).isoformat() for i in range(30)}
    for row in rows:
        assert int(row["read"]) == totals[row["period"]], row
        assert int(row["present"]) == present[(row["period"], row["label"])], row

    revisions = site.seeded.revisions
    volume = {row["period"]: row for row in site.csv("volume")}
    read = Counter(_day(r["reported_at"]) for r in revisions if r.get("reported_at"))
    failed = Counter(_day(r["finished_at"]) for r in revisions if r.get("state") == "failed")
    skipped = Counter((_day(r["finished_at"]), r["reason"]) for r in revisions if r.get("state") == "skipped")
    for day, row in volume.items():
        assert int(row["read"]) == read[day]
        assert int(row["delivered"]) == read[day]  # every read study's SR reached the PACS in the seed
        assert int(row["failed"]) == failed[day]
        for column, count in row.items():
            if column.startswith("skipped: "):
                assert int(count) == skipped[(day, column.removeprefix("skipped: "))]

    weekly = site.csv("prevalence", "?period=week")
    monday = first - timedelta(days=first.weekday())
    assert weekly[0]["period"] == monday.isoformat()
    for row in weekly:
        start = date.fromisoformat(row["period"])
        days = [(start + timedelta(days=i)).isoformat() for i in range(7)]
        assert int(row["read"]) == sum(1 for when, _ in site.seeded.readings if _day(when) in days), (
            row
        )  # a week counts its days, the days before `from` included


def test_latency_and_agreement_cells_lead_to_their_studies(site: Site) -> None:
    stages = {row["stage"]: row for row in site.csv("latency") if row["period"] == "whole window"}
    assert list(stages) == ["settle", "queue_wait", "read_and_report", "dispatch", "total"]
    assert 10 <= float(stages["settle"]["p50_s"]) <= 14  # the seed settles 10-14 s after the last image
    assert float(stages["total"]["p95_s"]) < float(stages["total"]["target_s"])
    agreement = {row["label"]: row for row in site.csv("agreement")}
    row = agreement["Pleural Effusion"]
    assert int(row["accepted"]) + int(row["rejected"]) + int(row["modified"]) == int(row["decisions"])
    assert float(row["accepted_ci95_low"]) < float(row["accepted_share"]) < float(row["accepted_ci95_high"])
    listed = site.clients["qa"].get("/console/dashboard/agreement?label=Pleural+Effusion&decision=reject")
    assert listed.status_code == 200
    assert listed.text.count('href="/console/studies/') == int(row["rejected"])
    page = site.clients["qa"].get("/console/dashboard").text
    assert "/console/dashboard/agreement?label=Pleural+Effusion&amp;decision=reject" in page


@pytest.mark.parametrize(
    ("query", "status", "reason"),
    [
        ("?from=2026-13-01", 422, "month value is outside"),
        ("?from=2026-03-02&to=2026-03-01", 422, "from (2026-03-02) is after to (2026-03-01)"),
        ("?from=2024-01-01&to=2026-01-01", 422, "at most 366 days"),
        ("?period=month", 422, "'day' or 'week'"),
        # the window's baseline or its last period would leave the calendar: a reason, not a 500
        ("?from=0001-01-01&to=0001-01-05", 422, "between 1970-01-01 and 9998-12-31"),
        ("?from=9999-12-25&to=9999-12-31&period=week", 422, "between 1970-01-01 and 9998-12-31"),
    ],
)
def test_bad_parameters_are_refused_with_a_reason(site: Site, query: str, status: int, reason: str) -> None:
    cell = f"/console/dashboard/agreement?label=Edema&decision=accept&{query[1:]}"
    for url in (f"/console/dashboard{query}", f"/console/dashboard/volume.csv{query}", cell):
        answer = site.clients["qa"].get(url)
        assert answer.status_code == status
        assert reason in answer.text
    missing = site.clients["qa"].get("/console/dashboard/secrets.csv")
    assert missing.status_code == 404
    assert "the charts are: volume" in missing.json()["detail"]


def test_csv_cells_cannot_become_formulas_and_every_use_is_audited(site: Site) -> None:
    with site.store.session() as session:  # an image whose sender and body part a spreadsheet would run
        study_id = int(session.scalar(sa.select(sa.func.max(Study.id))) or 0) + 1
        session.add(Study(id=study_id, study_uid=f"1.2.3.{study_id}", study_key="f" * 16))
        session.add(Revision(id=study_id, study_id=study_id, number=1, state="receiving"))
        session.add(Instance(study_id=study_id, revision_id=study_id, sop_instance_uid=f"1.2.3.{study_id}.1",
                             sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1", transfer_syntax_uid="1.2.840.10008.1.2.1",
                             body_part="-2+3", calling_ae="=cmd|' /C calc'!A0"[:16], path="x.dcm", size_bytes=1,
                             sha256="0" * 64, received_at=utc_now()))  # fmt: skip
    rows = list(csv.reader(io.StringIO(site.clients["qa"].get("/console/dashboard/mix.csv").text)))
    values = {row[2] for row in rows[1:] if row[0] == site.today.isoformat()}
    assert {"'-2+3", "'=cmd|' /C calc'!"} <= values
    assert not any(value.startswith(("=", "+", "-", "@")) for row in rows for value in row)
    assert site.clients["qa"].get("/console/dashboard/queue.csv").text.splitlines()[1].startswith("1,")  # receiving
    site.clients["admin"].get("/console/dashboard?period=week")
    site.clients["qa"].get("/console/dashboard/agreement?label=Atelectasis&decision=modify")
    viewed = [(user, payload) for user, payload in site.events("audit_queried") if payload.get("view") == "dashboard"]
    assert ("admin.dash", "week") in {(user, payload["period"]) for user, payload in viewed}
    assert any(payload.get("label") == "Atelectasis" and payload.get("decision") == "modify" for _, payload in viewed)
    exported = [payload for user, payload in site.events("audit_exported") if user == "qa.dash"]
    assert [payload["chart"] for payload in exported][-2:] == ["mix", "queue"]
    assert all(payload["via"] == "console" and payload["view"] == "dashboard" for payload in exported)


def test_migration_0008_copies_the_decisions_already_recorded(database_url: str) -> None:
    from alembic import command

    from radtrace.audit.events import Actor, AuditEvent, EventType
    from radtrace.audit.recorder import AuditRecorder
    from radtrace.console.dashboard_agreement import sync_decisions
    from radtrace.console.schema import QaDecision
    from radtrace.store.migrate import _config

    store = Store.from_url(database_url)
    try:
        with store.engine.connect() as connection:
            command.upgrade(_config(connection), "0007")
            connection.commit()
        actor = Actor(user="dr.before")

        def decide(label: str | None, decision: str) -> AuditEvent:
            if label is None:
                return AuditEvent(EventType.DRAFT_ASSESSED, actor, study_uid="1.2.3",
                                  payload={"revision": 2, "decision": decision, "reason_code": "AGREE"})  # fmt: skip
            return AuditEvent(EventType.FINDING_ASSESSED, actor, study_uid="1.2.3", labels=(label,),
                              payload={"revision": 2, "finding": label, "decision": decision})  # fmt: skip

        recorder = AuditRecorder(store)
        recorder.record(decide("Edema", "reject"))
        recorder.record(decide("Edema", "accept"))
        recorder.record(decide(None, "accept"))
        upgrade(store)
        recorder.record(decide("Pleural Effusion", "modify"))  # after the migration: copied on the next view
        assert sync_decisions(store) == 1
        assert sync_decisions(store) == 0
        with store.session() as session:
            rows = session.execute(
                sa.select(
                    QaDecision.study_uid,
                    QaDecision.revision,
                    QaDecision.label,
                    QaDecision.decision,
                    QaDecision.superseded,
                ).order_by(QaDecision.seq)
            ).all()
        assert [tuple(row) for row in rows] == [
            ("1.2.3", 2, "Edema", "reject", True),  # replaced by the next one
            ("1.2.3", 2, "Edema", "accept", False),
            ("1.2.3", 2, "", "accept", False),
            ("1.2.3", 2, "Pleural Effusion", "modify", False),
        ]
        recorder.record(decide("Pleural Effusion", "accept"))  # a change of mind after the migration
        assert sync_decisions(store) == 1
        with store.session() as session:
            current = session.execute(
                sa.select(QaDecision.label, QaDecision.decision).where(~QaDecision.superseded).order_by(QaDecision.seq)
            ).all()
        assert [tuple(row) for row in current] == [("Edema", "accept"), ("", "accept"), ("Pleural Effusion", "accept")]
    finally:
        store.dispose()


NONE = "(none)"


def test_the_input_mix_counts_each_images_detector_photometric_and_spacing(site: Site) -> None:
    """Manufacturer, model, photometric interpretation and pixel spacing come per image received, as modality does."""
    rows = list(csv.DictReader(io.StringIO(site.clients["qa"].get("/console/dashboard/mix.csv").text)))
    by_attribute: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = by_attribute.setdefault(row["attribute"], {})
        counts[row["value"]] = counts.get(row["value"], 0) + int(row["count"])
    images = sum(by_attribute["modality"].values())  # another test adds an image with none of them: "(none)"
    assert set(by_attribute["manufacturer"]) - {NONE} == {"Acme Imaging", "Borealis"}
    assert set(by_attribute["manufacturer's model name"]) - {NONE} == {"DR-500", "DR-700", "Flat 43"}
    assert set(by_attribute["pixel spacing (mm)"]) - {NONE} == {"0.139", "0.148", "0.1"}
    assert set(by_attribute["photometric interpretation"]) - {NONE} == {"MONOCHROME1", "MONOCHROME2"}
    for attribute in ("manufacturer", "manufacturer's model name", "pixel spacing (mm)", "photometric interpretation"):
        assert sum(by_attribute[attribute].values()) == images, attribute


def test_a_charts_csv_reads_only_what_it_writes_and_equals_the_full_reading(site: Site) -> None:
    """Each CSV used to read every figure of the window (a year's input mix for the failures CSV: 4.5 s of the
    5 s on a year of 100,000 studies); now only its own, with the same rows as from every figure read."""
    from radtrace.console.dashboard_csv import TABLES, csv_text
    from radtrace.console.dashboard_figures import read_figures
    from radtrace.console.dashboard_queries import Window

    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    window = Window(site.today - timedelta(days=29), site.today)
    full = read_figures(site.store, window, datetime.now(UTC))
    touched: dict[str, bool] = {}
    sa.event.listen(site.store.engine, "before_cursor_execute", seen)
    try:
        for chart in TABLES:
            statements.clear()
            answer = site.clients["qa"].get(f"/console/dashboard/{chart}.csv")
            assert answer.status_code == 200
            touched[chart] = any("FROM instances" in statement for statement in statements)
            if chart != "queue":  # its oldest wait is timed by the request
                assert answer.text == csv_text(TABLES[chart](full)), chart
    finally:
        sa.event.remove(site.store.engine, "before_cursor_execute", seen)
    assert {chart for chart, read in touched.items() if read} == {"mix", "latency"}  # before: every chart


def test_a_sampled_latency_says_so_in_its_csv(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over LATENCY_SAMPLE studies read, the latency CSV's studies are one in every k: its sampled_every column says
    k (before, the CSV gave the sample's count as "studies", a tenth of the volume CSV's read, and nothing else)."""
    from radtrace.console import dashboard_figures

    read = sum(int(row["read"]) for row in site.csv("volume"))
    monkeypatch.setattr(dashboard_figures, "LATENCY_SAMPLE", read // 4)
    every = -(-read // (read // 4))
    rows = site.csv("latency")
    assert {row["sampled_every"] for row in rows} == {str(every)}
    (total,) = [row for row in rows if row["period"] == "whole window" and row["stage"] == "total"]
    assert int(total["studies"]) == pytest.approx(read / every, rel=0.2)
    assert f"one in every {every} of the {read} studies read" in site.clients["qa"].get("/console/dashboard").text
    monkeypatch.undo()
    assert {row["sampled_every"] for row in site.csv("latency")} == {"1"}

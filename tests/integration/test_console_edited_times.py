"""An audit row whose recorded_at was edited into a non-time (SQLite keeps any text) in the console and QA readers.

audit/ shows such a row as unreadable (``audit verify`` names it: see test_audit_tamper). The study page, the QA
dashboard, the agreement page and the QA rules' gauges read the audit table themselves; each raised on such a row
(the driver's date parsing, or a day that is not a date), so one edited row made those pages answer 500 for good.
Now the study page shows the decision with its time as unreadable, and the figures leave the row out (they cannot
place it in time).
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from audit_support import as_superuser
from console_support import add_user, console_client, console_settings, csrf_of, reported_study, sign_in, study_path
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings
from radtrace.console.dashboard_agreement import sync_decisions
from radtrace.model.reader import StudyReader
from radtrace.qa.metrics import QaRuleCollector, read_rule_inputs
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def _in_window() -> str:
    """Text that sorts inside the dashboard's 30-day window but is no time: its first ten characters (the day the
    dashboard groups by) are no date either."""
    return (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")[:9] + "x"


#: 'yesterday' sorts after every stored time, 42 before; the third sorts within the default window; the fourth is
#: a day SQLite's date() keeps as it is (no 31 November) with a readable hour.
EDITS = ["'yesterday'", "42", "in-window", "'2026-11-31 10:00:00'"]


def _stored(edit: str) -> str:
    return f"'{_in_window()}'" if edit == "in-window" else edit


def _finding_form(page: str, index: int) -> dict[str, str]:
    forms = re.findall(
        r'<form method="post" action="[^"]+/findings" class="finding-form"[^>]*>(.*?)</form>', page, re.S
    )
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', forms[index]))


def _edit(store: Store, stored: str, *event_types: str) -> None:
    """The latest event of each type gets ``stored`` (an SQL literal) as its recorded_at."""
    table = AuditEventRow
    with store.session() as session:
        seqs = [
            session.scalar(sa.select(sa.func.max(table.seq)).where(table.event_type == kind)) for kind in event_types
        ]
    assert None not in seqs
    as_superuser(store, *(f"UPDATE audit_events SET recorded_at = {stored} WHERE seq = {seq}" for seq in seqs))  # noqa: S608


def _signed_in(store: Store, settings: Settings, name: str, role: str) -> TestClient:
    add_user(store, name, role)
    client = console_client(store, settings).__enter__()
    sign_in(client, name)
    return client


@pytest.mark.parametrize("edit", EDITS)
def test_a_decision_whose_time_was_edited_is_shown_as_unreadable_on_the_study_page(
    sqlite_store: Store, tmp_path: Path, edit: str
) -> None:
    store = sqlite_store
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=81)
    url = study_path(store, study_uid)
    one = _signed_in(store, settings, "dr.one", "radiologist")
    two = _signed_in(store, settings, "dr.two", "radiologist")
    try:
        stale = two.get(url).text
        accepted = one.post(f"{url}/findings", data={**_finding_form(one.get(url).text, 0), "decision": "accept"},
                            follow_redirects=False)  # fmt: skip
        assert accepted.status_code == 303
        _edit(store, _stored(edit), "finding_assessed")
        page = one.get(url)
        assert page.status_code == 200, page.text
        assert "accepted by dr.one" in page.text
        # a decision sent from a page loaded before it: the conflict names it, its time as unreadable
        late = two.post(f"{url}/findings", data={**_finding_form(stale, 0), "decision": "reject"},
                        follow_redirects=False)  # fmt: skip
        assert late.status_code == 409, late.text
        assert "dr.one" in late.text
        assert "at an unreadable time" in late.text
    finally:
        for client in (one, two):
            client.__exit__(None, None, None)


@pytest.mark.parametrize("edit", EDITS)
def test_the_dashboard_agreement_page_and_qa_rules_leave_out_a_row_whose_time_was_edited(
    sqlite_store: Store, tmp_path: Path, edit: str
) -> None:
    store = sqlite_store
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    first, second = (reported_study(settings, store, reader, seed=seed) for seed in (82, 83))
    doctor = _signed_in(store, settings, "dr.dash", "radiologist")
    qa = _signed_in(store, settings, "qa.dash", "qa")
    try:
        for study_uid in (first, second):
            url = study_path(store, study_uid)
            answer = doctor.post(f"{url}/findings",
                                 data={**_finding_form(doctor.get(url).text, 0), "decision": "accept"},
                                 follow_redirects=False)  # fmt: skip
            assert answer.status_code == 303
            if study_uid == first:
                sync_decisions(store)  # the first decision is copied before the second one's time is edited
        _edit(store, _stored(edit), "finding_assessed", "inference_completed")
        dashboard = qa.get("/console/dashboard")
        assert dashboard.status_code == 200, dashboard.text
        for chart in ("volume", "prevalence", "models", "agreement"):
            csv = qa.get(f"/console/dashboard/{chart}.csv")
            assert csv.status_code == 200, (chart, csv.text)
        models = qa.get("/console/dashboard/models.csv").text
        assert sum(int(line.rsplit(",", 1)[1]) for line in models.splitlines()[1:] if line) == 1  # one left out
        agreement = qa.get("/console/agreement")
        assert agreement.status_code == 200, agreement.text
        assert sync_decisions(store) == 0  # the edited decision is not copied, now or later
        readings, _endings = read_rule_inputs(store, datetime.now(UTC) - timedelta(days=40))
        assert len(readings) == 1
        assert QaRuleCollector(settings, store).state().failure_rate == 0.0
    finally:
        for client in (doctor, qa):
            client.__exit__(None, None, None)


def test_a_payload_edited_into_something_that_is_not_json_leaves_the_worklist_and_study_page_working(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """audit/ shows such a payload raw (``unreadable_payload``); the worklist's sync and the study page decoded
    every payload and raised, so one edited reading stopped the worklist for every radiologist."""
    store = sqlite_store
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    edited, other = (reported_study(settings, store, reader, seed=seed) for seed in (84, 85))
    table = AuditEventRow
    with store.session() as session:
        reading_seq = session.scalar(
            sa.select(table.seq).where(table.study_uid == edited, table.event_type == "inference_completed")
        )
    # before the console has seen either study: the worklist's sync reads the edited reading
    as_superuser(store, f"UPDATE audit_events SET payload = '{{not json' WHERE seq = {reading_seq}")  # noqa: S608
    doctor = _signed_in(store, settings, "dr.payload", "radiologist")
    try:
        worklist = doctor.get("/console/worklist?filter=all")
        assert worklist.status_code == 200, worklist.text
        assert "RT0000085" in worklist.text
        url = study_path(store, other)
        answer = doctor.post(f"{url}/findings", data={**_finding_form(doctor.get(url).text, 0), "decision": "accept"},
                             follow_redirects=False)  # fmt: skip
        assert answer.status_code == 303
        with store.engine.connect() as connection:  # the guards are off since as_superuser
            connection.exec_driver_sql(
                "UPDATE audit_events SET payload = 'null' WHERE seq = (SELECT max(seq) FROM audit_events "
                "WHERE event_type = 'finding_assessed')"
            )
            connection.commit()
        page = doctor.get(url)
        assert page.status_code == 200, page.text
        assert "accepted by dr.payload" not in page.text  # the edited decision cannot be read as one
        unreadable = doctor.get(study_path(store, edited))
        assert unreadable.status_code == 404, unreadable.text  # its reading can no longer be read
    finally:
        doctor.__exit__(None, None, None)


def test_a_pending_assessment_sr_named_by_an_edited_decision_is_left_and_the_console_still_starts(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The console settles pending assessment SRs when it starts; one named by a draft decision whose payload was
    edited into something that is not JSON made that settlement raise, and the console did not start."""
    store = sqlite_store
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=86)
    doctor = _signed_in(store, settings, "dr.pending", "radiologist")
    try:
        page = doctor.get(study_path(store, study_uid)).text
        form = {"csrf_token": csrf_of(page), "decision": "reject", "reason": "RT-R2", "seen": ""}
        answer = doctor.post(f"{study_path(store, study_uid)}/draft", data=form, follow_redirects=False)
        assert answer.status_code == 303, answer.text
    finally:
        doctor.__exit__(None, None, None)
    root = settings.data_dir / "assessments"
    [kept] = [path for path in root.rglob("*.dcm") if ".pending" not in path.parts]
    pending = root / ".pending" / kept.name  # as a crash after the commit, before the rename, leaves it
    pending.parent.mkdir(exist_ok=True)
    kept.rename(pending)
    hour_ago = time.time() - 3600
    os.utime(pending, (hour_ago, hour_ago))
    uid = kept.name.removesuffix(".dcm")
    edited = f'{{"assessment_sr": {{"sop_instance_uid": "{uid}"'  # cut short: no longer JSON
    as_superuser(store, f"UPDATE audit_events SET payload = '{edited}' WHERE event_type = 'draft_assessed'")  # noqa: S608
    with console_client(store, settings) as client:
        assert client.get("/console/login").status_code == 200
    assert pending.exists()  # neither kept as decided nor removed as undecided
    assert not kept.exists()

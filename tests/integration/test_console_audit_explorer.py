"""The console's audit explorer over real SQLite and PostgreSQL: roles, filters, paging, timelines, CSV, verify.

The audit log is the QA scenario of audit_support (four studies at known times); what each page shows is checked
against what was seeded, and every use is checked in the audit log the way an auditor would look for it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from audit_support import STUDY_A, STUDY_B, T0, Seeded, seed_audit_log
from console_support import add_user, console_client, console_settings, csrf_of, sign_in
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.presentation import defuse_formula
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.console import explorer_verify
from radtrace.store.engine import Store, is_postgresql

pytestmark = pytest.mark.integration


@dataclass
class Explorer:
    store: Store
    seeded: list[Seeded]
    make_client: Callable[[], TestClient]

    def as_user(self, name: str) -> TestClient:
        client = self.make_client()  # a server of its own
        assert f"{name} (" in sign_in(client, name).text
        return client

    def events(self, *types: str) -> list[sa.Row[tuple[str, str | None, str, str]]]:
        table = AuditEventRow
        query = sa.select(table.event_type, table.actor_user, table.outcome, table.payload)
        with self.store.session() as session:
            return list(session.execute(query.where(table.event_type.in_(types)).order_by(table.seq)).all())

    def seqs(self, event_type: str) -> list[int]:
        return [s.seq for s in self.seeded if s.event.type.value == event_type]


@pytest.fixture
def site(store: Store, tmp_path: Path) -> Iterator[Explorer]:
    seeded = seed_audit_log(store)
    for name, role in (("qa.quinn", "qa"), ("ad.min", "admin"), ("dr.rad", "radiologist")):
        add_user(store, name, role)
    settings = console_settings(tmp_path, store)
    return Explorer(store, seeded, lambda: console_client(store, settings))


def _shown_seqs(html: str) -> list[int]:
    return [int(seq) for seq in re.findall(r'<tr class="event [^"]*" data-seq="(\d+)"', html)]


def _next_url(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_only_qa_and_admin_open_the_explorer_and_only_admin_verifies_and_exports(site: Explorer) -> None:
    with site.make_client() as anonymous:
        assert anonymous.get("/console/audit", follow_redirects=False).headers["location"] == "/console/login"
    with site.as_user("dr.rad") as radiologist:
        for path in ("/console/audit", f"/console/audit/studies/{STUDY_A}", "/console/audit/verify",
                     "/console/audit/export.csv", "/console/audit/verify/progress"):  # fmt: skip
            assert radiologist.get(path).status_code == 403, path
        worklist = radiologist.get("/console/worklist").text
        assert 'href="/console/audit"' not in worklist
        refused = radiologist.post("/console/audit/verify", data={"csrf_token": csrf_of(worklist)})
        assert refused.status_code == 403
    with site.as_user("qa.quinn") as qa:
        page = qa.get("/console/audit")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert 'id="export"' not in page.text
        assert 'id="verify-link"' not in page.text
        assert qa.get(f"/console/audit/studies/{STUDY_A}").status_code == 200
        assert qa.get("/console/audit/export.csv").status_code == 403
        assert qa.get("/console/audit/verify").status_code == 403
        assert qa.post("/console/audit/verify", data={"csrf_token": csrf_of(page.text)}).status_code == 403
    with site.as_user("ad.min") as admin:
        page = admin.get("/console/audit")
        assert 'id="export"' in page.text
        assert 'id="verify-link"' in page.text
    assert site.events("audit_verified", "audit_exported") == []
    # what the radiologist was refused left no query behind; qa's and admin's explorer pages did
    assert [user for _, user, *_ in site.events("audit_queried")] == ["qa.quinn", "qa.quinn", "ad.min"]


def test_each_filter_selects_what_was_seeded_and_the_query_is_recorded_under_the_user(site: Explorer) -> None:
    failed = site.seqs("dispatch_failed")
    received = site.seqs("instance_received")
    first_day = [s.seq for s in site.seeded if s.at < T0.replace(day=4)]
    with site.as_user("qa.quinn") as qa:

        def shown(**filters: str) -> list[int]:
            page = qa.get("/console/audit", params={"limit": "200", "order": "asc", **filters})
            assert page.status_code == 200, page.text
            return _shown_seqs(page.text)

        assert shown(event_type="dispatch_failed") == failed
        assert shown(outcome="serious_failure", study_uid=STUDY_B) == failed
        assert shown(event_type="instance_received", accession="ACC-1001") == received[:2]
        assert shown(patient_id="PAT-0001", event_type="instance_received") == [received[0], received[1], received[4]]
        # datetime-local fields send no zone: the form reads them as UTC
        assert shown(since="2025-03-03T07:00", until="2025-03-04T00:00:00") == first_day
        assert shown(since="2025-03-03T08:00:00+01:00", until="2025-03-03T08:00:00Z") == first_day[:1]
        assert shown(label="Effusion") == [s.seq for s in site.seeded if "Effusion" in s.event.labels]
        assert shown(model_name="DeepMedix-R1", event_type="report_created") == site.seqs("report_created")[1:2]
        assert shown(actor="qa.quinn", event_type="audit_queried") != []  # the explorer's own queries
        page = qa.get("/console/audit", params={"event_type": "dispatch_failed"})
        assert re.search(rf'href="/console/audit/timeline/[\w-]+" class="timeline-link">{STUDY_B}</a>', page.text)
        assert '<option value="dispatch_failed" selected>' in page.text  # the form keeps what was asked
    recorded = site.events("audit_queried")
    assert {user for _, user, *_ in recorded} == {"qa.quinn"}
    filters = [json.loads(payload)["filters"] for *_, payload in recorded]
    page = {"limit": 200, "after_seq": 0}
    assert {"event_type": "dispatch_failed", **page} in filters
    assert {"since": "2025-03-03T07:00:00Z", "until": "2025-03-04T00:00:00Z", **page} in filters
    with site.store.session() as session:  # a patient lookup is recorded with the patient's ID in its column
        looked_up = session.scalars(
            sa.select(AuditEventRow.actor_user).where(
                AuditEventRow.event_type == "audit_queried", AuditEventRow.patient_id == "PAT-0001"
            )
        ).all()
    assert looked_up == ["qa.quinn"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"since": "yesterday"}, "since: Input should be a valid datetime"),
        ({"event_type": "coffee_break"}, "event_type: Input should be"),
        ({"outcome": "meh"}, "outcome: Input should be"),
        ({"since": "2025-03-04T00:00", "until": "2025-03-03T00:00"}, "is after until"),
        ({"limit": "500"}, "limit: at most 200 events a page (got &#39;500&#39;)"),
        ({"limit": "ten"}, "limit: Input should be a valid integer"),
        ({"after_seq": "-1"}, "after_seq: Input should be greater than or equal to 0"),
        ({"before_seq": "0"}, "before_seq: Input should be greater than or equal to 1"),
        ({"before_seq": str(2**63)}, "before_seq: Input should be less than or equal to"),
        ({"after_seq": "9", "before_seq": "4"}, "after_seq (9) is not below before_seq (4)"),
        ({"order": "sideways"}, "order: asc (oldest first) or desc (newest first) (got &#39;sideways&#39;)"),
        ({"label": "A,B"}, "a label never contains a comma"),
        ({"accession": "x" * 65}, "accession: String should have at most 64 characters"),
    ],
)
def test_a_bad_filter_gets_a_400_page_naming_it(site: Explorer, params: dict[str, str], reason: str) -> None:
    with site.as_user("ad.min") as admin:
        for path in ("/console/audit", "/console/audit/export.csv"):
            if path.endswith(".csv") and set(params) & {"limit", "after_seq", "before_seq", "order"}:
                continue  # the export has no page
            page = admin.get(path, params=params)
            assert page.status_code == 400, (path, page.text)
            assert page.headers["content-type"].startswith("text/html")
            assert reason in page.text, page.text
            assert 'id="audit-filters"' in page.text  # the form is back, to correct it
    assert site.events("audit_queried", "audit_exported") == []


def test_pages_follow_each_other_with_no_event_missed_or_repeated(site: Explorer) -> None:
    received = site.seqs("instance_received")
    assert len(received) == 7
    with site.as_user("qa.quinn") as qa:
        url: str | None = "/console/audit?event_type=instance_received&limit=3&order=asc"
        pages = []
        while url is not None:
            page = qa.get(url)
            assert page.status_code == 200
            pages.append(_shown_seqs(page.text))
            url = _next_url(page.text)
        assert 'rel="first"' in page.text
        assert "last page" in page.text
        # events appended meanwhile (the queries themselves) do not disturb the pages
    assert pages == [received[:3], received[3:6], received[6:]]
    with site.as_user("qa.quinn") as qa:  # a time to the microsecond survives into the next page's link
        page = qa.get("/console/audit", params={"since": "2025-03-03T08:00:00.000001Z", "limit": "1", "order": "asc"})
        after_t0 = [s.seq for s in site.seeded if s.at > T0]
        assert _shown_seqs(page.text) == after_t0[:1]
        next_url = _next_url(page.text)
        assert next_url is not None
        assert _shown_seqs(qa.get(next_url).text) == after_t0[1:2]
    cursors = [json.loads(payload)["next_after_seq"] for *_, payload in site.events("audit_queried")]
    assert cursors[:3] == [received[2], received[5], None]


def _link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_the_explorer_lists_newest_first_and_pages_to_older_and_back_to_newer_events(site: Explorer) -> None:
    """QA staff look for what happened last night: the list opens on the newest events (before: on the oldest, the
    day the site was installed), pages back to older ones and returns to newer ones, none missed or repeated."""
    received = site.seqs("instance_received")[::-1]
    with site.as_user("qa.quinn") as qa:
        page = qa.get("/console/audit", params={"event_type": "instance_received", "limit": "3"})
        assert page.status_code == 200
        assert 'id="order-note">Newest first<' in page.text
        assert _link(page.text, "prev") is None  # nothing newer
        pages, html = [_shown_seqs(page.text)], page.text
        while (older := _link(html, "next")) is not None:
            html = qa.get(older).text
            pages.append(_shown_seqs(html))
        assert pages == [received[:3], received[3:6], received[6:]]  # before: received[:3] oldest first
        assert "last page" in html
        back = []
        while (newer := _link(html, "prev")) is not None:
            html = qa.get(newer).text
            back.append(_shown_seqs(html))
        assert back == [received[3:6], received[:3]]
        first = _link(html, "first")
        assert first is not None
        assert _shown_seqs(qa.get(first).text) == received[:3]
        oldest = qa.get("/console/audit", params={"event_type": "instance_received", "limit": "3", "order": "asc"})
        assert _shown_seqs(oldest.text) == received[::-1][:3]
    recorded = [json.loads(payload)["filters"] for *_, payload in site.events("audit_queried")]
    assert {"event_type": "instance_received", "limit": 3, "after_seq": 0, "order": "desc"} in recorded


def test_the_timeline_shows_every_event_and_the_stages_with_their_durations(site: Explorer) -> None:
    events_a = [s.seq for s in site.seeded if s.event.study_uid == STUDY_A]
    with site.as_user("qa.quinn") as qa:
        page = qa.get(f"/console/audit/studies/{STUDY_A}")
        assert page.status_code == 200
        assert _shown_seqs(page.text) == events_a
        stages = dict(re.findall(r'<tr data-stage="(\w+)">.*?<td class="num">([^<]+)</td>', page.text, re.S))
        # audit_support: received +2 s, queued +12 s, started +3 s, completed +41.5 s, report +0.8 s, delivered +3.2
        assert stages == {"receive_to_queue": "14.000 s", "queue_wait": "3.000 s", "inference": "41.500 s",
                          "report": "0.800 s", "dispatch": "3.200 s", "total": "62.500 s"}  # fmt: skip
        assert "<svg" in page.text
        assert 'id="stage-chart"' in page.text
        failed = qa.get(f"/console/audit/studies/{STUDY_B}")
        assert 'data-stage="dispatch"' in failed.text
        assert "not reached" in failed.text
        missing = qa.get("/console/audit/studies/1.2.3.4")
        assert missing.status_code == 404
        assert "no audit event names this study" in missing.text
        bad = qa.get("/console/audit/studies/not-a-uid")
        assert bad.status_code == 400
        assert "digits and dots" in bad.text
    timelines = [json.loads(payload) for *_, payload in site.events("audit_queried")]
    assert [(t["view"], t["study_uid"], t["returned"]) for t in timelines] == [
        ("timeline", STUDY_A, len(events_a)),
        ("timeline", STUDY_B, 8),
        ("timeline", "1.2.3.4", 0),
    ]


def test_values_from_peers_are_escaped_in_pages_and_defused_in_the_csv(site: Explorer) -> None:
    hostile = AuditEvent(EventType.INSTANCE_REJECTED, Actor(ae_title="EVIL", host="10.6.6.6"),
                         study_uid="1.2.3.666", accession='=HYPERLINK("http://x","y")',
                         payload={"note": "<script>alert(1)</script>"})  # fmt: skip
    AuditRecorder(site.store).record(hostile)
    with site.as_user("ad.min") as admin:
        page = admin.get("/console/audit", params={"study_uid": "1.2.3.666"})
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        export = admin.get("/console/audit/export.csv", params={"study_uid": "1.2.3.666"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert export.headers["content-disposition"] == 'attachment; filename="radtrace-audit.csv"'
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 1
    assert rows[0]["accession"] == '\'=HYPERLINK("http://x","y")'
    assert rows[0]["actor_ae"] == "EVIL"
    assert rows[0]["study_uid"] == "1.2.3.666"


def test_the_export_streams_every_matching_event_and_is_recorded_first(site: Explorer) -> None:
    with site.as_user("ad.min") as admin:
        export = admin.get("/console/audit/export.csv", params={"event_type": "instance_received"})
        whole = admin.get("/console/audit/export.csv")
    assert [int(row["seq"]) for row in csv.DictReader(io.StringIO(export.text))] == site.seqs("instance_received")
    exported = site.events("audit_exported")
    assert [(user, json.loads(payload)["filters"]) for _, user, _, payload in exported] == [
        ("ad.min", {"event_type": "instance_received"}),
        ("ad.min", {}),
    ]
    seqs = [int(row["seq"]) for row in csv.DictReader(io.StringIO(whole.text))]
    assert seqs == list(range(1, seqs[-1] + 1))  # everything before the export's own event, none twice
    assert len(seqs) > len(site.seeded)


def _verify(client: TestClient) -> str:
    page = client.get("/console/audit/verify")
    started = client.post("/console/audit/verify", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert started.status_code == 303
    assert started.headers["location"] == "/console/audit/verify"
    run = client.app.state.audit_verifier.current  # type: ignore[attr-defined]
    assert run.done.wait(30)
    return client.get("/console/audit/verify").text


def test_verify_reports_an_intact_chain_and_is_recorded(site: Explorer) -> None:
    with site.as_user("ad.min") as admin:
        no_token = admin.post("/console/audit/verify", data={"csrf_token": "forged"})
        assert no_token.status_code == 403
        assert site.events("audit_verified") == []
        page = _verify(admin)
        assert 'data-state="ok"' in page
        head = site.events("audit_verified")
        progress = admin.get("/console/audit/verify/progress").json()
    assert re.search(r"No edited, inserted or missing event up to the head: (\d+) events checked", page)
    assert "rows removed from the end leave a valid, shorter chain" in page  # what a walk cannot see is said
    assert [(user, outcome) for _, user, outcome, _ in head] == [("ad.min", "success")]
    checked = json.loads(head[0].payload)["rows_checked"]
    assert f"up to the head: {checked} events checked" in page
    assert progress == {"running": False, "checked": checked, "total": checked}
    assert site.events("tamper_detected") == []


def _edit_as_superuser(store: Store, seq: int) -> None:
    """What an attacker with database superuser rights does: switch the guards off and edit (test_audit_chain)."""
    with store.engine.connect() as connection:
        if is_postgresql(store.engine):
            connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER ALL")
        else:
            connection.exec_driver_sql("DROP TRIGGER audit_events_no_update")
        connection.execute(sa.text("UPDATE audit_events SET outcome = 'success' WHERE seq = :seq"), {"seq": seq})
        connection.commit()


def test_verify_names_the_edited_row_and_raises_the_alert(site: Explorer) -> None:
    edited = site.seqs("dispatch_failed")[0]
    _edit_as_superuser(site.store, edited)
    with site.as_user("ad.min") as admin:
        page = _verify(admin)
    assert 'data-state="broken"' in page
    assert f"The audit chain is broken at seq {edited}:" in page
    assert "content does not match its hash (row edited)" in page
    assert [(u, o) for _, u, o, _ in site.events("audit_verified")] == [("ad.min", "serious_failure")]
    alert = site.events("tamper_detected")
    assert len(alert) == 1
    assert json.loads(alert[0].payload)["first_break"]["seq"] == edited


def test_a_second_verify_while_one_runs_is_refused_and_progress_is_reported(
    site: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, reached = threading.Event(), threading.Event()
    real = explorer_verify.verify_audit_log

    def slow(store: Store, asked_by: Actor, **options: Any) -> Any:
        options["progress"](7)  # as verify_chain reports every VERIFY_BATCH_ROWS rows
        reached.set()
        assert release.wait(30)
        return real(store, asked_by, **options)

    monkeypatch.setattr(explorer_verify, "verify_audit_log", slow)
    with site.as_user("ad.min") as admin, TestClient(admin.app, base_url="http://testserver") as second:
        sign_in(second, "ad.min")  # a second session (another tab or another admin) on the same server
        page = admin.get("/console/audit/verify")
        admin.post("/console/audit/verify", data={"csrf_token": csrf_of(page.text)})
        assert reached.wait(10)
        running = admin.get("/console/audit/verify")
        assert 'data-state="running"' in running.text
        assert 'data-poll="/console/audit/verify/progress"' in running.text
        progress = admin.get("/console/audit/verify/progress").json()
        assert progress["running"] is True
        assert progress["checked"] == 7
        assert progress["total"] > 7
        refused = second.post("/console/audit/verify", data={"csrf_token": csrf_of(second.get("/console/audit").text)})
        assert refused.status_code == 409
        assert "is still running; no second one was started" in refused.text
        release.set()
        assert admin.app.state.audit_verifier.current.done.wait(30)  # type: ignore[attr-defined]
        assert 'data-state="ok"' in admin.get("/console/audit/verify").text
    assert len(site.events("audit_verified")) == 1


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+33 1 23", "'+33 1 23"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("ACC-1=2", "ACC-1=2"),
        ("", ""),
        (-2, -2),
    ],
)
def test_a_cell_a_spreadsheet_would_run_is_made_text(cell: str | int, written: str | int) -> None:
    assert defuse_formula(cell) == written


def test_verify_checks_the_signed_checkpoints_and_says_what_they_cover(store: Store, tmp_path: Path) -> None:
    """A rewrite with recomputed hashes of rows a checkpoint vouched for is caught from the console too."""
    from audit_support import rehash_from
    from radtrace.audit.operations import checkpoint_audit_log
    from radtrace.config import load_settings

    seed_audit_log(store)
    add_user(store, "ad.min", "admin")
    key = "a-checkpoint-key-the-database-never-sees"
    settings = load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "profile": "nv-reason-cxr", "device": "cpu"},
        console={"sync_interval_s": 0},
        audit={"checkpoint_key": key},
    )
    folder = tmp_path / "radtrace" / "checkpoints"
    signed = checkpoint_audit_log(store, Actor(user="root"), key.encode(), folder / "audit-checkpoint-1.json")
    with console_client(store, settings) as admin:
        sign_in(admin, "ad.min")
        page = _verify(admin)
        assert 'data-state="ok"' in page
        assert f"Covered: rows 1 to {signed.seq} match a signed checkpoint (1 checked)" in page
        assert "are not anchored" in page
        rehash_from(store, 3, "UPDATE audit_events SET accession = 'ACC-FORGED' WHERE seq = 3")
        page = _verify(admin)
    assert 'data-state="broken"' in page
    assert "does not match its signed checkpoints" in page
    assert "rewritten after the checkpoint" in page
    assert "broken at seq" not in page


def test_patient_id_and_accession_never_travel_in_a_url(site: Explorer) -> None:
    """The form is POSTed (with its CSRF token) and answered by a redirect whose URL holds a token, not the values;
    the pages, the pager and the export link that follow hold none either; an old link is moved once."""
    received = site.seqs("instance_received")
    with site.as_user("ad.min") as admin:
        form = admin.get("/console/audit").text
        assert 'method="post" action="/console/audit"' in form
        refused = admin.post("/console/audit", data={"patient_id": "PAT-0001"}, follow_redirects=False)
        assert refused.status_code == 403  # no CSRF token
        searched = admin.post(
            "/console/audit",
            data={"csrf_token": csrf_of(form), "patient_id": "PAT-0001", "accession": "ACC-1001",
                  "event_type": "instance_received", "limit": "25"},
            follow_redirects=False,
        )  # fmt: skip
        assert searched.status_code == 303
        location = searched.headers["location"]
        assert "PAT-0001" not in location
        assert "ACC-1001" not in location
        assert "q=" in location
        page = admin.get(location)
        assert page.headers["referrer-policy"] == "no-referrer"
        assert _shown_seqs(page.text) == received[1::-1]  # newest first
        assert 'value="PAT-0001"' in page.text  # the form shows them, from the server
        links = re.findall(r'href="([^"]*)"', page.text)
        assert not [link for link in links if "PAT-0001" in link or "ACC-1001" in link]
        export = re.search(r'href="([^"]*export.csv[^"]*)"', page.text)
        assert export is not None
        rows = list(csv.DictReader(io.StringIO(admin.get(export.group(1).replace("&amp;", "&")).text)))
        assert {row["accession"] for row in rows} == {"ACC-1001"}
        moved = admin.get("/console/audit", params={"patient_id": "PAT-0001"}, follow_redirects=False)
        assert moved.status_code == 303
        assert "PAT-0001" not in moved.headers["location"]
        invalid = admin.post("/console/audit", data={"csrf_token": csrf_of(form), "patient_id": "P\x00"})
        assert invalid.status_code == 400
        expired = admin.get("/console/audit", params={"q": "no-such-search"})
        assert expired.status_code == 400
        assert "this search link has expired" in expired.text
    queried = [json.loads(payload) for _, _, _, payload in site.events("audit_queried")]
    assert len(queried) == 2  # the empty form and the search: not the refused, invalid or redirected requests


_UID_IN_TEXT = re.compile(r"\d+(?:\.\d+){3,}")


def _addresses(page: Any) -> list[str]:
    """Every address a page leads a browser to: links, forms, scripts, images, and its redirect."""
    found = re.findall(r'(?:href|action|src)="([^"]*)"', page.text)
    return [*found, page.headers.get("location", "")]


def test_a_study_uid_never_travels_in_a_url(site: Explorer) -> None:
    """A Study UID names a patient's study: searched for (POST), its timeline, the timeline's way back to the
    explorer, paging, the export and an old link with it in the URL all lead to addresses without it."""
    with site.as_user("ad.min") as admin:
        form = admin.get("/console/audit").text
        searched = admin.post("/console/audit", data={"csrf_token": csrf_of(form), "study_uid": STUDY_A,
                                                      "limit": "25"}, follow_redirects=False)  # fmt: skip
        assert searched.status_code == 303
        seen = [searched]
        page = admin.get(searched.headers["location"])
        seen.append(page)
        assert _shown_seqs(page.text) == [s.seq for s in site.seeded if s.event.study_uid == STUDY_A][::-1][:25]
        timeline_link = re.search(r'href="([^"]+)" class="timeline-link">', page.text)
        assert timeline_link is not None
        timeline = admin.get(timeline_link.group(1))
        seen.append(timeline)
        assert timeline.status_code == 200
        assert f'id="timeline-uid">{STUDY_A}<' in timeline.text  # shown on the page, not in its address
        back = re.search(r'<a href="([^"]+)" id="timeline-events-link"', timeline.text)
        assert back is not None
        again = admin.get(back.group(1).replace("&amp;", "&"))
        seen.append(again)
        assert _shown_seqs(again.text) == _shown_seqs(page.text)
        old = admin.get(f"/console/audit/studies/{STUDY_A}", follow_redirects=False)  # an old bookmark: moved once
        old_search = admin.get("/console/audit", params={"study_uid": STUDY_B}, follow_redirects=False)
        export = admin.get("/console/audit/export.csv", params={"study_uid": STUDY_B}, follow_redirects=False)
        seen += [old, old_search, export, admin.get(old.headers["location"]), admin.get(old_search.headers["location"])]
        assert [old.status_code, old_search.status_code, export.status_code] == [303, 303, 303]
        assert f'id="timeline-uid">{STUDY_A}<' in seen[-2].text
        assert {s.event.study_uid for s in site.seeded if s.seq in _shown_seqs(seen[-1].text)} == {STUDY_B}
        expired = admin.get("/console/audit/timeline/not-a-handle")
        assert expired.status_code == 404
        assert "timeline link has expired" in expired.text
    addresses = [address for page in seen for address in _addresses(page)]
    assert len(addresses) > 40
    assert [address for address in addresses if _UID_IN_TEXT.search(address)] == []


def test_an_event_whose_time_was_edited_into_a_non_time_is_shown_as_unreadable(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """SQLite keeps any text in recorded_at: the explorer, the timeline and the CSV raised a 500 on such a row."""
    from audit_support import as_superuser

    seeded = seed_audit_log(sqlite_store)
    add_user(sqlite_store, "ad.min", "admin")
    edited = next(s.seq for s in seeded if s.event.study_uid == STUDY_A)
    as_superuser(sqlite_store, f"UPDATE audit_events SET recorded_at = 'yesterday' WHERE seq = {edited}")  # noqa: S608
    with console_client(sqlite_store, console_settings(tmp_path, sqlite_store)) as admin:
        sign_in(admin, "ad.min")
        page = admin.get("/console/audit", params={"study_uid": STUDY_A})
        timeline = admin.get(f"/console/audit/studies/{STUDY_A}")
        export = admin.get("/console/audit/export.csv", params={"study_uid": STUDY_A})
    assert page.status_code == 200
    assert "unreadable: &#39;yesterday&#39;" in page.text
    assert edited in _shown_seqs(page.text)
    assert timeline.status_code == 200
    assert "unreadable: &#39;yesterday&#39;" in timeline.text
    assert export.status_code == 200
    assert "unreadable: 'yesterday'" in export.text


def test_a_refused_or_failed_event_shows_its_reason_in_the_row_not_only_in_the_payload(site: Explorer) -> None:
    """Before, a failure's reason sat in the collapsed payload; QA scanning a page of failures saw none of them."""
    with site.as_user("qa.quinn") as qa:
        html = qa.get("/console/audit", params={"event_type": "association_rejected"}).text
    rows = re.findall(r'<tr class="event [^"]*" data-seq="\d+"[^>]*>(.*?)</tr>', html, re.S)
    assert rows
    for row in rows:
        shown = row.split("<details>")[0]
        reason = (
            '<p class="event-reason" data-testid="event-reason"><bdi class="free-text">calling AE not allowed</bdi>'
        )
        assert reason in shown, row

"""The review console over real SQLite and PostgreSQL: sign-in, lockout, CSRF, roles, worklist, decisions, audit.

Studies are read by the real pipeline with the demo backend (see console_support), so the pages show what a
worker leaves behind. Everything is checked the way a user or an auditor would see it: pages, status codes,
cookies and the audit rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from console_support import (
    OPERATOR,
    PASSWORD,
    add_user,
    console_client,
    console_settings,
    csrf_of,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.audit.chain import verify_chain
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings
from radtrace.console.accounts import unlock_user
from radtrace.console.schema import ConsoleSession
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.studies import ImageSpec
from tests_support import radtrace, running_api

pytestmark = pytest.mark.integration


@dataclass
class Console:
    store: Store
    settings: Settings
    reader: StudyReader
    tmp_path: Path

    def client(self, **console: object) -> TestClient:
        settings = console_settings(self.tmp_path, self.store, **console) if console else self.settings
        return console_client(self.store, settings)

    def study(self, seed: int, **options: object) -> str:
        return reported_study(self.settings, self.store, self.reader, seed=seed, **options)  # type: ignore[arg-type]

    def events(self, *types: str) -> list[sa.Row[tuple[str, str | None, str | None, str, str]]]:
        table = AuditEventRow
        query = sa.select(table.event_type, table.actor_user, table.study_uid, table.outcome, table.payload)
        with self.store.session() as session:
            return list(session.execute(query.where(table.event_type.in_(types)).order_by(table.seq)).all())


@pytest.fixture
def console(store: Store, tmp_path: Path) -> Console:
    settings = console_settings(tmp_path, store)
    return Console(store, settings, StudyReader(settings.model, data_dir=settings.data_dir), tmp_path)


def _worklist_patients(client: TestClient, which: str = "unassessed") -> list[str]:
    page = client.get(f"/console/worklist?filter={which}")
    assert page.status_code == 200
    return re.findall(r'<div class="sub" data-testid="patient-id"><bdo dir="ltr" class="id">(RT\d+)</bdo>', page.text)


def _decide(client: TestClient, study_uid: str, what: str, **form: str) -> int:
    url = study_path(client.app.state.console.store, study_uid)
    page = client.get(url)
    return client.post(
        f"{url}/{what}",
        data={"csrf_token": csrf_of(page.text), **form},
        follow_redirects=False,
    ).status_code


def test_sign_in_sets_a_strict_http_only_cookie_and_every_outcome_is_audited(console: Console) -> None:
    add_user(console.store, "dr.ada", "radiologist")
    with console.client() as client:
        assert client.get("/console/worklist", follow_redirects=False).headers["location"] == "/console/login"
        form = client.get("/console/login")
        credentials = {"username": "dr.ada", "password": PASSWORD, "csrf_token": csrf_of(form.text)}
        answer = client.post("/console/login", follow_redirects=False, data=credentials)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/worklist"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("radtrace_session="))
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/console" in cookie
        assert "Secure" not in cookie  # plain HTTP here; see the TLS test below
        page = client.get("/console/worklist")
        assert "dr.ada (radiologist)" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert not re.search(r'(src|href)="(https?:)?//', page.text), "every asset is served by the console itself"
        assert client.get("/console/static/console.js").status_code == 200
        client.post("/console/logout", data={"csrf_token": csrf_of(page.text)})
        assert client.get("/console/worklist", follow_redirects=False).status_code == 303
    assert [(kind, user) for kind, user, *_ in console.events("console_login", "console_logout")] == [
        ("console_login", "dr.ada"),
        ("console_logout", "dr.ada"),
    ]
    with TestClient(client.app, base_url="https://testserver") as tls:
        form = tls.get("/console/login")
        credentials = {"username": "dr.ada", "password": PASSWORD, "csrf_token": csrf_of(form.text)}
        answer = tls.post("/console/login", follow_redirects=False, data=credentials)
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("radtrace_session="))
        assert "Secure" in cookie


def test_five_wrong_passwords_lock_the_account_until_it_is_unlocked(console: Console) -> None:
    add_user(console.store, "dr.bea", "radiologist")
    with console.client() as client:
        for _ in range(5):
            assert "Sign-in failed" in sign_in(client, "dr.bea", "wrong password!").text
        refused = sign_in(client, "dr.bea")  # the right password, but locked
        assert refused.status_code == 401
        assert "Sign-in failed" in refused.text
        assert "Sign-in failed" in sign_in(client, "nobody", PASSWORD).text
        failed = console.events("console_login_failed")
        reasons = [json.loads(payload)["reason"] for *_, payload in failed]
        assert reasons == ["wrong password"] * 5 + ["account locked", "unknown user"]
        assert all(outcome == "minor_failure" for _, _, _, outcome, _ in failed)
        assert PASSWORD not in " ".join(payload for *_, payload in failed)
        locked = console.events("console_user_locked")
        assert len(locked) == 1
        assert json.loads(locked[0].payload)["failed_logins"] == 5
        unlock_user(console.store, "dr.bea", OPERATOR)
        assert "dr.bea (radiologist)" in sign_in(client, "dr.bea").text


def test_a_post_without_the_csrf_token_is_refused_and_records_nothing(console: Console) -> None:
    study_uid = console.study(1)
    add_user(console.store, "dr.cy", "radiologist")
    with console.client() as client:
        form = client.get("/console/login")
        assert client.post("/console/login", data={"username": "dr.cy", "password": PASSWORD}).status_code == 403
        assert client.post("/console/login", data={"username": "dr.cy", "password": PASSWORD,
                                                   "csrf_token": "forged"}).status_code == 403  # fmt: skip
        assert console.events("console_login") == []
        client.post("/console/login", data={"username": "dr.cy", "password": PASSWORD,
                                            "csrf_token": csrf_of(form.text)})  # fmt: skip
        finding = {"label": "Cardiomegaly", "decision": "accept"}
        url = study_path(console.store, study_uid)
        assert client.post(f"{url}/findings", data=finding).status_code == 403
        assert client.post(f"{url}/findings", data={**finding, "csrf_token": "x" * 43}).status_code == 403
        assert client.post(f"{url}/draft", data={"decision": "accept", "reason": "RT-A1"}).status_code == 403
        assert console.events("finding_assessed", "draft_assessed") == []
        assert _decide(client, study_uid, "findings", **finding) == 303


def test_qa_reads_the_study_but_cannot_decide(console: Console) -> None:
    study_uid = console.study(2)
    add_user(console.store, "qa.dee", "qa")
    with console.client() as client:
        sign_in(client, "qa.dee")
        page = client.get(study_path(console.store, study_uid))
        assert page.status_code == 200
        assert "only radiologists record decisions" in page.text
        assert 'class="finding-form"' not in page.text
        decision = {"csrf_token": csrf_of(page.text), "decision": "accept", "reason": "RT-A1"}
        refused = client.post(f"{study_path(console.store, study_uid)}/draft", data=decision)
        assert refused.status_code == 403
    assert console.events("finding_assessed", "draft_assessed") == []
    assert [(kind, user, uid) for kind, user, uid, *_ in console.events("study_opened")] == [
        ("study_opened", "qa.dee", study_uid)
    ]


def test_worklist_puts_stat_first_then_the_oldest_and_filters(console: Console) -> None:
    newer = console.study(11, age_s=60)
    console.study(12, age_s=3600)  # older
    console.study(13, stat=True, age_s=10)  # newest, but STAT
    console.study(14, age_s=120, image=ImageSpec(view="AP"))  # flagged: AP
    add_user(console.store, "dr.eve", "radiologist")
    add_user(console.store, "dr.fox", "radiologist")
    with console.client() as client:
        sign_in(client, "dr.eve")
        assert _worklist_patients(client) == ["RT0000013", "RT0000012", "RT0000014", "RT0000011"]
        page = client.get("/console/worklist")
        assert "STAT" in page.text
        assert "AP / portable" in page.text
        assert "57 y / F" in page.text  # the header's "057Y", as every page writes an age
        assert _worklist_patients(client, "flagged") == ["RT0000014"]
        # a screen reader is told which filter is shown (the highlight alone is visual)
        assert re.findall(r'data-filter="(\w+)" aria-current="page"', page.text) == ["unassessed"]
        flagged = client.get("/console/worklist?filter=flagged").text
        assert re.findall(r'data-filter="(\w+)" aria-current="page"', flagged) == ["flagged"]
        assert _worklist_patients(client, "mine") == []
        assert client.get(study_path(console.store, newer)).status_code == 200
        assert _worklist_patients(client, "mine") == ["RT0000011"]
        assert _decide(client, newer, "draft", decision="accept", reason="RT-A1") == 303
        assert "RT0000011" not in _worklist_patients(client)
        assert _worklist_patients(client, "all") == ["RT0000013", "RT0000012", "RT0000014", "RT0000011"]
        listed = client.get("/console/worklist?filter=all").text
        assert "accepted by dr.eve" in listed
        # a decided draft waits no longer: its row does not count the time since it was reported
        row = r'<tr [^>]*class="row[^"]*"[^>]*>(?:(?!</tr>).)*RT0000011(?:(?!</tr>).)*</tr>'
        decided = re.search(row, listed, re.S)
        assert decided is not None
        assert re.search(r'<td class="num"[^>]*>\s*(?:<[^>]+>)?\d+ (?:s|min|h|d)', decided.group(0)) is None
        # "next study" skips what is decided and opened by someone else
        assert client.get("/console/next", follow_redirects=False).headers["location"].endswith("/1")
    with console.client() as other:
        sign_in(other, "dr.fox")
        assert _worklist_patients(other, "mine") == []
        assert other.get("/console/worklist?filter=bogus").status_code == 422


def test_decisions_are_append_only_audit_events_and_a_changed_mind_supersedes(console: Console) -> None:
    study_uid = console.study(21)
    add_user(console.store, "dr.gil", "radiologist")
    with console.client() as client:
        sign_in(client, "dr.gil")
        page = client.get(study_path(console.store, study_uid))
        labels = re.findall(r'name="label" value="([^"]+)"', page.text)
        assert len(labels) >= 3
        images = re.findall(r'src="(/console/studies/[^"]+\.png)"', page.text)
        shown = client.get(images[0])
        assert shown.status_code == 200
        assert shown.content.startswith(b"\x89PNG")
        assert client.get(images[0].replace("prepared", "original")).content.startswith(b"\x89PNG")
        assert _decide(client, study_uid, "findings", label=labels[0], decision="accept") == 303
        assert _decide(client, study_uid, "findings", label=labels[1], decision="reject", comment="not there") == 303
        assert _decide(client, study_uid, "findings", label=labels[2], decision="modify", status="absent") == 303
        assert _decide(client, study_uid, "findings", label=labels[2], decision="modify") == 422  # no status
        assert _decide(client, study_uid, "findings", label="Not A Finding", decision="accept") == 422
        assert _decide(client, study_uid, "draft", decision="accept", reason="RT-A2") == 303
        assert _decide(client, study_uid, "draft", decision="reject", reason="RT-R1", comment="missed") == 303
        assert _decide(client, study_uid, "draft", decision="reject", reason="RT-XX") == 422
        page = client.get(study_path(console.store, study_uid)).text
        assert "rejected by dr.gil: RT-R1" in page
        assert "1 earlier, superseded" in page
        assert 'rejected by dr.gil: “<bdi class="free-text">not there</bdi>”' in page
        assert "changed to absent by dr.gil" in page
        assert "accepted by dr.gil" in page
    decided = console.events("finding_assessed", "draft_assessed")
    payloads = [json.loads(row.payload) for row in decided]
    assert [(row.event_type, row.actor_user) for row in decided] == [
        ("finding_assessed", "dr.gil"),
        ("finding_assessed", "dr.gil"),
        ("finding_assessed", "dr.gil"),
        ("draft_assessed", "dr.gil"),
        ("draft_assessed", "dr.gil"),
    ]
    assert [(p.get("finding"), p["decision"], p.get("status"), p.get("comment")) for p in payloads[:3]] == [
        (labels[0], "accept", None, None),
        (labels[1], "reject", None, "not there"),
        (labels[2], "modify", "absent", None),
    ]
    first, second = payloads[3], payloads[4]
    assert first["supersedes"] is None
    assert first["reason_code"] == "RT-A2"
    with console.store.session() as session:
        first_seq = session.scalar(
            sa.select(AuditEventRow.seq).where(AuditEventRow.event_type == "draft_assessed").order_by(AuditEventRow.seq)
        )
    assert second["supersedes"] == first_seq
    assert second["reason_code"] == "RT-R1"
    assert second["findings"][labels[1]] == "reject"
    assert all(p["sr_sop_instance_uid"] for p in payloads)
    viewed = console.events("image_viewed")
    assert [(row.actor_user, json.loads(row.payload)["rendering"]) for row in viewed] == [
        ("dr.gil", "prepared"),
        ("dr.gil", "original"),
    ]
    assert verify_chain(console.store).ok


def test_an_idle_session_ends(console: Console) -> None:
    add_user(console.store, "dr.hal", "radiologist")
    with console.client() as client:
        sign_in(client, "dr.hal")
        assert client.get("/console/worklist", follow_redirects=False).status_code == 200
        with console.store.session() as session:
            row = session.scalars(sa.select(ConsoleSession)).one()
            row.last_seen_at -= timedelta(seconds=console.settings.console.idle_timeout_s + 1)
        assert client.get("/console/worklist", follow_redirects=False).headers["location"] == "/console/login"
        with console.store.session() as session:
            assert session.scalars(sa.select(ConsoleSession)).one().ended_at is not None


def test_a_trusted_proxy_header_signs_in_only_from_a_trusted_address(console: Console) -> None:
    add_user(console.store, "dr.ivy", "radiologist")
    header = {"X-Remote-User": "dr.ivy"}
    with console.client(trusted_user_header="X-Remote-User") as untrusted:
        assert untrusted.get("/console/worklist", headers=header, follow_redirects=False).status_code == 303
    with console.client(trusted_user_header="X-Remote-User", trusted_proxies=["testclient"]) as proxied:
        page = proxied.get("/console/worklist", headers=header, follow_redirects=False)
        assert page.status_code == 200
        assert "dr.ivy (radiologist)" in page.text
        assert "radtrace_session=" in page.headers["set-cookie"]
        proxied.cookies.clear()
        unknown = proxied.get("/console/worklist", headers={"X-Remote-User": "mallory"}, follow_redirects=False)
        assert unknown.status_code == 303  # a name the proxy vouches for must still be a console account
    logins = console.events("console_login", "console_login_failed")
    assert [(row.event_type, row.actor_user) for row in logins] == [
        ("console_login", "dr.ivy"),
        ("console_login_failed", "mallory"),
    ]
    assert json.loads(logins[0].payload)["method"] == "trusted-header X-Remote-User"


def test_user_create_generates_a_password_shown_once(tmp_path: Path) -> None:
    # The command, once (on SQLite): the accounts code under it runs on both databases in the tests above.
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store.from_url(database_url)
    upgrade(store)
    settings = console_settings(tmp_path, store)
    console = Console(store, settings, StudyReader(settings.model, data_dir=settings.data_dir), tmp_path)
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "cli"), "RADTRACE_STORE__URL": database_url}
    created = radtrace("user", "create", "dr.jon", "--role", "radiologist", "--generate-password", env=env)
    assert created.returncode == 0, created.stderr
    password = created.stdout.strip()
    assert len(password) >= 16
    again = radtrace("user", "create", "dr.jon", "--role", "qa", "--generate-password", env=env)
    assert again.returncode == 2
    assert "exists already" in again.stderr
    with console.client() as client:
        assert "dr.jon (radiologist)" in sign_in(client, "dr.jon", password).text
    with console.store.session() as session:
        stored = session.scalar(sa.text("SELECT password_hash FROM console_users WHERE name = 'dr.jon'"))
    assert stored.startswith("$argon2id$")
    assert password not in stored
    assert [json.loads(row.payload)["user"] for row in console.events("console_user_created")] == ["dr.jon"]


def test_radtrace_api_serves_the_console_with_no_further_setting(tmp_path: Path) -> None:
    """``radtrace serve`` runs ``radtrace api`` as its child: the console comes with it, from the package."""
    import httpx

    data_dir = str(tmp_path / "radtrace")
    assert radtrace("db", "upgrade", env={"RADTRACE_DATA_DIR": data_dir}).returncode == 0
    with running_api({"RADTRACE_DATA_DIR": data_dir}, tmp_path / "api.log") as api:
        login = httpx.get(f"{api.base_url}/console/login", timeout=2)
        assert login.status_code == 200
        assert 'name="csrf_token"' in login.text
        css = httpx.get(f"{api.base_url}/console/static/console.css", timeout=2)
        assert css.status_code == 200
        assert "text/css" in css.headers["content-type"]


def test_patient_data_and_model_text_are_escaped_in_the_pages(console: Console) -> None:
    study_uid = console.study(51, name="EVIL^<script>alert(1)</script>")
    add_user(console.store, "dr.esc", "radiologist")
    with console.client() as client:
        sign_in(client, "dr.esc")
        for url in ("/console/worklist", study_path(console.store, study_uid)):
            page = client.get(url).text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
            assert "<script>alert" not in page


def test_the_agreement_page_counts_current_decisions_only(console: Console) -> None:
    first, second = console.study(61), console.study(62)
    add_user(console.store, "dr.agree", "radiologist")
    add_user(console.store, "qa.agree", "qa")
    with console.client() as client:
        sign_in(client, "dr.agree")
        label = re.findall(r'name="label" value="([^"]+)"', client.get(study_path(console.store, first)).text)[0]
        assert _decide(client, first, "findings", label=label, decision="accept") == 303
        assert _decide(client, first, "findings", label=label, decision="reject", comment="changed my mind") == 303
        assert _decide(client, first, "draft", decision="accept", reason="RT-A2") == 303
        assert _decide(client, second, "draft", decision="reject", reason="RT-R2") == 303
    with console.client() as client:
        sign_in(client, "qa.agree")
        page = client.get("/console/agreement").text

    def counts(row_label: str) -> list[str]:
        row = re.search(rf'<tr data-label="{re.escape(row_label)}">(.*?)</tr>', page, re.S)
        assert row is not None, row_label
        return re.findall(r'<td class="num[^"]*">([^<]*)</td>', row.group(1))

    assert counts("whole draft") == ["2", "1", "0", "1", "50%"]
    assert counts(label) == ["1", "0", "0", "1", "0%"]  # the superseded accept is not counted
    assert "RT-A2" in page
    assert "Finding reported that is not there" in page

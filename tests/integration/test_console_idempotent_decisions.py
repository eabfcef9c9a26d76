"""A scripted client's decision, retried, is recorded once: the idempotency key.

The study page's forms carry ``seen`` (the decision the page showed), so a form sent twice is recorded once. A
script (no browser, no ``seen``) that POSTs a whole-draft decision and retries it after a timeout recorded it twice:
two ``draft_assessed`` events, two assessment SRs queued for the PACS. Now a script sends ``Idempotency-Key``: the
retry is recorded once and answered as the first request was. Through a real console (uvicorn, HTTP), on SQLite and
on PostgreSQL (``-k sqlite`` / ``-k postgresql``): a retry after a real client timeout, two requests at once, a
finding decision, and a key sent again with another decision (422).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from console_support import PASSWORD, add_user, csrf_of, reported_study, study_path
from radtrace.audit.api import create_api
from radtrace.audit.recorder import AUDIT_LOCK_KEY
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings, load_settings
from radtrace.console.assessment_files import PENDING
from radtrace.console.web import mount_console
from radtrace.model.reader import StudyReader
from radtrace.reporting.dispatch.outbox import KIND_ASSESSMENT
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import OutboxMessage
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(store: Store, tmp_path: Path) -> Settings:
    # a PACS is configured (nothing listens: the rows are only queued), so each assessment SR queues one row
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "profile": "nv-reason-cxr", "device": "cpu"},
        console={"sync_interval_s": 0},
        dispatch={"pacs": [{"ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}]},
    )


@contextlib.contextmanager
def _console(store: Store, settings: Settings) -> Iterator[str]:
    """The QA API with the console, on uvicorn on a free port; yields its base URL. Leaving waits for every
    request still being handled (uvicorn's shutdown), abandoned by its client or not."""
    import uvicorn

    app = create_api(store, drafts_dir=drafts_root(settings))
    mount_console(app, store, settings)
    app.state.console.ring_dispatch = lambda outbox_id: True  # nothing listens; the rows stay queued
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the console did not start"
        assert time.monotonic() < deadline, "the console did not start within 10 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the console did not stop"
        app.state.console.pictures.close()


def _script(base_url: str, name: str) -> httpx.Client:
    """A scripted client signed in through the login form: a session cookie, and the CSRF token it needs."""
    client = httpx.Client(base_url=base_url, timeout=30)
    form = client.get("/console/login")
    signed = client.post("/console/login", data={"username": name, "password": PASSWORD,
                                                 "csrf_token": csrf_of(form.text)})  # fmt: skip
    assert signed.status_code == 303, signed.text
    return client


def _csrf(client: httpx.Client, url: str) -> str:
    return csrf_of(client.get(url).text)


def _events(store: Store, kind: str) -> list[dict[str, Any]]:
    with store.session() as session:
        rows = session.scalars(
            sa.select(AuditEventRow.payload).where(AuditEventRow.event_type == kind).order_by(AuditEventRow.seq)
        ).all()
    return [json.loads(payload) for payload in rows]


def _assessments_out(store: Store) -> list[str]:
    with store.session() as session:
        return list(session.scalars(sa.select(OutboxMessage.document_uid).where(OutboxMessage.kind == KIND_ASSESSMENT)))


def _kept(settings: Settings) -> list[str]:
    """The assessment SRs kept, by SOP Instance UID; none may be left pending."""
    root = settings.data_dir / "assessments"
    assert not [p for p in (root / PENDING).glob("*") if p.is_file()]
    return sorted(p.stem for p in root.glob("*/*/*.dcm"))


@contextlib.contextmanager
def _decisions_held(store: Store) -> Iterator[None]:
    """Hold the decisions' lock (SQLite's write lock; PostgreSQL's advisory lock), so a decision sent now waits."""
    with store.session("holding the decisions' lock", immediate=True) as session:
        if is_postgresql(store.engine):
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
        else:
            session.execute(sa.text("UPDATE review_items SET revision = revision WHERE 0"))  # BEGIN IMMEDIATE taken
        yield


def test_a_whole_draft_decision_retried_after_a_timeout_is_recorded_once(store: Store, settings: Settings) -> None:
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=61)
    add_user(store, "dr.script", "radiologist")
    url = study_path(store, study_uid)
    key = str(uuid.uuid4())
    with _console(store, settings) as base_url:
        impatient, patient = _script(base_url, "dr.script"), _script(base_url, "dr.script")
        form = {"csrf_token": _csrf(impatient, url), "decision": "reject", "reason": "RT-R2", "comment": "see report"}
        patient.cookies.update(impatient.cookies)  # the same session: the script's retry
        answers: list[httpx.Response] = []
        with _decisions_held(store):
            with pytest.raises(httpx.ReadTimeout):  # the first request waits for the lock; the script gives up
                impatient.post(f"{url}/draft", data=form, headers={"Idempotency-Key": key}, timeout=0.5)
            retry = threading.Thread(target=lambda: answers.append(
                patient.post(f"{url}/draft", data=form, headers={"Idempotency-Key": f'"{key}"'})))  # fmt: skip
            retry.start()
            time.sleep(0.3)  # both now wait for the lock: the abandoned first request and its retry
        retry.join(timeout=60)
        [answer] = answers
        assert answer.status_code == 303, answer.text
        again = patient.post(f"{url}/draft", data=form, headers={"Idempotency-Key": key})  # and once more, later
        assert (again.status_code, again.headers["location"]) == (303, answer.headers["location"])
        impatient.close()
        patient.close()
    # the console has stopped: every request it took, the abandoned one too, has been handled
    recorded = _events(store, "draft_assessed")
    assert len(recorded) == 1, recorded
    assert (recorded[0]["decision"], recorded[0]["idempotency_key"]) == ("reject", key)
    sent = recorded[0]["assessment_sr"]["sop_instance_uid"]
    assert _assessments_out(store) == [sent]
    assert _kept(settings) == [sent]


def test_decisions_sent_twice_at_once_with_one_key_are_recorded_once_and_a_reused_key_is_refused(
    store: Store, settings: Settings
) -> None:
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=62)
    add_user(store, "dr.script", "radiologist")
    url = study_path(store, study_uid)
    with _console(store, settings) as base_url, contextlib.closing(_script(base_url, "dr.script")) as one:
        csrf = _csrf(one, url)
        page = one.get(url).text
        label = page.split('name="label" value="', 1)[1].split('"', 1)[0]
        finding = {"csrf_token": csrf, "label": label, "decision": "modify", "status": "uncertain"}
        finding_key = str(uuid.uuid4())
        draft = {"csrf_token": csrf, "decision": "accept", "reason": "RT-A1", "comment": "agree"}
        draft_key = str(uuid.uuid4())
        barrier = threading.Barrier(2)
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def post(path: str, form: dict[str, str], key: str) -> None:
            with httpx.Client(base_url=base_url, cookies=one.cookies, timeout=30) as client:
                barrier.wait(timeout=30)
                answer = client.post(f"{url}/{path}", data=form, headers={"Idempotency-Key": key})
            with lock:
                answers.append(answer)

        for path, form, key in (("findings", finding, finding_key), ("draft", draft, draft_key)):
            threads = [threading.Thread(target=post, args=(path, form, key)) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
        assert [a.status_code for a in answers] == [303] * 4, [a.text for a in answers]
        assert answers[0].headers["location"] == answers[1].headers["location"]
        assert answers[2].headers["location"] == answers[3].headers["location"]
        # the same key with another decision: refused, nothing recorded
        other = one.post(f"{url}/draft", data={**draft, "decision": "reject", "reason": "RT-R2"},
                         headers={"Idempotency-Key": draft_key})  # fmt: skip
        assert other.status_code == 422
        assert "idempotency key was sent before with another decision" in other.text
        for bad, field in (("short", None), ("a b c d e f g h", None), (None, "x" * 129), (draft_key, "other-key-1")):
            refused = one.post(f"{url}/draft", data={**draft, **({"idempotency_key": field} if field else {})},
                               headers={"Idempotency-Key": bad} if bad else {})  # fmt: skip
            assert refused.status_code == 422, (bad, field, refused.text)
    findings = _events(store, "finding_assessed")
    assert [(f["finding"], f["decision"], f["status"], f["idempotency_key"]) for f in findings] == [
        (label, "modify", "uncertain", finding_key)
    ]
    drafts = _events(store, "draft_assessed")
    assert [(d["decision"], d["idempotency_key"]) for d in drafts] == [("accept", draft_key)]
    assert drafts[0]["findings"][label] == "modify"  # the draft carries the finding decision, recorded once
    assert _assessments_out(store) == [drafts[0]["assessment_sr"]["sop_instance_uid"]]
    assert len(_kept(settings)) == 1

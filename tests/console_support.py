"""Helpers for the console tests: reported studies made by the real pipeline (demo backend), users, a client.

:func:`reported_study` spools a generated study and runs :class:`StudyPipeline` on it with the demo backend
(recorded model texts, no weights), so the reading in ``inference_completed``, the kept draft and the spool are
exactly what a worker leaves. :func:`sign_in` logs in through the login form like a browser does.
"""

from __future__ import annotations

import contextlib
import html
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from radtrace.audit.api import create_api
from radtrace.audit.events import Actor
from radtrace.config import Settings, load_settings
from radtrace.console.accounts import create_user
from radtrace.console.links import ConsoleLinks
from radtrace.console.web import mount_console
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Priority, Revision, RevisionState, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import spool_study

OPERATOR = Actor(user="root", host="radtrace-host")
PASSWORD = "correct horse battery"


def console_settings(tmp_path: Path, store: Store, profile: str = "nv-reason-cxr", **console: Any) -> Settings:
    """Embedded settings on ``store`` with the demo backend and the console's sync on every request."""
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "profile": profile, "device": "cpu"},
        console={"sync_interval_s": 0, **console},
    )


def reported_study(
    settings: Settings,
    store: Store,
    reader: StudyReader,
    *,
    seed: int,
    stat: bool = False,
    age_s: float = 0.0,
    image: ImageSpec | None = None,
    name: str = "TEST^PATIENT",
) -> str:
    """A study read by the pipeline (demo backend) and reported ``age_s`` ago; returns its Study UID."""
    spec = StudySpec(patient_name=name, patient_id=f"RT{seed:07d}", accession=f"ACC{seed:06d}", seed=seed)
    datasets = make_study(spec, [image or ImageSpec()])
    study_uid, number = spool_study(settings, store, datasets)
    with store.session("setting a study's priority", immediate=True) as session:  # reads, then writes
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == study_uid))
        assert revision is not None
        revision.priority = Priority.STAT if stat else Priority.ROUTINE
    result = StudyPipeline(settings, store, reader, worker="console-test").process(study_uid, number)
    assert result.result is Result.REPORTED, result
    with store.session("back-dating a study's report", immediate=True) as session:  # reads, then writes
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == study_uid))
        assert revision is not None
        assert revision.state is RevisionState.REPORTED
        assert revision.reported_at
        revision.reported_at -= timedelta(seconds=age_s)
    return study_uid


def console_client(store: Store, settings: Settings) -> TestClient:
    """A client on the QA API with the console mounted, as ``radtrace api`` serves it."""
    app = create_api(store, drafts_dir=drafts_root(settings))
    mount_console(app, store, settings)
    return TestClient(app, base_url="http://testserver")


def study_path(store: Store, study_uid: str, revision: int = 1) -> str:
    """The console's address of a study revision's page: by the study's handle, as every console link names it."""
    return f"/console/studies/{ConsoleLinks(store).study_handles([study_uid])[study_uid]}/{revision}"


#: An address of a study page by a handle no study has (24 characters, as a handle is).
UNKNOWN_STUDY = "/console/studies/AAAAAAAAAAAAAAAAAAAAAAAA/1"


def add_user(store: Store, name: str, role: str) -> None:
    """A console account with :data:`PASSWORD`."""
    create_user(store, name, role, PASSWORD, OPERATOR)


def finding_decisions(store: Store, study_uid: str) -> list[dict[str, Any]]:
    """The payloads of the study's ``finding_assessed`` audit events, in order."""
    import json

    from radtrace.audit.schema import AuditEventRow

    with store.session() as session:
        rows = session.scalars(
            sa.select(AuditEventRow.payload)
            .where(AuditEventRow.study_uid == study_uid, AuditEventRow.event_type == "finding_assessed")
            .order_by(AuditEventRow.seq)
        ).all()
    return [json.loads(payload) for payload in rows]


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    """Log in through the form (with its double-submit token); returns the final response."""
    form = client.get("/console/login")
    return client.post(
        "/console/login",
        data={"username": name, "password": password, "csrf_token": csrf_of(form.text)},
        follow_redirects=True,
    )


@contextlib.contextmanager
def serving(store: Store, settings: Settings) -> Iterator[str]:
    """The QA API with the console on a free local port, served by uvicorn in a thread; yields its base URL."""
    import uvicorn

    from radtrace.testing.services import free_port

    app = create_api(store, drafts_dir=drafts_root(settings))
    mount_console(app, store, settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def page_call(client: TestClient, url: str) -> Callable[[], object]:
    """A call that GETs ``url`` as the signed-in ``client`` (no redirect followed) and checks it answered 200 or
    303, for :func:`median_ms`."""

    def call() -> object:
        answer = client.get(url, follow_redirects=False)
        assert answer.status_code in (200, 303), (url, answer.status_code)
        return answer

    return call


def median_ms(call: Callable[[], object], repeat: int) -> float:
    """Server time of ``call`` in milliseconds: the median of ``repeat`` calls after one warm-up (the first use of a
    statement, a template, the pages of an index)."""
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def finding_evidence(page: str, label: str) -> list[str]:
    """The evidence sentences a study page shows in the row of the finding ``label``, as text (no tags, unescaped)."""
    pattern = rf'<tr id="finding-\d+"[^>]*data-label="{re.escape(label)}".*?<td class="evidence">(.*?)</td>'
    row = re.search(pattern, page, re.S)
    assert row is not None, label
    return [html.unescape(re.sub(r"<[^>]+>", "", q)) for q in re.findall(r"<q>(.*?)</q>", row.group(1), re.S)]


@dataclass(frozen=True)
class ServedStudy:
    """A console served on a local port (``url``) and one study page's path on it."""

    url: str
    path: str


@contextlib.contextmanager
def served_study(root: Path, seed: int, users: dict[str, str]) -> Iterator[ServedStudy]:
    """A SQLite console under ``root`` holding one study read by the demo pipeline (``seed``) and ``users`` (name:
    role), served by :func:`serving`."""
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store)
    study = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=seed)
    for name, role in users.items():
        add_user(store, name, role)
    try:
        with serving(store, settings) as url:
            yield ServedStudy(url, study_path(store, study))
    finally:
        store.dispose()

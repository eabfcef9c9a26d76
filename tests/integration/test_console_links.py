"""No Study Instance UID (nor any other UID) in the console's own addresses, and links that every console process
reads alike.

A UID in a URL ends up in browser history, proxy logs and ``Referer`` headers. The crawl below signs in, records
decisions (accept, modify, reject, the impression, the whole draft and "then next", a conflict), follows every
link, form, image and redirect of the worklist, the study pages, the agreement page, the dashboard, its study
lists and the audit explorer, and the sign-in's ``next``, and checks each address against a UID pattern. Before
handles, the worklist alone linked every study by its UID. The handles, timeline links and saved searches are
kept in the database (:mod:`radtrace.console.links`): a link one console application made works in another over
the same database (before: 'this timeline link has expired', since each process kept them in memory).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from console_support import PASSWORD, add_user, console_client, console_settings, csrf_of, reported_study, sign_in
from radtrace.config import Settings
from radtrace.console import links
from radtrace.console.links import ConsoleLinks
from radtrace.console.schema import ConsoleKey, SavedSearch, StudyHandle
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import running_api

pytestmark = pytest.mark.integration

#: Four or more dot-separated numbers: a Study, SOP Instance or any other DICOM UID.
UID_IN_TEXT = re.compile(r"\d+(?:\.\d+){3,}")
#: Every attribute value of a page (href, action, src, data-href, data-prepared, ...).
_ATTRIBUTE = re.compile(r'\s[\w-]+="([^"]*)"')
_MAX_PAGES = 400


def addresses(answer: Any) -> list[str]:
    """Every address an answer leads a browser to: its redirect, and each attribute of its page that is one."""
    found = [answer.headers.get("location", "")]
    if answer.headers.get("content-type", "").startswith("text/html"):
        for value in _ATTRIBUTE.findall(answer.text):
            value = value.replace("&amp;", "&")
            if value.startswith(("/", "?", "http:", "https:", "#")):
                found.append(value)
    return [address for address in found if address]


@pytest.fixture
def seeded(store: Store, tmp_path: Path) -> tuple[Settings, list[str]]:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    uids = [reported_study(settings, store, reader, seed=seed, stat=seed == 93) for seed in (91, 92, 93)]
    for name, role in (("dr.crawl", "radiologist"), ("dr.late", "radiologist"), ("ad.crawl", "admin")):
        add_user(store, name, role)
    return settings, uids


class Crawl:
    """Requests through one client, each answer's addresses kept."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.seen: dict[str, list[str]] = {}  # the address asked for -> the addresses its answer leads to

    def get(self, url: str) -> Any:
        answer = self.client.get(url, follow_redirects=False)
        self.seen[url] = addresses(answer)
        return answer

    def post(self, url: str, data: dict[str, str]) -> Any:
        answer = self.client.post(url, data=data, follow_redirects=False)
        self.seen[f"POST {url}"] = addresses(answer)
        return answer

    def follow(self, *start: str) -> None:
        """Every console page reachable from ``start`` by GET (links, images, scripts, redirects)."""
        queue = list(start)
        while queue and len(self.seen) < _MAX_PAGES:
            url = queue.pop(0)
            if url in self.seen:
                continue
            answer = self.get(url)
            assert answer.status_code < 500, url
            for address in self.seen[url]:
                target = urljoin(url, address).split("#")[0]
                parts = urlsplit(target)
                if parts.netloc not in ("", "testserver") or not parts.path.startswith("/console"):
                    continue
                local = parts.path + (f"?{parts.query}" if parts.query else "")
                if local not in self.seen and local not in queue:
                    queue.append(local)

    def with_uids(self) -> list[tuple[str, str]]:
        return [(page, address) for page, found in self.seen.items() for address in found
                if UID_IN_TEXT.search(address)]  # fmt: skip


def _finding_forms(page: str) -> list[tuple[str, dict[str, str]]]:
    """Each finding's form on a study page: its action, and its label and seen fields."""
    forms = re.findall(
        r'<form method="post" action="([^"]+/findings)" class="finding-form"[^>]*>(.*?)</form>', page, re.S
    )
    return [(action, dict(re.findall(r'name="(label|seen)" value="([^"]*)"', body))) for action, body in forms]


def test_no_uid_in_any_address_of_the_review_console_dashboard_or_explorer(
    store: Store, seeded: tuple[Settings, list[str]]
) -> None:
    settings, uids = seeded
    with console_client(store, settings) as anonymous:  # signed out: a study link, then the sign-in with next
        crawl = Crawl(anonymous)
        with console_client(store, settings) as doctor:
            sign_in(doctor, "dr.crawl")
            worklist = Crawl(doctor)
            worklist.follow("/console/worklist")
            study_links = sorted({a for a in worklist.seen["/console/worklist"] if a.startswith("/console/studies/")})
        assert len(study_links) == 3
        signed_out = crawl.post(f"{study_links[0]}/findings", {"decision": "accept"})  # the 401 page's sign-in link
        assert signed_out.status_code == 401
        assert f'href="/console/login?next={study_links[0]}"' in signed_out.text
        sent = crawl.get(study_links[0])
        assert sent.status_code == 303
        assert sent.headers["location"] == f"/console/login?next={study_links[0]}"
        form = crawl.get(sent.headers["location"])
        login = {"username": "dr.crawl", "password": PASSWORD, "csrf_token": csrf_of(form.text), "next": study_links[0]}
        signed_in = crawl.post("/console/login", login)
        assert signed_in.headers["location"] == study_links[0]
        page = crawl.get(study_links[0]).text
        token = csrf_of(page)
        findings = _finding_forms(page)
        assert len(findings) >= 3
        verdicts = ({"decision": "accept"}, {"decision": "reject", "comment": "no"},
                    {"decision": "modify", "status": "absent"})  # fmt: skip
        for (action, fields), verdict in zip(findings, verdicts, strict=False):
            answer = crawl.post(action, {"csrf_token": token, **fields, **verdict})
            assert answer.status_code == 303, answer.text
        impression = re.search(r'action="([^"]+/impression)"', page)
        assert impression is not None
        answer = crawl.post(impression.group(1), {"csrf_token": token, "decision": "modify", "impression": "Clear."})
        assert answer.status_code == 303, answer.text
        action, fields = findings[0]
        stale = crawl.post(action, {"csrf_token": token, "label": fields["label"], "seen": "", "decision": "reject"})
        assert stale.status_code == 409  # decided since this page was loaded: the conflict page
        draft = re.search(r'action="([^"]+/draft)"', page)
        assert draft is not None
        answer = crawl.post(draft.group(1), {"csrf_token": token, "decision": "reject", "reason": "RT-R1",
                                             "then": "next"})  # fmt: skip
        assert answer.headers["location"].startswith("/console/next?after=")
        nxt = crawl.get(answer.headers["location"])
        assert nxt.headers["location"] in study_links[1:]
        crawl.follow(nxt.headers["location"], study_links[0], "/console/worklist?filter=all", "/console/agreement")
    with console_client(store, settings) as admin:
        sign_in(admin, "ad.crawl")
        explorer = Crawl(admin)
        searched = explorer.post("/console/audit", {"csrf_token": csrf_of(admin.get("/console/audit").text),
                                                    "study_uid": uids[0], "limit": "25"})  # fmt: skip
        assert searched.status_code == 303
        explorer.follow("/console/worklist?filter=all", "/console/dashboard", "/console/audit?limit=200",
                        searched.headers["location"])  # fmt: skip
    every = {**crawl.seen, **explorer.seen}
    visited = set(every)
    assert any(url.startswith("/console/dashboard/agreement?") for url in visited)  # a study list of the dashboard
    assert any(url.startswith("/console/audit/timeline/") for url in visited)
    assert any("/images/" in url for url in visited)
    assert any(url.endswith(".dcm") for url in visited)  # the assessment SR of the decision above
    assert len([a for found in every.values() for a in found]) > 500
    assert crawl.with_uids() == []
    assert explorer.with_uids() == []


def test_an_old_address_with_a_study_uid_is_moved_once_without_saying_the_uid_again(
    store: Store, seeded: tuple[Settings, list[str]]
) -> None:
    settings, uids = seeded
    with console_client(store, settings) as client:
        sign_in(client, "dr.crawl")
        moved = client.get(f"/console/studies/{uids[0]}/1?focus=2", follow_redirects=False)
        assert moved.status_code == 303
        location = moved.headers["location"]
        assert uids[0] not in location
        assert re.fullmatch(r"/console/studies/[A-Za-z0-9_-]{24}/1\?focus=2", location)
        assert client.get(location).status_code == 200
        assert client.get(location.replace("focus=2", "focus=" + "9" * 40)).status_code == 200  # ignored, as before
        unknown = client.get("/console/studies/1.2.3.999/1", follow_redirects=False, headers={"accept": "text/html"})
        assert unknown.status_code == 404
        assert "1.2.3.999" not in unknown.text
        # images and assessment SRs are never addressed by a UID, old or new
        image = client.get(f"/console/studies/{uids[0]}/1/images/0/prepared.png", follow_redirects=False)
        assert image.status_code == 404
        # a decision a script posts to an old address is recorded, and answered with the handle's address
        page = client.get(location).text
        answer = client.post(f"/console/studies/{uids[0]}/1/draft", follow_redirects=False,
                             data={"csrf_token": csrf_of(page), "decision": "accept", "reason": "RT-A1"})  # fmt: skip
        assert answer.status_code == 303
        assert answer.headers["location"] == location.split("?")[0] + "#draft"
        old_next = client.get(f"/console/next?study={uids[0]}&revision=1", follow_redirects=False)
        assert not UID_IN_TEXT.search(old_next.headers["location"])


def test_a_link_made_by_one_console_process_works_in_another_and_after_a_restart(
    store: Store, seeded: tuple[Settings, list[str]], database_url: str
) -> None:
    """Two applications, each on its own engine (as two processes), over one database: the study link, the timeline
    link and the saved search of one open the same pages in the other, and a third started later."""
    settings, uids = seeded
    with console_client(store, settings) as first:
        sign_in(first, "ad.crawl")
        worklist = first.get("/console/worklist?filter=all").text
        study_link = re.findall(r'<td><a href="(/console/studies/[^"]+)"[^>]*>', worklist)[0]
        form = first.get("/console/audit").text
        search = first.post("/console/audit", data={"csrf_token": csrf_of(form), "study_uid": uids[1]},
                            follow_redirects=False).headers["location"]  # fmt: skip
        results = first.get(search).text
        timeline = re.search(r'href="([^"]+)" class="timeline-link">', results)
        assert timeline is not None
        shown_first = (first.get(study_link).text, first.get(search).text, first.get(timeline.group(1)).text)
    for _ in range(2):  # another process, then that one restarted: a new engine and application each time
        other_store = Store.from_url(database_url)
        try:
            with console_client(other_store, settings) as other:
                sign_in(other, "ad.crawl")
                study, found, events = other.get(study_link), other.get(search), other.get(timeline.group(1))
                assert [study.status_code, found.status_code, events.status_code] == [200, 200, 200]
                assert "has expired" not in found.text + events.text
                assert f'id="timeline-uid">{uids[1]}<' in events.text
                assert _seqs(found.text) == _seqs(shown_first[1]) != []
                assert study_link in other.get("/console/worklist?filter=all").text  # the same handle
        finally:
            other_store.dispose()
    with store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ConsoleKey)) == 1


def _seqs(html: str) -> list[int]:
    return [int(seq) for seq in re.findall(r'<tr class="event [^"]*" data-seq="(\d+)"', html)]


def test_processes_starting_together_make_one_key_and_the_same_handles(database_url: str) -> None:
    migrated = Store.from_url(database_url)
    upgrade(migrated)
    migrated.dispose()
    stores = [Store.from_url(database_url) for _ in range(6)]
    handles: list[str] = []
    barrier = threading.Barrier(len(stores))

    def make(store: Store) -> None:
        barrier.wait()
        handles.append(ConsoleLinks(store).study_handles(["1.2.3.4.5"])["1.2.3.4.5"])

    threads = [threading.Thread(target=make, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert len(handles) == len(stores)
        assert len(set(handles)) == 1
        assert re.fullmatch(r"[A-Za-z0-9_-]{24}", handles[0])
        with stores[0].session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(ConsoleKey)) == 1
            assert session.scalars(sa.select(StudyHandle.study_uid)).all() == ["1.2.3.4.5"]
    finally:
        for store in stores:
            store.dispose()


@pytest.fixture
def kept(sqlite_store: Store) -> ConsoleLinks:
    return ConsoleLinks(sqlite_store)


def _age(store: Store, table: Any, column: Any, hours: float) -> None:
    with store.session() as session:
        session.execute(sa.update(table).values({column: utc_now() - timedelta(hours=hours)}))


def test_timeline_links_and_saved_searches_expire_and_study_links_do_not(
    kept: ConsoleLinks, sqlite_store: Store
) -> None:
    study = kept.study_handles(["1.2.3.4"])["1.2.3.4"]
    timeline = kept.timeline_handles(["1.2.3.4"])["1.2.3.4"]
    token = kept.save_search({"patient_id": "PAT-1"})
    assert study != timeline  # hashed apart: a study link is not a timeline link
    assert kept.study_uid(links.TIMELINE, study) is None
    assert kept.saved_search(token) == {"patient_id": "PAT-1"}
    _age(sqlite_store, StudyHandle, "shown_at", 11.9)
    assert kept.study_uid(links.TIMELINE, timeline) == "1.2.3.4"
    _age(sqlite_store, StudyHandle, "shown_at", 12.1)
    _age(sqlite_store, SavedSearch, "saved_at", 12.1)
    assert kept.study_uid(links.TIMELINE, timeline) is None
    assert kept.saved_search(token) is None
    assert _kept_rows(sqlite_store) == {links.STUDY: 1}  # the expired search's patient ID is not kept either
    assert kept.study_uid(links.STUDY, study) == "1.2.3.4"  # a study page's link is a bookmark: kept
    assert kept.timeline_handles(["1.2.3.4"]) == {"1.2.3.4": timeline}  # shown again: works again
    assert kept.study_uid(links.TIMELINE, timeline) == "1.2.3.4"


def _kept_rows(store: Store) -> dict[str, int]:
    """Handles kept per kind, and saved searches (as ``search``)."""
    with store.session() as session:
        kinds = dict(session.execute(sa.select(StudyHandle.kind, sa.func.count()).group_by(StudyHandle.kind)).all())
        searches = session.scalar(sa.select(sa.func.count()).select_from(SavedSearch)) or 0
    return {**kinds, **({"search": searches} if searches else {})}


def test_a_console_starting_forgets_what_expired_while_none_ran(
    kept: ConsoleLinks, sqlite_store: Store, tmp_path: Path
) -> None:
    kept.study_handles(["1.2.3.4"])
    kept.timeline_handles(["1.2.3.4", "1.2.3.5"])
    kept.save_search({"patient_id": "PAT-1"})
    kept.save_search({"accession": "ACC-2"})
    _age(sqlite_store, StudyHandle, "shown_at", 13)
    _age(sqlite_store, SavedSearch, "saved_at", 13)
    fresh = kept.save_search({"accession": "ACC-3"})  # saved since: kept
    assert _kept_rows(sqlite_store) == {links.STUDY: 1, links.TIMELINE: 2, "search": 1}  # forgotten as it saved
    _age(sqlite_store, StudyHandle, "shown_at", 13)
    with console_client(sqlite_store, console_settings(tmp_path, sqlite_store)):
        pass
    assert _kept_rows(sqlite_store) == {links.STUDY: 1, "search": 1}
    assert kept.saved_search(fresh) == {"accession": "ACC-3"}


def test_at_most_max_kept_timeline_links_and_searches_the_oldest_go_first(
    kept: ConsoleLinks, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(links, "MAX_KEPT", 3)
    first = kept.timeline_handles(["1.2.3.1"])["1.2.3.1"]
    _age(sqlite_store, StudyHandle, "shown_at", 1)
    tokens = [kept.save_search({"accession": f"ACC-{n}"}) for n in range(5)]
    later = kept.timeline_handles([f"1.2.3.{n}" for n in range(2, 5)])
    assert kept.study_uid(links.TIMELINE, first) is None
    assert all(kept.study_uid(links.TIMELINE, handle) == uid for uid, handle in later.items())
    assert [kept.saved_search(token) is not None for token in tokens] == [False, False, True, True, True]
    kept.study_handles([f"1.2.4.{n}" for n in range(6)])  # study links are not counted, nor dropped
    with sqlite_store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).where(StudyHandle.kind == links.STUDY)) == 6


@contextlib.contextmanager
def _console_process(settings: Settings, database_url: str) -> Iterator[httpx.Client]:
    """``radtrace api`` (which serves the console) in a process of its own on a free port, over ``database_url``;
    yields a client of it."""
    env = {"RADTRACE_DATA_DIR": str(settings.data_dir), "RADTRACE_STORE__URL": database_url,
           "RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true"}  # fmt: skip
    log_file = settings.data_dir / f"api-{secrets.token_hex(4)}.log"
    with running_api(env, log_file, timeout_s=30) as api, httpx.Client(base_url=api.base_url, timeout=10) as client:
        yield client


def _sign_in_over_http(client: httpx.Client, name: str) -> None:
    form = client.get("/console/login")
    signed = client.post("/console/login", data={"username": name, "password": PASSWORD,
                                                 "csrf_token": csrf_of(form.text)})  # fmt: skip
    assert signed.status_code == 303, signed.text
    assert "/console/login" not in signed.headers["location"]


def test_links_cross_real_console_processes_both_ways(
    store: Store, seeded: tuple[Settings, list[str]], database_url: str
) -> None:
    """This process makes a study link, a saved search and a timeline link; ``radtrace api`` in another process
    opens them and makes a timeline link of its own, which this process opens after the other has stopped."""
    settings, uids = seeded
    with console_client(store, settings) as here:
        sign_in(here, "ad.crawl")
        study_link = re.findall(r'<td><a href="(/console/studies/[^"]+)"[^>]*>', here.get("/console/worklist").text)[0]
        search = here.post("/console/audit", data={"csrf_token": csrf_of(here.get("/console/audit").text),
                                                   "study_uid": uids[0]}, follow_redirects=False)  # fmt: skip
        results = here.get(search.headers["location"]).text
        timeline = re.search(r'href="([^"]+)" class="timeline-link">', results)
        assert timeline is not None
    with _console_process(settings, database_url) as there:
        _sign_in_over_http(there, "ad.crawl")
        study, found = there.get(study_link), there.get(search.headers["location"])
        events = there.get(timeline.group(1))
        assert [study.status_code, found.status_code, events.status_code] == [200, 200, 200]
        assert _seqs(found.text) == _seqs(results) != []
        assert f'id="timeline-uid">{uids[0]}<' in events.text
        moved = there.get(f"/console/audit/studies/{uids[2]}")  # an old link: moved to a handle made there
        assert moved.status_code == 303
        made_there = moved.headers["location"]
    later_store = Store.from_url(database_url)  # a new engine and application: the other process has stopped
    try:
        with console_client(later_store, settings) as later:
            sign_in(later, "ad.crawl")
            page = later.get(made_there)
    finally:
        later_store.dispose()
    assert page.status_code == 200
    assert f'id="timeline-uid">{uids[2]}<' in page.text

"""Two sessions deciding one study at the same moment, through the real console app: two radiologists, or one in
two tabs (the same session cookie), each with its own client and its own request thread, released together by a
barrier. What each gets back, the audit rows, the outbox rows for the PACS and the assessment SRs kept are checked
on SQLite and on PostgreSQL (``-k sqlite`` / ``-k postgresql``).

A clinician expects: one decision recorded, the other told (409, naming the decision recorded meanwhile), never a
silent overwrite, never two assessments out for one page's decision, and an assessment SR that carries every
decision recorded before it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import radtrace.console.draft_recording as draft_recording
from console_support import add_user, console_client, reported_study, sign_in, study_path
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings, load_settings
from radtrace.console.assessment_files import PENDING
from radtrace.model.reader import StudyReader
from radtrace.reporting.dispatch.outbox import KIND_ASSESSMENT
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, Revision, RevisionState, Study
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


@pytest.fixture
def study_uid(store: Store, settings: Settings) -> str:
    return reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=81)


@pytest.fixture
def clients(store: Store, settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """Signed-in clients: ``make("dr.one")`` signs in; ``make(tab_of=client)`` is another tab of that session."""
    opened: list[TestClient] = []

    def make(name: str | None = None, tab_of: TestClient | None = None) -> TestClient:
        client = console_client(store, settings)
        client.__enter__()
        opened.append(client)
        client.app.state.console.ring_dispatch = lambda outbox_id: True  # type: ignore[attr-defined]
        if tab_of is not None:
            client.cookies.update(tab_of.cookies)
        else:
            assert name is not None
            add_user(store, name, "radiologist")
            sign_in(client, name)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _form(page: str, pattern: str) -> dict[str, str]:
    form = re.search(pattern, page, re.S)
    assert form is not None
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1)))


def _finding_form(page: str) -> dict[str, str]:
    return _form(page, r'<form method="post" action="[^"]+/findings" class="finding-form"[^>]*>(.*?)</form>')


def _draft_form(page: str) -> dict[str, str]:
    return _form(page, r'id="draft-form">(.*?)</form>')


def _together(*posts: Callable[[], Any]) -> list[Any]:
    """Run each POST in its own thread, released at the same moment; their answers in order."""
    barrier = threading.Barrier(len(posts))
    answers: list[Any] = [None] * len(posts)

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            answers[index] = posts[index]()
        except BaseException as exc:  # shown in the assertion below
            answers[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(posts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(isinstance(a, BaseException) for a in answers), answers
    return answers


def _decisions(store: Store) -> list[tuple[str, str | None, dict[str, Any]]]:
    table = AuditEventRow
    with store.session() as session:
        rows = session.execute(
            sa.select(table.event_type, table.actor_user, table.payload)
            .where(table.event_type.in_(["finding_assessed", "draft_assessed"]))
            .order_by(table.seq)
        ).all()
    return [(kind, user, json.loads(payload)) for kind, user, payload in rows]


def _assessments_out(store: Store) -> list[str]:
    """The assessment SRs queued for the PACS (their SOP Instance UIDs)."""
    with store.session() as session:
        return list(session.scalars(sa.select(OutboxMessage.document_uid).where(OutboxMessage.kind == KIND_ASSESSMENT)))


def _kept_assessments(settings: Settings) -> list[str]:
    """The assessment SR files kept (served, downloadable), by SOP Instance UID; and none left pending."""
    root = settings.data_dir / "assessments"
    assert not [p for p in (root / PENDING).glob("*") if p.is_file()] if (root / PENDING).exists() else True
    return sorted(p.stem for p in root.glob("*/*/*.dcm"))


def test_two_radiologists_deciding_one_finding_at_once_one_is_recorded_the_other_told(
    store: Store, study_uid: str, clients: Callable[..., TestClient]
) -> None:
    url = study_path(store, study_uid)
    one, two = clients("dr.one"), clients("dr.two")
    form_one, form_two = _finding_form(one.get(url).text), _finding_form(two.get(url).text)
    label = form_one["label"]
    answers = _together(
        lambda: one.post(f"{url}/findings", data={**form_one, "decision": "accept"}, follow_redirects=False),
        lambda: two.post(f"{url}/findings", data={**form_two, "decision": "reject"}, follow_redirects=False),
    )
    assert sorted(a.status_code for a in answers) == [303, 409], [a.status_code for a in answers]
    recorded = _decisions(store)
    assert len(recorded) == 1, recorded
    _kind, winner, payload = recorded[0]
    assert payload["finding"] == label
    assert payload["supersedes"] is None
    refused = next(a for a in answers if a.status_code == 409)
    assert f"{winner} recorded “{payload['decision']}ed”" in refused.text  # the other decision, named
    assert "Not recorded:" in refused.text


def test_two_radiologists_deciding_the_whole_draft_at_once_send_one_assessment(
    store: Store, settings: Settings, study_uid: str, clients: Callable[..., TestClient]
) -> None:
    url = study_path(store, study_uid)
    one, two = clients("dr.one"), clients("dr.two")
    form_one, form_two = _draft_form(one.get(url).text), _draft_form(two.get(url).text)
    answers = _together(
        lambda: one.post(f"{url}/draft", data={**form_one, "decision": "accept", "reason": "RT-A1"},
                         follow_redirects=False),
        lambda: two.post(f"{url}/draft", data={**form_two, "decision": "reject", "reason": "RT-R2"},
                         follow_redirects=False),
    )  # fmt: skip
    assert sorted(a.status_code for a in answers) == [303, 409], [a.status_code for a in answers]
    recorded = _decisions(store)
    assert [kind for kind, _user, _payload in recorded] == ["draft_assessed"]
    sent = recorded[0][2]["assessment_sr"]["sop_instance_uid"]
    assert _assessments_out(store) == [sent]
    assert _kept_assessments(settings) == [sent]
    refused = next(a for a in answers if a.status_code == 409)
    assert f"{recorded[0][1]} recorded" in refused.text


def test_a_double_submitted_whole_draft_decision_is_recorded_and_kept_once(
    store: Store, settings: Settings, study_uid: str, clients: Callable[..., TestClient]
) -> None:
    """The same form sent twice at once (a double click, or a retried request in a second tab of the session).
    Before: one decision and one outbox row, but both requests built and kept an assessment SR: the second, which
    no decision names and nothing sent, was kept beside the first under assessments/<study>/1/."""
    url = study_path(store, study_uid)
    tab = clients("dr.dbl")
    again = clients(tab_of=tab)
    form = {**_draft_form(tab.get(url).text), "decision": "reject", "reason": "RT-R2", "comment": "see report"}
    answers = _together(
        lambda: tab.post(f"{url}/draft", data=form, follow_redirects=False),
        lambda: again.post(f"{url}/draft", data=form, follow_redirects=False),
    )
    assert [a.status_code for a in answers] == [303, 303]
    recorded = _decisions(store)
    assert [kind for kind, _user, _payload in recorded] == ["draft_assessed"]
    sent = recorded[0][2]["assessment_sr"]["sop_instance_uid"]
    assert _assessments_out(store) == [sent]
    assert _kept_assessments(settings) == [sent]


def test_a_finding_decided_in_another_tab_while_the_draft_is_recorded_is_in_its_assessment(
    store: Store,
    settings: Settings,
    study_uid: str,
    clients: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One radiologist, two tabs: tab 1 modifies a finding while tab 2's whole-draft decision is being built (its
    assessment SR made from the decisions as they were when the request came). Before: the finding's decision
    was recorded first (a lower seq), the draft's payload and its SR, queued for the PACS, said the finding was
    not decided, and the study page did not name it as decided after the draft: a silent lost update."""
    url = study_path(store, study_uid)
    tab1 = clients("dr.tabs")
    tab2 = clients(tab_of=tab1)
    finding = _finding_form(tab1.get(url).text)
    draft = _draft_form(tab2.get(url).text)
    build = draft_recording._assessment_sr
    modified: list[int] = []

    def building(*args: Any, **kwargs: Any) -> Any:
        if not modified:  # tab 1's decision lands now, while tab 2's SR is being made
            answer = tab1.post(f"{url}/findings", data={**finding, "decision": "modify", "status": "uncertain"},
                               follow_redirects=False)  # fmt: skip
            modified.append(answer.status_code)
        return build(*args, **kwargs)

    monkeypatch.setattr(draft_recording, "_assessment_sr", building)
    answer = tab2.post(f"{url}/draft", data={**draft, "decision": "accept", "reason": "RT-A2"},
                       follow_redirects=False)  # fmt: skip
    assert modified == [303]
    assert answer.status_code == 303  # built again from the decisions as they are now, and recorded
    recorded = _decisions(store)
    assert [kind for kind, _user, _payload in recorded] == ["finding_assessed", "draft_assessed"]
    draft_payload = recorded[1][2]
    assert draft_payload["findings"][finding["label"]] == "modify", draft_payload["findings"]
    sent = draft_payload["assessment_sr"]["sop_instance_uid"]
    assert _assessments_out(store) == [sent]
    assert _kept_assessments(settings) == [sent]
    sr = pydicom.dcmread(next((settings.data_dir / "assessments").glob(f"*/*/{sent}.dcm")))
    assert "Modified" in _texts(sr)  # the SR the PACS gets says the finding was changed (RTA-V3)
    page = tab2.get(url).text
    assert "changed to uncertain" in page
    assert 'data-testid="draft-out-of-date"' not in page  # the draft decision carries it: nothing decided after


def _texts(dataset: pydicom.Dataset) -> str:
    """Every text and code meaning of an SR's content tree, joined."""
    found: list[str] = []

    def walk(items: Any) -> None:
        for item in items:
            found.extend(str(item.get(k, "")) for k in ("TextValue",))
            for code in (*item.get("ConceptCodeSequence", []), *item.get("ConceptNameCodeSequence", [])):
                found.append(str(code.get("CodeMeaning", "")))
            walk(item.get("ContentSequence", []))

    walk(dataset.get("ContentSequence", []))
    return " ".join(found)


def test_a_whole_draft_decision_built_while_a_later_revision_is_read_is_refused_and_sends_nothing(
    store: Store, settings: Settings, study_uid: str, clients: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Revision 2 (more images) is read while revision 1's whole-draft decision is being built: nothing is recorded
    on either revision, nothing is queued or kept, and the 409 page's reload link opens revision 2. Before: refused
    with nothing sent, but the link reloaded revision 1 (the review as loaded before revision 2 was read)."""
    url = study_path(store, study_uid)
    client = clients("dr.late")
    draft = _draft_form(client.get(url).text)
    build = draft_recording._assessment_sr

    def building(*args: Any, **kwargs: Any) -> Any:
        with store.session() as session:  # the worker reports revision 2 now
            study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
            assert study is not None
            session.add(Revision(study=study, number=2, state=RevisionState.REPORTED))
        return build(*args, **kwargs)

    monkeypatch.setattr(draft_recording, "_assessment_sr", building)
    answer = client.post(f"{url}/draft", data={**draft, "decision": "accept", "reason": "RT-A1"},
                         follow_redirects=False)  # fmt: skip
    assert answer.status_code == 409
    assert "revision 2 of this study has been read" in answer.text
    reload = re.search(r'id="reload-study" href="([^"]+)"', answer.text)
    assert reload is not None
    assert reload.group(1) == study_path(store, study_uid, 2)
    assert _decisions(store) == []
    assert _assessments_out(store) == []
    assert _kept_assessments(settings) == []


def test_a_page_of_revision_1_cannot_decide_once_revision_2_was_read_even_if_its_delivery_failed(
    store: Store, study_uid: str, clients: Callable[..., TestClient]
) -> None:
    """Revision 2 (more images) was read and drafted, then its draft's delivery to the PACS failed for good: the
    dispatcher's settlement leaves such a revision FAILED with its reported_at. Before: revision 1's page took
    decisions again (303, recorded on revision 1) and showed its forms, as if revision 2 had never been read."""
    url = study_path(store, study_uid)
    client = clients("dr.stale")
    page = client.get(url).text
    with store.session() as session:
        study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
        assert study is not None
        session.add(Revision(study=study, number=2, state=RevisionState.FAILED, reported_at=utc_now(),
                             reason="delivery to pacs PACS@127.0.0.1:11112 failed: association rejected"))  # fmt: skip
    stale = client.post(f"{url}/findings", data={**_finding_form(page), "decision": "accept"}, follow_redirects=False)
    assert stale.status_code == 409
    assert "revision 2 of this study has been read" in stale.text
    stale = client.post(f"{url}/draft", data={**_draft_form(page), "decision": "accept", "reason": "RT-A1"},
                        follow_redirects=False)  # fmt: skip
    assert stale.status_code == 409
    assert 'class="finding-form"' not in client.get(url).text
    assert _decisions(store) == []
    assert _assessments_out(store) == []

"""Two radiologists on one study, double submits and stale pages: a decision made on a page that no longer shows
the current state is refused with 409 and a reason, never recorded over what the user did not see.

Studies are read by the real pipeline with the demo backend (console_support); checked through the pages and the
audit rows, as in test_console_web.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from console_support import add_user, console_client, console_settings, csrf_of, reported_study, sign_in, study_path
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings
from radtrace.console.schema import ConsoleSession, ConsoleUser
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(store: Store, tmp_path: Path) -> Settings:
    return console_settings(tmp_path, store)


def _study(store: Store, settings: Settings, seed: int) -> str:
    return reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=seed)


def _decisions(store: Store) -> list[tuple[str, str | None, dict[str, object]]]:
    table = AuditEventRow
    with store.session() as session:
        rows = session.execute(
            sa.select(table.event_type, table.actor_user, table.payload)
            .where(table.event_type.in_(["finding_assessed", "draft_assessed"]))
            .order_by(table.seq)
        ).all()
    return [(kind, user, json.loads(payload)) for kind, user, payload in rows]


def _finding_form(page: str, index: int) -> dict[str, str]:
    """The hidden fields of the ``index``-th finding's form, as the browser would send them."""
    forms = re.findall(
        r'<form method="post" action="[^"]+/findings" class="finding-form"[^>]*>(.*?)</form>', page, re.S
    )
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', forms[index]))


def _draft_form(page: str) -> dict[str, str]:
    form = re.search(r'id="draft-form">(.*?)</form>', page, re.S)
    assert form is not None
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1)))


def _signed_in(store: Store, settings: Settings, name: str) -> TestClient:
    add_user(store, name, "radiologist")
    client = console_client(store, settings)
    sign_in(client, name)
    return client


def test_a_second_radiologist_on_a_stale_page_gets_a_conflict_not_a_silent_overwrite(
    store: Store, settings: Settings
) -> None:
    study_uid = _study(store, settings, 71)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.one") as one, _signed_in(store, settings, "dr.two") as two:
        page_one, page_two = one.get(url).text, two.get(url).text  # both open the study
        accepted = one.post(f"{url}/findings", data={**_finding_form(page_one, 0), "decision": "accept"},
                            follow_redirects=False)  # fmt: skip
        assert accepted.status_code == 303
        late = two.post(f"{url}/findings", data={**_finding_form(page_two, 0), "decision": "reject"},
                        follow_redirects=False)  # fmt: skip
        assert late.status_code == 409
        assert "dr.one" in late.text
        assert "accepted" in late.text
        assert "reload" in late.text.lower()
        assert f'href="{url}' in late.text  # a way back to the current page
        # reloaded, the second radiologist sees the first one's decision and may supersede it knowingly
        fresh = two.get(url).text
        assert "accepted by dr.one" in fresh
        again = two.post(f"{url}/findings", data={**_finding_form(fresh, 0), "decision": "reject"},
                         follow_redirects=False)  # fmt: skip
        assert again.status_code == 303
        # the whole draft: the same
        draft_one, draft_two = one.get(url).text, two.get(url).text
        form = {"decision": "accept", "reason": "RT-A1"}
        assert (
            one.post(f"{url}/draft", data={**_draft_form(draft_one), **form}, follow_redirects=False).status_code == 303
        )
        late = two.post(f"{url}/draft", data={**_draft_form(draft_two), "decision": "reject", "reason": "RT-R1"},
                        follow_redirects=False)  # fmt: skip
        assert late.status_code == 409
        assert "dr.one" in late.text
    kinds = [(kind, user, payload["decision"]) for kind, user, payload in _decisions(store)]
    assert kinds == [
        ("finding_assessed", "dr.one", "accept"),
        ("finding_assessed", "dr.two", "reject"),
        ("draft_assessed", "dr.one", "accept"),
    ]


def test_a_whole_draft_decision_from_a_page_that_did_not_show_anothers_finding_decision_is_a_conflict(
    store: Store, settings: Settings
) -> None:
    """The whole draft's decision carries the findings' current decisions (its payload and the assessment SR, whose
    observer is the one who decided the draft). Before: dr.one's acceptance, from a page loaded before dr.two
    changed a finding, was recorded (303), and dr.one's assessment SR said that finding was changed to uncertain,
    which dr.one never saw."""
    study_uid = _study(store, settings, 75)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.one") as one, _signed_in(store, settings, "dr.two") as two:
        page_one, page_two = one.get(url).text, two.get(url).text  # both open the study
        modify = {**_finding_form(page_two, 0), "decision": "modify", "status": "uncertain"}
        changed = two.post(f"{url}/findings", data=modify, follow_redirects=False)
        assert changed.status_code == 303
        draft = {"decision": "accept", "reason": "RT-A1"}
        late = one.post(f"{url}/draft", data={**_draft_form(page_one), **draft}, follow_redirects=False)
        assert late.status_code == 409
        assert "dr.two recorded “changed to uncertain”" in late.text
        assert "Not recorded: <strong" in late.text  # and what was sent is said back
        # reloaded, dr.one sees dr.two's decision and decides the draft knowingly
        fresh = one.get(url).text
        assert "changed to uncertain by dr.two" in fresh
        assert one.post(f"{url}/draft", data={**_draft_form(fresh), **draft}, follow_redirects=False).status_code == 303
    decided = _decisions(store)
    assert [(kind, user) for kind, user, _ in decided] == [("finding_assessed", "dr.two"), ("draft_assessed", "dr.one")]
    assert "modify" in decided[1][2]["findings"].values()  # the decision recorded carries what its page showed


def test_a_double_submit_records_one_decision_and_both_answers_lead_to_the_study(
    store: Store, settings: Settings
) -> None:
    study_uid = _study(store, settings, 72)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.dbl") as client:
        page = client.get(url).text
        finding = {**_finding_form(page, 1), "decision": "modify", "status": "absent", "comment": "not seen"}
        answers = [client.post(f"{url}/findings", data=finding, follow_redirects=False) for _ in range(2)]
        assert [a.status_code for a in answers] == [303, 303]
        assert answers[0].headers["location"] == answers[1].headers["location"]
        draft = {**_draft_form(page), "decision": "reject", "reason": "RT-R2"}
        answers = [client.post(f"{url}/draft", data=draft, follow_redirects=False) for _ in range(2)]
        assert [a.status_code for a in answers] == [303, 303]
        # a different decision from the same stale page is a changed mind made blind: refused
        other = client.post(f"{url}/findings", data={**finding, "decision": "accept"}, follow_redirects=False)
        assert other.status_code == 409
    assert [(kind, payload["decision"]) for kind, _user, payload in _decisions(store)] == [
        ("finding_assessed", "modify"),
        ("draft_assessed", "reject"),
    ]


def test_a_page_of_an_earlier_revision_cannot_decide_once_the_study_is_read_again(
    store: Store, settings: Settings
) -> None:
    study_uid = _study(store, settings, 73)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.old") as client:
        page = client.get(url).text
        with store.session() as session:  # new images came; the study was read again as revision 2
            study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
            assert study is not None
            session.add(Revision(study=study, number=2, state=RevisionState.REPORTED))
        stale = client.post(f"{url}/findings", data={**_finding_form(page, 0), "decision": "accept"},
                            follow_redirects=False)  # fmt: skip
        assert stale.status_code == 409
        assert "revision 2" in stale.text
        stale = client.post(f"{url}/draft", data={**_draft_form(page), "decision": "accept", "reason": "RT-A1"},
                            follow_redirects=False)  # fmt: skip
        assert stale.status_code == 409
        reopened = client.get(url).text
        assert "revision 2" in reopened
        assert 'class="finding-form"' not in reopened
    assert _decisions(store) == []


def test_a_malformed_seen_field_is_refused_with_a_reason(store: Store, settings: Settings) -> None:
    study_uid = _study(store, settings, 74)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.bad") as client:
        page = client.get(url).text
        form = {**_finding_form(page, 0), "decision": "accept", "seen": "1; drop table"}
        answer = client.post(f"{url}/findings", data=form, follow_redirects=False)
        assert answer.status_code == 422
        assert "seen" in answer.text
        assert csrf_of(page)
    assert _decisions(store) == []


def test_a_finding_or_impression_decided_after_the_whole_draft_is_named_as_not_in_its_assessment_sr(
    store: Store, settings: Settings
) -> None:
    """The whole-draft decision's payload and assessment SR (what the PACS and the RIS are sent) carry the findings'
    and the impression's decisions current when it was made. Before: a finding changed afterwards (here by another
    radiologist, then the impression by the first) left the page saying only "accepted by dr.one · assessment SR",
    so the change seemed recorded everywhere while the PACS held an SR without it; nothing on the page said so."""
    study_uid = _study(store, settings, 77)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.one") as one, _signed_in(store, settings, "dr.two") as two:
        draft = {**_draft_form(one.get(url).text), "decision": "accept", "reason": "RT-A1"}
        assert one.post(f"{url}/draft", data=draft, follow_redirects=False).status_code == 303
        assert 'data-testid="draft-out-of-date"' not in one.get(url).text  # nothing decided since
        page = two.get(url).text
        label = re.findall(r'<tr id="finding-0"[^>]* data-label="([^"]+)"', page)[0]
        status = re.findall(r'<tr id="finding-0" class="finding-row status-(\w+)"', page)[0]
        other = "absent" if status != "absent" else "present"
        form = {**_finding_form(page, 0), "decision": "modify", "status": other}
        assert two.post(f"{url}/findings", data=form, follow_redirects=False).status_code == 303
        shown = one.get(url).text
        notice = re.search(r'data-testid="draft-out-of-date">(.*?)</p>', shown, re.S)
        assert notice is not None, "the page does not say the whole-draft decision predates a finding's"
        said = " ".join(notice.group(1).split())
        assert f"{label} (changed to {other} by dr.two)." in said
        assert "assessment SR (what the PACS and the RIS are sent) do not carry it" in said
        assert "decide the whole draft again" in said
        one.post(f"{url}/impression", data={"csrf_token": csrf_of(shown), "decision": "reject", "seen": ""})
        said = " ".join(re.findall(r'data-testid="draft-out-of-date">(.*?)</p>', one.get(url).text, re.S)[0].split())
        assert f"{label} (changed to {other} by dr.two), the impression (rejected by dr.one)." in said
        assert "do not carry them" in said
        # decided again, the new whole-draft decision carries both: the notice is gone
        again = {**_draft_form(one.get(url).text), "decision": "accept", "reason": "RT-A2"}
        assert one.post(f"{url}/draft", data=again, follow_redirects=False).status_code == 303
        assert 'data-testid="draft-out-of-date"' not in one.get(url).text
    drafts = [payload for kind, _user, payload in _decisions(store) if kind == "draft_assessed"]
    assert drafts[-1]["findings"][label] == "modify"
    assert drafts[-1]["impression"] == "reject"


def test_modifying_a_finding_to_the_status_the_model_gave_is_refused_not_counted_as_a_change(
    store: Store, settings: Settings
) -> None:
    """The status list starts at the model's status, so "m, Enter" (or Modify without choosing) sent it unchanged.
    Before: recorded as "changed to present" on a finding the model called present (agreement figures: a
    modification), as the impression's unchanged text is not. Now 422 with the reason, and nothing recorded."""
    study_uid = _study(store, settings, 78)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.one") as one:
        page = one.get(url).text
        status = re.findall(r'<tr id="finding-0" class="finding-row status-(\w+)"', page)[0]
        same = one.post(f"{url}/findings", data={**_finding_form(page, 0), "decision": "modify", "status": status},
                        follow_redirects=False)  # fmt: skip
        assert same.status_code == 422
        assert f"the model says {status}, as chosen: accept it, or choose another status" in same.text
        assert _decisions(store) == []
        other = "uncertain" if status != "uncertain" else "absent"
        changed = one.post(f"{url}/findings", data={**_finding_form(page, 0), "decision": "modify", "status": other},
                           follow_redirects=False)  # fmt: skip
        assert changed.status_code == 303
    assert [(p["decision"], p["status"]) for _k, _u, p in _decisions(store)] == [("modify", other)]


def test_a_study_page_says_when_later_images_are_waiting_or_were_not_read(store: Store, settings: Settings) -> None:
    """New or corrected images arrive while the radiologist reviews: the study's revision 2 is received, queued,
    read, or fails. Before: until revision 2 was read, revision 1's page said nothing (a later revision that
    failed, never), so its draft was accepted and its assessment SR sent as if it covered the whole study."""
    study_uid = _study(store, settings, 79)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.late") as client:
        assert 'data-testid="later-revision"' not in client.get(url).text
        with store.session() as session:
            study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
            assert study is not None
            session.add(Revision(study=study, number=2, state=RevisionState.QUEUED))

        def notice() -> str:
            found = re.search(r'data-testid="later-revision">(.*?)</p>', client.get(url).text, re.S)
            assert found is not None, "the page does not say later images are waiting"
            return " ".join(found.group(1).split())

        assert notice() == (
            "Revision 2 of this study (images received after this reading) is waiting to be read: this draft does "
            "not cover its images, and once it is read its draft replaces this one and decisions here are closed."
        )
        page = client.get(url).text  # decisions are still taken meanwhile
        accepted = client.post(f"{url}/findings", data={**_finding_form(page, 0), "decision": "accept"},
                               follow_redirects=False)  # fmt: skip
        assert accepted.status_code == 303
        with store.session() as session:
            session.execute(sa.update(Revision).where(Revision.number == 2).values(state=RevisionState.FAILED))
        assert notice() == (
            "Revision 2 of this study (images received after this reading) was not read by the model (failed): "
            "this draft does not cover its images; read them in the PACS."
        )
        with store.session() as session:
            session.execute(sa.update(Revision).where(Revision.number == 2).values(state=RevisionState.REPORTED))
        reopened = client.get(url).text
        assert 'data-testid="later-revision"' not in reopened
        assert 'id="superseded"' in reopened


def test_next_study_offers_again_a_study_opened_by_a_radiologist_no_longer_signed_in(
    store: Store, settings: Settings
) -> None:
    """The day radiologist opened the STAT study and went home without deciding it. Before: "next study" skipped
    a study anyone else had ever opened, so the night radiologist's `n` never offered it (it led to the routine
    one, then the worklist). Now only while its opener is signed in (a session used within the idle timeout)."""
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    stat = reported_study(settings, store, reader, seed=80, stat=True)
    routine = reported_study(settings, store, reader, seed=81, age_s=60)

    def seen(at: datetime) -> None:
        with store.session() as session:
            day_id = session.scalar(sa.select(ConsoleUser.id).where(ConsoleUser.name == "dr.day"))
            session.execute(sa.update(ConsoleSession).where(ConsoleSession.user_id == day_id).values(last_seen_at=at))

    with _signed_in(store, settings, "dr.day") as day, _signed_in(store, settings, "dr.night") as night:

        def offered() -> str:
            return str(night.get("/console/next", follow_redirects=False).headers["location"])

        assert day.get(study_path(store, stat)).status_code == 200  # dr.day opens it: theirs while at work
        assert offered() == study_path(store, routine)
        seen(utc_now() - timedelta(seconds=settings.console.idle_timeout_s + 1))  # dr.day's session went idle
        assert offered() == study_path(store, stat)
        seen(utc_now())  # still at work after all
        assert offered() == study_path(store, routine)
        worklist = day.get("/console/worklist").text
        assert day.post("/console/logout", data={"csrf_token": csrf_of(worklist)}).status_code == 200  # signs out
        assert offered() == study_path(store, stat)

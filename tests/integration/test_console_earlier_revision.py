"""Corrected images after decisions: a study decided on revision 1 is sent again with a corrected image and read as
revision 2. The worklist's row says revision 1 was decided; revision 2's page names the decisions made on
revision 1 (who, what, that they were made on the earlier images, with a link), beside each finding too, and
carries none of them over; the whole-draft reason the form starts on never contradicts the decisions recorded, and
a reason of the other verdict is refused.

Both revisions are read by the real pipeline (demo backend, console_support); checked through the pages and the
audit rows.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from console_support import add_user, console_client, console_settings, reported_study, sign_in, study_path
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.testing.studies import ImageSpec, StudySpec, make_image
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import spool_study

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(store: Store, tmp_path: Path) -> Settings:
    return console_settings(tmp_path, store)


def _hidden(form: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))


def _finding_form(page: str, index: int) -> dict[str, str]:
    forms = re.findall(r'<form method="post" action="[^"]+/findings" class="finding-form"[^>]*>(.*?)</form>', page,
                       re.S)  # fmt: skip
    return _hidden(forms[index])


def _draft_form(page: str) -> dict[str, str]:
    form = re.search(r'id="draft-form">(.*?)</form>', page, re.S)
    assert form is not None
    return _hidden(form.group(1))


def _selected_reason(page: str) -> list[str]:
    select = re.search(r'<select name="reason" id="draft-reason">(.*?)</select>', page, re.S)
    assert select is not None
    return re.findall(r'<option value="([^"]+)" selected>', select.group(1))


def _signed_in(store: Store, settings: Settings, name: str) -> TestClient:
    add_user(store, name, "radiologist")
    client = console_client(store, settings)
    sign_in(client, name)
    return client


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def test_revision_2_names_the_decisions_made_on_revision_1_and_carries_none_over(
    store: Store, settings: Settings
) -> None:
    """Before: revision 2's page showed every finding "not decided" and nothing else: dr.one's decisions on
    revision 1 (a finding accepted, the impression rejected, the whole draft accepted and its assessment SR sent)
    were out of sight, so dr.two either redid them blind or believed the study was still untouched."""
    seed = 77
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    study_uid = reported_study(settings, store, reader, seed=seed)
    first = study_path(store, study_uid, 1)
    with _signed_in(store, settings, "dr.one") as one:
        page = one.get(first).text
        label = re.findall(r'data-label="([^"]+)"', page)[0]
        accepted = one.post(f"{first}/findings", data={**_finding_form(page, 0), "decision": "accept"},
                            follow_redirects=False)  # fmt: skip
        assert accepted.status_code == 303
        page = one.get(first).text
        impression = re.search(r'class="finding-form impression-form"[^>]*>(.*?)</form>', page, re.S)
        assert impression is not None
        rejected = one.post(f"{first}/impression", data={**_hidden(impression.group(1)), "decision": "reject"},
                            follow_redirects=False)  # fmt: skip
        assert rejected.status_code == 303
        page = one.get(first).text
        assert _selected_reason(page) == ["RT-A2"]  # the impression was rejected: not "Agrees with my reading"
        draft = {**_draft_form(page), "decision": "accept", "reason": "RT-A2"}
        assert one.post(f"{first}/draft", data=draft, follow_redirects=False).status_code == 303
        assert _selected_reason(one.get(first).text) == ["RT-A2"]  # the recorded decision's own reason
        assert 'data-testid="earlier-decisions"' not in one.get(first).text  # revision 1 has nothing earlier

    # a corrected image of the same study arrives and is read as revision 2
    spec = StudySpec(patient_name="TEST^PATIENT", patient_id=f"RT{seed:07d}", accession=f"ACC{seed:06d}", seed=seed)
    spool_study(settings, store, [make_image(spec, ImageSpec(), series_number=1, instance_number=2)], number=2)
    assert StudyPipeline(settings, store, reader, worker="console-test").process(study_uid, 2).result is Result.REPORTED

    second = study_path(store, study_uid, 2)
    with _signed_in(store, settings, "dr.two") as two:
        # the worklist lists revision 2 as new, and says revision 1 was decided (on the earlier images)
        worklist = two.get("/console/worklist").text
        earlier = re.findall(r'data-testid="earlier">([^<]*)</div>', worklist)
        assert [html.unescape(text) for text in earlier] == [
            "revision 1 accepted by dr.one (earlier images; not carried over)"
        ]
        page = two.get(second).text
        card = re.search(r'data-testid="earlier-decisions"[^>]*>(.*?)</section>', page, re.S)
        assert card is not None, "revision 2's page does not name revision 1's decisions"
        said = _text(card.group(1))
        assert "before the images of revision 2 were read" in said
        assert "none is carried over here" in said
        assert "Revision 1: whole draft accepted by dr.one (RT-A2 Agrees after minor corrections" in said
        assert "its assessment SR sent for revision 1's images" in said
        assert f"{label} accepted by dr.one" in said
        assert "the impression rejected by dr.one" in said
        assert f'href="{first}"' in card.group(1)  # a link to the decisions' own revision
        row = re.search(r'data-testid="earlier-0">(.*?)</div>', page, re.S)
        assert row is not None
        assert re.fullmatch(r"On revision 1 \(earlier images\), where the model said \w+: accepted by dr\.one; not "
                            r"carried over", _text(row.group(1))), _text(row.group(1))  # fmt: skip
        earlier_impression = re.search(r'data-testid="impression-earlier">(.*?)</div>', page, re.S)
        assert earlier_impression is not None
        assert "rejected by dr.one" in _text(earlier_impression.group(1))
        # nothing carried over: revision 2 has no decision, and its forms start from none
        assert 'data-testid="decision-0"' not in page
        assert 'data-testid="impression-decision"' not in page
        assert 'data-testid="draft-decision"' not in page
        assert _finding_form(page, 0)["seen"] == ""
        assert _draft_form(page)["seen"] == ""
        assert _selected_reason(page) == ["RT-A1"]  # no decision on revision 2 yet
        # a reason of the other verdict is refused, with a reason, and nothing recorded
        for verdict, reason, doing in (("reject", "RT-A1", "rejecting"), ("accept", "RT-R2", "accepting")):
            contradicting = {**_draft_form(page), "decision": verdict, "reason": reason}
            refused = two.post(f"{second}/draft", data=contradicting, follow_redirects=False)
            assert refused.status_code == 422
            assert f"is not a reason for {doing} the draft" in html.unescape(refused.text)
    with store.session() as session:
        recorded = session.scalars(
            sa.select(AuditEventRow.event_type).where(
                AuditEventRow.event_type.in_(["finding_assessed", "draft_assessed"]),
                AuditEventRow.payload.contains('"revision": 2'),
            )
        ).all()
    assert recorded == []  # opening revision 2 recorded no decision on it

"""The impression has a decision of its own: a radiologist accepts it, rejects it, or modifies it with their own
text; the page shows it (a changed mind supersedes), the assessment SR and its ORU carry it, and the QA agreement
figures count it beside the findings and whole drafts.

Before, only findings and the whole draft could be decided: nobody could say whether the impression was agreed.
"""

from __future__ import annotations

import html
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa

from console_support import (
    UNKNOWN_STUDY,
    add_user,
    console_client,
    console_settings,
    csrf_of,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.audit.schema import AuditEventRow
from radtrace.config import ReportingSettings
from radtrace.console.dashboard_agreement import WHOLE_DRAFT, read_agreement, sync_decisions
from radtrace.console.dashboard_queries import Window
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from tests_support import dciodvfy_errors

pytestmark = pytest.mark.integration


def _post(client: Any, study_uid: str, what: str, **form: str) -> Any:
    url = study_path(client.app.state.console.store, study_uid)
    page = client.get(url).text
    return client.post(f"{url}/{what}", data={"csrf_token": csrf_of(page), **form},
                       follow_redirects=False)  # fmt: skip


def _items(dataset: Any) -> list[Any]:
    found = []
    for item in dataset.get("ContentSequence", []):
        found.append(item)
        found.extend(_items(item))
    return found


def _row(page: str, label: str) -> list[str]:
    row = re.search(rf'<tr data-label="{re.escape(label)}">(.*?)</tr>', page, re.S)
    assert row is not None, label
    return re.findall(r'<td class="num[^"]*">([^<]*)</td>', row.group(1))


def test_the_impression_is_accepted_modified_or_rejected_and_reaches_the_sr_and_qa(
    store: Store, tmp_path: Path
) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    first, second = reported_study(settings, store, reader, seed=81), reported_study(settings, store, reader, seed=82)
    add_user(store, "dr.imp", "radiologist")
    add_user(store, "qa.imp", "qa")
    with console_client(store, settings) as client:
        sign_in(client, "dr.imp")
        page = client.get(study_path(store, first)).text
        model_impression = re.search(r'data-testid="impression">(?:<bdi class="free-text">)?([^<]*)<', page)
        assert model_impression is not None
        assert model_impression.group(1) not in ("", "(none)")
        assert f'action="{study_path(store, first)}/impression"' in page
        assert _post(client, first, "impression", decision="accept", seen="").status_code == 303
        answer = _post(
            client, first, "impression", decision="modify", impression="  No acute disease. \n", comment="overcalled"
        )  # fmt: skip (no seen field: no check)
        assert answer.status_code == 303
        assert answer.headers["location"].endswith("#impression")
        page = client.get(study_path(store, first)).text
        shown = re.search(r'data-testid="impression-decision">(.*?)</div>', page, re.S)
        assert shown is not None
        assert "modified by dr.imp" in shown.group(1)
        assert "No acute disease." in shown.group(1)
        assert "1 earlier, superseded" in shown.group(1)
        assert _post(client, second, "impression", decision="reject", seen="").status_code == 303
        for uid in (first, second):
            assert _post(client, uid, "draft", decision="reject", reason="RT-R5", seen="").status_code == 303
    with store.session() as session:
        payloads = [json.loads(p) for p in session.scalars(sa.select(AuditEventRow.payload).where(
            AuditEventRow.event_type == "draft_assessed").order_by(AuditEventRow.seq))]  # fmt: skip
    assert [p["impression"] for p in payloads] == ["modify", "reject"]
    kept = settings.data_dir / "assessments" / payloads[0]["assessment_sr"]["path"]
    assert dciodvfy_errors(kept) == []
    sr = pydicom.dcmread(io.BytesIO(kept.read_bytes()))
    [container] = [i for i in _items(sr) if i.ValueType == "CONTAINER"
                   and i.ConceptNameCodeSequence[0].CodeMeaning == "AI impression assessment"]  # fmt: skip
    inside = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in container.ContentSequence}
    assert inside["Assessment"].ConceptCodeSequence[0].CodeMeaning == "Modified"
    assert inside["Corrected impression"].TextValue == "No acute disease."
    assert inside["Comment"].TextValue == "overcalled"
    # QA: the console's agreement page and the dashboard count the impression beside the findings
    with console_client(store, settings) as client:
        sign_in(client, "qa.imp")
        agreement = client.get("/console/agreement").text
    assert _row(agreement, "impression") == ["2", "0", "1", "1", "0%"]  # the superseded accept is not counted
    sync_decisions(store)
    today = datetime.now(UTC).date()
    with store.session() as session:
        figures = {a.label: a for a in read_agreement(session, Window(today, today))}
    assert figures["(impression)"].total == 2
    assert list(figures)[-2:] == ["(impression)", WHOLE_DRAFT]


def test_an_impression_decision_that_cannot_be_recorded_is_refused_with_its_reason(
    store: Store, tmp_path: Path
) -> None:
    settings = console_settings(tmp_path, store)
    study = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=83)
    add_user(store, "dr.no", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.no")
        blank = _post(client, study, "impression", decision="modify", impression="   ")
        assert blank.status_code == 422
        assert "impression as you would write it" in blank.text
        long = _post(client, study, "impression", decision="modify", impression="x" * 4001)
        assert long.status_code == 422
        assert "at most 4000" in long.text
        shown = re.search(r'id="impression-text"[^>]*>([^<]*)</textarea>', client.get(study_path(store, study)).text)
        assert shown is not None
        unchanged = _post(client, study, "impression", decision="modify", impression=html.unescape(shown.group(1)))
        assert unchanged.status_code == 422  # "modified" to the model's own words would count as a disagreement
        assert "unchanged: accept it" in unchanged.text
        odd = _post(client, study, "impression", decision="maybe")
        assert odd.status_code == 422
        assert "an impression decision is accept, reject or modify, not 'maybe'" in html.unescape(odd.text)
        label = re.findall(r'name="label" value="([^"]+)"', client.get(study_path(store, study)).text)[0]
        for what, form in (("impression", {}), ("findings", {"label": html.unescape(label)})):
            unchosen = _post(client, study, what, decision="", **form)  # no verdict chosen: said so, not "not ''"
            assert unchosen.status_code == 422
            assert "is accept, reject or modify, and none was chosen" in html.unescape(unchosen.text), what
        assert _post(client, study, "impression", decision="accept", seen="").status_code == 303
        stale = _post(client, study, "impression", decision="reject", seen="")  # the page before the accept
        assert stale.status_code == 409
        no_token = client.post(f"{study_path(store, study)}/impression", data={"decision": "accept"})
        assert no_token.status_code == 403


def test_the_assessment_oru_carries_the_impression_decision() -> None:
    from pydicom.uid import generate_uid

    from radtrace.console.assessment import ImpressionAssessment, build_assessment_oru
    from radtrace.reporting.sr import build_sr
    from reporting_support import reading, source_study

    ai_sr = build_sr(reading(source_study()), source_study(), settings=ReportingSettings(), revision=1)
    oru = build_assessment_oru(ai_sr, observer="dr.one", verdict="reject", reason=("RT-R5", "x"), comment=None,
                               findings=[], sop_instance_uid=generate_uid(), settings=ReportingSettings(),
                               when=datetime(2026, 12, 5, tzinfo=UTC),
                               impression=ImpressionAssessment("modify", "No acute disease.", "overcalled"),
                               )  # fmt: skip
    text = oru.encode().decode("utf-8")
    assert "AI impression assessment" in text
    assert "Modified" in text
    assert "No acute disease." in text
    assert "overcalled" in text


def test_an_impression_typed_as_the_session_ended_is_shown_back(store: Store, tmp_path: Path) -> None:
    study = UNKNOWN_STUDY
    with console_client(store, console_settings(tmp_path, store)) as client:
        refused = client.post(f"{study}/impression", data={"decision": "modify", "impression": "typed for minutes"})
    assert refused.status_code == 401
    assert "Nothing was recorded" in refused.text
    assert f'href="/console/login?next={study}"' in refused.text
    # minutes of typing are not lost with the session: the page shows it back, to copy
    assert re.search(r'<textarea readonly[^>]*data-testid="typed">typed for minutes</textarea>', refused.text)

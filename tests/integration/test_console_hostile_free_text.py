"""Every console page writes free text that came from outside with its invisible characters as visible escapes.

Free text reaches the console from peers and people: a revision's failure reason (a model server's error body),
a model's finding labels, evidence, reasoning and impression, a sender's AE title (the audit's actor), an audit
payload, a radiologist's typed comment. Before, the study page, the worklist's failed view, the audit explorer's
actor, model, labels and payload, and the study timeline wrote them raw: a right-to-left override (U+202E)
reversed the rest of its cell ("LIAF" read "FAIL"), an isolate (U+2066) or a zero-width joiner hid in the text,
and a CR/LF broke a one-line cell. Now each is written as ``⟨U+202E⟩`` (``span.control``) inside an isolated
``<bdi class="free-text">``, markup escaped; long texts (the impression, the reasoning) keep their line breaks as
``<br>``. A patient's name written in Arabic or Hebrew still reads in its own script, as before.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from console_support import (
    add_user,
    console_client,
    console_settings,
    csrf_of,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study

pytestmark = pytest.mark.integration

#: A right-to-left override and its pop, an isolate and its pop, a zero-width joiner, CR/LF and markup.
HOSTILE = "\u202eLIAF\u202c \u2066iso\u2069 zw\u200dj\r\n<script>alert(1)</script>"
#: What a radiologist can type into a comment (CR/LF is refused there: test_console_typed_control_characters).
TYPED = "\u202eLIAF\u202c \u2066iso\u2069 zw\u200dj <script>alert(1)</script>"
INVISIBLE = ("\u202e", "\u202c", "\u2066", "\u2069", "\u200d", "\r")
ARABIC = "\u062d\u0633\u0646^\u0639\u0644\u064a"  # حسن^علي


def _visible(page: str) -> str:
    """The text a reader sees: no tags (their attributes), no script, no editable field's content."""
    page = re.sub(r"<(script|textarea)\b.*?</\1>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _escaped(shown: str, line_break: str = "escaped") -> None:
    """``shown`` (markup) writes HOSTILE or TYPED as escapes, in an isolated bdi, markup escaped; HOSTILE's CR/LF
    as escapes (``line_break="escaped"``: a one-line cell) or as one ``<br>`` (``"kept"``: a long text)."""
    assert '<bdi class="free-text">' in shown, shown
    for raw in (*INVISIBLE, "<script>"):
        assert raw not in shown, (raw, shown)
    for code in ("202E", "202C", "2066", "2069", "200D"):
        assert f"⟨U+{code}⟩" in shown, (code, shown)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown, shown
    if line_break == "escaped":
        assert '⟨U+000D⟩</span><span class="control" title="invisible character: unnamed character">⟨U+000A⟩' in shown
        assert "<br>" not in shown, shown
    elif line_break == "kept":
        assert "</span>j<br>" in shown, shown
        assert "⟨U+000A⟩" not in shown, shown
        assert "⟨U+000D⟩" not in shown, shown


def _reading_with_hostile_text(store: Store, study_uid: str) -> None:
    with store.session() as session:
        recorded = session.scalar(
            sa.select(AuditEventRow.payload).where(
                AuditEventRow.study_uid == study_uid, AuditEventRow.event_type == "inference_completed"
            )
        )
    assert recorded is not None
    payload = json.loads(recorded)
    payload["reading"].update(
        reasoning=[{"section": "lungs", "text": f"Lungs: {HOSTILE}"}],
        findings=[{"label": f"Effusion {HOSTILE}", "status": "present", "evidence": f"Lungs: {HOSTILE}"}],
        impression=f"Effusion. {HOSTILE}",
    )
    AuditRecorder(store).record(  # as the worker records a reading: the page shows the latest
        AuditEvent(EventType.INFERENCE_COMPLETED, Actor(user="worker"), study_uid=study_uid, payload=payload)
    )


def _fail(store: Store, study_uid: str) -> None:
    with store.session("failing a revision", immediate=True) as session:
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == study_uid))
        assert revision is not None
        revision.state = RevisionState.FAILED
        revision.reason = HOSTILE


def test_free_text_from_outside_is_shown_escaped_on_every_console_page(tmp_path: Path, store: Store) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    study_uid = reported_study(settings, store, reader, seed=131, name=ARABIC)
    failed_uid = reported_study(settings, store, reader, seed=132)
    _reading_with_hostile_text(store, study_uid)
    _fail(store, failed_uid)
    AuditRecorder(store).record(  # a sender's AE title and a payload holding the hostile text
        AuditEvent(
            EventType.INSTANCE_REJECTED,
            Actor(ae_title="MOD\u202eALIAS\u202c", host="10.0.0.9"),
            study_uid=study_uid,
            payload={"note": HOSTILE},
        )
    )
    add_user(store, "rad.one", "radiologist")
    add_user(store, "qa.one", "qa")
    path = study_path(store, study_uid)
    with console_client(store, settings) as client:
        sign_in(client, "rad.one")
        page = client.get(path)
        assert page.status_code == 200, page.text
        label = re.findall(r'name="label" value="([^"]*)"', page.text)[0]
        assert html.unescape(label) == f"Effusion {HOSTILE}"  # the form still names the label as the model wrote it
        seen = re.search(r'name="seen" value="([^"]*)"', page.text)
        form = {"csrf_token": csrf_of(page.text), "label": html.unescape(label), "seen": seen.group(1) if seen else "",
                "status": "present", "decision": "accept", "comment": TYPED}  # fmt: skip
        answer = client.post(f"{path}/findings", data=form, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        study = client.get(path).text
        failed = client.get("/console/worklist", params={"filter": "failed"}).text
        client.cookies.clear()
        sign_in(client, "qa.one")
        audit = client.get("/console/audit", params={"study_uid": study_uid}).text
        link = re.search(r'href="([^"]*/audit/timeline/[^"]*)"', audit)
        assert link is not None, audit
        timeline = client.get(html.unescape(link.group(1))).text

    for name, shown in (("study", study), ("failed worklist", failed), ("audit", audit), ("timeline", timeline)):
        for raw in INVISIBLE:
            assert raw not in _visible(shown), (name, raw)  # before: raw on each of these pages
        assert "<script>alert" not in shown, name

    cell = re.search(r'<td class="label">(.*?)</td>', study, re.S)
    assert cell is not None
    _escaped(cell.group(1))
    evidence = re.search(r'<td class="evidence">(.*?)</td>', study, re.S)
    assert evidence is not None
    _escaped(evidence.group(1))
    impression = re.search(r'<p class="impression" data-testid="impression">(.*?)</p>', study, re.S)
    assert impression is not None
    _escaped(impression.group(1), "kept")
    reasoning = re.search(r'<div class="reasoning">(.*?)</div>', study, re.S)
    assert reasoning is not None
    _escaped(reasoning.group(1), "kept")
    decision = re.search(r'data-testid="decision-0">(.*?)</div>', study, re.S)
    assert decision is not None
    _escaped(decision.group(1), "none")  # typed: no line break
    # what a screen reader or a tooltip says of a finding: the label's invisible characters as escapes there too
    # (before, the comment field's, the status select's and the three buttons' aria-labels named it raw)
    said = [html.unescape(v) for v in re.findall(r'\s(?:aria-label|title|data-announce)="([^"]*)"', study)]
    assert any("Accept Effusion" in value for value in said), said
    assert [value for value in said if any(raw in value for raw in INVISIBLE)] == []
    # the patient's Arabic name still reads in its own script: letters as they are, no escape
    assert "\u062d\u0633\u0646, \u0639\u0644\u064a" in _visible(study)

    reason = re.search(r'<td class="reason">(.*?)</td>', failed, re.S)
    assert reason is not None
    _escaped(reason.group(1))

    for shown in (audit, timeline):  # the sender's AE title as the actor; the payload with the hostile note
        assert "MOD⟨U+202E⟩ALIAS⟨U+202C⟩" in _visible(shown)
        [payload] = [code for code in re.findall(r'<code class="payload">(.*?)</code>', shown, re.S) if "note" in code]
        assert payload.startswith('<bdi class="free-text">'), payload
        for escape in ("⟨U+202E⟩</span>LIAF", "⟨U+2066⟩", "⟨U+200D⟩"):
            assert escape in payload, (escape, payload)

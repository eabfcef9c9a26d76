"""Decisions on drafts withdrawn as wrong-patient are left out of the agreement figures, counted apart, and kept in
the audit log.

A draft whose image the PACS then re-sent under another patient or study (``revisions.reassigned_at``), or
rejected with an IOCM note titled for patient safety (113037) or a wrong worklist entry (113038), was a reading of
another patient's film: a radiologist rejecting its findings said nothing about the model's agreement on this
patient. Before, such decisions were counted in every agreement figure (per label, per model version, per period,
the agreement page's all-time counts, and the studies behind a count). Now each leaves them out and the pages say
how many and why. A draft rejected for quality (113001) is still this patient's film: its decisions count, and so
do the decisions on a later revision of a study whose earlier draft was withdrawn. Both stores.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import MODEL, decided, draft_tables, insert_story, reading
from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.dashboard_agreement import (
    WHOLE_DRAFT,
    LeftOut,
    agreement_studies,
    current_agreement,
    read_agreement,
    read_agreement_by_model,
    read_agreement_by_period,
    read_left_out,
)
from radtrace.console.dashboard_queries import Window
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

ROOT = "1.2.826.0.1.3680043.10.1207"


def _seed(store: Store, start: datetime) -> dict[str, str]:
    """Five studies: ``moved`` (its draft's image re-sent under another patient), ``wrong_entry`` (rejected as an
    incorrect worklist entry), ``quality`` (rejected for quality), ``kept`` (nothing withdrawn) and ``corrected``
    (revision 1 withdrawn, revision 2 read from the corrected images)."""
    later = start + timedelta(hours=1)
    uids, tables = draft_tables(ROOT, start, {
        "moved": {1: {"reassigned_at": later}},
        "wrong_entry": {1: {"rejected_at": later, "rejection_code": "113038"}},
        "quality": {1: {"rejected_at": later, "rejection_code": "113001"}},
        "kept": {1: {}},
        "corrected": {1: {"reassigned_at": later}, 2: {}},
    })  # fmt: skip
    story = []
    for uid in uids.values():
        story += [reading(uid), decided(uid, "Cardiomegaly", "reject"), decided(uid, None, "reject")]
    story += [
        decided(uids["moved"], "Atelectasis", "accept"),
        decided(uids["moved"], "Atelectasis", "reject"),  # replaces the accept: one current decision
        reading(uids["corrected"], 2),
        decided(uids["corrected"], "Cardiomegaly", "accept", revision=2),
        decided(uids["corrected"], None, "accept", revision=2),
    ]
    insert_story(store, tables, story, start)
    return uids


def _counts(rows: list[Any]) -> dict[str, Counter[str]]:
    return {a.label: +Counter(accept=a.accepted.count, reject=a.rejected.count, modify=a.modified.count) for a in rows}


# What the kept decisions are: quality, kept (a reject each on Cardiomegaly and the draft) and corrected revision 2.
KEPT = {"Cardiomegaly": Counter(reject=2, accept=1), WHOLE_DRAFT: Counter(reject=2, accept=1)}


def test_decisions_on_wrong_patient_drafts_are_left_out_of_every_agreement_figure(store: Store) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    uids = _seed(store, start)
    window = Window(start.date() - timedelta(days=1), start.date() + timedelta(days=1))
    with store.session() as session:
        assert _counts(read_agreement(session, window)) == KEPT
        by_model = read_agreement_by_model(session, store, window)
        assert {model: _counts(rows) for model, rows in by_model.items()} == {" ".join(MODEL): KEPT}
        per_period = read_agreement_by_period(session, store, window)
        assert {label: sum(days.values(), Counter()) for label, days in per_period.items()} == KEPT
        # moved: Cardiomegaly, the draft, Atelectasis (the current one); wrong_entry and corrected rev 1: two each
        assert read_left_out(session, window) == LeftOut(decisions=7, drafts=3)
        assert read_left_out(session, None) == LeftOut(decisions=7, drafts=3)

    figures = current_agreement(store)
    assert {a.label: a.reject for a in figures.findings} == {"Cardiomegaly": 2}
    assert {a.label: a.accept for a in figures.findings} == {"Cardiomegaly": 1}
    assert (figures.drafts.accept, figures.drafts.reject) == (1, 2)
    assert figures.reasons == {"RT-A1": 1, "RT-R1": 2}
    assert figures.left_out == LeftOut(decisions=7, drafts=3)

    behind = agreement_studies(store, window, "Cardiomegaly", "reject")
    assert sorted(uid for uid, *_ in behind) == sorted([uids["quality"], uids["kept"]])
    assert [(uid, revision) for uid, revision, *_ in agreement_studies(store, window, WHOLE_DRAFT, "accept")] == [
        (uids["corrected"], 2)
    ]

    with store.session() as session:  # the audit log keeps every decision
        recorded = session.scalar(
            sa.select(sa.func.count()).where(
                AuditEventRow.event_type.in_([EventType.FINDING_ASSESSED.value, EventType.DRAFT_ASSESSED.value])
            )
        )
    assert recorded == 5 * 2 + 2 + 2


def test_the_pages_say_how_many_decisions_were_left_out_and_why(store: Store, tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    _seed(store, start)
    add_user(store, "qa.one", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.one")
        for page in ("/console/dashboard", "/console/agreement"):
            shown = client.get(page)
            assert shown.status_code == 200, shown.text
            note = shown.text.split('id="agreement-left-out">', 1)
            assert len(note) == 2, page
            said = " ".join(note[1].split("</p>", 1)[0].split())
            assert "7 decisions on 3 drafts withdrawn as wrong-patient" in said, said
            assert "another patient" in said, said
            assert "stay in the audit log" in said, said
        table = client.get("/console/agreement").text.split('<table class="list" id="agreement">', 1)[1]
        row = table.split('data-label="Cardiomegaly">', 1)[1].split("</tr>", 1)[0]
        assert '<td class="num">3</td>' in row  # decisions: 2 rejects and 1 accept, none of the withdrawn

"""The QA dashboard's agreement CSVs say how many decisions they leave out, as the page does.

Decisions on drafts withdrawn as wrong-patient are left out of every agreement figure (5a457c8); the page says "N
decisions on M drafts withdrawn as wrong-patient … stay in the audit log". Before, the CSVs (``agreement``,
``agreement_models``, ``agreement_periods``) left the same decisions out without a word: a QA analyst working from
the download saw smaller counts than the audit log holds and no reason. Now ``agreement`` and ``agreement_models``
end with two columns, ``left_out_wrong_patient_decisions`` and ``left_out_wrong_patient_drafts`` (the window's
figures, on every row; the columns before them as they were, so a reader by column name or position reads what it
read), and a window whose every decision was left out gets one row saying so rather than a header alone.
``agreement_periods`` ends with each row's own decisions left out (its label's, in its period), a column that sums
to the window's: test_console_dashboard_left_out_periods.py. Both stores.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import _event, _insert
from radtrace.audit.events import EventType
from radtrace.console.schema import ReviewItem
from radtrace.store.engine import Store
from radtrace.store.models import Instance, OutboxMessage, Revision, Study

pytestmark = pytest.mark.integration

ROOT = "1.2.826.0.1.3680043.10.1207.77"
CHARTS = ("agreement", "agreement_models", "agreement_periods")
#: The columns each CSV had before, in order: they stay where they were.
FIRST_COLUMNS = {
    "agreement": ["label", "decisions", "accepted", "accepted_share"],
    "agreement_models": ["label", "model", "decisions", "accepted", "accepted_share"],
    "agreement_periods": ["period", "label", "decisions", "accepted", "accepted_share", "rejected", "modified"],
}
LEFT_OUT = ["left_out_wrong_patient_decisions", "left_out_wrong_patient_drafts"]
#: The per-period CSV's last column: the row's own decisions left out, not the window's.
ROW_LEFT_OUT = "left_out_wrong_patient_decisions_this_row"


def _seed(store: Store, start: datetime, withdrawn: int, kept: int) -> None:
    """``withdrawn`` studies whose draft's image the PACS re-sent under another patient (each: a rejected
    Cardiomegaly, a rejected whole draft) and ``kept`` studies with an accepted Cardiomegaly and an accepted draft."""
    tables: dict[Any, list[dict[str, Any]]] = {model: [] for model in (Study, Revision, Instance, OutboxMessage,
                                                                        ReviewItem)}  # fmt: skip
    story = []
    for n in range(1, withdrawn + kept + 1):
        uid, wrong = f"{ROOT}.{n}", n <= withdrawn
        tables[Study].append({"id": n, "study_uid": uid, "study_key": f"{n:016x}", "accession": f"ACC{n}",
                              "created_at": start, "last_instance_at": start})  # fmt: skip
        tables[Revision].append({"id": n, "study_id": n, "number": 1, "attempts": 1, "state": "reported",
                                 "opened_at": start, "reported_at": start, "updated_at": start, "priority": "routine",
                                 **({"reassigned_at": start + timedelta(hours=1)} if wrong else {})})  # fmt: skip
        decision = "reject" if wrong else "accept"
        story += [
            _event(EventType.INFERENCE_COMPLETED, uid, {"revision": 1, "attempt": 1}, model_name="NV-Reason-CXR-3B",
                   model_version="rev-2026-10"),
            _event(EventType.FINDING_ASSESSED, uid, {"revision": 1, "finding": "Cardiomegaly", "decision": decision,
                                                     "model_status": "present"}, user="dr.csv"),
            _event(EventType.DRAFT_ASSESSED, uid, {"revision": 1, "decision": decision,
                                                   "reason_code": "RT-R1" if wrong else "RT-A1"}, user="dr.csv"),
        ]  # fmt: skip
    _insert(store, tables, [(start + timedelta(minutes=n), event) for n, event in enumerate(story)])


def _early_today() -> datetime:
    """01:00 UTC of the day three hours ago: the decisions (a few minutes apart) fall on one day of the window."""
    return datetime.combine((datetime.now(UTC) - timedelta(hours=3)).date(), time(1), tzinfo=UTC)


def _downloads(store: Store, tmp_path: Path) -> tuple[dict[str, list[list[str]]], str]:
    """Each agreement CSV as rows (header first), and the dashboard page's note on what was left out."""
    add_user(store, "qa.csv", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.csv")
        found = {}
        for chart in CHARTS:
            answer = client.get(f"/console/dashboard/{chart}.csv")
            assert answer.status_code == 200, answer.text
            found[chart] = list(csv.reader(io.StringIO(answer.text)))
        page = client.get("/console/dashboard").text
    note = page.split('id="agreement-left-out">', 1)[1].split("</p>", 1)[0] if "agreement-left-out" in page else ""
    return found, " ".join(note.split())


def test_each_agreement_csv_says_how_many_decisions_on_how_many_drafts_it_leaves_out(
    store: Store, tmp_path: Path
) -> None:
    _seed(store, _early_today(), withdrawn=3, kept=2)
    downloads, note = _downloads(store, tmp_path)
    assert "6 decisions on 3 drafts withdrawn as wrong-patient" in note, note
    for chart, rows in downloads.items():
        header, body = rows[0], rows[1:]
        assert header[: len(FIRST_COLUMNS[chart])] == FIRST_COLUMNS[chart], chart
        assert body, chart
        if chart == "agreement_periods":  # one day, two labels: each row carries its own 3 (the 3 drafts' each)
            assert header[-1] == ROW_LEFT_OUT
            assert sorted(dict(zip(header, row, strict=True))[ROW_LEFT_OUT] for row in body) == ["3", "3"]
        else:
            assert header[-2:] == LEFT_OUT, chart
        for row in body:
            fields = dict(zip(header, row, strict=True))
            if chart != "agreement_periods":
                assert (fields[LEFT_OUT[0]], fields[LEFT_OUT[1]]) == ("6", "3"), (chart, fields)
            assert fields["decisions"] == "2", (chart, fields)  # the kept studies' decisions only
            assert fields["accepted"] == "2", (chart, fields)
        assert {dict(zip(header, row, strict=True))["label"] for row in body} == {"Cardiomegaly", "(whole draft)"}


def test_a_window_whose_every_decision_was_left_out_says_so_in_one_row(store: Store, tmp_path: Path) -> None:
    _seed(store, _early_today(), withdrawn=2, kept=0)
    downloads, note = _downloads(store, tmp_path)
    assert "4 decisions on 2 drafts withdrawn as wrong-patient" in note, note
    header, *body = downloads.pop("agreement_periods")
    periods = [dict(zip(header, row, strict=True)) for row in body]
    # each label's row of the day, 0 decisions counted and its own left out (before: one unlabelled row)
    assert {(row["label"], row["decisions"], row["accepted_share"], row[ROW_LEFT_OUT]) for row in periods} == {
        ("Cardiomegaly", "0", "", "2"),
        ("(whole draft)", "0", "", "2"),
    }
    for chart, rows in downloads.items():
        assert len(rows) == 2, (chart, rows)  # before: the header alone, as if nobody had decided anything
        fields = dict(zip(rows[0], rows[1], strict=True))
        assert (fields["label"], fields["decisions"], fields["accepted"]) == ("", "0", "0"), (chart, fields)
        assert (fields[LEFT_OUT[0]], fields[LEFT_OUT[1]]) == ("4", "2"), (chart, fields)


def test_nothing_left_out_is_a_zero_and_no_extra_row(store: Store, tmp_path: Path) -> None:
    _seed(store, _early_today(), withdrawn=0, kept=2)
    downloads, note = _downloads(store, tmp_path)
    assert note == ""  # the page says nothing either
    for chart, rows in downloads.items():
        body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
        assert {row["label"] for row in body} == {"Cardiomegaly", "(whole draft)"}, chart
        left = LEFT_OUT if chart != "agreement_periods" else [ROW_LEFT_OUT, ROW_LEFT_OUT]
        assert {(row[left[0]], row[left[1]]) for row in body} == {("0", "0")}, chart

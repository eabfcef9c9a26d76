"""The QA dashboard's agreement CSVs say how many decisions they leave out, as the page does.

Decisions on drafts withdrawn as wrong-patient are left out of every agreement figure (5a457c8); the page says "N
decisions on M drafts withdrawn as wrong-patient … stay in the audit log". Before, the CSVs (``agreement``,
``agreement_models``, ``agreement_periods``) left the same decisions out without a word: a QA analyst working from
the download saw smaller counts than the audit log holds and no reason. Then ``agreement`` and
``agreement_models`` ended with the window's two figures (``left_out_wrong_patient_decisions``,
``left_out_wrong_patient_drafts``) repeated on every row: a pivot table summed them into nonsense. Now every agreement
CSV ends with its rows' own, ``left_out_wrong_patient_decisions_this_row`` (the decisions on the row's label, and
model or period, left out), a column that sums to the page's note; the columns before it are as they were, and a
label (or label and model) whose every decision was left out has its row with 0 decisions and no share. The
per-period CSV's own test: test_console_dashboard_left_out_periods.py. Both stores.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import decided, draft_tables, insert_story, reading
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

ROOT = "1.2.826.0.1.3680043.10.1207.77"
CHARTS = ("agreement", "agreement_models", "agreement_periods")
#: The columns each CSV had before, in order: they stay where they were.
FIRST_COLUMNS = {
    "agreement": ["label", "decisions", "accepted", "accepted_share"],
    "agreement_models": ["label", "model", "decisions", "accepted", "accepted_share"],
    "agreement_periods": ["period", "label", "decisions", "accepted", "accepted_share", "rejected", "modified"],
}
#: Every agreement CSV's last column: the row's own decisions left out, not the window's.
ROW_LEFT_OUT = "left_out_wrong_patient_decisions_this_row"
#: The columns of the window's figures repeated on every row, before: gone.
WINDOW_COLUMNS = {"left_out_wrong_patient_decisions", "left_out_wrong_patient_drafts"}
MODEL = "NV-Reason-CXR-3B rev-2026-10"


def _seed(store: Store, start: datetime, withdrawn: int, kept: int, withdrawn_version: str = "rev-2026-10") -> None:
    """``withdrawn`` studies whose draft's image the PACS re-sent under another patient (each: a rejected
    Cardiomegaly, a rejected whole draft; read by model version ``withdrawn_version``) and ``kept`` studies with an
    accepted Cardiomegaly and an accepted draft (read by rev-2026-10)."""
    names = [f"W{n}" if n <= withdrawn else f"K{n}" for n in range(1, withdrawn + kept + 1)]
    moved = {"reassigned_at": start + timedelta(hours=1)}
    uids, tables = draft_tables(ROOT, start, {name: {1: moved if name[0] == "W" else {}} for name in names})
    story = []
    for name, uid in uids.items():
        wrong = name[0] == "W"
        decision = "reject" if wrong else "accept"
        model = ("NV-Reason-CXR-3B", withdrawn_version if wrong else "rev-2026-10")
        story += [reading(uid, model=model), decided(uid, "Cardiomegaly", decision, user="dr.csv"),
                  decided(uid, None, decision, user="dr.csv")]  # fmt: skip
    insert_story(store, tables, story, start)


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


def _rows(rows: list[list[str]]) -> list[dict[str, str]]:
    header, *body = rows
    assert header[-1] == ROW_LEFT_OUT, header
    assert not WINDOW_COLUMNS & set(header), header  # the window's figures, which no row can sum, are gone
    return [dict(zip(header, row, strict=True)) for row in body]


def test_each_agreement_csv_says_what_each_row_leaves_out_in_a_column_that_sums(store: Store, tmp_path: Path) -> None:
    _seed(store, _early_today(), withdrawn=3, kept=2)
    downloads, note = _downloads(store, tmp_path)
    assert "6 decisions on 3 drafts withdrawn as wrong-patient" in note, note
    for chart, rows in downloads.items():
        assert rows[0][: len(FIRST_COLUMNS[chart])] == FIRST_COLUMNS[chart], chart
        body = _rows(rows)
        # one day, two labels, one model: each row carries its own 3 (the 3 drafts' each), not the window's 6
        assert [(row["label"], row["decisions"], row["accepted"], row[ROW_LEFT_OUT]) for row in body] == [
            ("Cardiomegaly", "2", "2", "3"),
            ("(whole draft)", "2", "2", "3"),
        ], chart
        assert sum(int(row[ROW_LEFT_OUT]) for row in body) == 6, chart  # the note's figure
        if chart == "agreement_models":
            assert {row["model"] for row in body} == {MODEL}


def test_a_window_whose_every_decision_was_left_out_has_each_labels_row(store: Store, tmp_path: Path) -> None:
    _seed(store, _early_today(), withdrawn=2, kept=0)
    downloads, note = _downloads(store, tmp_path)
    assert "4 decisions on 2 drafts withdrawn as wrong-patient" in note, note
    for chart, rows in downloads.items():
        # each label's row, 0 decisions counted, no share, and its own left out (before: one unlabelled row with
        # the window's figures in agreement and agreement_models)
        assert {(row["label"], row["decisions"], row["accepted_share"], row[ROW_LEFT_OUT]) for row in _rows(rows)} == {
            ("Cardiomegaly", "0", "", "2"),
            ("(whole draft)", "0", "", "2"),
        }, chart


def test_a_model_whose_every_decision_was_left_out_has_its_rows_after_the_counted_ones(
    store: Store, tmp_path: Path
) -> None:
    """The withdrawn drafts were read by another model version than the kept ones: agreement_models has, per label,
    the counted model's row (its own 0 left out) and then the other model's (0 counted, its decisions left out)."""
    _seed(store, _early_today(), withdrawn=3, kept=2, withdrawn_version="rev-2026-11")
    downloads, _note = _downloads(store, tmp_path)
    other = "NV-Reason-CXR-3B rev-2026-11"
    got = [(row["label"], row["model"], row["decisions"], row["accepted_share"], row[ROW_LEFT_OUT])
           for row in _rows(downloads["agreement_models"])]  # fmt: skip
    assert got == [
        ("Cardiomegaly", MODEL, "2", "1.0", "0"),
        ("Cardiomegaly", other, "0", "", "3"),
        ("(whole draft)", MODEL, "2", "1.0", "0"),
        ("(whole draft)", other, "0", "", "3"),
    ]
    by_label = [(row["label"], row["decisions"], row[ROW_LEFT_OUT]) for row in _rows(downloads["agreement"])]
    assert by_label == [("Cardiomegaly", "2", "3"), ("(whole draft)", "2", "3")]


def test_nothing_left_out_is_a_zero_and_no_extra_row(store: Store, tmp_path: Path) -> None:
    _seed(store, _early_today(), withdrawn=0, kept=2)
    downloads, note = _downloads(store, tmp_path)
    assert note == ""  # the page says nothing either
    for chart, rows in downloads.items():
        body = _rows(rows)
        assert [row["label"] for row in body] == ["Cardiomegaly", "(whole draft)"], chart
        assert {row[ROW_LEFT_OUT] for row in body} == {"0"}, chart

"""The agreement-per-period CSV says what was left out in each period, in a column that sums.

Decisions on drafts withdrawn as wrong-patient are left out of the agreement figures. Before, the
``agreement_periods`` CSV ended with the window's two left-out figures repeated on every row (documented "do not
sum"): a QA analyst's pivot table summed them into nonsense, and nothing said which day lost how many decisions.
Now its last column, ``left_out_wrong_patient_decisions_this_row``, is each row's own: the decisions on its label
recorded in its period that were left out. A period and label whose decisions were all left out gets its row (0
decisions, no share). The column sums, by period and over the window, to the page's note. Decisions over three
days, by day and by week. Both stores.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import _insert, decided, draft_tables
from radtrace.qa.drift import period_start
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

ROOT = "1.2.826.0.1.3680043.10.1207.93"
COLUMN = "left_out_wrong_patient_decisions_this_row"
WHOLE = "(whole draft)"


def _days() -> tuple[date, date, date]:
    today = datetime.now(UTC).date()
    return today - timedelta(days=9), today - timedelta(days=5), today - timedelta(days=1)


def _seed(store: Store) -> None:
    """Studies W1 and W2 withdrawn as wrong-patient (W1 re-sent under another patient, W2 rejected 113037), K1 and K2
    kept. Day A: W1's Cardiomegaly and whole draft, K1's Cardiomegaly. Day B: W1's Edema, W2's Cardiomegaly.
    Day C: K2's Cardiomegaly."""
    a, b, c = _days()
    start = datetime.combine(a, time(), tzinfo=UTC)
    studies = {"W1": {1: {"reassigned_at": start}}, "W2": {1: {"rejected_at": start, "rejection_code": "113037"}},
               "K1": {1: {}}, "K2": {1: {}}}  # fmt: skip
    uids, tables = draft_tables(ROOT, start, studies, accessions={name: name for name in studies})

    def finding(name: str, label: str, decision: str) -> dict[str, Any]:
        return decided(uids[name], label, decision, user="dr.days")

    def draft(name: str, decision: str) -> dict[str, Any]:
        return decided(uids[name], None, decision, user="dr.days", reason_code="RT-R1")

    noon = {day: datetime.combine(day, time(12), tzinfo=UTC) for day in (a, b, c)}
    story = [
        (noon[a], finding("W1", "Cardiomegaly", "reject")),
        (noon[a] + timedelta(minutes=1), draft("W1", "reject")),
        (noon[a] + timedelta(minutes=2), finding("K1", "Cardiomegaly", "accept")),
        (noon[b], finding("W1", "Edema", "reject")),
        (noon[b] + timedelta(minutes=1), finding("W2", "Cardiomegaly", "reject")),
        (noon[c], finding("K2", "Cardiomegaly", "accept")),
    ]
    _insert(store, tables, story)


def _periods_csv(client: Any, period: str) -> list[dict[str, str]]:
    answer = client.get(f"/console/dashboard/agreement_periods.csv?period={period}")
    assert answer.status_code == 200, answer.text
    header, *rows = list(csv.reader(io.StringIO(answer.text)))
    assert "left_out_wrong_patient_drafts" not in header  # the window's figure, which no row can sum, is gone
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_each_row_carries_what_was_left_out_in_its_period_and_the_column_sums(store: Store, tmp_path: Path) -> None:
    _seed(store)
    a, b, c = _days()
    add_user(store, "qa.days", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.days")
        page = client.get("/console/dashboard").text
        assert "4 decisions on 2 drafts withdrawn as wrong-patient" in " ".join(page.split())
        by_day = _periods_csv(client, "day")
        by_week = _periods_csv(client, "week")

    got = {(row["period"], row["label"]): (row["decisions"], row["accepted_share"], row[COLUMN]) for row in by_day}
    assert got == {
        (str(a), "Cardiomegaly"): ("1", "1.0", "1"),
        (str(b), "Cardiomegaly"): ("0", "", "1"),  # W2's only: left out, the row still there
        (str(b), "Edema"): ("0", "", "1"),
        (str(c), "Cardiomegaly"): ("1", "1.0", "0"),
        (str(a), WHOLE): ("0", "", "1"),
    }
    assert [row["label"] for row in by_day][-1] == WHOLE  # whole drafts last, as on the page
    assert sum(int(row[COLUMN]) for row in by_day) == 4  # the note's figure; before: 4 on every row
    per_day = Counter[str]()
    for row in by_day:
        per_day[row["period"]] += int(row[COLUMN])
    assert per_day == Counter({str(a): 2, str(b): 2, str(c): 0})

    folded: Counter[tuple[str, str]] = Counter()
    for row in by_day:
        folded[(str(period_start(date.fromisoformat(row["period"]), "week")), row["label"])] += int(row[COLUMN])
    assert {(row["period"], row["label"]): int(row[COLUMN]) for row in by_week} == dict(folded)
    assert sum(int(row[COLUMN]) for row in by_week) == 4

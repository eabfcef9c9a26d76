"""The dashboard page does not read the per-model split of the decisions left out; the agreement CSVs do.

e07b89c gave agreement.csv and agreement_models.csv a per-row left-out column, read by
dashboard_agreement.read_left_out_by_model, which groups by model and label and so is not an index-only count: on
SQLite 74 ms against the page note's 14 ms (2,000 withdrawn drafts among 22,000). It first ran on every page view
too, where only the total is shown. Now it is a CSV-only section (dashboard_figures.CSV_ONLY): the page reads the
note's count alone, the two CSVs the split (and nothing reads both). SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard_support import decided, draft_tables, insert_story
from radtrace.console import dashboard_figures
from radtrace.console.dashboard_csv import SECTIONS
from radtrace.console.dashboard_queries import Window
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def test_only_the_agreement_csvs_read_the_split(sqlite_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    uids, tables = draft_tables("1.2.826.0.1.3680043.10.1207.98", start, {"moved": {1: {"reassigned_at": start}}})
    insert_story(sqlite_store, tables, [decided(uids["moved"], "Cardiomegaly", "reject")], start)
    calls: list[str] = []
    split = dashboard_figures.read_left_out_by_model

    def counted(*args: Any) -> Any:
        calls.append("split")
        return split(*args)

    monkeypatch.setattr(dashboard_figures, "read_left_out_by_model", counted)
    today = datetime.now(UTC).date()
    window = Window(today - timedelta(days=29), today)
    page = dashboard_figures.read_figures(sqlite_store, window, datetime.now(UTC))
    assert calls == []  # before: read on every page view
    assert page.agreement_left_out.decisions == 1  # the note's count is still read
    for chart in ("agreement", "agreement_models"):
        figures = dashboard_figures.read_figures(sqlite_store, window, datetime.now(UTC), SECTIONS[chart])
        assert figures.agreement_left_out_by_model == {"(no reading recorded)": {"Cardiomegaly": 1}}, chart
    assert calls == ["split", "split"]

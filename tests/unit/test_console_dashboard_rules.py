"""The QA dashboard's pure rules: the window and its baseline, and CSV cells a spreadsheet cannot run."""

from __future__ import annotations

from datetime import date

import pytest

from radtrace.console.dashboard import _csv
from radtrace.console.dashboard_queries import Window


def test_a_daily_window_has_its_baseline_days_just_before_it() -> None:
    window = Window(date(2026, 3, 10), date(2026, 3, 16), "day", baseline_days=28)
    assert window.start == date(2026, 3, 10)
    assert window.baseline == (date(2026, 2, 10), date(2026, 3, 9))
    assert window.periods() == [date(2026, 3, d) for d in range(10, 17)]


def test_a_weekly_window_starts_on_a_monday_and_its_baseline_is_whole_weeks() -> None:
    window = Window(date(2026, 3, 11), date(2026, 3, 30), "week", baseline_days=28)  # a Wednesday to a Monday
    assert window.start == date(2026, 3, 9)
    assert window.periods() == [date(2026, 3, 9), date(2026, 3, 16), date(2026, 3, 23), date(2026, 3, 30)]
    assert window.baseline == (date(2026, 2, 9), date(2026, 3, 8))
    assert Window(date(2026, 3, 11), date(2026, 3, 30), "week", baseline_days=10).baseline[0] == date(2026, 2, 23)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("Pleural Effusion", "Pleural Effusion"),
        (-3, "-3"),  # a number stays a number
        (0.25, "0.25"),
        (None, ""),
        (date(2026, 3, 9), "2026-03-09"),
    ],
)
def test_csv_cells_that_a_spreadsheet_would_run_become_text(value: object, cell: str) -> None:
    text = _csv([["head"], [value]])
    assert text.split("\r\n")[1].strip('"') == cell

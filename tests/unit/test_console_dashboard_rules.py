"""The QA dashboard's pure rules: the window and its baseline, and CSV cells a spreadsheet cannot run."""

from __future__ import annotations

from datetime import date

import pytest

from radtrace.console.dashboard_csv import csv_text
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
    text = csv_text([["head"], [value]])
    assert text.split("\r\n")[1].strip('"') == cell


def test_free_text_failure_reasons_are_named_up_to_ten_and_the_rest_summed() -> None:
    """A year of model errors ("generation failed: CUDA out of memory. Tried to allocate 2.31 GiB ...") made one page
    row and one volume CSV column per distinct text, hundreds of them; now ten, the last "(other reasons)"."""
    from collections import Counter

    from radtrace.console.dashboard_csv import TABLES
    from radtrace.console.dashboard_figures import OTHER_REASONS, SHOWN_REASONS, Figures

    window = Window(date(2026, 3, 2), date(2026, 3, 3))
    figures = Figures(window, window.periods())
    texts = [f"generation failed: CUDA out of memory. Tried to allocate {n / 100:.2f} GiB" for n in range(200, 240)]
    figures.failed = {
        date(2026, 3, 2): Counter({text: 1 + n % 3 for n, text in enumerate(texts[:25])}),
        date(2026, 3, 3): Counter({text: 2 for text in texts[20:]} | {"gave up after 3 attempts: model timeout": 50}),
    }
    shown = figures.failure_reasons()
    assert len(shown) == SHOWN_REASONS  # before: 41
    assert shown[0] == ("gave up after 3 attempts: model timeout", 50)
    assert shown[-1][0] == OTHER_REASONS
    assert sum(count for _, count in shown) == sum(sum(c.values()) for c in figures.failed.values())
    header, *rows = TABLES["volume"](figures)
    reasons = [column for column in header if str(column).startswith("failed: ")]
    assert len(reasons) == SHOWN_REASONS
    assert reasons[-1] == f"failed: {OTHER_REASONS}"
    for row in rows:
        assert sum(row[len(header) - SHOWN_REASONS :]) == row[header.index("failed")]

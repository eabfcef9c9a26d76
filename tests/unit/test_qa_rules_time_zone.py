"""The drift rules (Prometheus gauges) count the site's local days (``qa.time_zone``), the days the QA dashboard's
drift chart shows.

Before: the rules counted UTC days whatever ``qa.time_zone`` was. In New York the evening's readings (after 19:00
EST) fell on the next UTC day, so ``radtrace_label_prevalence`` reported a different day's share than the
dashboard's latest day, and a run of out-of-control days could start or end a day apart from the chart's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from radtrace.config import QaSettings
from radtrace.qa.metrics import evaluate_rules, first_local_midnight

NEW_YORK = ZoneInfo("America/New_York")
TODAY = date(2026, 1, 20)


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NEW_YORK).astimezone(UTC)


def _readings() -> list[tuple[datetime, tuple[str, ...]]]:
    readings: list[tuple[datetime, tuple[str, ...]]] = []
    for back in range(1, 30):  # 29 ordinary days: 1 in 10 with an effusion, read at noon
        day = TODAY - timedelta(days=back)
        readings += [(_at(day, 12, n), ("Pleural Effusion",) if n == 0 else ()) for n in range(10)]
    readings += [(_at(TODAY, 10, n), ()) for n in range(10)]  # today: ten mornings without
    readings += [(_at(TODAY, 21, n), ("Pleural Effusion",)) for n in range(10)]  # and ten evenings with (02:00 UTC)
    return readings


@pytest.mark.parametrize(("zone", "share"), [("America/New_York", 0.5), ("UTC", 1.0)])
def test_the_latest_days_share_is_the_local_days(zone: str, share: float) -> None:
    rules = QaSettings(baseline_days=21, monitored_days=7, drift_run_days=3, time_zone=zone)
    now = _at(TODAY, 23)  # 04:00 UTC on the 21st
    state = evaluate_rules(_readings(), [], now, rules)
    [effusion] = [rule for rule in state.labels if rule.label == "Pleural Effusion"]
    # New York's 20 January: 10 of 20 readings (the dashboard's latest day); UTC's 21 January: the 10 evening ones
    assert effusion.rate == pytest.approx(share)
    assert effusion.baseline == pytest.approx(0.1)


def test_the_rules_read_from_the_first_local_days_midnight() -> None:
    now = _at(TODAY, 23)
    assert first_local_midnight(now, 28, NEW_YORK) == datetime(2025, 12, 24, 5, tzinfo=UTC)  # EST midnight
    assert first_local_midnight(now, 28, ZoneInfo("UTC")) == datetime(2025, 12, 25, tzinfo=UTC)  # UTC's today: 21st
    summer = datetime(2026, 7, 1, 3, tzinfo=UTC)  # 30 June 23:00 EDT
    assert first_local_midnight(summer, 1, NEW_YORK) == datetime(2026, 6, 30, 4, tzinfo=UTC)

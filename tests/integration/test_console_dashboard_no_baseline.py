"""The dashboard's label prevalence for a window with no reading in the baseline before it (a window from go-live).

Before, ``drift_alerts`` left out every label whose baseline held no reading, so the whole prevalence section and
its CSV were empty ("No reading in the baseline") though the window had three weeks of readings. Each label's
share is shown per period, equal to the seeded readings, with a "no baseline" note and no limits or drift alert.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import seed_history
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def test_a_window_from_go_live_shows_its_prevalence_with_a_no_baseline_note(store: Store, tmp_path: Path) -> None:
    seeded = seed_history(store, days=21, per_day=(10, 12))
    settings = console_settings(tmp_path, store)
    add_user(store, "qa.golive", "qa")
    query = f"?from={seeded.first_day.isoformat()}&to={datetime.now(UTC).date().isoformat()}"
    with console_client(store, settings) as client:
        sign_in(client, "qa.golive")
        page = client.get(f"/console/dashboard{query}")
        answer = client.get(f"/console/dashboard/prevalence.csv{query}")
    assert page.status_code == 200
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    totals = Counter(when.astimezone(UTC).date().isoformat() for when, _ in seeded.readings)
    present = Counter(
        (when.astimezone(UTC).date().isoformat(), label) for when, labels in seeded.readings for label in labels
    )
    labels = {label for _, label in present}
    assert {row["label"] for row in rows} == labels  # before: no row at all
    assert len(rows) == 21 * len(labels)
    for row in rows:
        assert int(row["read"]) == totals[row["period"]], row
        assert int(row["present"]) == present[(row["period"], row["label"])], row
        assert (row["baseline"], row["lower_limit"], row["upper_limit"], row["outside"]) == ("", "", "", ""), row
        assert row["drift_alert"] == "False"
    drift = page.text.split('id="drift"')[1].split("</section>")[0]
    assert drift.count('class="no-baseline"') == len(labels)
    assert f"No baseline: no reading from {seeded.first_day - timedelta(days=28)}" in drift
    assert "95 % limits" not in drift
    assert 'data-testid="drift-alerts"' in page.text
    assert page.text.split('data-testid="drift-alerts"')[1].split("</div>")[0].count('class="alert"') == 0

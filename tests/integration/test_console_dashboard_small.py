"""The QA dashboard on the smallest histories, against figures computed by hand: no data at all, then two studies
read one second either side of midnight UTC with three decisions (one superseded).

The seeded-history tests (test_console_dashboard) check the figures at scale against the seed's own truth; these
check the edges where an empty series, a single value or a day boundary could go wrong.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from console_support import add_user, console_client, console_settings, csrf_of, reported_study, sign_in, study_path
from radtrace.console.dashboard import CHARTS
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study

pytestmark = pytest.mark.integration


def _csv(client: TestClient, chart: str) -> list[dict[str, str]]:
    answer = client.get(f"/console/dashboard/{chart}.csv")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(answer.text)))


def test_with_no_data_every_figure_is_empty_or_zero_and_nothing_fails(store: Store, tmp_path: Path) -> None:
    add_user(store, "qa.empty", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.empty")
        page = client.get("/console/dashboard")
        assert page.status_code == 200
        assert "QA dashboard" in page.text
        assert "NaN" not in page.text
        for chart in CHARTS:
            rows = _csv(client, chart)
            for row in rows:
                for column, value in row.items():
                    if column not in ("period", "label", "stage", "attribute", "value", "model", "burst"):
                        assert value in ("", "0", "False"), (chart, column, value)
        assert len(_csv(client, "volume")) == 30  # one row per day of the default window, all zero


def test_two_studies_either_side_of_midnight_and_three_decisions_give_the_hand_computed_figures(
    store: Store, tmp_path: Path
) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    before, after = (reported_study(settings, store, reader, seed=seed) for seed in (101, 102))
    today = datetime.now(UTC).date()
    midnight = datetime.combine(today, time.min, tzinfo=UTC)
    with store.session() as session:
        for uid, moment in ((before, midnight - timedelta(seconds=1)), (after, midnight + timedelta(seconds=1))):
            revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == uid))
            assert revision is not None
            revision.reported_at = moment
    add_user(store, "dr.small", "radiologist")
    add_user(store, "qa.small", "qa")
    with console_client(store, settings) as client:
        sign_in(client, "dr.small")
        page = client.get(study_path(store, before)).text
        label = re.findall(r'name="label" value="([^"]+)"', page)[0]
        url = f"{study_path(store, before)}/findings"
        token = csrf_of(page)
        for decision in ("accept", "reject"):  # a changed mind: only the reject counts
            client.post(url, data={"csrf_token": token, "label": label, "decision": decision})
        page = client.get(study_path(store, after)).text
        client.post(f"{study_path(store, after)}/findings",
                    data={"csrf_token": token, "label": label, "decision": "accept"})  # fmt: skip
    with console_client(store, settings) as client:
        sign_in(client, "qa.small")
        volume = {row["period"]: row for row in _csv(client, "volume")}
        yesterday = (today - timedelta(days=1)).isoformat()
        assert (volume[yesterday]["read"], volume[today.isoformat()]["read"]) == ("1", "1")
        assert sum(int(row["read"]) for row in volume.values()) == 2
        agreement = {row["label"]: row for row in _csv(client, "agreement")}
        row = agreement[label]
        # two current decisions on the label (the superseded accept is not one): 1 accepted, 1 rejected
        assert (row["decisions"], row["accepted"], row["rejected"], row["modified"]) == ("2", "1", "1", "0")
        assert float(row["accepted_share"]) == pytest.approx(0.5)
        # Wilson 95 % for 1 of 2, by hand: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.95996
        assert float(row["accepted_ci95_low"]) == pytest.approx(0.0945, abs=1e-4)
        assert float(row["accepted_ci95_high"]) == pytest.approx(0.9055, abs=1e-4)
        listed = client.get(f"/console/dashboard/agreement?label={label}&decision=reject")
        assert listed.status_code == 200
        assert listed.text.count('href="/console/studies/') == 1
        assert f'href="{study_path(store, before)}"' in listed.text  # by the study's handle, not its UID

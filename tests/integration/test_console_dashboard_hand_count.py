"""The QA dashboard's figures against a hand count from the database rows (not the seed's own tally, not the
dashboard's functions): failures per day with their reasons, total latency percentiles per day (last image
received -> the SR delivered to the PACS), the prevalence (drift) per label and day from the ``inference_completed``
rows, and agreement per finding from the recorded decisions. A 14-day seeded history (tests/dashboard_support.py)
on SQLite and PostgreSQL, read through the dashboard's CSVs (console through the ASGI app).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import seed_history
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store
from radtrace.store.models import Instance, OutboxMessage, Revision, RevisionState

pytestmark = pytest.mark.integration

WHOLE_DRAFT = "(whole draft)"  # how the agreement CSV names the whole-draft decisions


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _day(value: datetime) -> str:
    return _utc(value).date().isoformat()


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), written here on its own."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _csv(client: object, chart: str) -> list[dict[str, str]]:
    answer = client.get(f"/console/dashboard/{chart}.csv")  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    return list(csv.DictReader(io.StringIO(answer.text)))


def test_dashboard_figures_equal_a_hand_count_of_the_rows(store: Store, tmp_path: Path) -> None:
    seed_history(store, days=14, per_day=(10, 14), failure_reasons=("decode error", "model timed out"))
    settings = console_settings(tmp_path, store)
    add_user(store, "qa.count", "qa")
    with store.session() as session:
        revisions = session.execute(
            sa.select(Revision.id, Revision.state, Revision.reason, Revision.finished_at, Revision.reported_at)
        ).all()
        last_image = dict(
            session.execute(sa.select(Instance.revision_id, sa.func.max(Instance.received_at)).group_by(
                Instance.revision_id)).all()
        )  # fmt: skip
        delivered = dict(
            session.execute(
                sa.select(OutboxMessage.revision_id, sa.func.min(OutboxMessage.delivered_at))
                .where(OutboxMessage.kind == "sr", OutboxMessage.state == "delivered")
                .group_by(OutboxMessage.revision_id)
            ).all()
        )
        decisions = session.execute(
            sa.select(AuditEventRow.study_uid, AuditEventRow.payload)
            .where(AuditEventRow.event_type.in_(["finding_assessed", "draft_assessed"]))
            .order_by(AuditEventRow.seq)
        ).all()
        readings = session.execute(
            sa.select(AuditEventRow.recorded_at, AuditEventRow.labels).where(
                AuditEventRow.event_type == "inference_completed"
            )
        ).all()

    failed: Counter[tuple[str, str]] = Counter()
    totals: dict[str, list[float]] = defaultdict(list)
    for revision_id, state, reason, finished_at, reported_at in revisions:
        if RevisionState(state) is RevisionState.FAILED and finished_at is not None:
            failed[(_day(finished_at), str(reason))] += 1
        if reported_at is not None and revision_id in delivered and revision_id in last_image:
            seconds = (_utc(delivered[revision_id]) - _utc(last_image[revision_id])).total_seconds()
            totals[_day(reported_at)].append(seconds)
    assert failed, "the seed planted failures"

    with console_client(store, settings) as client:
        sign_in(client, "qa.count")
        volume = _csv(client, "volume")
        latency = [
            row for row in _csv(client, "latency") if row["stage"] == "total" and row["period"] != "whole window"
        ]
        prevalence = _csv(client, "prevalence")
        agreement = _csv(client, "agreement")

    for row in volume:
        reasons = {
            column.removeprefix("failed: "): int(n) for column, n in row.items() if column.startswith("failed: ")
        }
        want = {reason: n for (day, reason), n in failed.items() if day == row["period"]}
        assert {r: n for r, n in reasons.items() if n} == want, row
        assert int(row["failed"]) == sum(want.values()), row

    assert {row["period"] for row in latency} == set(totals)
    for row in latency:
        values = totals[row["period"]]
        assert int(row["studies"]) == len(values), row
        assert float(row["p50_s"]) == pytest.approx(_percentile(values, 50), abs=0.06), row
        assert float(row["p95_s"]) == pytest.approx(_percentile(values, 95), abs=0.06), row

    read: Counter[str] = Counter()
    present: Counter[tuple[str, str]] = Counter()
    for recorded_at, labels in readings:  # labels: ",A,B," (the labels found present)
        day = _day(recorded_at)
        read[day] += 1
        for label in filter(None, (labels or "").split(",")):
            present[(day, label)] += 1
    for row in prevalence:
        assert int(row["read"]) == read[row["period"]], row
        assert int(row["present"]) == present[(row["period"], row["label"])], row

    current: dict[tuple[str, int, str], str] = {}  # the last decision on each study, revision and finding
    for study_uid, payload in decisions:
        decided = json.loads(payload)
        current[(str(study_uid), int(decided["revision"]), decided.get("finding") or WHOLE_DRAFT)] = decided["decision"]
    counted: dict[str, Counter[str]] = defaultdict(Counter)
    for (_study, _revision, label), verdict in current.items():
        counted[label][verdict] += 1
    assert len(counted) > 2, "the seed planted decisions"
    assert {row["label"] for row in agreement} == set(counted)
    for row in agreement:
        want = counted[row["label"]]
        assert int(row["decisions"]) == sum(want.values()), row
        assert (int(row["accepted"]), int(row["rejected"]), int(row["modified"])) == (
            want["accept"],
            want["reject"],
            want["modify"],
        ), row

"""On PostgreSQL the decisions left out of agreement are counted with plans made for the drafts asked about.

Every agreement figure takes away the decisions on drafts withdrawn as wrong-patient, found 500 study UIDs a query
(``dashboard_agreement.on_withdrawn``). psycopg prepares a statement that a connection has run 5 times, and
PostgreSQL then plans it once for any 500 UIDs (a generic plan). Measured on this machine with 2,000 withdrawn
drafts among 22,000 studies (load 4-10 on 2 cores): the note's count took 82-125 ms on a connection's first two
views, then 2-5 s on every later one; planned for its values each time, 77-161 ms whatever the view. The console's
connections live for days, so every view after the first few was the slow one. The test counts the generic plans
PostgreSQL used (``pg_prepared_statements``), not time: none now; before, 5 of 15 views for each of the three look-ups.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dashboard_support import _event, _insert
from radtrace.audit.events import EventType
from radtrace.console.dashboard_agreement import LeftOut, read_agreement, read_left_out
from radtrace.console.dashboard_queries import Window
from radtrace.console.schema import ReviewItem
from radtrace.store.engine import Store
from radtrace.store.models import Instance, OutboxMessage, Revision, Study

pytestmark = pytest.mark.integration

ROOT = "1.2.826.0.1.3680043.10.1207.95"
VIEWS = 15


def _seed(store: Store, start: datetime, withdrawn: int, kept: int) -> None:
    tables: dict[Any, list[dict[str, Any]]] = {model: [] for model in (Study, Revision, Instance, OutboxMessage,
                                                                        ReviewItem)}  # fmt: skip
    story = []
    for n in range(1, withdrawn + kept + 1):
        uid = f"{ROOT}.{n}"
        tables[Study].append({"id": n, "study_uid": uid, "study_key": f"{n:016x}", "accession": f"A{n}",
                              "created_at": start, "last_instance_at": start})  # fmt: skip
        tables[Revision].append({"id": n, "study_id": n, "number": 1, "attempts": 1, "state": "reported",
                                 "opened_at": start, "reported_at": start, "updated_at": start, "priority": "routine",
                                 **({"reassigned_at": start} if n <= withdrawn else {})})  # fmt: skip
        payload = {"revision": 1, "finding": "Cardiomegaly", "decision": "reject", "model_status": "present"}
        story.append(_event(EventType.FINDING_ASSESSED, uid, payload, user="dr.plan"))
    _insert(store, tables, [(start + timedelta(seconds=n), event) for n, event in enumerate(story)])


def test_each_view_counts_what_it_leaves_out_with_a_plan_for_its_drafts(pg_store: Store) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    _seed(pg_store, start, withdrawn=40, kept=200)
    window = Window(start.date() - timedelta(days=1), start.date() + timedelta(days=1))
    with pg_store.engine.connect() as connection:  # the console's connection, used view after view
        for _ in range(VIEWS):
            with sa.orm.Session(bind=connection) as session, session.begin():
                assert read_left_out(session, window) == LeftOut(decisions=40, drafts=40)
                assert [(a.label, a.total) for a in read_agreement(session, window)] == [("Cardiomegaly", 200)]
        plans = connection.execute(
            sa.text("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE :batch"),
            {"batch": "%qa_decisions.study_uid IN (%"},
        ).all()
    # Before 8f3b120 psycopg prepared each figure's look-up (3 shapes) and PostgreSQL used a generic plan for 5 of
    # the 15 views each; since e23d1b7 radtrace prepares nothing (store.engine.PREPARE_THRESHOLD): no plan is kept.
    assert [generic for generic, _ in plans if generic] == []

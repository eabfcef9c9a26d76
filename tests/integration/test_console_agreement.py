"""The agreement page (/console/agreement) counts the current decisions without decoding every assessment event
on every request: once in full per process, then only the decisions recorded since (a changed mind takes the
replaced decision's count away).

It decoded all ``finding_assessed`` and ``draft_assessed`` payloads per request (about 6 s at a million decisions;
tests/integration/test_console_agreement_scale.py measures it). Here the work of a request is counted in SQLite
virtual-machine steps (deterministic, unlike time), and the figures are checked against a recount of the log.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import seed_decisions
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def _recount(store: Store) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """The current decisions as the log says: the latest per study, revision and finding (or whole draft)."""
    latest: dict[tuple[str, int, str], dict[str, Any]] = {}
    with store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.study_uid, AuditEventRow.payload)
            .where(AuditEventRow.event_type.in_(["finding_assessed", "draft_assessed"]))
            .order_by(AuditEventRow.seq)
        ).all()
    for uid, text in rows:
        payload = json.loads(text)
        latest[(uid, payload["revision"], payload.get("finding") or "")] = payload
    counts: dict[str, Counter[str]] = {}
    reasons: Counter[str] = Counter()
    for (_uid, _revision, label), payload in latest.items():
        counts.setdefault(label or "whole draft", Counter())[payload["decision"]] += 1
        if payload.get("reason_code"):
            reasons[payload["reason_code"]] += 1
    return counts, reasons


def _shown(page: str) -> tuple[dict[str, Counter[str]], Counter[str]]:
    counts = {}
    for label, cells in re.findall(r'<tr data-label="([^"]*)">(.*?)</tr>', page, re.S):
        _total, accept, modify, reject, _share = re.findall(r'<td class="num[^"]*">([^<]*)</td>', cells)
        counts[label] = Counter({"accept": int(accept), "modify": int(modify), "reject": int(reject)}) + Counter()
    reasons = Counter(
        {code: int(n) for code, n in re.findall(r'<tr><td>([^<]+)</td><td>[^<]*</td><td class="num">(\d+)</td>', page)}
    )
    return {label: c for label, c in counts.items() if c}, reasons


def test_the_page_counts_current_decisions_as_they_are_added_and_replaced(store: Store, tmp_path: Path) -> None:
    seed_decisions(store, 400, seed=1)
    add_user(store, "qa.count", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.count")
        assert _shown(client.get("/console/agreement").text) == _recount(store)
        # the same studies decided again (the same seed draws the same studies): most replace a decision
        seed_decisions(store, 60, seed=2)
        assert _shown(client.get("/console/agreement").text) == _recount(store)
        seed_decisions(store, 3, seed=3)
        assert _shown(client.get("/console/agreement").text) == _recount(store)


def test_a_request_after_new_decisions_does_work_for_those_only(sqlite_store: Store, tmp_path: Path) -> None:
    store = sqlite_store
    seed_decisions(store, 6000, seed=4)
    steps: Counter[str] = Counter()
    reading = [""]

    def count_steps(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        # a SELECT's rows are stepped through as they are fetched: its steps count until the next statement starts
        reading[0] = "decisions" if "qa_decisions" in statement or "audit_events" in statement else "other"

        def step() -> int:
            steps[reading[0]] += 10
            return 0

        connection.connection.dbapi_connection.set_progress_handler(step, 10)

    add_user(store, "qa.steps", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.steps")
        client.get("/console/agreement")
        seed_decisions(store, 8, seed=5)
        sa.event.listen(store.engine, "before_cursor_execute", count_steps)
        try:
            page = client.get("/console/agreement").text
            counted = Counter(steps)  # the handler stays on the pooled connection: what comes after is not counted
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", count_steps)
    assert _shown(page) == _recount(store)
    print(f"\nSQLite VM steps for the page after 8 new decisions among 6008: {dict(counted)}")
    # Reading the 6,008 assessment events took some 50,000 steps (and as many payloads decoded); the 8 new ones'
    # keys, a few thousand.
    assert counted["decisions"] < 10_000, counted

"""The dashboard's agreement by model version, on both stores, against a history small enough to count by hand.

Each decision counts under the model of the reading it was about: the same study's last ``inference_completed``
of the same revision before the decision. So a decision on revision 1 made after revision 2 was read by a newer
model still counts under revision 1's model; a decision whose reading was never recorded is named so; a decision
replaced by a later one on the same finding counts only as the later one.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard_support import _event, _insert
from radtrace.audit.events import EventType
from radtrace.console.dashboard_agreement import NO_READING, WHOLE_DRAFT, read_agreement_by_model
from radtrace.console.dashboard_queries import Window
from radtrace.console.schema import ReviewItem
from radtrace.store.engine import Store
from radtrace.store.models import Instance, OutboxMessage, Revision, Study

pytestmark = pytest.mark.integration

OLD, NEW = ("NV-Reason-CXR-3B", "rev-2026-10"), ("NV-Reason-CXR-3B", "rev-2026-12")


def _reading(uid: str, revision: int, model: tuple[str, str]) -> dict[str, Any]:
    return _event(EventType.INFERENCE_COMPLETED, uid, {"revision": revision, "attempt": 1},
                  model_name=model[0], model_version=model[1])  # fmt: skip


def _decided(uid: str, revision: int, label: str | None, decision: str) -> dict[str, Any]:
    if label is None:
        payload: dict[str, Any] = {"revision": revision, "decision": decision, "reason_code": "RT-A1"}
        return _event(EventType.DRAFT_ASSESSED, uid, payload, user="dr.hand")
    payload = {"revision": revision, "finding": label, "decision": decision, "model_status": "present"}
    return _event(EventType.FINDING_ASSESSED, uid, payload, user="dr.hand")


def test_each_decision_counts_under_the_model_of_the_reading_it_was_about(store: Store) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    a, b, c = (f"1.2.826.0.1.3680043.10.1031.{n}" for n in (1, 2, 3))
    story = [
        _reading(a, 1, OLD),
        _decided(a, 1, "Atelectasis", "accept"),
        _reading(a, 2, NEW),  # further images: revision 2, read by the new version
        _decided(a, 2, "Atelectasis", "reject"),
        _decided(a, 1, "Cardiomegaly", "modify"),  # revision 1 decided late: still the old version's reading
        _decided(b, 1, "Atelectasis", "accept"),  # no reading recorded for b
        _reading(c, 1, NEW),
        _decided(c, 1, "Atelectasis", "accept"),
        _decided(c, 1, "Atelectasis", "reject"),  # replaces the accept above
        _decided(c, 1, None, "reject"),
    ]
    empty: dict[Any, list[dict[str, Any]]] = {table: [] for table in (Study, Revision, Instance, OutboxMessage,
                                                                       ReviewItem)}  # fmt: skip
    _insert(store, empty, [(start + timedelta(minutes=n), event) for n, event in enumerate(story)])
    window = Window(start.date() - timedelta(days=1), start.date() + timedelta(days=1))
    with store.session() as session:
        shown = read_agreement_by_model(session, store, window)
    counts = {
        (model, a.label): Counter({"accept": a.accepted.count, "reject": a.rejected.count, "modify": a.modified.count})
        for model, rows in shown.items()
        for a in rows
    }
    old, new = " ".join(OLD), " ".join(NEW)
    assert {key: +value for key, value in counts.items()} == {
        (old, "Atelectasis"): Counter(accept=1),
        (old, "Cardiomegaly"): Counter(modify=1),
        (new, "Atelectasis"): Counter(reject=2),
        (new, WHOLE_DRAFT): Counter(reject=1),
        (NO_READING, "Atelectasis"): Counter(accept=1),
    }
    assert list(shown) == sorted(shown)


def test_a_site_that_only_ever_ran_one_model_counts_every_decision_under_it(store: Store) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    a, b = (f"1.2.826.0.1.3680043.10.1032.{n}" for n in (1, 2))
    story = [
        _reading(a, 1, OLD),
        _decided(a, 1, "Atelectasis", "accept"),
        _decided(a, 1, "Atelectasis", "modify"),  # replaces the accept
        _reading(b, 1, OLD),
        _decided(b, 1, "Atelectasis", "reject"),
        _decided(b, 1, None, "accept"),
    ]
    empty: dict[Any, list[dict[str, Any]]] = {table: [] for table in (Study, Revision, Instance, OutboxMessage,
                                                                       ReviewItem)}  # fmt: skip
    _insert(store, empty, [(start + timedelta(minutes=n), event) for n, event in enumerate(story)])
    window = Window(start.date() - timedelta(days=1), start.date() + timedelta(days=1))
    with store.session() as session:
        shown = read_agreement_by_model(session, store, window)
    assert list(shown) == [" ".join(OLD)]
    assert [(a.label, a.accepted.count, a.rejected.count, a.modified.count) for a in shown[" ".join(OLD)]] == [
        ("Atelectasis", 0, 1, 1),
        (WHOLE_DRAFT, 1, 0, 0),
    ]

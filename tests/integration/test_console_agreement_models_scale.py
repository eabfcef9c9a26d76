"""The dashboard's agreement per model version over two model versions x 50,000 decisions: the counts it shows are
each decision's under the model of the reading it was about, and the median time of the query is printed (not
asserted: a measurement, see the report).

A study is read once (``inference_completed``, model version A for the first half of the studies, B for the
second), then three of its findings and the whole draft are decided; a tenth decided again (the earlier decision
replaced). Seeding takes a while, so the test runs only when asked:
``AGREEMENT_MODELS_SCALE=1 .venv/bin/pytest -s -q -p no:cacheprovider
tests/integration/test_console_agreement_models_scale.py -k postgresql`` (``AGREEMENT_MODELS_DECISIONS`` for another
count per version).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from console_support import median_ms
from dashboard_support import DECISIONS, _event, _insert
from qa_support import PREVALENCE
from radtrace.audit.events import EventType
from radtrace.console.dashboard_agreement import WHOLE_DRAFT, read_agreement_by_model
from radtrace.console.dashboard_queries import Window
from radtrace.console.schema import ReviewItem
from radtrace.store.engine import Store
from radtrace.store.models import Instance, OutboxMessage, Revision, Study

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("AGREEMENT_MODELS_SCALE") != "1",
                       reason="AGREEMENT_MODELS_SCALE=1 runs it (seeding: a minute)"),
]  # fmt: skip

PER_MODEL = int(os.environ.get("AGREEMENT_MODELS_DECISIONS", "50000"))
MODELS = (("NV-Reason-CXR-3B", "rev-2026-10"), ("NV-Reason-CXR-3B", "rev-2026-12"))


def _seed(store: Store, per_model: int) -> tuple[dict[tuple[str, str], Counter[str]], datetime]:
    """Per model: studies read by it and decided until ``per_model`` decisions; returns the current decisions as
    the dashboard counts them, per (model, label), and when the first event was recorded."""
    rng = random.Random(31)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
    events: list[tuple[datetime, dict[str, Any]]] = []
    latest: dict[tuple[str, str, str], str] = {}
    step = timedelta(seconds=5)
    number = 0
    for name, version in MODELS:
        decided = 0
        while decided < per_model:
            number += 1
            uid = f"1.2.826.0.1.3680043.10.1099.{number}"
            events.append((start + step * len(events),
                           _event(EventType.INFERENCE_COMPLETED, uid, {"revision": 1, "attempt": 1},
                                  model_name=name, model_version=version)))  # fmt: skip
            for label in [*rng.sample(list(PREVALENCE), 3), None]:
                for _ in range(2 if rng.random() < 0.1 else 1):
                    if decided >= per_model:
                        break
                    verdict = rng.choices([d for d, _ in DECISIONS], [w for _, w in DECISIONS])[0]
                    when = start + step * len(events)
                    if label is None:
                        verdict = "accept" if verdict == "accept" else "reject"
                        payload: dict[str, Any] = {"revision": 1, "decision": verdict, "reason_code": "RT-A1"}
                        events.append((when, _event(EventType.DRAFT_ASSESSED, uid, payload, user="dr.seed")))
                    else:
                        payload = {"revision": 1, "finding": label, "decision": verdict, "model_status": "present"}
                        events.append((when, _event(EventType.FINDING_ASSESSED, uid, payload, user="dr.seed")))
                    latest[(f"{name} {version}", uid, label or WHOLE_DRAFT)] = verdict
                    decided += 1
    expected: dict[tuple[str, str], Counter[str]] = {}
    for (model, _uid, label), verdict in latest.items():
        expected.setdefault((model, label), Counter())[verdict] += 1
    empty: dict[Any, list[dict[str, Any]]] = {table: [] for table in (Study, Revision, Instance, OutboxMessage,
                                                                       ReviewItem)}  # fmt: skip
    _insert(store, empty, events)
    return expected, start


def test_agreement_per_model_over_two_versions(store: Store) -> None:
    started = time.perf_counter()
    expected, start = _seed(store, PER_MODEL)
    seeding_s = time.perf_counter() - started
    window = Window(start.date() - timedelta(days=1), datetime.now(UTC).date())

    def query() -> dict[str, Any]:
        with store.session() as session:
            return read_agreement_by_model(session, store, window)

    started = time.perf_counter()
    shown = query()
    first_ms = 1000 * (time.perf_counter() - started)
    counts = {
        (model, a.label): Counter({"accept": a.accepted.count, "reject": a.rejected.count, "modify": a.modified.count})
        for model, rows in shown.items()
        for a in rows
    }
    assert {key: +value for key, value in counts.items()} == expected
    ms = median_ms(query, repeat=5)
    print(f"\n{store.engine.dialect.name}: {len(MODELS)} model versions x {PER_MODEL} decisions "
          f"({seeding_s:.0f} s to seed)")  # fmt: skip
    print(f"  agreement per model, first query     {first_ms:9.1f} ms")
    print(f"  agreement per model, median of 5     {ms:9.1f} ms")

"""The QA dashboard's copy of the radiologists' decisions (``qa_decisions``) after the host's clock stepped back.

The copy is incremental: each sync takes the assessment events after the last seq copied. It also took only those
recorded at most a minute before the last copied decision's time, so an NTP correction or a VM restored from a
snapshot that set the clock back further left every decision recorded until the clock caught up out of the
agreement figures for good (seq keeps growing under the audit lock; recorded_at is the host's wall clock). Now
the seq alone says what is new, and such decisions are counted (and superseded) like any other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import radtrace.audit.recorder as recorder
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.dashboard_agreement import read_agreement, sync_decisions
from radtrace.console.dashboard_queries import Window
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def _decide(store: Store, study: str, finding: str, decision: str, supersedes: int | None = None) -> int:
    payload = {"revision": 1, "finding": finding, "decision": decision, "supersedes": supersedes}
    event = AuditEvent(EventType.FINDING_ASSESSED, Actor(user="dr.keys"), study_uid=study, payload=payload)
    return AuditRecorder(store).record(event).seq


@pytest.mark.parametrize("step_back", [timedelta(minutes=5), timedelta(hours=2)])
def test_decisions_recorded_after_the_clock_stepped_back_are_counted(
    store: Store, monkeypatch: pytest.MonkeyPatch, step_back: timedelta
) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    clock = [now]
    monkeypatch.setattr(recorder, "utc_now", lambda: clock[0])
    first = _decide(store, "1.2.3.1", "Cardiomegaly", "accept")
    _decide(store, "1.2.3.2", "Cardiomegaly", "accept")
    assert sync_decisions(store) == 2
    clock[0] = now - step_back  # the host's clock is set back: later events carry earlier times
    _decide(store, "1.2.3.3", "Cardiomegaly", "reject")
    _decide(store, "1.2.3.1", "Cardiomegaly", "modify", supersedes=first)  # replaces the first decision
    assert sync_decisions(store) == 2
    today = datetime.now(UTC).date()
    with store.session() as session:
        (cardiomegaly,) = read_agreement(session, Window(today - timedelta(days=1), today, "day"))
    assert (cardiomegaly.total, cardiomegaly.accepted.count, cardiomegaly.rejected.count,
            cardiomegaly.modified.count) == (3, 1, 1, 1)  # fmt: skip

"""Cost of the per-batch kept-readings lookup (radtrace.worker.kept_readings) on SQLite, 2,000 studies' events.

.venv/bin/python bench/kept_readings.py /tmp/kept-bench.db
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.worker.claims import Claim
from radtrace.worker.kept_readings import kept_readings


def main(db: Path, studies: int = 2000) -> None:
    db.unlink(missing_ok=True)
    store = Store.from_url(f"sqlite:///{db}")
    upgrade(store)
    recorder = AuditRecorder(store, Actor())
    reading = {"raw_text": "x" * 3000, "findings": []}
    kinds = ((EventType.INFERENCE_STARTED, {}), (EventType.INFERENCE_COMPLETED, {"reading": reading}),
             (EventType.REPORT_CREATED, {}))  # fmt: skip
    events = [
        AuditEvent(kind, Actor(), Outcome.SUCCESS, study_uid=f"1.2.3.{i}", payload={"revision": 1, **payload})
        for i in range(studies)
        for kind, payload in kinds
    ]
    for start in range(0, len(events), 500):
        recorder.record_many(events[start : start + 500])

    def median_ms(claims: list[Claim]) -> float:
        runs = []
        for _ in range(50):
            started = time.perf_counter()
            kept_readings(store, claims)
            runs.append(time.perf_counter() - started)
        return statistics.median(runs) * 1000

    new = [Claim(10**6 + i, f"9.9.9.{i}", None, 1, 1, 0, 0) for i in range(16)]
    old = [Claim(i, f"1.2.3.{i}", None, 2, 1, 0, 0) for i in range(16)]
    print(f"batch of 1 new study: {median_ms(new[:1]):.2f} ms; 16 new: {median_ms(new):.2f} ms; "
          f"16 with earlier readings: {median_ms(old):.2f} ms")  # fmt: skip
    store.dispose()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/kept-bench.db"))

"""What it costs a worker to ask whether reading is stopped, as the audit log grows (PostgreSQL).

Each GPU worker asks before every batch (:meth:`radtrace.worker.outage.OutageNotice.open_reason`) and, while held,
about once a second; ``radtrace status`` asks for every open one (:func:`radtrace.worker.outage.open_outages`). The
peer in the same run is the audit-log scan that answered before migration 0016: the newest ``application_started`` /
``application_stopped`` entries of component ``model reading``, 100 at a time, newest first, until the server's
latest; with no such entry (a deployment that never had an outage, the usual case) it reads them all.

The audit log is filled with SQL (``generate_series``), not through the recorder: the chain is not what is measured,
the rows' number and mix is (mostly study events, an ``application_started`` of a listener every 1,000, with
``--other-every N`` another model server's outage entries every N rows (one that flapped: ``other`` is their number),
and, in the ``stopped`` case, one stop told after the first half).

    .venv/bin/python bench/model_stop_state.py [--events 100000 1000000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import sqlalchemy as sa

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import temporary_postgres_database
from radtrace.worker.breaker import ModelServerBreaker
from radtrace.worker.outage import OutageNotice, open_outages

SERVER = "http://gpu-1.example:8000"
STOP = (
    "model output unparseable for 4 consecutive studies (model m r1 via vllm): check the weights and the chat template"
)

_FILL = """
INSERT INTO audit_events (seq, recorded_at, event_type, dicom_event_id, outcome, actor_process, study_uid,
                          accession, payload, prev_hash, hash)
SELECT s, now() - make_interval(secs => :n - s),
       CASE WHEN s % 1000 = 0 THEN 'application_started'
            WHEN :other > 0 AND s % :other = 0 THEN
                 (ARRAY['application_stopped','application_started'])[(s / :other) % 2 + 1]
            ELSE (ARRAY['instance_received','inference_completed','dispatch_completed','draft_viewed'])[s % 4 + 1] END,
       '110100', 'success', 'bench', '1.2.826.0.1.3680043.8.498.' || (s / 3), 'ACC' || (s / 3),
       CASE WHEN s % 1000 = 0 THEN '{"component":"listener","ae_title":"RADTRACE"}'
            WHEN :other > 0 AND s % :other = 0 THEN
                 '{"component":"model reading","reason":"model server unavailable","server":"http://gpu-2.example:8000"}'
            ELSE '{"note":"' || repeat('x', 200) || '","n":' || s || '}' END,
       md5((s - 1)::text) || md5((s - 1)::text || 'b'), md5(s::text) || md5(s::text || 'b')
FROM generate_series(CAST(:first AS BIGINT), CAST(:last AS BIGINT)) AS s
"""

# The query the audit-log scan ran (radtrace.worker.outage before 0016), one page.
_SCAN = """
SELECT seq, event_type, recorded_at, payload FROM audit_events
WHERE event_type IN ('application_stopped', 'application_started') AND payload LIKE '%"component":"model reading"%'
  AND (CAST(:before AS BIGINT) IS NULL OR seq < :before)
ORDER BY seq DESC LIMIT 100
"""


def _fill(store: Store, first: int, last: int, other: int) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.text(_FILL), {"n": last, "first": first, "last": last, "other": other})


def _tell_stop(store: Store) -> None:
    actor = Actor(process="radtrace-worker@bench")
    notice = OutageNotice(store, AuditRecorder(store, actor), actor, "bench", object(), utc_now, server=SERVER)
    ModelServerBreaker(lambda: STOP, on_open=notice.opened).server_down()


def _scan_latest(store: Store) -> bool:
    """The peer: the old scan for SERVER's latest entry; whether it is open."""
    before: int | None = None
    with store.engine.connect() as connection:
        while True:
            rows = connection.execute(sa.text(_SCAN), {"before": before}).all()
            for seq, event_type, _, payload in rows:
                before = seq
                if json.loads(payload).get("server") == SERVER:
                    return bool(event_type == "application_stopped")
            if len(rows) < 100:
                return False


def _ms(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(events: int, repeat: int, other: int) -> list[tuple[str, int, float, float, float]]:
    """The medians, in ms, with ``events`` audit rows and no outage ever told, then with a stop told halfway."""
    rows = []
    with temporary_postgres_database("radtrace_bench_stop") as url:
        store = Store.from_url(url)
        try:
            upgrade(store)
            _fill(store, 1, events, other)
            actor = Actor(process="radtrace-worker@bench")
            notice = OutageNotice(store, AuditRecorder(store, actor), actor, "bench", object(), utc_now, server=SERVER)

            def status() -> None:
                with store.session() as session:
                    open_outages(session)

            for case in ("none", "stopped"):
                if case == "stopped":  # the second half again, after a stop told halfway
                    with store.engine.begin() as connection:
                        connection.execute(sa.text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
                        connection.execute(sa.text("DELETE FROM audit_events WHERE seq > :h"), {"h": events // 2})
                        connection.execute(sa.text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
                    _tell_stop(store)
                    _fill(store, events // 2 + 2, events + 1, other)
                with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    connection.execute(sa.text("VACUUM ANALYZE audit_events"))
                    total = int(connection.execute(sa.text("SELECT count(*) FROM audit_events")).scalar_one())
                assert (notice.open_reason() is not None) == (case == "stopped")
                assert _scan_latest(store) == (case == "stopped")
                rows.append((case, total, _ms(lambda: _scan_latest(store), repeat), _ms(notice.open_reason, repeat),
                             _ms(status, repeat)))  # fmt: skip
        finally:
            store.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--other-every",
        type=int,
        nargs="+",
        default=[0, 200],
        help="another server's outage entry every N rows (0: none), each a run of its own",
    )
    args = parser.parse_args()
    header = ("case", "other", "audit rows", "scan (peer) ms", "open_reason ms", "open_outages ms")
    widths = (8, 6, 11, 15, 15, 16)
    print(
        " ".join(
            f"{name:<{w}}" if i == 0 else f"{name:>{w}}" for i, (name, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for events in args.events:
        for other in args.other_every:
            for case, total, scan, reason, status in measure(events, args.repeat, other):
                cells = (f"{events // other if other else 0}", f"{total:,}", f"{scan:.2f}", f"{reason:.2f}",
                         f"{status:.2f}")  # fmt: skip
                print(f"{case:<8} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths[1:], strict=True)), flush=True)


if __name__ == "__main__":
    main()

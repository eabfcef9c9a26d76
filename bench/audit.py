"""Audit log throughput: chained appends and verification, SQLite and PostgreSQL, beside a plain-insert peer.

The peer is the same row written with a plain INSERT and COMMIT (no lock, no head read, no hash): the
floor that the database's durable commit sets. The chain's cost is the gap between the two columns.

    .venv/bin/python bench/audit.py [--events 100000] [--single 5000] [--batch 100]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa

from radtrace.audit.chain import verify_chain
from radtrace.audit.events import Actor, AuditEvent, EventType, canonical_json
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import temporary_postgres_database

ACTOR = Actor(ae_title="BENCH", host="127.0.0.1", process="bench/audit.py")


def _event(index: int) -> AuditEvent:
    return AuditEvent(
        type=EventType.INFERENCE_COMPLETED,
        actor=ACTOR,
        study_uid=f"1.2.826.0.1.3680043.8.498.{index}",
        accession=f"ACC{index:08d}",
        model_name="NV-Reason-CXR-3B",
        model_version="nv-reason-cxr/1",
        labels=("Cardiomegaly", "Pleural Effusion"),
        payload={"prompt": "Find abnormalities and support devices.", "raw": "<think>" + "x" * 600 + "</think>"},
    )


@contextlib.contextmanager
def _database(kind: str) -> Iterator[Store]:
    if kind == "postgresql":
        with temporary_postgres_database("radtrace_bench") as url:
            store = Store.from_url(url)
            upgrade(store)
            yield store
            store.dispose()
    else:
        with tempfile.TemporaryDirectory() as directory:
            store = Store.from_url(f"sqlite:///{Path(directory) / 'bench.db'}")
            upgrade(store)
            yield store
            store.dispose()


def _rate(count: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def _peer_table(store: Store) -> sa.Table:
    metadata = sa.MetaData()
    table = sa.Table(
        "peer_events",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("study_uid", sa.String(64)),
        sa.Column("payload", sa.Text),
    )
    metadata.create_all(store.engine)
    return table


def _peer_rows(start: int, count: int) -> list[dict[str, object]]:
    return [
        {"id": start + n, "study_uid": f"1.2.{start + n}", "payload": canonical_json(dict(_event(n).payload))}
        for n in range(count)
    ]


def measure(kind: str, events: int, single: int, batch: int) -> dict[str, float]:
    """Rates (per second) for one database kind."""
    figures: dict[str, float] = {}
    with _database(kind) as store:
        recorder = AuditRecorder(store)
        figures["chain, 1 event/commit"] = _rate(single, lambda: [recorder.record(_event(n)) for n in range(single)])

        def chained_batches() -> None:
            for start in range(0, events, batch):
                recorder.record_many([_event(n) for n in range(start, min(start + batch, events))])

        figures[f"chain, {batch} events/commit"] = _rate(events, chained_batches)
        figures["verify"] = _rate(single + events, lambda: _assert_valid(verify_chain(store).ok))

        table = _peer_table(store)

        def peer_single() -> None:
            for n in range(single):
                with store.session("peer insert") as session:
                    session.execute(sa.insert(table), _peer_rows(n, 1))

        def peer_batches() -> None:
            for start in range(0, events, batch):
                with store.session("peer insert") as session:
                    session.execute(sa.insert(table), _peer_rows(single + start, min(batch, events - start)))

        figures["peer, 1 row/commit"] = _rate(single, peer_single)
        figures[f"peer, {batch} rows/commit"] = _rate(events, peer_batches)
    return figures


def _assert_valid(ok: bool) -> None:
    if not ok:
        raise SystemExit("benchmark chain did not verify")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events appended in batches and verified")
    parser.add_argument("--single", type=int, default=5_000, help="events appended one per transaction")
    parser.add_argument("--batch", type=int, default=100, help="events per transaction in batch mode")
    args = parser.parse_args()
    results = {kind: measure(kind, args.events, args.single, args.batch) for kind in ("sqlite", "postgresql")}
    rows = list(results["sqlite"])
    print(f"\naudit log: {args.events:,} batched + {args.single:,} single events per database (events/s)\n")
    print(f"{'measure':<28}{'SQLite':>14}{'PostgreSQL':>14}")
    print("-" * 56)
    for row in rows:
        print(f"{row:<28}{results['sqlite'][row]:>14,.0f}{results['postgresql'][row]:>14,.0f}")
    print("\ntargets: >= 2,000 chained appends/s on PostgreSQL; verify >= 50,000 events/s")


if __name__ == "__main__":
    main()

"""Claims and leases with a node whose clock is 10 minutes off, on the local PostgreSQL (several nodes, one database).

Three figures, each printed as a line:

1. sends of one ORU while node-2 (its clock ``--skew-s`` ahead) runs a dispatcher pass every second during node-1's
   ``--send-s`` send (1 is right; before leases ran on the database's clock: 2);
2. seconds until a read is taken over once its holder (its clock ``--skew-s`` ahead, then behind) stops renewing,
   with ``broker.claim_timeout_s`` ``--claim-s``, the taker polling every 0.1 s, given up after ``--claim-s`` + 11 s
   (right: the claim timeout; before: 10 minutes late ahead, at once, while live, behind);
3. ms per delivery (claim, no-op send, record) for ``--deliveries`` due rows: what the database clock's extra
   round trip costs.

The peer is another checkout's code in the same run: ``PYTHONPATH=<its src> .venv/bin/python bench/lease_skew.py``
(e.g. a git worktree of the commit before 4212aaa).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def skewed(seconds: float) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + timedelta(seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--skew-s", type=float, default=600.0)
    parser.add_argument("--send-s", type=float, default=8.0)
    parser.add_argument("--claim-s", type=float, default=4.0)
    parser.add_argument("--deliveries", type=int, default=200)
    args = parser.parse_args()

    from radtrace.audit.events import Actor
    from radtrace.audit.recorder import AuditRecorder
    from radtrace.config import DispatchSettings, MllpDestination, load_settings
    from radtrace.reporting.dispatch.outbox import KIND_HL7, Outbox, planned_deliveries
    from radtrace.store.engine import Store
    from radtrace.store.migrate import upgrade
    from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
    from radtrace.testing.services import temporary_postgres_database
    from radtrace.worker.attempts import RevisionAttempts
    from radtrace.worker.claims import Claim
    from reporting_support import reported_revision, typical_report_files
    from worker_support import Unobserved

    tmp = Path(tempfile.mkdtemp(prefix="radtrace-lease-skew-"))
    with temporary_postgres_database() as url:
        store = Store.from_url(url)
        upgrade(store)
        settings = DispatchSettings(ris=MllpDestination(host="127.0.0.1", port=2575, timeout_s=30))
        sent: list[float] = []

        def slow_ris(destination: str, payload: bytes) -> str:
            sent.append(time.monotonic())
            time.sleep(args.send_s)
            return "AA"

        def dispatcher(skew_s: float) -> Outbox:
            return Outbox(store, AuditRecorder(store), settings, tmp / "payloads", senders={KIND_HL7: slow_ris},
                          clock=skewed(skew_s))  # fmt: skip

        node_1, node_2 = dispatcher(0.0), dispatcher(args.skew_s)
        revision_id = reported_revision(store, "a" * 16, "RTACC000901")[0]
        [outbox_id] = node_1.enqueue(revision_id, planned_deliveries(settings, typical_report_files()))
        first = threading.Thread(target=node_1.deliver, args=(outbox_id,))
        first.start()
        time.sleep(0.5)
        passes: list[threading.Thread] = []
        while first.is_alive():
            passes.append(threading.Thread(target=node_2.deliver_due))
            passes[-1].start()
            time.sleep(1.0)
        for thread in passes:
            thread.join()
        print(f"(1) sends of one ORU, node-2 {args.skew_s:+.0f} s polling during node-1's {args.send_s:.0f} s send: "
              f"{len(sent)}")  # fmt: skip

        worker_settings = load_settings(data_dir=tmp / "radtrace", store={"url": url},
                                        broker={"claim_timeout_s": args.claim_s})  # fmt: skip

        def worker(name: str, skew_s: float) -> RevisionAttempts:
            return RevisionAttempts(worker_settings, store, AuditRecorder(store), actor=Actor(), worker=name,
                                    clock=skewed(skew_s), observer=Unobserved())  # fmt: skip

        for number, holder_skew in enumerate((args.skew_s, -args.skew_s), start=1):
            uid = f"1.2.826.0.1.3680043.8.498.90{number}"
            with store.session() as session:
                study = Study(study_uid=uid, study_key=f"{number}" * 16, accession=f"RTACC00091{number}")
                session.add_all([study, Revision(study=study, number=1, state=RevisionState.QUEUED)])
            assert isinstance(worker("gpu-1:101", holder_skew).claim(uid, 1), Claim)
            start, taker, took = time.monotonic(), worker("gpu-2:202", 0.0), None
            while time.monotonic() - start < args.claim_s + 11:
                if isinstance(taker.claim(uid, 1), Claim):
                    took = time.monotonic() - start
                    break
                time.sleep(0.1)
            after = f"{took:.2f} s" if took is not None else f"more than {args.claim_s + 11:.0f} s"
            print(f"(2) holder clock {holder_skew:+.0f} s, claim {args.claim_s:g} s, never renewed: taken over {after}")

        quick = Outbox(store, AuditRecorder(store), settings, tmp / "payloads", senders={KIND_HL7: lambda d, p: "AA"})
        with store.session() as session:
            model = session.get(OutboxMessage, outbox_id)
            assert model is not None
            due = datetime.now(UTC) - timedelta(seconds=1)
            session.add_all(
                OutboxMessage(revision_id=revision_id, kind=model.kind, destination=f"127.0.0.1:{3000 + n}",
                              payload_path=model.payload_path, payload_sha256=model.payload_sha256,
                              state=OutboxState.PENDING, attempts=0, next_attempt_at=due)
                for n in range(args.deliveries)
            )  # fmt: skip
        began = time.perf_counter()
        done = [delivery for delivery in quick.deliver_due() if delivery.attempted]
        took_s = time.perf_counter() - began
        print(f"(3) {len(done)} deliveries (claim, no-op send, record) on PostgreSQL: {took_s:.2f} s, "
              f"{1000 * took_s / max(1, len(done)):.1f} ms each")  # fmt: skip
        store.dispose()


if __name__ == "__main__":
    main()

"""SR delivery latency while the RIS never answers: a real dispatcher on the local PostgreSQL and Redis.

A ``radtrace worker --queues dispatch --concurrency C`` process, a RIS that accepts each ORU and never answers (a real
MLLP server: each send waits ``--ris-timeout-s``), a real pynetdicom PACS, and ``--studies`` reported studies arriving
``--spacing-s`` apart, each with its SR and its ORU enqueued and rung as the pipeline does (the SR first). Printed: the
seconds from each study's ring to its SR stored (``delivered_at``), in arrival order, and their maximum.

Before the per-destination cap (``dispatch.max_sends_per_destination``) the four threads filled with sends to the
RIS and the later studies' SRs waited a RIS timeout or more. The code measured is this checkout's, or another's:
``PYTHONPATH=<its src> .venv/bin/python bench/dispatch_head_of_line.py`` (e.g. a git worktree of the commit before).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--spacing-s", type=float, default=2.0)
    parser.add_argument("--ris-timeout-s", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    import sqlalchemy as sa

    from dispatch_hold_support import counting_pacs
    from mllp_support import mllp_receiver
    from radtrace.audit.recorder import AuditRecorder
    from radtrace.config import ReportingSettings, load_settings
    from radtrace.reporting.dispatch.outbox import KIND_SR, Outbox, ReportFiles, planned_deliveries
    from radtrace.reporting.sr import build_sr, sr_bytes
    from radtrace.store.engine import Store
    from radtrace.store.migrate import upgrade
    from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
    from radtrace.testing.services import temporary_postgres_database, temporary_redis_namespace
    from radtrace.worker.doorbell import ring_dispatch
    from radtrace.worker.pipeline import payload_dir
    from reporting_support import sr_cases

    tmp = Path(tempfile.mkdtemp(prefix="radtrace-head-of-line-"))
    reading, sources = sr_cases()["typical"]
    with (
        temporary_postgres_database() as url,
        temporary_redis_namespace("radtrace-bench") as redis,
        counting_pacs("PACS") as pacs,
        mllp_receiver(["silent"]) as ris,
    ):
        ris_json = {"host": "127.0.0.1", "port": ris.port, "timeout_s": args.ris_timeout_s}
        settings = load_settings(
            data_dir=tmp / "data", store={"url": url}, model={"backend": "demo", "demo": True},
            broker={"url": redis.url, "key_prefix": redis.prefix},
            dispatch={"pacs": [pacs.destination], "ris": ris_json},
        )  # fmt: skip
        store = Store.from_url(url)
        upgrade(store)
        outbox = Outbox(store, AuditRecorder(store), settings.dispatch, payload_dir(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {
            "RADTRACE_DATA_DIR": str(settings.data_dir), "RADTRACE_STORE__URL": url,
            "RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true",
            "RADTRACE_BROKER__URL": redis.url, "RADTRACE_BROKER__KEY_PREFIX": redis.prefix,
            "RADTRACE_DISPATCH__PACS": json.dumps([pacs.destination.model_dump(mode="json")]),
            "RADTRACE_DISPATCH__RIS": json.dumps(ris_json),
        }  # fmt: skip
        log_path = tmp / "dispatcher.log"
        with log_path.open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "radtrace", "worker", "--queues", "dispatch",
                 f"--concurrency={args.concurrency}"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            probe = 10**9  # no such row: the dispatcher refuses it, and so says it takes doorbells
            ring_dispatch(settings, probe)
            while f"dispatch {probe} refused".encode() not in log_path.read_bytes():
                if time.monotonic() > deadline:
                    raise SystemExit(f"the dispatcher did not start: {log_path}")
                time.sleep(0.1)
            rung: dict[int, float] = {}  # SR row -> when its study was rung (epoch seconds)
            for number in range(1, args.studies + 1):
                sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
                with store.session() as session:
                    study = Study(study_uid=f"1.2.826.0.1.3680043.10.543.{number}",
                                  study_key=f"headofline{number:06d}", accession=f"RTACC-{number}")  # fmt: skip
                    revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
                    session.add_all([study, revision])
                    session.flush()
                    revision_id = revision.id
                oru = (f"MSH|^~\\&|RADTRACE|SITE|RIS|SITE|20260101000000||ORU^R01^ORU_R01|RT{number:08d}|P|2.5.1\r"
                       f"PID|1||P{number}^^^SITE^MR||DOE^JANE\r").encode()  # fmt: skip
                files = ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr), oru, b"{}")
                ids = outbox.enqueue(revision_id, planned_deliveries(settings.dispatch, files))
                now = time.time()
                for outbox_id in ids:
                    ring_dispatch(settings, outbox_id)
                with store.session() as session:
                    sr_id = session.scalar(
                        sa.select(OutboxMessage.id).where(OutboxMessage.id.in_(ids), OutboxMessage.kind == KIND_SR)
                    )
                rung[sr_id] = now
                time.sleep(args.spacing_s)
            deadline = time.monotonic() + 20 * args.ris_timeout_s + 60
            while True:
                with store.session() as session:
                    done = dict(
                        session.execute(
                            sa.select(OutboxMessage.id, OutboxMessage.delivered_at).where(
                                OutboxMessage.id.in_(rung), OutboxMessage.state == OutboxState.DELIVERED
                            )
                        ).all()
                    )
                if len(done) == len(rung) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            latencies = [round(done[i].timestamp() - rung[i], 2) if i in done else None for i in sorted(rung)]
            print(f"SR delivery s per study (RIS silent, timeout {args.ris_timeout_s} s, {args.studies} studies "
                  f"{args.spacing_s} s apart, --concurrency {args.concurrency}): {latencies}")  # fmt: skip
            print(
                f"max {max((x for x in latencies if x is not None), default=None)} s; "
                f"{latencies.count(None)} not delivered; ORUs sent to the RIS: {len(ris.received)}"
            )
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
            store.dispose()


if __name__ == "__main__":
    main()

"""A RIS that never answers must not hold up the SRs to a PACS that does (head-of-line blocking).

A real dispatcher (``radtrace worker --queues dispatch --concurrency 4`` on PostgreSQL and Redis), a RIS that accepts
each ORU and never answers (a real MLLP server: every send waits out ``timeout_s``), a real pynetdicom PACS, and a
night's doorbells rung ORUs first, then SRs, as a backlog does. Every SR must be stored while the RIS still hangs:
before any ORU attempt has ended.

Before (every thread took whatever the queue held next): the four threads all waited on the RIS, each for its
timeout, while the SRs queued behind the ORUs; the first SR was stored only after the first ORU timed out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch_hold_support import CountingPacs, counting_pacs, rows_to
from mllp_support import mllp_receiver
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings, ReportingSettings, Settings, load_settings
from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles, planned_deliveries
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import OutboxState, Revision, RevisionState, Study
from radtrace.testing.services import RedisNamespace
from radtrace.worker.doorbell import ring_dispatch
from radtrace.worker.pipeline import payload_dir
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

NIGHT = 8
RIS_TIMEOUT_S = 10.0


@pytest.fixture
def pacs() -> Iterator[CountingPacs]:
    with counting_pacs("PACS") as admitting:
        yield admitting


def _night(store: Store, outbox: Outbox, settings: DispatchSettings) -> None:
    """``NIGHT`` reported studies, each with its SR and its ORU (a control ID of its own) enqueued."""
    reading, sources = sr_cases()["typical"]
    for number in range(1, NIGHT + 1):
        study_uid = f"1.2.826.0.1.3680043.10.543.{number}"
        sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
        with store.session() as session:
            study = Study(study_uid=study_uid, study_key=f"headofline{number:06d}", accession=f"RTACC-{number}")
            revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
            session.add_all([study, revision])
            session.flush()
            revision_id = revision.id
        oru = (f"MSH|^~\\&|RADTRACE|SITE|RIS|SITE|20260101000000||ORU^R01^ORU_R01|RT{number:08d}|P|2.5.1\r"
               f"PID|1||P{number}^^^SITE^MR||DOE^JANE\r").encode()  # fmt: skip
        outbox.enqueue(revision_id, planned_deliveries(settings, ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr),
                                                                             oru, b"{}")))  # fmt: skip


def _env(settings: Settings, ris_port: int) -> dict[str, str]:
    broker, dispatch = settings.broker, settings.dispatch
    return {
        "RADTRACE_DATA_DIR": str(settings.data_dir), "RADTRACE_STORE__URL": settings.store_url,
        "RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true", "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_BROKER__URL": str(broker.url), "RADTRACE_BROKER__KEY_PREFIX": broker.key_prefix,
        "RADTRACE_DISPATCH__PACS": json.dumps([p.model_dump(mode="json") for p in dispatch.pacs]),
        "RADTRACE_DISPATCH__RIS": json.dumps({"host": "127.0.0.1", "port": ris_port, "timeout_s": RIS_TIMEOUT_S}),
        "RADTRACE_DISPATCH__BACKOFF_INITIAL_S": "60",
    }  # fmt: skip


def test_a_ris_that_never_answers_does_not_hold_up_the_srs_to_the_pacs(
    tmp_path: Path, postgres_url: str, redis_namespace: RedisNamespace, pacs: CountingPacs
) -> None:
    with mllp_receiver(["silent"]) as ris:
        settings = load_settings(
            data_dir=tmp_path / "data",
            store={"url": postgres_url},
            model={"backend": "demo", "demo": True},
            broker={"url": redis_namespace.url, "key_prefix": redis_namespace.prefix},
            dispatch={"pacs": [pacs.destination], "ris": {"host": "127.0.0.1", "port": ris.port,
                                                            "timeout_s": RIS_TIMEOUT_S}},
        )  # fmt: skip
        store = Store.from_url(settings.store_url)
        upgrade(store)
        try:
            outbox = Outbox(store, AuditRecorder(store), settings.dispatch, payload_dir(settings))
            _night(store, outbox, settings.dispatch)
            ris_name = f"127.0.0.1:{ris.port}"
            ris_rows = {row.id for row in rows_to(store, ris_name)}
            assert len(ris_rows) == NIGHT
            sr_rows = {row.id for row in rows_to(store, pacs.name)}
            assert len(sr_rows) == NIGHT
            for outbox_id in sorted(ris_rows) + sorted(sr_rows):  # the ORUs first: a backlog's worst order
                assert ring_dispatch(settings, outbox_id)
            environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
            log_path = tmp_path / "dispatcher.log"
            with log_path.open("ab") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "radtrace", "worker", "--queues", "dispatch", "--concurrency", "4"],
                    stdout=log, stderr=subprocess.STDOUT, env=environment | _env(settings, ris.port),
                    start_new_session=True,
                )  # fmt: skip
            try:
                started = time.monotonic()
                deadline = started + 90
                while True:
                    stored = [row for row in rows_to(store, pacs.name) if row.state is OutboxState.DELIVERED]
                    oru_ended = [row for row in rows_to(store, ris_name) if row.last_error is not None]
                    if len(stored) == NIGHT or oru_ended:
                        break
                    assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
                    time.sleep(0.05)
                print(f"{len(stored)} SRs stored {time.monotonic() - started:.1f} s after the dispatcher started")
                # every SR stored while the RIS still hung: no ORU attempt had ended yet
                assert len(stored) == NIGHT, (len(stored), [row.last_error for row in oru_ended])
                assert oru_ended == []
                assert len(pacs.stored) == NIGHT  # each study's SR once (the same instance: one reading)
                # at most two sends to the RIS at a time (dispatch.max_sends_per_destination), none retried yet
                assert len(ris.received) <= 2, len(ris.received)
                assert sum(row.attempts for row in rows_to(store, ris_name)) <= 2
            finally:  # kill -9: a warm shutdown would wait out the sends to the RIS
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
        finally:
            store.dispose()

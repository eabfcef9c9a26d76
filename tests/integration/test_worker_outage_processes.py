"""A model server outage's end reaches every held ``radtrace worker`` process in about a second (be3aa86).

Each worker's breaker probes on its own backoff (2 s doubling to ``model.server_probe_max_s``, 60 s): after a vLLM
engine came back, the first worker to probe read again and the others waited for their own next probe. Now a held
worker asks every second whether the outage it saw open is closed (its ``model_outages`` row gone) and probes then.

Two real workers on one PostgreSQL and one Redis, each holding one study while the tests' vLLM-like server's engine is
dead (``/health`` 503, completions 500); w2 starts holding 8-14 s after w1, and the engine comes back after both
holds' 14 s probes, so w1's next probe (30 s) closes the outage and w2's own (30 s into its hold) is 8-14 s later.
Measured: from the outage's ``application_started`` to each held study's ``inference_completed``: before
[0.12, 13.97] s (w2 waited for its probe), now [0.12, 1.1] and [0.16, 0.89] s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.audit.schema import AuditEventRow
from radtrace.testing.services import RedisNamespace, free_port
from radtrace.worker.doorbell import ring_process
from worker_support import (
    FakeVllm,
    fake_vllm_server,
    migrated_store,
    model_outage_events,
    queue_studies,
    readings_after,
    revision_row,
    running_worker,
    vllm_worker_settings,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[FakeVllm]:
    with fake_vllm_server(free_port()) as fake:
        yield fake


def test_every_held_worker_reads_within_seconds_of_the_outage_s_end(
    tmp_path: Path, server: FakeVllm, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    (tmp_path / "drop").mkdir()
    settings = vllm_worker_settings(
        tmp_path, server.port, batch_size=1, store={"url": postgres_url},
        model={"server_probe_max_s": 60.0, "request_timeout_s": 10.0}, dispatch={"file_drop_dir": tmp_path / "drop"},
        broker={"url": redis_namespace.url, "key_prefix": redis_namespace.prefix},
    )  # fmt: skip
    server.engine_dead = True
    with migrated_store(settings) as store:
        uids = queue_studies(settings, store, 2, seed=880)
        with running_worker(settings, log_file=tmp_path / "w1.log"):
            assert ring_process(settings, uids[0], 1)
            wait_until(lambda: revision_row(store, uids[0]).claimed_by is not None, timeout_s=90)
            w1_held = time.monotonic()  # its probes 2, 6, 14, 30 s after
            time.sleep(7)
            with running_worker(settings, log_file=tmp_path / "w2.log"):
                assert ring_process(settings, uids[1], 1)
                wait_until(lambda: revision_row(store, uids[1]).claimed_by is not None, timeout_s=90)
                w2_held = time.monotonic()  # its own probes, 6 s or more behind w1's (the process's start)
                claimed = {revision_row(store, uid).claimed_by for uid in uids}
                assert len(claimed) == 2, claimed  # two workers, each holding one study
                wait_until(lambda: bool(model_outage_events(store)), timeout_s=30)
                # back after both holds' 14 s probes and before w1's 30 s one, which closes the outage; w2's next is
                # 30 s into its own hold, 8-14 s later: it read then before, within about a second of the close now
                assert 8 <= w2_held - w1_held < 14, w2_held - w1_held
                time.sleep(max(max(w1_held + 25, w2_held + 15) - time.monotonic(), 0))
                server.engine_dead = False
                wait_until(lambda: len(model_outage_events(store)) == 2, timeout_s=90)
                with store.session() as session:
                    ended_seq, ended_at = session.execute(
                        sa.select(AuditEventRow.seq, AuditEventRow.recorded_at)
                        .where(AuditEventRow.event_type == "application_started")
                        .order_by(AuditEventRow.seq.desc()).limit(1)
                    ).one()  # fmt: skip
                wait_until(lambda: set(uids) <= set(readings_after(store, ended_seq - 1)), timeout_s=90)
        first = readings_after(store, ended_seq - 1)
        latencies = sorted(round((first[uid] - ended_at).total_seconds(), 2) for uid in uids)
        print(f"outage end to each worker's reading: {latencies} s")
        assert latencies[-1] < 5, latencies

"""A model server outage's end reaches every held ``radtrace worker`` process without its own backoff (be3aa86).

Each worker's breaker probes on its own backoff (2 s doubling to ``model.server_probe_max_s``, 60 s): after a vLLM
engine came back, the first worker to probe read again and the others waited for their own next probe. Now a held
worker asks every second whether the outage it saw open is closed (its ``model_outages`` row gone) and probes then.

Two real workers on one PostgreSQL and one Redis, each holding one study while the tests' vLLM-like server's engine is
dead (``/health`` 503, completions 500). Each worker has its own bearer token, so the server tells their probes apart:
the engine comes back for w1 (its probes every 2 s) while it stays dead to w2 until w2's log says it saw the outage
closed by another worker. So w2 reads only by that path, whatever the machine's load: by the order of events, not by
the clock. Before be3aa86 w2 never saw it (its own probes only) and never read (measured with wall time before: from
the outage's end to w2's reading 13.97 s before, 0.89-1.1 s after).
"""

from __future__ import annotations

import threading
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

#: What a held worker logs when the outage it saw open was closed by another worker (radtrace.worker.outage).
CLOSED_ELSEWHERE = "was closed by another worker; probing it now"
#: The breaker's line once its probe finds the server answering (radtrace.worker.breaker).
ANSWERS_AGAIN = "model server answers again"


@pytest.fixture
def server() -> Iterator[FakeVllm]:
    with fake_vllm_server(free_port()) as fake:
        yield fake


def test_a_held_worker_reads_once_it_sees_the_outage_closed_by_another_worker(
    tmp_path: Path, server: FakeVllm, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    (tmp_path / "drop").mkdir()
    common = {"store": {"url": postgres_url}, "dispatch": {"file_drop_dir": tmp_path / "drop"},
              "broker": {"url": redis_namespace.url, "key_prefix": redis_namespace.prefix}}  # fmt: skip
    model = {"request_timeout_s": 10.0}
    w1_settings = vllm_worker_settings(tmp_path, server.port, batch_size=1, **common,
                                       model={**model, "vllm_api_key": "w1", "server_probe_max_s": 2.0})  # fmt: skip
    w2_settings = vllm_worker_settings(tmp_path, server.port, batch_size=1, **common,
                                       model={**model, "vllm_api_key": "w2", "server_probe_max_s": 60.0})  # fmt: skip
    w2_log = tmp_path / "w2.log"
    w2_checks: list[bool] = []  # each /health of w2: whether it found the engine dead
    counting = threading.Lock()

    def dead_to_w2(authorization: str) -> bool:
        if authorization != "Bearer w2":
            return False
        dead = not (w2_log.exists() and CLOSED_ELSEWHERE in w2_log.read_text(errors="replace"))
        with counting:
            w2_checks.append(dead)
        return dead

    server.engine_dead = True
    server.dead_to = dead_to_w2
    with migrated_store(w1_settings) as store:
        uids = queue_studies(w1_settings, store, 2, seed=880)
        with running_worker(w1_settings, log_file=tmp_path / "w1.log"):
            assert ring_process(w1_settings, uids[0], 1)
            wait_until(lambda: bool(model_outage_events(store)), timeout_s=90)  # w1 holds: it opened the outage
            w1 = revision_row(store, uids[0]).claimed_by
            with running_worker(w2_settings, log_file=w2_log):
                assert ring_process(w2_settings, uids[1], 1)
                # w2 holds too: its health check that opened its breaker and its probes 2 s and 6 s into its hold,
                # with the rechecks between them that see the outage's row open
                wait_until(lambda: len(w2_checks) >= 3, timeout_s=90)
                w2 = revision_row(store, uids[1]).claimed_by
                assert w1 is not None
                assert w2 not in (None, w1), (w1, w2)  # two workers, each holding one study
                assert revision_row(store, uids[0]).claimed_by == w1
                server.engine_dead = False  # back for w1; for w2 only once it says it saw the outage closed
                wait_until(lambda: len(model_outage_events(store)) == 2, timeout_s=90)
                with store.session() as session:
                    ended_seq = session.scalar(
                        sa.select(sa.func.max(AuditEventRow.seq)).where(
                            AuditEventRow.event_type == "application_started"
                        )
                    )
                assert ended_seq is not None
                wait_until(lambda: set(uids) <= set(readings_after(store, ended_seq - 1)), timeout_s=90)
        (opened, opened_by), (closed, closed_by) = model_outage_events(store)
    assert (opened, closed) == ("application_stopped", "application_started")
    assert opened_by["worker"] == w1, opened_by  # told once, by w1, which found it down first
    assert (closed_by["worker"], closed_by["seen"], closed_by["opened_by"]) == (w1, "probe", w1), closed_by
    lines = w2_log.read_text(errors="replace").splitlines()
    seen_closed = next(i for i, line in enumerate(lines) if CLOSED_ELSEWHERE in line)
    answered = next(i for i, line in enumerate(lines) if ANSWERS_AGAIN in line)
    assert seen_closed < answered, lines[seen_closed:]  # w2's hold ended by the probe its recheck called
    assert any("the audit log has its outage's end already" in line for line in lines[answered:]), lines[answered:]
    # w2's probes found the engine dead until it saw the outage closed elsewhere, then back: at least one of each
    assert w2_checks[0], w2_checks
    assert not w2_checks[-1], w2_checks
    assert w2_checks == sorted(w2_checks, reverse=True), w2_checks


def test_one_server_back_leaves_the_wait_of_a_study_held_for_another_server_still_down(
    tmp_path: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    """Two workers, each reading through its own model server (two fake vLLMs), both engines dead, each holding one
    study. A comes back: w1 reads, and the study w2 holds for B still says B's wait. Before, A's end restored every
    "waiting: model server unavailable" reason (here: to none) until w2's next probe wrote B's again. The check is made
    with no probe of B's between A's end and it (B's /health count), so w2 cannot have written it again meanwhile."""
    (tmp_path / "drop").mkdir()
    common = {"store": {"url": postgres_url}, "dispatch": {"file_drop_dir": tmp_path / "drop"},
              "broker": {"url": redis_namespace.url, "key_prefix": redis_namespace.prefix}}  # fmt: skip
    with fake_vllm_server(free_port()) as a, fake_vllm_server(free_port()) as b:
        w1_settings = vllm_worker_settings(tmp_path, a.port, batch_size=1, **common,
                                           model={"request_timeout_s": 10.0, "server_probe_max_s": 2.0})  # fmt: skip
        w2_settings = vllm_worker_settings(tmp_path, b.port, batch_size=1, **common,
                                           model={"request_timeout_s": 10.0, "server_probe_max_s": 60.0})  # fmt: skip
        a.engine_dead = b.engine_dead = True
        with migrated_store(w1_settings) as store:
            uids = queue_studies(w1_settings, store, 2, seed=890)
            with running_worker(w1_settings, log_file=tmp_path / "w1.log"):
                assert ring_process(w1_settings, uids[0], 1)
                wait_until(lambda: len(model_outage_events(store)) == 1, timeout_s=90)  # w1 holds for A
                with running_worker(w2_settings, log_file=tmp_path / "w2.log"):
                    assert ring_process(w2_settings, uids[1], 1)
                    # w2 holds for B: the check that opened its breaker, its probes 2 s and 6 s in (the next: 8 s later)
                    wait_until(lambda: b.health_checks >= 3 and len(model_outage_events(store)) == 2, timeout_s=90)
                    held_for_b = revision_row(store, uids[1])
                    assert held_for_b.claimed_by not in (None, revision_row(store, uids[0]).claimed_by)
                    waiting_for_b = held_for_b.reason or ""
                    assert waiting_for_b.startswith("waiting: model server unavailable since "), waiting_for_b
                    assert f"; server http://127.0.0.1:{b.port} on " in waiting_for_b, waiting_for_b
                    b_checks = b.health_checks
                    a.engine_dead = False
                    wait_until(lambda: uids[0] in readings_after(store, 0), timeout_s=90)  # A's outage ended: read
                    reason = revision_row(store, uids[1]).reason
                    if b.health_checks == b_checks:  # no probe of B's since: only A's end could have changed it
                        assert reason == waiting_for_b
                    assert revision_row(store, uids[1]).state.value == "processing"
            kinds = [(kind, payload["server"].split(" on ")[0]) for kind, payload in model_outage_events(store)]
            assert kinds == [("application_stopped", a.url), ("application_stopped", b.url),
                             ("application_started", a.url)]  # fmt: skip

"""``radtrace model resume``: a person lifts a stop for unparseable model output (:mod:`radtrace.worker.output_guard`).

Output is deterministic: a healthy model that happened to write four odd studies in a row fails its probe reading of
the fourth again and again, and before this command the queue waited until ``model.server_hold_max_s`` (2 h), then
the held studies failed. Now the command closes the open stop in the audit log (``application_started``,
``requested_by: operator``, the OS user, the reason it lifted); every worker reads again, its count from zero. With
nothing open it says so and exits 1; a model server outage is not lifted (the server must answer).

The server is the tests' vLLM-like one answering garbage for the first four studies it sees, each time it sees them,
and a reading that parses for every other; the workers are the real pipeline (a ``radtrace worker`` process, or the
pipeline in threads for two workers on one database), the command a ``radtrace`` subprocess.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from model_server_support import GARBAGE, PARSED, STOPPED, quick_probes_fixture  # noqa: F401  (a fixture)
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.services import RedisNamespace, free_port
from radtrace.worker.doorbell import ring_process
from radtrace.worker.output_guard import STOP_AFTER
from radtrace.worker.status import collect_status
from worker_support import (
    FakeVllm,
    Reply,
    audit_events,
    fake_vllm_server,
    migrated_store,
    model_outage_events,
    queue_studies,
    reading_flags,
    reading_pipeline,
    readings_after,
    revision_row,
    ring_until_settled,
    running_worker,
    vllm_worker_settings,
    wait_for_state,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[FakeVllm]:
    with fake_vllm_server(free_port()) as fake:
        yield fake


def port_of(server: FakeVllm) -> int:
    return server.port


def study_key(request: dict[str, Any]) -> str:
    """Which study a request to the model server reads (its messages, pictures included)."""
    return hashlib.sha256(json.dumps(request["messages"], sort_keys=True).encode()).hexdigest()


def odd_studies(count: int) -> Callable[[dict[str, Any]], Reply]:
    """Garbage for the first ``count`` different studies asked, every time they are asked (greedy output is
    deterministic); a reading that parses for every other study."""
    odd: set[str] = set()
    lock = threading.Lock()

    def answer(request: dict[str, Any]) -> Reply:
        key = study_key(request)
        with lock:
            if key not in odd and len(odd) < count:
                odd.add(key)
            return GARBAGE if key in odd else PARSED

    return answer


def run_radtrace(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``radtrace`` command with ``settings`` (as the worker has them), as an operator runs it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    environment.update(worker_env(settings))
    environment["COLUMNS"] = "400"  # one line stays one line
    return subprocess.run([sys.executable, "-m", "radtrace", *args], capture_output=True, text=True,
                          env=environment, timeout=120)  # fmt: skip


def assert_lifted_by_operator(payload: dict[str, Any]) -> None:
    assert payload["requested_by"] == "operator"
    assert payload["user"] == getpass.getuser()
    assert STOPPED in payload["lifted"]


def test_resume_lifts_a_stop_a_healthy_model_made_and_the_held_study_is_read_at_its_first_attempt(
    tmp_path: Path, server: FakeVllm
) -> None:
    """A real ``radtrace worker``: four odd studies stop it and its probe readings of the fourth fail again and again
    (deterministic). ``radtrace status`` shows ``again: radtrace --log-level INFO model resume``; the command exits
    0 with one line; the worker reads the held study (unparsed again, now a draft like any odd study, its count
    from one) and the two after it, each at attempt 1, nothing failed."""
    (tmp_path / "drop").mkdir()
    settings = vllm_worker_settings(
        tmp_path, port_of(server), batch_size=1, dispatch={"file_drop_dir": tmp_path / "drop"}
    )
    server.answer = odd_studies(STOP_AFTER)
    log_file = tmp_path / "worker.log"
    with migrated_store(settings) as store:
        uids = queue_studies(settings, store, 6, seed=780)
        for uid in uids:
            assert ring_process(settings, uid, 1)
        with running_worker(settings, log_file=log_file):
            wait_until(lambda: bool(model_outage_events(store)), timeout_s=90)
            # several probe readings of the fourth study, garbage each time (waited for: 1.5 s was short under load)
            wait_until(lambda: server.requests >= STOP_AFTER + 2, timeout_s=30)
            held = revision_row(store, uids[3])
            assert (held.state, held.attempts) == (RevisionState.PROCESSING, 1)
            assert STOPPED in (held.reason or ""), held.reason
            shown = run_radtrace(settings, "--log-level", "INFO", "status", "--no-broker")
            assert shown.returncode == 0, shown.stderr
            assert "reading stopped: model server http://127.0.0.1:" in shown.stdout, shown.stdout
            assert "  again: radtrace --log-level INFO model resume (after checking" in shown.stdout, shown.stdout

            done = run_radtrace(settings, "model", "resume")
            assert done.returncode == 0, done.stderr
            said = done.stdout.strip().splitlines()
            assert len(said) == 1, said
            assert said[0].startswith("stop lifted on http://127.0.0.1:"), said
            assert STOPPED in said[0], said
            assert f"stops again after {STOP_AFTER} more unparseable studies" in said[0], said
            for uid in uids:
                rev = wait_for_state(store, uid, {RevisionState.DISPATCHED, RevisionState.FAILED}, timeout=60,
                                     log_file=log_file)  # fmt: skip
                assert rev.state is RevisionState.DISPATCHED, rev.reason
        rows = [revision_row(store, uid) for uid in uids]
        assert [(row.attempts, row.reason) for row in rows] == [(1, None)] * 6
        told = model_outage_events(store)
        assert [kind for kind, _ in told] == ["application_stopped", "application_started"]
        assert_lifted_by_operator(told[1][1])
        events = audit_events(store)
        assert not any(kind in ("study_failed", "inference_failed") for kind, _, _ in events)
        # the held fourth study is read once more after the lift: odd again, recorded as such, the count from one
        assert ["unparsed" in flags for flags in reading_flags(store)] == [True] * 4 + [False] * 2
        assert not collect_status(settings, store, with_queues=False).stops
    assert "no longer open in the audit log (lifted by radtrace model resume" in log_file.read_text(errors="replace")


def test_resume_with_no_stop_open_says_so_and_exits_1(tmp_path: Path, server: FakeVllm) -> None:
    settings = vllm_worker_settings(tmp_path, port_of(server), batch_size=1)
    with migrated_store(settings) as store:
        done = run_radtrace(settings, "model", "resume")
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "no stop of the model's output is open: reading is not stopped, nothing to lift" in done.stderr
        assert model_outage_events(store) == []


def test_resume_does_not_lift_a_model_server_outage(tmp_path: Path, server: FakeVllm) -> None:
    """A server whose engine died: the outage is open; resume exits 1 saying the server itself must answer, writes
    nothing, and the held study is read once the server answers."""
    settings = vllm_worker_settings(tmp_path, port_of(server), batch_size=1)
    server.engine_dead = True
    with migrated_store(settings) as store:
        uids = queue_studies(settings, store, 1, seed=800)
        worker = threading.Thread(
            target=ring_until_settled, args=(reading_pipeline(settings, store, "w1"), store, uids, 60), daemon=True
        )
        worker.start()
        wait_until(lambda: bool(model_outage_events(store)))
        done = run_radtrace(settings, "model", "resume")
        assert done.returncode == 1, (done.stdout, done.stderr)
        said = " ".join(done.stderr.split())
        assert "no stop of the model's output is open, but a model server outage is: http://127.0.0.1:" in said, said
        assert "This command does not lift it: the server itself must answer" in said, said
        assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped"]
        assert revision_row(store, uids[0]).state is RevisionState.PROCESSING
        assert not collect_status(settings, store, with_queues=False).stops
        server.engine_dead = False
        worker.join(timeout=30)
        assert (revision_row(store, uids[0]).state, revision_row(store, uids[0]).attempts) == (
            RevisionState.REPORTED,
            1,
        )
        assert [kind for kind, payload in model_outage_events(store)] == ["application_stopped", "application_started"]
        assert "requested_by" not in model_outage_events(store)[1][1]


@pytest.fixture
def shared_store(tmp_path: Path, server: FakeVllm, database_url: str) -> Iterator[tuple[Settings, Store]]:
    settings = vllm_worker_settings(tmp_path / "shared", port_of(server), batch_size=1, store={"url": database_url})
    with migrated_store(settings) as opened:
        yield settings, opened


def test_two_workers_on_one_database_both_read_again_after_resume(
    shared_store: tuple[Settings, Store], server: FakeVllm
) -> None:
    """w1 stops on four odd studies; w2 finds the stop before its batch and holds a fifth, odd too (its probe
    readings fail as well). One resume: both read again, w1 the held fourth, w2 the fifth and a sixth that parses,
    each at attempt 1, one entry pair (SQLite and PostgreSQL)."""
    settings, store = shared_store
    server.answer = odd_studies(STOP_AFTER + 1)
    uids = queue_studies(settings, store, 6, seed=820)
    first = threading.Thread(
        target=ring_until_settled, args=(reading_pipeline(settings, store, "w1"), store, uids[:4], 60), daemon=True
    )
    first.start()
    wait_until(lambda: bool(model_outage_events(store)))
    second = threading.Thread(
        target=ring_until_settled, args=(reading_pipeline(settings, store, "w2"), store, uids[4:], 60), daemon=True
    )
    second.start()
    wait_until(lambda: revision_row(store, uids[4]).claimed_by == "w2")
    time.sleep(1.5)  # both hold: w1's probe readings of the fourth and w2's of the fifth are garbage
    for held in (uids[3], uids[4]):
        row = revision_row(store, held)
        assert (row.state, row.attempts) == (RevisionState.PROCESSING, 1)
        assert STOPPED in (row.reason or ""), row.reason
    assert len(reading_flags(store)) == STOP_AFTER - 1
    assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped"]

    done = run_radtrace(settings, "model", "resume")
    assert done.returncode == 0, done.stderr
    first.join(timeout=30)
    second.join(timeout=30)
    assert not first.is_alive()
    assert not second.is_alive()
    rows = [revision_row(store, uid) for uid in uids]
    assert [(row.state, row.attempts, row.reason) for row in rows] == [(RevisionState.REPORTED, 1, None)] * 6
    told = model_outage_events(store)
    assert [kind for kind, _ in told] == ["application_stopped", "application_started"]
    assert_lifted_by_operator(told[1][1])
    assert sorted("unparsed" in flags for flags in reading_flags(store)) == [False] + [True] * 5


def test_a_model_that_really_writes_garbage_stops_again_after_four_more(tmp_path: Path, server: FakeVllm) -> None:
    """What the command's line promises: resumed on a broken model, the held study and two more are drafts again
    (unparsed) and the seventh stops reading again: a second application_stopped."""
    settings = vllm_worker_settings(tmp_path, port_of(server), batch_size=1)
    server.answer = lambda request: GARBAGE
    with migrated_store(settings) as store:
        uids = queue_studies(settings, store, 8, seed=840)
        worker = threading.Thread(
            target=ring_until_settled, args=(reading_pipeline(settings, store, "w1"), store, uids, 60), daemon=True
        )
        worker.start()
        wait_until(lambda: bool(model_outage_events(store)))
        assert run_radtrace(settings, "model", "resume").returncode == 0
        wait_until(lambda: len(model_outage_events(store)) == 3)
        assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped", "application_started",
                                                             "application_stopped"]  # fmt: skip
        time.sleep(0.5)
        assert len(reading_flags(store)) == 2 * (STOP_AFTER - 1)
        states = [revision_row(store, uid).state for uid in uids]
        assert states == [RevisionState.REPORTED] * 6 + [RevisionState.PROCESSING, RevisionState.QUEUED]
        server.answer = lambda request: PARSED
        worker.join(timeout=30)


def test_a_resume_reaches_every_held_worker_process_within_seconds_not_at_its_next_probe(
    tmp_path: Path, server: FakeVllm, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    """Two ``radtrace worker`` processes on one PostgreSQL and one Redis, the default probe backoff (2 s doubling to
    60 s): w1 stops on four odd studies, w2 finds the stop before its first batch; both hold, their probe readings
    of their held studies garbage too. The resume comes just after w1's second probe reading, 14 s into its hold
    (its next one 16 s away). Each worker reads within 5 s of the resume's audit entry (the hold asks the stop's row
    every second): 0.2-0.5 s. Before, each read at its next probe: w1 14 s after, w2 0.7-13 s (its own phase)."""
    (tmp_path / "drop").mkdir()
    settings = vllm_worker_settings(
        tmp_path, port_of(server), batch_size=1, store={"url": postgres_url},
        model={"server_probe_max_s": 60.0, "request_timeout_s": 10.0}, dispatch={"file_drop_dir": tmp_path / "drop"},
        broker={"url": redis_namespace.url, "key_prefix": redis_namespace.prefix},
    )  # fmt: skip
    odd = odd_studies(STOP_AFTER + 2)
    asked: list[str] = []  # the study each request read, in turn

    def answer(request: dict[str, Any]) -> Reply:
        asked.append(study_key(request))
        return odd(request)

    server.answer = answer
    with migrated_store(settings) as store:
        uids = queue_studies(settings, store, STOP_AFTER + 2, seed=860)
        for uid in uids[:STOP_AFTER]:
            assert ring_process(settings, uid, 1)
        with running_worker(settings, log_file=tmp_path / "w1.log"):
            wait_until(lambda: bool(model_outage_events(store)), timeout_s=90)
            with running_worker(settings, log_file=tmp_path / "w2.log"):
                for uid in uids[STOP_AFTER:]:
                    assert ring_process(settings, uid, 1)
                wait_until(lambda: revision_row(store, uids[STOP_AFTER]).claimed_by is not None, timeout_s=60)
                claimed = {revision_row(store, uid).claimed_by for uid in (uids[STOP_AFTER - 1], uids[STOP_AFTER])}
                assert len(claimed) == 2, claimed  # two workers, each holding one study
                fourth = list(dict.fromkeys(asked))[STOP_AFTER - 1]  # w1 read the four in turn, alone
                wait_until(lambda: asked.count(fourth) >= 4, timeout_s=60)  # probe readings 2, 6 and 14 s in
                assert len(reading_flags(store)) == STOP_AFTER - 1  # nothing read while stopped

                reads_before = asked.count(fourth)
                done = run_radtrace(settings, "model", "resume")
                assert done.returncode == 0, done.stderr
                with store.session() as session:
                    lifted_seq, lifted_at = session.execute(
                        sa.select(AuditEventRow.seq, AuditEventRow.recorded_at)
                        .where(AuditEventRow.event_type == "application_started")
                        .order_by(AuditEventRow.seq.desc()).limit(1)
                    ).one()  # the resume's entry (the workers may have recorded more since)  # fmt: skip
                held = (uids[STOP_AFTER - 1], uids[STOP_AFTER])  # w1's, w2's
                try:
                    wait_until(lambda: set(held) <= set(readings_after(store, lifted_seq)), timeout_s=60)
                except AssertionError:
                    logs = [(tmp_path / f"w{n}.log").read_text(errors="replace")[-3000:] for n in (1, 2)]
                    raise AssertionError(f"not both read again: {readings_after(store, lifted_seq)}; "
                                         f"logs:\n{logs[0]}\n----\n{logs[1]}") from None  # fmt: skip
        first = readings_after(store, lifted_seq)
        latencies = [round((first[uid] - lifted_at).total_seconds(), 2) for uid in held]
        print(f"resume to each worker's first reading: {latencies} s; reads of the fourth before: {reads_before}")
        assert max(latencies) < 5, latencies

"""A vLLM server that is down (restarting, its node rebooting) while studies are queued: the worker holds its reads
and probes the server, no attempt counted, and reads them all once it answers; after the breaker's limit it fails
them, each with the reason "model server unavailable since ...", and reads again once the server is back.

Before the breaker, each due batch cost one attempt per study, so with ``broker.max_attempts`` 2 the queue below
ended ``failed`` ("gave up after 2 attempts: vLLM server ... is not reachable") within a second of the outage.

The server is the tests' vLLM-like one (:func:`worker_support.fake_vllm_server`), down means nothing listens on its
port (what a restarting vLLM is); the worker is the real pipeline with radtrace's own vLLM client."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import radtrace.worker.breaker
from radtrace.config import Settings
from radtrace.errors import ModelServerError
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.services import free_port
from radtrace.worker.attempts import Result
from radtrace.worker.pipeline import StudyPipeline
from radtrace.worker.status import collect_status
from worker_support import (
    audit_events,
    fake_vllm_server,
    migrated_store,
    queue_studies,
    reading_pipeline,
    revision_row,
    ring_until_settled,
    vllm_worker_settings,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(radtrace.worker.breaker, "PROBE_FIRST_S", 0.2)  # up to model.server_probe_max_s, 0.4 below


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(tmp_path: Path, port: int) -> Settings:
    return vllm_worker_settings(tmp_path, port, batch_size=4)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with migrated_store(settings) as opened:
        yield opened


def queue(settings: Settings, store: Store, count: int, seed: int = 300) -> list[str]:
    return queue_studies(settings, store, count, seed=seed)


def reading_events(store: Store) -> list[tuple[str, str, object]]:
    return [(kind, outcome, payload.get("down_s") is not None) for kind, outcome, payload in audit_events(store)
            if payload.get("component") == "model reading"]  # fmt: skip


def test_a_server_down_for_seconds_costs_no_attempt_and_every_queued_study_is_reported(
    settings: Settings, store: Store, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    uids = queue(settings, store, 5)  # a batch of 4 held under its claims, one queued behind it
    pipeline = reading_pipeline(settings, store)
    caplog.set_level(logging.INFO, logger="radtrace")
    worker = threading.Thread(target=ring_until_settled, args=(pipeline, store, uids, 40), daemon=True)
    worker.start()

    deadline = time.monotonic() + 10
    while not reading_events(store) and time.monotonic() < deadline:
        time.sleep(0.1)
    uids += queue(settings, store, 1, seed=350)  # arrives during the outage
    time.sleep(1.0)  # down for a while: several probes
    held = [revision_row(store, uid) for uid in uids]
    assert [rev.state for rev in held].count(RevisionState.PROCESSING) == 4  # the batch, held under its claims
    assert all(rev.state in (RevisionState.PROCESSING, RevisionState.QUEUED) for rev in held)
    for rev in held:  # why they wait, where study show and the console read it
        assert rev.reason is not None
        assert rev.reason.startswith("waiting: model server unavailable since "), rev.reason
        assert "is not reachable" in rev.reason
    assert max(rev.attempts for rev in held) == 1
    for rev in held[4:]:  # counted as rung at each probe: the reconciler does not ring them again meanwhile
        assert rev.rung_at is not None
    oldest = collect_status(settings, store, with_queues=False).oldest_waiting  # radtrace status --json
    assert oldest is not None
    assert (oldest.reason or "").startswith("waiting: model server unavailable since ")

    with fake_vllm_server(port) as server:
        worker.join(timeout=30)
        assert not worker.is_alive()
        requests = server.requests

    for uid in uids:
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 1, None), uid
    assert requests == 6  # each study read once, when the server was back
    assert reading_events(store) == [("application_stopped", "serious_failure", False),
                                     ("application_started", "success", True)]  # fmt: skip
    said = [record.getMessage() for record in caplog.records]
    assert sum("reads are held" in line for line in said) == 1  # said once, not per probe
    assert sum("answers again" in line for line in said) == 1
    assert not any(kind == "inference_failed" for kind, _, _ in audit_events(store))


def test_after_the_breaker_s_limit_studies_fail_with_the_reason_and_reading_resumes_when_the_server_is_back(
    settings: Settings, store: Store, port: int
) -> None:
    settings = settings.model_copy(update={"model": settings.model.model_copy(update={"server_hold_max_s": 1.0})})
    uids = queue(settings, store, 3)
    pipeline = reading_pipeline(settings, store)

    results = pipeline.process_batch(uids[0], 1)
    assert {result.result for _, result in results} == {Result.FAILED}
    for uid in uids:
        rev = revision_row(store, uid)
        assert rev.state is RevisionState.FAILED
        assert rev.reason is not None
        assert rev.reason.startswith("model server unavailable since "), rev.reason
        assert rev.attempts == 1

    late = queue(settings, store, 1, seed=400)[0]  # while it is still down: failed at once, with the same reason
    probes: list[float] = []
    breaker = pipeline.reading.breaker
    probe = breaker.probe
    breaker.probe = lambda: probes.append(time.monotonic()) or probe()  # type: ignore[func-returns-value]
    assert pipeline.process(late, 1).result is Result.FAILED
    # asked once whether it is still down, then failed: not held again for server_hold_max_s (probing meanwhile).
    # Counted, not timed (under 1 s was the bound: the study's own work against a 1 s hold, on a busy machine)
    assert len(probes) == 1
    assert (revision_row(store, late).reason or "").startswith("model server unavailable since ")

    with fake_vllm_server(port):
        back = queue(settings, store, 1, seed=500)[0]
        assert pipeline.process(back, 1).result is Result.REPORTED
    assert [kind for kind, _, _ in reading_events(store)] == ["application_stopped", "application_started"]
    failed = [payload["reason"] for kind, _, payload in audit_events(store) if kind == "study_failed"]
    assert len(failed) == 4
    assert all(reason.startswith("model server unavailable since ") for reason in failed)


def test_a_worker_stopping_while_it_holds_gives_the_batch_back_with_no_attempt_counted(
    settings: Settings, store: Store
) -> None:
    uids = queue(settings, store, 2)
    stop = threading.Event()
    pipeline = reading_pipeline(settings, store, stopping=stop.is_set)
    results: list[Result] = []
    worker = threading.Thread(
        target=lambda: results.extend(result.result for _, result in pipeline.process_batch(uids[0], 1)), daemon=True
    )
    worker.start()
    deadline = time.monotonic() + 10
    while not reading_events(store) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()  # the worker's warm shutdown
    worker.join(timeout=5)
    assert results == [Result.RETRY, Result.RETRY]
    for uid in uids:
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts) == (RevisionState.QUEUED, 0)
        assert (rev.reason or "").startswith("waiting: model server unavailable since ")
    kinds = [(kind, payload.get("attempt_counted")) for kind, _, payload in audit_events(store)]
    assert kinds.count(("inference_failed", False)) == 2


class _Flapping:
    """A server that answers every other health check and fails every batch: no outage to wait out, a fault."""

    def __init__(self) -> None:
        self.reads = 0
        self.probes = 0
        self.backend = self

    def unavailable(self) -> str | None:
        self.probes += 1
        return "not reachable" if self.probes % 2 else None

    def read_each(self, studies: object) -> list[object]:
        self.reads += 1
        raise ModelServerError("vLLM server at http://x did not answer /v1/chat/completions within 1 s")


def test_a_server_that_keeps_coming_back_and_failing_the_batch_costs_an_attempt_after_three_holds(
    settings: Settings, store: Store
) -> None:
    uids = queue(settings, store, 2)
    reader = _Flapping()
    pipeline = StudyPipeline(settings, store, reader, worker="w1")  # type: ignore[arg-type]
    results = pipeline.process_batch(uids[0], 1)
    assert [result.result for _, result in results] == [Result.RETRY, Result.RETRY]
    assert reader.reads == 4  # the first read and one after each of three holds
    for uid in uids:
        assert revision_row(store, uid).attempts == 1


def test_a_server_whose_engine_died_is_held_for_not_read_again_and_again(
    settings: Settings, store: Store, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """vLLM's API process lives on after its engine died: it lists its models but fails every completion (500) and
    its /health (503). Before, the probe asked the model list, found the server up and each batch cost an attempt:
    with max_attempts 2 the queue ended failed ('gave up after 2 attempts: ... answered 500') within a second."""
    uids = queue(settings, store, 5)
    caplog.set_level(logging.INFO, logger="radtrace")
    with fake_vllm_server(port) as server:
        server.engine_dead = True
        pipeline = reading_pipeline(settings, store)
        worker = threading.Thread(target=ring_until_settled, args=(pipeline, store, uids, 40), daemon=True)
        worker.start()
        deadline = time.monotonic() + 10
        while not reading_events(store) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # several probes, each answered 503
        held = [revision_row(store, uid) for uid in uids]
        assert [rev.state for rev in held].count(RevisionState.PROCESSING) == 4
        assert all(rev.state in (RevisionState.PROCESSING, RevisionState.QUEUED) for rev in held)
        for rev in held:
            assert rev.attempts <= 1
            assert "answered 503 to /health" in (rev.reason or ""), rev.reason
        assert server.health_checks >= 3
        dead_reads = server.requests
        assert dead_reads == 4  # the batch once, then held: not read again while the engine is dead

        server.engine_dead = False  # the engine was restarted
        worker.join(timeout=30)
        assert not worker.is_alive()
    for uid in uids:
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 1, None), uid
    assert server.requests - dead_reads == 5
    assert reading_events(store) == [("application_stopped", "serious_failure", False),
                                     ("application_started", "success", True)]  # fmt: skip
    assert not any(kind == "study_failed" for kind, _, _ in audit_events(store))


def test_a_server_without_a_health_check_whose_engine_fails_is_held_after_a_one_token_completion(
    settings: Settings, store: Store, port: int
) -> None:
    """An OpenAI-compatible server with no /health (404) lists its models while its engine fails every completion
    (500). Its model list says only that its API process runs, so the breaker also asks it for a one-token
    completion, which fails too: held, no attempt counted, and read once it completes again. Before, the model list
    decided: each batch cost an attempt and both studies ended failed ('gave up after 2 attempts: ... answered
    500')."""
    uids = queue(settings, store, 2)
    with fake_vllm_server(port) as server:
        server.has_health, server.engine_dead = False, True
        pipeline = reading_pipeline(settings, store)
        worker = threading.Thread(target=ring_until_settled, args=(pipeline, store, uids, 40), daemon=True)
        worker.start()
        deadline = time.monotonic() + 10
        while not reading_events(store) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # several probes
        for uid in uids:
            rev = revision_row(store, uid)
            assert (rev.state, rev.attempts) == (RevisionState.PROCESSING, 1), rev.reason
            assert "answers its model list but answered 500 to a 1-token completion" in (rev.reason or ""), rev.reason
        assert server.requests == 2  # the batch once, then held
        assert server.probes >= 2
        server.engine_dead = False
        worker.join(timeout=30)
        assert not worker.is_alive()
    for uid in uids:
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 1, None), uid
    assert [kind for kind, _, _ in reading_events(store)] == ["application_stopped", "application_started"]

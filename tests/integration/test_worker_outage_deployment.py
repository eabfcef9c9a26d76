"""One model server outage, told once in the audit log however many GPU workers read through the server, and
closed even when the worker that told it was killed (radtrace.worker.outage, 'One outage, told once').

Before, each worker audited its own pair: two workers holding through one outage wrote two application_stopped and
two application_started; a worker killed mid-outage left its application_stopped without an end for ever.

The workers are real pipelines with radtrace's vLLM client on one database (SQLite or PostgreSQL: the decision is
taken under the audit log's append lock, which differs); the server is the tests' vLLM-like one, down meaning
nothing listens on its port."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import radtrace.worker.breaker
from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.services import free_port
from radtrace.worker.attempts import Result
from radtrace.worker.outage import model_server_key
from radtrace.worker.pipeline import StudyPipeline
from worker_support import (
    fake_vllm_server,
    migrated_store,
    model_outage_events,
    queue_studies,
    revision_row,
    vllm_worker_settings,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(radtrace.worker.breaker, "PROBE_FIRST_S", 0.2)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(tmp_path: Path, port: int, database_url: str) -> Settings:
    return vllm_worker_settings(tmp_path, port, batch_size=2, url_path="/v1", store={"url": database_url})


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with migrated_store(settings) as opened:
        yield opened


def queue(settings: Settings, store: Store, count: int, seed: int = 600) -> list[str]:
    return queue_studies(settings, store, count, seed=seed)


def worker(settings: Settings, store: Store, name: str, stopping: Callable[[], bool] = lambda: False) -> StudyPipeline:
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    return StudyPipeline(settings, store, reader, worker=name, stopping=stopping)


def in_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_two_workers_holding_through_one_outage_write_one_start_and_one_end(
    settings: Settings, store: Store, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    uids = queue(settings, store, 4)
    caplog.set_level(logging.INFO, logger="radtrace")
    first, second = worker(settings, store, "gpu0"), worker(settings, store, "gpu1")
    one = in_thread(lambda: first.process_batch(uids[0], 1))  # claims the two oldest
    wait_until(lambda: first.reading.breaker.is_open)
    two = in_thread(lambda: second.process_batch(uids[2], 1))  # the other two
    wait_until(lambda: second.reading.breaker.is_open)
    time.sleep(0.5)  # both probing

    told = model_outage_events(store)
    assert [kind for kind, _ in told] == ["application_stopped"]
    assert told[0][1]["worker"] == "gpu0"
    assert told[0][1]["server"] == model_server_key(settings.model)
    assert told[0][1]["server"].startswith(f"http://127.0.0.1:{port} on ")  # a loopback server: named with its host

    with fake_vllm_server(port):
        one.join(timeout=30)
        two.join(timeout=30)
    for uid in uids:
        assert (revision_row(store, uid).state, revision_row(store, uid).attempts) == (RevisionState.REPORTED, 1)
    told = model_outage_events(store)
    assert [kind for kind, _ in told] == ["application_stopped", "application_started"]
    end = told[1][1]
    assert end["worker"] in ("gpu0", "gpu1")
    assert (end["opened_by"], end["seen"]) == ("gpu0", "probe")
    assert end["down_s"] >= 0.5
    said = [record.getMessage() for record in caplog.records]
    assert sum("reads are held" in line for line in said) == 2  # each worker's own log line stays
    assert sum("answers again" in line for line in said) == 2


def test_an_outage_whose_teller_was_killed_is_joined_not_told_again_and_closed_by_a_worker_that_reads(
    settings: Settings, store: Store, port: int
) -> None:
    """gpu0 tells the outage and is killed (its breaker never closes: nothing it did ends the outage); gpu0 started
    again during the outage joins it; a worker whose read goes through once the server is back closes it."""
    uids = queue(settings, store, 2)
    for name in ("gpu0", "gpu0-restarted"):
        killed = threading.Event()
        holder = worker(settings, store, name, stopping=killed.is_set)
        results: list[Result] = []
        thread = in_thread(lambda h=holder, out=results: out.extend(r.result for _, r in h.process_batch(uids[0], 1)))
        wait_until(lambda h=holder: h.reading.breaker.is_open)
        time.sleep(0.3)
        killed.set()  # the claims go back (as they would lapse after a kill), the breaker stays open
        thread.join(timeout=10)
        assert results == [Result.RETRY, Result.RETRY]
        assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped"]

    with fake_vllm_server(port):
        reader = worker(settings, store, "gpu1")  # never saw the outage
        reader.process_batch(uids[0], 1)
    for uid in uids:
        assert revision_row(store, uid).state is RevisionState.REPORTED
    told = model_outage_events(store)
    assert [kind for kind, _ in told] == ["application_stopped", "application_started"]
    assert told[0][1]["worker"] == "gpu0"
    assert {key: told[1][1][key] for key in ("worker", "opened_by", "seen")} == {
        "worker": "gpu1", "opened_by": "gpu0", "seen": "read"}  # fmt: skip
    assert told[1][1]["down_since"] == told[0][1]["since"]


def test_a_later_outage_is_told_again(settings: Settings, store: Store, port: int) -> None:
    uids = queue(settings, store, 1)
    first = worker(settings, store, "gpu0")
    holding = in_thread(lambda: first.process_batch(uids[0], 1))
    wait_until(lambda: first.reading.breaker.is_open)
    with fake_vllm_server(port):
        holding.join(timeout=30)
    uids += queue(settings, store, 1, seed=700)
    holding = in_thread(lambda: first.process_batch(uids[1], 1))
    wait_until(lambda: first.reading.breaker.is_open)
    with fake_vllm_server(port):
        holding.join(timeout=30)
    assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped", "application_started"] * 2
    assert [revision_row(store, uid).state for uid in uids] == [RevisionState.REPORTED] * 2

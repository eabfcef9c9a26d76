"""A wedged model server: vLLM's /health answers 200 but its engine reads nothing (a GPU hang, a stuck scheduler):
completions hang until the request timeout, or come back at once with nothing in them.

Before, /health was all the breaker asked: the server "answered", so each batch cost one timeout and one attempt per
study, and with ``broker.max_attempts`` 2 the whole queue below ended ``failed`` ("gave up after 2 attempts: ... did
not answer /v1/chat/completions within 1 s"), two timeouts per batch; an engine answering empty completions had each
study *reported* as an unparsed empty draft. Now a completion that timed out (or came back empty) makes the server
suspect: the breaker's probe asks it for a real completion of one token (one tiny picture, one deadline with the
health check); when that fails too the batch is held, no attempt counted, one outage audited with the reason
("answers /health but completions time out"), and read again once the one-token completion answers. A study that
is only slow (its completion runs past the timeout while the probe answers at once) is no outage: its own attempt
counts, as before. A server without /health is judged the same way after its model list.

The server is the tests' vLLM-like one (:func:`worker_support.fake_vllm_server`, ``wedged``/``empty``); the worker is
the real pipeline with radtrace's own vLLM client.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from model_server_support import quick_probes_fixture, server_fixture, store_fixture  # noqa: F401  (its fixtures)
from radtrace.config import Settings
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.services import free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.doorbell import ring_process
from worker_support import (
    FakeVllm,
    audit_events,
    completion,
    migrated_store,
    model_outage_events,
    queue_studies,
    reading_pipeline,
    revision_row,
    ring_until_settled,
    running_worker,
    spool_study,
    vllm_worker_settings,
    wait_for_state,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return vllm_worker_settings(tmp_path, free_port(), batch_size=4)


def held_then_read(settings: Settings, store: Store, server: FakeVllm, said: str, unwedge: Callable[[], None]) -> None:
    """Five studies (a batch of four held under its claims, one queued behind it) through a server that reads
    nothing: held with ``said`` in their waiting reason and in the one outage entry, then all read at attempt 1 once
    ``unwedge`` ran."""
    uids = queue_studies(settings, store, 5, seed=800)
    pipeline = reading_pipeline(settings, store)
    worker = threading.Thread(target=ring_until_settled, args=(pipeline, store, uids, 60), daemon=True)
    started = time.monotonic()
    worker.start()
    detected = wait_until(lambda: bool(model_outage_events(store)))
    time.sleep(2.0)  # held for a while: several probes (a wedged one ends at its 1 s deadline)
    held = [revision_row(store, uid) for uid in uids]
    assert [rev.state for rev in held].count(RevisionState.PROCESSING) == 4, [rev.reason for rev in held]
    for rev in held:
        assert rev.state in (RevisionState.PROCESSING, RevisionState.QUEUED)
        assert rev.attempts <= 1
        assert (rev.reason or "").startswith("waiting: model server unavailable since "), rev.reason
        assert said in (rev.reason or ""), rev.reason
    told = model_outage_events(store)
    assert [kind for kind, _ in told] == ["application_stopped"]
    assert said in told[0][1]["reason"], told[0][1]["reason"]
    reads_while_wedged, probes_while_wedged = server.requests, server.probes
    assert reads_while_wedged == 4  # the batch once, then held: not read again while wedged
    assert probes_while_wedged >= 2

    unwedge()
    back = time.monotonic()
    worker.join(timeout=30)
    drained = time.monotonic() - back
    assert not worker.is_alive()
    for uid in uids:
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 1, None), uid
    assert server.requests - reads_while_wedged == 5
    assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped", "application_started"]
    assert not any(kind in ("study_failed", "inference_failed") for kind, _, _ in audit_events(store))
    print(f"\nwedge detected {detected:.2f} s after the worker started (request timeout "
          f"{settings.model.request_timeout_s:g} s), queue of 5 read {drained:.2f} s after the engine came back; "
          f"{probes_while_wedged} probes while wedged; whole run {time.monotonic() - started:.1f} s")  # fmt: skip


def test_a_wedged_engine_holds_the_queue_and_it_is_read_when_completions_come_back(
    settings: Settings, store: Store, server: FakeVllm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="radtrace")
    server.wedged = True

    def unwedge() -> None:
        server.wedged = False

    held_then_read(settings, store, server, "answers /health but completions time out", unwedge)
    said = [record.getMessage() for record in caplog.records]
    assert sum("reads are held" in line for line in said) == 1
    assert sum("answers again" in line for line in said) == 1


def test_a_server_without_health_that_wedges_is_held_after_its_model_list_answers(
    settings: Settings, store: Store, server: FakeVllm
) -> None:
    server.has_health, server.wedged = False, True

    def unwedge() -> None:
        server.wedged = False

    held_then_read(settings, store, server, "answers its model list but completions time out", unwedge)


def test_an_engine_answering_empty_completions_is_held_not_reported_empty(
    settings: Settings, store: Store, server: FakeVllm
) -> None:
    """Before, each study was reported: an 'unparsed' draft of nothing, delivered like any other."""
    server.empty = True

    def unwedge() -> None:
        server.empty = False

    held_then_read(settings, store, server, "its completions are empty", unwedge)


def _picture_is_wide(request: dict[str, Any]) -> bool:
    url = request["messages"][0]["content"][0]["image_url"]["url"]
    width, height = struct.unpack(">II", base64.b64decode(url.split(",", 1)[1][:64])[16:24])
    return bool(width > height)


def test_a_single_slow_study_is_not_taken_for_a_wedge_and_its_own_attempts_count(
    tmp_path: Path, server: FakeVllm
) -> None:
    """One study whose completion runs past the timeout (a long trace); the one-token probe after it answers at once:
    no outage, no hold; that study fails after its attempts with its own reason, the others are reported."""
    settings = vllm_worker_settings(tmp_path, server.port, batch_size=1)
    normal = completion("<think>Lungs clear.</think><answer>No Finding</answer>")
    server.answer = lambda request: None if _picture_is_wide(request) else normal
    with migrated_store(settings) as store:
        uids = []
        for index in range(3):
            image = ImageSpec(rows=256, columns=512, view="PA") if index == 1 else ImageSpec(view="PA")
            uids.append(spool_study(settings, store, make_study(StudySpec(seed=900 + index), [image]))[0])
            time.sleep(0.002)
        ring_until_settled(reading_pipeline(settings, store), store, uids, 30)
        states = [revision_row(store, uid) for uid in uids]
        events = audit_events(store)
    assert [(rev.state, rev.attempts) for rev in states] == [
        (RevisionState.REPORTED, 1), (RevisionState.FAILED, 2), (RevisionState.REPORTED, 1)]  # fmt: skip
    assert "did not answer /v1/chat/completions within 1 s" in (states[1].reason or ""), states[1].reason
    assert server.probes == 2  # one after each of its timeouts, each answered
    assert not [kind for kind, _, payload in events if payload.get("component") == "model reading"]


def test_a_worker_killed_while_it_holds_for_a_wedged_engine_and_started_again_reads_the_queue_once_it_is_back(
    tmp_path: Path, server: FakeVllm
) -> None:
    """A real ``radtrace worker`` holds a batch for a wedged engine and is killed -9 (its claims lapse, its breaker
    with it); the worker started again while the engine is still wedged takes over what has lapsed, finds it wedged,
    holds and joins the outage (no second application_stopped; the rest wait behind the hold); once the engine is
    back it reads every study. The killed attempt counts, as any attempt lost with its worker does (attempts 2 of
    3); none fails."""
    port = server.port
    (tmp_path / "drop").mkdir()
    settings = vllm_worker_settings(
        tmp_path, port, batch_size=4, dispatch={"file_drop_dir": tmp_path / "drop"},
        broker={"max_attempts": 3, "claim_timeout_s": 3, "overdue_after_s": 1, "reconcile_interval_s": 1},
    )  # fmt: skip
    server.wedged = True
    with migrated_store(settings) as store:
        uids = queue_studies(settings, store, 3, seed=950)
        assert ring_process(settings, uids[0], 1)

        def all_waiting(attempts: int) -> bool:
            rows = [revision_row(store, uid) for uid in uids]
            return all(row.attempts == attempts and "completions time out" in (row.reason or "") for row in rows)

        first_log = tmp_path / "worker-1.log"
        with running_worker(settings, log_file=first_log) as first:
            wait_until(lambda: all_waiting(1) and bool(model_outage_events(store)), timeout_s=60)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        assert {revision_row(store, uid).state for uid in uids} == {RevisionState.PROCESSING}  # its lapsing claims

        second_log = tmp_path / "worker-2.log"
        with running_worker(settings, log_file=second_log):
            joined = "the audit log has its outage's start already"
            wait_until(lambda: joined in second_log.read_text(errors="replace"), timeout_s=60)  # taken over, held
            time.sleep(1.0)
            assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped"]
            assert 2 in {revision_row(store, uid).attempts for uid in uids}
            assert not any(revision_row(store, uid).state is RevisionState.FAILED for uid in uids)
            server.wedged = False
            back = time.monotonic()
            for uid in uids:
                rev = wait_for_state(store, uid, {RevisionState.DISPATCHED, RevisionState.FAILED}, timeout=60,
                                     log_file=second_log)  # fmt: skip
                assert (rev.state, rev.attempts) == (RevisionState.DISPATCHED, 2), rev.reason
            drained = time.monotonic() - back
        told = model_outage_events(store)
        events = audit_events(store)
    assert [kind for kind, _ in told] == ["application_stopped", "application_started"]
    assert "answers /health but completions time out" in told[0][1]["reason"]
    assert told[1][1]["opened_by"] == told[0][1]["worker"] != told[1][1]["worker"]  # closed by the one started again
    assert not any(kind == "study_failed" for kind, _, _ in events)
    assert "answers /health but completions time out" in second_log.read_text(errors="replace")
    print(f"\nafter the kill: queue of 3 dispatched {drained:.2f} s after the engine came back")

"""A model that writes garbage: every study answered at once with text that does not parse (corrupt weights, a chat
template that does not fit, an engine writing '!!!!' from NaN logits).

Before, each study became an ``unparsed`` draft, reported and delivered: a night of empty drafts on the worklist, and
nothing audited (the server answers its health check). Now 4 unparseable readings of different studies in a row stop
reading (:mod:`radtrace.worker.output_guard`): the batch in hand is held under its claims, no attempt counted, one
outage audited with the reason, the waiting reason in ``radtrace status``; a probe reading of the held batch that
parses ends it and every held study is read. The stop is the open audit entry, so a worker started again and a
second worker on the database hold too.

The server is the tests' vLLM-like one (:func:`worker_support.fake_vllm_server`); the worker is the real pipeline with
radtrace's own vLLM client.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from model_server_support import (
    GARBAGE,
    PARSED,
    STOPPED,
    quick_probes_fixture,  # noqa: F401  (a fixture)
    server_fixture,  # noqa: F401  (a fixture)
    store_fixture,  # noqa: F401  (a fixture)
)
from radtrace.config import Settings
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, RevisionState
from radtrace.testing.services import free_port
from radtrace.worker.doorbell import ring_process
from radtrace.worker.output_guard import STOP_AFTER
from radtrace.worker.status import collect_status
from worker_support import (
    FakeVllm,
    Reply,
    audit_events,
    migrated_store,
    model_outage_events,
    queue_studies,
    reading_flags,
    reading_pipeline,
    revision_row,
    ring_until_settled,
    running_worker,
    vllm_worker_settings,
    wait_for_state,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return vllm_worker_settings(tmp_path, free_port(), batch_size=1)


def answers(*replies: Reply) -> Callable[[dict[str, Any]], Reply]:
    """The server's answer to each read in turn; the last one again after."""
    given = iter(replies)
    last = [replies[-1]]

    def answer(request: dict[str, Any]) -> Reply:
        last[0] = next(given, last[0])
        return last[0]

    return answer


def test_fewer_unparseable_readings_in_a_row_than_the_stop_are_drafts_as_before(
    settings: Settings, store: Store, server: FakeVllm
) -> None:
    """3 garbage, 1 parsed, 3 garbage: each study reported (the unparseable ones flagged as before), no stop."""
    run = STOP_AFTER - 1
    server.answer = answers(*[GARBAGE] * run, PARSED, *[GARBAGE] * run)
    uids = queue_studies(settings, store, 2 * run + 1, seed=700)
    ring_until_settled(reading_pipeline(settings, store), store, uids, 60)
    assert [revision_row(store, uid).state for uid in uids] == [RevisionState.REPORTED] * len(uids)
    flags = reading_flags(store)
    assert ["unparsed" in f for f in flags] == [True] * run + [False] + [True] * run, flags
    assert model_outage_events(store) == []
    assert server.requests == len(uids)


def test_unparseable_readings_of_four_studies_in_a_row_stop_reading_until_a_probe_reading_parses(
    settings: Settings, store: Store, server: FakeVllm, caplog: pytest.LogCaptureFixture
) -> None:
    """Six studies through a model writing '!!!!': three unparsed drafts, then the fourth stops reading: held, not
    recorded, the reason audited once and in the status; once the model writes readings again all are read."""
    caplog.set_level(logging.INFO, logger="radtrace")
    server.answer = lambda request: GARBAGE
    uids = queue_studies(settings, store, 6, seed=720)
    pipeline = reading_pipeline(settings, store)
    worker = threading.Thread(target=ring_until_settled, args=(pipeline, store, uids, 60), daemon=True)
    worker.start()
    wait_until(lambda: bool(model_outage_events(store)))
    time.sleep(1.5)  # held for a while: several probe readings, each garbage
    rows = [revision_row(store, uid) for uid in uids]
    assert [row.state for row in rows] == [RevisionState.REPORTED] * 3 + [RevisionState.PROCESSING] + [
        RevisionState.QUEUED] * 2  # fmt: skip
    assert [row.attempts for row in rows] == [1, 1, 1, 1, 0, 0]
    for row in rows[3:]:
        assert (row.reason or "").startswith("waiting: model server unavailable since "), row.reason
        assert STOPPED in (row.reason or ""), row.reason
    assert len(reading_flags(store)) == 3  # the fourth reading was not recorded, nor any probe reading
    told = model_outage_events(store)
    assert [kind for kind, _ in told] == ["application_stopped"]
    assert STOPPED in told[0][1]["reason"]
    assert "check the weights and the chat template" in told[0][1]["reason"]
    status = collect_status(settings, store, with_queues=False)
    assert status.oldest_waiting is not None
    assert STOPPED in (status.oldest_waiting.reason or "")
    reads_stopped = server.requests
    assert reads_stopped >= 5  # 4 reads, then probe readings of the fourth study

    server.answer = lambda request: PARSED
    worker.join(timeout=30)
    assert not worker.is_alive()
    rows = [revision_row(store, uid) for uid in uids]
    assert [(row.state, row.attempts, row.reason) for row in rows] == [(RevisionState.REPORTED, 1, None)] * 6
    assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped", "application_started"]
    assert ["unparsed" in f for f in reading_flags(store)] == [True] * 3 + [False] * 3
    # the probe reading that parsed is the fourth study's reading (one garbage probe may have been in flight)
    assert reads_stopped + 2 <= server.requests <= reads_stopped + 3
    assert not any(kind in ("study_failed", "inference_failed") for kind, _, _ in audit_events(store))
    said = [record.getMessage() for record in caplog.records if record.name.startswith("radtrace")]
    assert sum(STOPPED in line and "reads are held" in line for line in said) == 1, said
    assert sum("a probe reading parses again" in line for line in said) == 1
    for uid in uids:  # no patient data, no study UID in the worker's lines
        assert not any(uid in line for line in said)


@pytest.fixture
def shared_store(tmp_path: Path, server: FakeVllm, database_url: str) -> Iterator[tuple[Settings, Store]]:
    port = server.port
    settings = vllm_worker_settings(tmp_path / "shared", port, batch_size=1, store={"url": database_url})
    with migrated_store(settings) as opened:
        yield settings, opened


def test_a_second_worker_on_the_database_holds_while_reading_is_stopped(
    shared_store: tuple[Settings, Store], server: FakeVllm
) -> None:
    """w1 stops after four garbage readings; w2 then takes a queued study and holds it without recording a reading or
    telling the outage again; once the model parses both go on and one outage entry pair is all (SQLite and
    PostgreSQL)."""
    settings, store = shared_store
    server.answer = lambda request: GARBAGE
    uids = queue_studies(settings, store, 5, seed=740)
    first = threading.Thread(target=ring_until_settled, args=(reading_pipeline(settings, store), store, uids[:4], 60),
                             daemon=True)  # fmt: skip
    first.start()
    wait_until(lambda: bool(model_outage_events(store)))
    second = threading.Thread(
        target=ring_until_settled, args=(reading_pipeline(settings, store, "w2"), store, uids[4:], 60), daemon=True
    )
    second.start()
    wait_until(lambda: revision_row(store, uids[4]).claimed_by == "w2")
    time.sleep(1.5)
    held = revision_row(store, uids[4])
    assert (held.state, held.attempts) == (RevisionState.PROCESSING, 1)
    assert STOPPED in (held.reason or ""), held.reason
    assert len(reading_flags(store)) == 3
    assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped"]

    server.answer = lambda request: PARSED
    first.join(timeout=30)
    second.join(timeout=30)
    rows = [revision_row(store, uid) for uid in uids]
    assert [(row.state, row.attempts) for row in rows] == [(RevisionState.REPORTED, 1)] * 5
    assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped", "application_started"]


def test_a_worker_killed_while_stopped_and_started_again_is_still_stopped(tmp_path: Path, server: FakeVllm) -> None:
    """A real ``radtrace worker`` stops on garbage and is killed -9; the worker started again while the model still
    writes garbage records no reading and delivers nothing (it joins the stop), and once the model parses it reads
    every study. The killed attempt counts, as any attempt lost with its worker."""
    port = server.port
    (tmp_path / "drop").mkdir()
    settings = vllm_worker_settings(
        tmp_path, port, batch_size=1, dispatch={"file_drop_dir": tmp_path / "drop"},
        broker={"max_attempts": 3, "claim_timeout_s": 3, "overdue_after_s": 1, "reconcile_interval_s": 1},
    )  # fmt: skip
    server.answer = lambda request: GARBAGE
    with migrated_store(settings) as store:
        uids = queue_studies(settings, store, 6, seed=760)
        for uid in uids:
            assert ring_process(settings, uid, 1)

        def delivered() -> int:
            with store.session() as session:
                return int(session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) or 0)

        first_log = tmp_path / "worker-1.log"
        with running_worker(settings, log_file=first_log) as first:
            wait_until(lambda: bool(model_outage_events(store)), timeout_s=90)
            time.sleep(0.5)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        readings, drafts = len(reading_flags(store)), delivered()
        assert readings == STOP_AFTER - 1

        second_log = tmp_path / "worker-2.log"
        with running_worker(settings, log_file=second_log):
            wait_until(lambda: "the audit log has its outage's start already" in second_log.read_text(errors="replace"),
                       timeout_s=60)  # fmt: skip
            time.sleep(2.0)
            assert (len(reading_flags(store)), delivered()) == (readings, drafts)
            assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped"]
            assert STOPPED in second_log.read_text(errors="replace")
            server.answer = lambda request: PARSED
            for uid in uids:
                rev = wait_for_state(store, uid, {RevisionState.DISPATCHED, RevisionState.FAILED}, timeout=60,
                                     log_file=second_log)  # fmt: skip
                assert rev.state is RevisionState.DISPATCHED, rev.reason
        events = audit_events(store)
    assert [kind for kind, _ in model_outage_events(store)] == ["application_stopped", "application_started"]
    assert not any(kind == "study_failed" for kind, _, _ in events)
    flags = [payload["reading"]["flags"] for kind, _, payload in events if kind == "inference_completed"]
    # the 3 drafts from before the stop; after it only readings that parse (a study whose drafts the kill interrupted
    # is taken over and read again, as after any kill)
    assert ["unparsed" in f for f in flags[:readings]] == [True] * 3
    assert not any("unparsed" in f for f in flags[readings:]), json.dumps(flags)


@pytest.mark.parametrize(("stop_after", "drafted"), [(2, 1), (0, 5)])
def test_the_site_sets_after_how_many_unparseable_studies_reading_stops(
    tmp_path: Path, server: FakeVllm, stop_after: int, drafted: int
) -> None:
    """model.unparsed_stop_after: 2 stops at the second garbage study (one unparsed draft); 0 never stops (every
    study an unparsed draft, as before the stop existed)."""
    port = server.port
    settings = vllm_worker_settings(tmp_path / "own", port, batch_size=1, model={"unparsed_stop_after": stop_after})
    server.answer = lambda request: GARBAGE
    with migrated_store(settings) as store:
        uids = queue_studies(settings, store, 5, seed=760)
        worker = threading.Thread(target=ring_until_settled, args=(reading_pipeline(settings, store), store, uids, 60),
                                  daemon=True)  # fmt: skip
        worker.start()
        if stop_after:
            wait_until(lambda: bool(model_outage_events(store)))
            assert (
                f"model output unparseable for {stop_after} consecutive studies"
                in model_outage_events(store)[0][1]["reason"]
            )
            server.answer = lambda request: PARSED
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert [revision_row(store, uid).state for uid in uids] == [RevisionState.REPORTED] * 5
        assert sum("unparsed" in flags for flags in reading_flags(store)) == drafted
        assert [kind for kind, _ in model_outage_events(store)] == (
            ["application_stopped", "application_started"] if stop_after else []
        )

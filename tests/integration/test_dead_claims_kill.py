"""kill -9 a real ``radtrace worker`` and start another on the same host, with the default leases (a delivery's claim
300 s, a revision's ``broker.claim_timeout_s`` 120 s): the new one takes the dead one's claims over in seconds.

Before, "kill -9 it and restart it" stalled the delivery for its lease plus a reconciler pass (~6 minutes), and the
revision for its claim timeout: the start-up pass released nothing (:mod:`radtrace.worker.dead_claims`).

* dispatcher killed mid-send to a RIS that never answers the first ORU: the second worker sends the same ORU again
  (same MSH-10 control ID: how a RIS recognises a repeat) and the RIS, answering AA this time, takes it once;
* GPU worker killed mid-read (a vLLM-like server holding the request): the second worker reads the revision and
  reports it, the lost attempt counted;
* a node of a multi-node site (another host name: unshare --uts) killed mid-send: a worker on another node sends it
  again once its heartbeat is seen unchanged for 15 s; a live node's slow send is sent once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mllp_support import MllpReceiver, mllp_receiver
from radtrace.config import Settings, load_settings
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, RevisionState
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.doorbell import ring_process
from worker_support import (
    NORMAL_READING,
    audit_events,
    completion,
    fake_vllm_server,
    revision_row,
    running_worker,
    spool_study,
)

pytestmark = pytest.mark.integration

#: Well under the leases the kill leaves (300 s, 120 s): the worker's start-up (a few seconds; more on a loaded
#: machine) plus a read or a send.
TAKEN_OVER_WITHIN_S = 60.0
#: A revision's claim is released once its heartbeat (every 40 s of the 120 s claim) is 10 s overdue
#: (dead_claims.RENEWAL_SLACK_S), found by the start-up pass or the next one (reconcile_interval_s): at most
#: 50 + 30 s after the last beat at the default interval, then the read itself.
REVISION_TAKEN_OVER_WITHIN_S = 120.0
#: The GPU case's reconcile interval: the claim timeout (what this module is about) stays the default; a pass every
#: 5 s instead of every 30 s only spares CI the wait for the next pass after the beat is overdue (62.8 s -> 53 s).
GPU_CASE_RECONCILE_INTERVAL_S = 5


def _settings(
    tmp_path: Path, store: Store, vllm_url: str, ris: MllpReceiver | None, broker: dict[str, object] | None = None
) -> Settings:
    (tmp_path / "drop").mkdir()
    dispatch: dict[str, object] = {"file_drop_dir": tmp_path / "drop"}
    if ris is not None:
        dispatch["ris"] = {"host": ris.host, "port": ris.port, "timeout_s": 120}  # the first ORU waits: no ACK
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": str(store.engine.url)},
        model={"backend": "vllm", "vllm_url": vllm_url, "vllm_model": "m", "batch_size": 1, "request_timeout_s": 120},
        dispatch=dispatch,
        broker=broker or {},
    )  # default broker settings: claim_timeout_s 120, the outbox lease 300 s


#: ``radtrace worker`` in another PID namespace under this host name (as in a container on the host's network), its pid
#: there one that cannot exist here (above this namespace's pid_max): unshare(1), root only.
OTHER_PID_NAMESPACE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c",
                       'echo 499999 > /proc/sys/kernel/ns_last_pid && "$@"', "sh")  # fmt: skip
OTHER_PID = 500000


def _until(condition: Callable[[], bool], worker: subprocess.Popen[bytes], log_file: Path, timeout: float) -> float:
    """Seconds until ``condition`` holds; fails with the worker's log after ``timeout`` or if it exits."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, log_file.read_text(errors="replace")[-4000:]
        assert worker.poll() is None, log_file.read_text(errors="replace")[-4000:]
        time.sleep(0.05)
    return time.monotonic() - start


def _kill(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGKILL)  # kill -9: the worker and what it started
    worker.wait(10)


def _queue_one(settings: Settings, store: Store) -> str:
    uid, _ = spool_study(settings, store, make_study(StudySpec(seed=431), [ImageSpec()]))
    assert ring_process(settings, uid, 1)
    return uid


def _hl7_row(store: Store) -> OutboxMessage | None:
    with store.session() as session:
        row = session.scalar(sa.select(OutboxMessage).where(OutboxMessage.kind == "hl7"))
        if row is not None:
            session.expunge(row)
        return row


def test_a_dispatcher_killed_mid_send_is_taken_over_by_the_next_in_seconds_and_the_ris_gets_the_oru_once(
    tmp_path: Path, sqlite_store: Store
) -> None:
    with fake_vllm_server() as server, mllp_receiver(["silent", "AA"]) as ris:
        settings = _settings(tmp_path, sqlite_store, server.url, ris)
        _queue_one(settings, sqlite_store)
        first_log = tmp_path / "worker-1.log"
        with running_worker(settings, log_file=first_log) as first:
            _until(lambda: len(ris.received) == 1, first, first_log, 120)  # the ORU is out, its ACK never comes
            _kill(first)
        row = _hl7_row(sqlite_store)
        assert row is not None
        assert row.state is OutboxState.PENDING
        assert row.attempts == 1
        assert row.next_attempt_at > utc_now() + timedelta(seconds=150)  # claimed for its lease (300 s)

        second_log = tmp_path / "worker-2.log"
        with running_worker(settings, log_file=second_log) as second:

            def delivered() -> bool:
                again = _hl7_row(sqlite_store)
                return again is not None and again.state is OutboxState.DELIVERED

            took = _until(delivered, second, second_log, TAKEN_OVER_WITHIN_S)
            print(f"\nORU delivered {took:.1f} s after the second worker was started (lease: 300 s)")
            time.sleep(2)  # nothing more is sent
        final = _hl7_row(sqlite_store)
        assert final is not None
        assert final.attempts == 2  # the killed send counted, as when a lease runs out
    assert len(ris.control_ids) == 2
    assert ris.control_ids[0] == ris.control_ids[1]  # the same ORU: the RIS takes a repeated control ID once
    released = [p for kind, _, p in audit_events(sqlite_store) if kind == "dispatch_retry_scheduled"]
    assert len(released) == 1
    assert "which is not running" in released[0]["error"]
    assert released[0]["released_claim_of"].endswith(f":{first.pid}")
    kinds = [kind for kind, _, p in audit_events(sqlite_store) if p.get("outbox_id") == final.id]
    assert kinds == ["dispatch_attempted", "dispatch_retry_scheduled", "dispatch_attempted", "dispatch_delivered"]


def test_a_gpu_worker_killed_mid_read_is_taken_over_by_the_next_in_seconds(tmp_path: Path, sqlite_store: Store) -> None:
    with fake_vllm_server() as server:
        server.answer = lambda request: None  # hold the read until the kill
        settings = _settings(
            tmp_path, sqlite_store, server.url, None, broker={"reconcile_interval_s": GPU_CASE_RECONCILE_INTERVAL_S}
        )
        uid = _queue_one(settings, sqlite_store)
        first_log = tmp_path / "worker-1.log"
        with running_worker(settings, log_file=first_log) as first:
            _until(lambda: server.requests >= 1, first, first_log, 120)
            _kill(first)
        killed = revision_row(sqlite_store, uid)
        assert killed.state is RevisionState.PROCESSING
        assert killed.claim_expires_at is not None
        assert killed.claim_expires_at > utc_now() + timedelta(seconds=60)  # claimed for claim_timeout_s (120 s)
        server.answer = lambda request: completion(NORMAL_READING)
        server.released.set()

        second_log = tmp_path / "worker-2.log"
        with running_worker(settings, log_file=second_log) as second:

            def reported() -> bool:
                return revision_row(sqlite_store, uid).state in (RevisionState.REPORTED, RevisionState.DISPATCHED)

            took = _until(reported, second, second_log, REVISION_TAKEN_OVER_WITHIN_S)
            print(f"\nrevision reported {took:.1f} s after the second worker was started (claim: 120 s)")
    revision = revision_row(sqlite_store, uid)
    assert revision.attempts == 2  # the killed read counted, as when a claim runs out
    events = audit_events(sqlite_store)
    released = [p for kind, _, p in events if kind == "inference_failed" and "released_claim_of" in p]
    assert len(released) == 1
    assert released[0]["released_claim_of"].endswith(f":{first.pid}")
    assert f"claimed by worker {released[0]['worker']}, which is not running" in released[0]["error"]
    started = [p for kind, _, p in events if kind == "inference_started"]
    assert started[-1]["taken_over_from"] == released[0]["worker"]


def _released(store: Store) -> list[dict[str, object]]:
    return [p for kind, _, p in audit_events(store) if kind == "dispatch_retry_scheduled" and "released_claim_of" in p]


def test_a_send_slower_than_the_heartbeat_by_a_dispatcher_in_another_pid_namespace_is_sent_once(
    tmp_path: Path, sqlite_store: Store
) -> None:
    """Two real dispatchers on one database and one host name, the first in another PID namespace (its pid 500000
    exists nowhere here): its ORU waits 25 s for the RIS's ACK, past its 5 s heartbeat and the 10 s slack, while the
    second's reconciler looks every 2 s. Before migration 0014 the second released it at its first pass ('which is
    not running': the pid is not seen here) and sent it again; now the renewed heartbeat keeps it: sent once."""
    with fake_vllm_server() as server, mllp_receiver(["AA+25"]) as ris:
        settings = _settings(tmp_path, sqlite_store, server.url, ris, broker={"reconcile_interval_s": 2})
        _queue_one(settings, sqlite_store)
        first_log, second_log = tmp_path / "worker-ns.log", tmp_path / "worker-2.log"
        with running_worker(settings, log_file=first_log, prefix=OTHER_PID_NAMESPACE) as first:
            _until(lambda: len(ris.received) == 1, first, first_log, 120)  # sent; its ACK comes 25 s later
            row = _hl7_row(sqlite_store)
            assert row is not None
            assert row.claimed_by is not None
            assert row.claimed_by.startswith(f"radtrace@{socket.gethostname()}:{OTHER_PID} pidns=")
            assert f"pidns={os.stat('/proc/self/ns/pid').st_ino} " not in row.claimed_by
            beats = {row.heartbeat_at}
            with running_worker(settings, log_file=second_log) as second:

                def delivered() -> bool:
                    again = _hl7_row(sqlite_store)
                    if again is not None and again.heartbeat_at is not None:
                        beats.add(again.heartbeat_at)
                    return again is not None and again.state is OutboxState.DELIVERED

                took = _until(delivered, second, second_log, 90)
                print(f"\nORU delivered {took:.1f} s after the second dispatcher started; {len(beats)} beats seen")
                time.sleep(3)  # nothing more is sent
    final = _hl7_row(sqlite_store)
    assert final is not None
    assert (final.state, final.attempts, final.claimed_by, final.heartbeat_at) == (OutboxState.DELIVERED, 1, None, None)
    assert len(ris.received) == 1  # sent once
    assert len(beats) >= 3  # renewed while the send waited (every 5 s of the 25 s)
    assert _released(sqlite_store) == []


#: A second dispatcher already running takes a killed one's send over well within its reconcile interval (30 s): it
#: looks again every 10 s while a send of this host is in flight, and one of another PID namespace is released 15 s
#: after its last beat. Before, it waited for its next pass (29.4 s measured), and one of another namespace was
#: released at once, alive or not (/work/notes/dispatch-measure/before_after_kill.py).
TAKEN_OVER_BY_A_RUNNING_DISPATCHER_WITHIN_S = 25.0


#: CI takes the other-namespace case (released by its overdue heartbeat); this namespace's (released at once, its pid
#: gone) also runs with ``RADTRACE_FULL_KILLS=1``: a restarted dispatcher takes this namespace's path in
#: test_a_dispatcher_killed_mid_send_is_taken_over_by_the_next_in_seconds_and_the_ris_gets_the_oru_once.
_THIS_NAMESPACE = pytest.param(
    "this",
    marks=pytest.mark.skipif(os.environ.get("RADTRACE_FULL_KILLS") != "1", reason="set RADTRACE_FULL_KILLS=1"),
)


@pytest.mark.parametrize("namespace", ["another", _THIS_NAMESPACE])
def test_a_dispatcher_killed_mid_send_is_taken_over_by_one_already_running_within_its_reconcile_interval(
    tmp_path: Path, sqlite_store: Store, namespace: str
) -> None:
    """The same two dispatchers; the first (in another PID namespace, or in this one) killed -9 while the RIS holds its
    ORU: the second, already running with the default reconcile interval (30 s), sends it again (this namespace: its
    pid is gone, released at once at its next look, every 10 s while the send is in flight; another: 15 s after the
    last beat, 5 s beat + 10 s slack), not after the 300 s lease nor the next 30 s pass."""
    prefix = OTHER_PID_NAMESPACE if namespace == "another" else ()
    with fake_vllm_server() as server, mllp_receiver(["silent", "AA"]) as ris:
        settings = _settings(tmp_path, sqlite_store, server.url, ris)
        _queue_one(settings, sqlite_store)
        first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
        with running_worker(settings, log_file=first_log, prefix=prefix) as first:
            _until(lambda: len(ris.received) == 1, first, first_log, 120)
            row = _hl7_row(sqlite_store)
            assert row is not None
            assert row.claimed_by is not None
            holder = f"radtrace@{socket.gethostname()}:{OTHER_PID if prefix else first.pid}"
            assert row.claimed_by.startswith(f"{holder} ")
            with running_worker(settings, log_file=second_log) as second:
                _until(lambda: b"ready" in second_log.read_bytes(), second, second_log, 60)  # its start-up pass ran
                time.sleep(1)
                _kill(first)

                def delivered() -> bool:
                    again = _hl7_row(sqlite_store)
                    return again is not None and again.state is OutboxState.DELIVERED

                took = _until(delivered, second, second_log, TAKEN_OVER_WITHIN_S)
                print(f"\nORU delivered {took:.1f} s after the dispatcher in {namespace} PID namespace was killed -9 "
                      f"(lease: 300 s, reconcile interval 30 s)")  # fmt: skip
                time.sleep(2)  # nothing more is sent
    assert took < TAKEN_OVER_BY_A_RUNNING_DISPATCHER_WITHIN_S
    final = _hl7_row(sqlite_store)
    assert final is not None
    assert (final.state, final.attempts) == (OutboxState.DELIVERED, 2)
    assert len(ris.control_ids) == 2  # the killed send and the one after: the same ORU
    assert ris.control_ids[0] == ris.control_ids[1]
    [released] = _released(sqlite_store)
    assert released["released_claim_of"] == holder
    assert ("whose heartbeat stopped at" if prefix else "which is not running") in str(released["error"])


OTHER_HOST = "gpu-node-7"
#: ``radtrace worker`` under another host name (its own UTS namespace), as on another node of the site.
ON_ANOTHER_HOST = ("unshare", "--uts", "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh")
#: 5 s heartbeat + 10 s slack seen unchanged, by passes every 5 s (the first up to 5 s after the last beat), then the
#: send: about 20 s. Before, the 300 s lease.
TAKEN_OVER_FROM_ANOTHER_HOST_WITHIN_S = 30.0


def _delivered(store: Store) -> bool:
    row = _hl7_row(store)
    return row is not None and row.state is OutboxState.DELIVERED


def test_a_node_killed_mid_send_is_taken_over_by_another_node_in_seconds_and_the_ris_gets_a_repeat(
    tmp_path: Path, sqlite_store: Store
) -> None:
    with fake_vllm_server() as server, mllp_receiver(["silent", "AA"]) as ris:
        settings = _settings(tmp_path, sqlite_store, server.url, ris)
        _queue_one(settings, sqlite_store)
        first_log, second_log = tmp_path / "worker-node7.log", tmp_path / "worker-here.log"
        with running_worker(settings, log_file=first_log, prefix=ON_ANOTHER_HOST) as first:
            _until(lambda: len(ris.received) == 1, first, first_log, 120)  # sent; the RIS never answers it
            row = _hl7_row(sqlite_store)
            assert row is not None
            assert row.claimed_by is not None
            assert row.claimed_by.startswith(f"radtrace@{OTHER_HOST}:{first.pid} ")
            with running_worker(settings, log_file=second_log) as second:
                _until(lambda: b"ready" in second_log.read_bytes(), second, second_log, 60)  # its start-up pass ran
                time.sleep(1)
                _kill(first)
                took = _until(lambda: _delivered(sqlite_store), second, second_log, TAKEN_OVER_WITHIN_S)
                print(f"\nORU delivered {took:.1f} s after the node {OTHER_HOST} was killed -9 (lease: 300 s)")
                time.sleep(2)  # nothing more is sent
    assert took < TAKEN_OVER_FROM_ANOTHER_HOST_WITHIN_S
    final = _hl7_row(sqlite_store)
    assert final is not None
    assert (final.state, final.attempts) == (OutboxState.DELIVERED, 2)  # the killed send counted
    assert len(ris.control_ids) == 2
    assert ris.control_ids[0] == ris.control_ids[1]  # the same ORU: a repeat the RIS recognises
    [released] = _released(sqlite_store)
    assert released["released_claim_of"] == f"radtrace@{OTHER_HOST}:{first.pid}"
    assert released["released_by_host"] == socket.gethostname()
    assert f"by its clock, as seen from {socket.gethostname()}" in str(released["error"])


#: The slow RIS's case (about 35 s) runs with RADTRACE_FULL_KILLS=1; CI has the sighting rules for a live holder,
#: clocks 10 minutes apart, in tests/unit/test_dead_claims_other_host.py.
_FULL = pytest.mark.skipif(os.environ.get("RADTRACE_FULL_KILLS") != "1", reason="set RADTRACE_FULL_KILLS=1")


@_FULL
def test_a_send_slower_than_the_heartbeat_by_a_live_node_is_sent_once(tmp_path: Path, sqlite_store: Store) -> None:
    """The other node's ORU waits 25 s for the RIS's ACK, past its 5 s heartbeat and the 10 s slack, while this node's
    reconciler looks every 5 s: its renewed beat keeps it; sent once."""
    with fake_vllm_server() as server, mllp_receiver(["AA+25"]) as ris:
        settings = _settings(tmp_path, sqlite_store, server.url, ris)
        _queue_one(settings, sqlite_store)
        first_log, second_log = tmp_path / "worker-node7.log", tmp_path / "worker-here.log"
        with running_worker(settings, log_file=first_log, prefix=ON_ANOTHER_HOST) as first:
            _until(lambda: len(ris.received) == 1, first, first_log, 120)  # sent; its ACK comes 25 s later
            beats: set[object] = set()
            with running_worker(settings, log_file=second_log) as second:

                def delivered() -> bool:
                    with sqlite_store.session() as session:
                        beat = session.scalar(sa.select(OutboxMessage.heartbeat_at).where(OutboxMessage.kind == "hl7"))
                    beats.add(beat)
                    return _delivered(sqlite_store)

                took = _until(delivered, second, second_log, 90)
                print(f"\nORU delivered {took:.1f} s after this node started; {len(beats - {None})} beats seen")
                time.sleep(3)  # nothing more is sent
            assert first.poll() is None
    final = _hl7_row(sqlite_store)
    assert final is not None
    assert (final.state, final.attempts, final.claimed_by) == (OutboxState.DELIVERED, 1, None)
    assert len(ris.received) == 1  # sent once
    assert len(beats - {None}) >= 3  # renewed while the send waited
    assert _released(sqlite_store) == []


#: 40 s beat + 10 s slack seen unchanged by passes every 5 s, then the read: about a minute (before: the 120 s claim
#: timeout plus a reconcile pass).
READ_TAKEN_OVER_FROM_ANOTHER_HOST_WITHIN_S = 90.0


@_FULL
def test_a_node_killed_mid_read_is_taken_over_by_another_node_before_its_claim_times_out(
    tmp_path: Path, sqlite_store: Store
) -> None:
    """A GPU worker on gpu-node-7 killed -9 while the vLLM server holds its read; a worker here, already running with
    the default reconcile interval (30 s) and claim timeout (120 s), sees its claim unchanged for 50 s, releases it
    and reads the revision, the lost attempt counted."""
    with fake_vllm_server() as server:
        server.answer = lambda request: None  # hold the read until the kill
        settings = _settings(tmp_path, sqlite_store, server.url, None)
        uid = _queue_one(settings, sqlite_store)
        first_log, second_log = tmp_path / "worker-node7.log", tmp_path / "worker-here.log"
        with running_worker(settings, log_file=first_log, prefix=ON_ANOTHER_HOST) as first:
            _until(lambda: server.requests >= 1, first, first_log, 120)
            assert revision_row(sqlite_store, uid).claimed_by == f"{OTHER_HOST}:{first.pid}"
            with running_worker(settings, log_file=second_log) as second:
                _until(lambda: b"ready" in second_log.read_bytes(), second, second_log, 60)
                time.sleep(1)
                _kill(first)
                server.answer = lambda request: completion(NORMAL_READING)
                server.released.set()

                def reported() -> bool:
                    return revision_row(sqlite_store, uid).state in (RevisionState.REPORTED, RevisionState.DISPATCHED)

                took = _until(reported, second, second_log, REVISION_TAKEN_OVER_WITHIN_S)
                print(f"\nrevision reported {took:.1f} s after the node {OTHER_HOST} was killed -9 (claim: 120 s)")
    assert took < READ_TAKEN_OVER_FROM_ANOTHER_HOST_WITHIN_S
    assert revision_row(sqlite_store, uid).attempts == 2  # the killed read counted
    events = audit_events(sqlite_store)
    [released] = [p for kind, _, p in events if kind == "inference_failed" and "released_claim_of" in p]
    assert released["released_claim_of"] == f"{OTHER_HOST}:{first.pid}"
    assert f"by the database's clock), as seen from {socket.gethostname()}" in str(released["error"])
    started = [p for kind, _, p in events if kind == "inference_started"]
    assert started[-1]["taken_over_from"] == f"{OTHER_HOST}:{first.pid}"

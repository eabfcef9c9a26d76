"""The per-source association limit as a pure decision, and its remedy in the log line."""

from __future__ import annotations

import os
import signal
import time

import pytest

from radtrace.config import ListenerSettings
from radtrace.dicom_listener.admission import Admission
from radtrace.dicom_listener.policy import AssociationRequest, check_association, how_to_allow
from radtrace.dicom_listener.shared_counts import SharedSourceCounts

pytestmark = pytest.mark.unit


def _request(active: int, from_source: int) -> AssociationRequest:
    return AssociationRequest("PACS", "RADTRACE", "10.1.2.3", active, 10**12, active_from_source=from_source)


def test_the_per_source_limit_defaults_to_half_the_slots_and_can_be_set() -> None:
    assert ListenerSettings(max_associations=10).per_source_associations == 5
    assert ListenerSettings(max_associations=1).per_source_associations == 1
    assert ListenerSettings(max_associations=10, max_associations_per_source=10).per_source_associations == 10
    assert ListenerSettings(max_associations=4, max_associations_per_source=9).per_source_associations == 4


def test_a_source_past_its_share_is_refused_transient_local_limit_exceeded() -> None:
    settings = ListenerSettings(allowed_callers=[{"ae_title": "PACS"}], max_associations=10)  # type: ignore[list-item]
    assert check_association(_request(active=6, from_source=5), settings) is None
    rejection = check_association(_request(active=6, from_source=6), settings)
    assert rejection is not None
    assert (rejection.result, rejection.source, rejection.diagnostic) == (2, 3, 2)
    assert rejection.reason == "too many concurrent associations from this source"
    hint = how_to_allow(rejection, _request(active=6, from_source=6), settings)
    assert "listener.max_associations_per_source" in hint


def test_admission_counts_the_slots_a_source_holds() -> None:
    admission = Admission(ListenerSettings())
    first, second, other = (admission.open(host) for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2"))
    assert not isinstance(first, str)
    assert not isinstance(second, str)
    assert not isinstance(other, str)
    admission.admit(first)
    admission.admit(other)
    assert admission.held_by("10.0.0.1") == 1  # the half-open one holds no slot
    admission.admit(second)
    assert admission.held_by("10.0.0.1") == 2
    admission.release(first)
    assert admission.held_by("10.0.0.1") == 1


def test_a_full_listener_says_so_before_naming_the_source_share() -> None:
    """With every slot taken the sender is told the listener is full (listener.max_associations), even when it
    also holds its whole share: that is what the admin must look at first."""
    settings = ListenerSettings(allowed_callers=[{"ae_title": "PACS"}], max_associations=2)  # type: ignore[list-item]
    rejection = check_association(_request(active=3, from_source=3), settings)
    assert rejection is not None
    assert rejection.reason == "too many concurrent associations"
    assert how_to_allow(rejection, _request(active=3, from_source=3), settings) == "listener.max_associations is 2"


def _in_child(table: SharedSourceCounts, *, hold_lock: bool) -> int:
    """Fork a process that publishes row 1 (and keeps the table locked if asked); its PID, once it has."""
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            table.attach(1)
            table.publish({"10.0.0.1": 2, "2001:db8::1": 1})
            if hold_lock:
                table._locked().__enter__()
            os.write(told, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(told)
    assert os.read(ready, 1) == b"x"
    os.close(ready)
    return pid


def test_processes_sharing_the_port_see_each_others_associations_per_source() -> None:
    table = SharedSourceCounts(processes=2, capacity=8)
    child = _in_child(table, hold_lock=False)
    try:
        table.attach(0)
        table.publish({"10.0.0.1": 1})
        assert table.others("10.0.0.1") == 2  # the child's, not this process's own
        assert table.others("2001:db8::1") == 1
        assert table.others("10.0.0.2") == 0
        admission = Admission(ListenerSettings(max_associations=4), shared=table)
        connection = admission.open("10.0.0.1")
        assert not isinstance(connection, str)
        admission.admit(connection)
        assert admission.held_by("10.0.0.1") == 3  # one here, two there
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    table.clear(1)  # what the parent does when it reaps the child
    assert table.others("10.0.0.1") == 0


def test_a_process_killed_holding_the_table_lock_does_not_stop_the_others() -> None:
    table = SharedSourceCounts(processes=2, capacity=8)
    child = _in_child(table, hold_lock=True)
    os.kill(child, signal.SIGKILL)  # a record lock goes with its process (a semaphore would stay taken)
    os.waitpid(child, 0)
    table.attach(0)  # takes the lock: not blocked
    assert table.others("10.0.0.1") == 2

"""The negotiation CPU budget of one source over every process of one ``radtrace listen`` (rq_budget.py, with the
buckets in shared_counts.SharedBuckets).

Before, each process kept its own buckets: with ``listener.processes`` N one source had N times the rate and the
burst (the kernel spreads its connections over the processes). The buckets now live in memory the parent maps
before it forks; a process killed at any point must leave neither a debt nor a credit that stays wrong.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from radtrace.config import ListenerSettings
from radtrace.dicom_listener.admission import Admission
from radtrace.dicom_listener.rq_budget import NegotiationBudget
from radtrace.dicom_listener.shared_counts import SharedSourceCounts

pytestmark = pytest.mark.unit

ATTACKER, PACS = "10.0.0.1", "10.0.0.2"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _in_child(work: Callable[[], None], *, wait: bool = True) -> int:
    """Fork a process that runs ``work`` (then sleeps until killed); its PID once ``work`` is done (or at once)."""
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if not wait:
                os.write(told, b"x")
            work()
            if wait:
                os.write(told, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(told)
    assert os.read(ready, 1) == b"x"
    os.close(ready)
    return pid


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_two_processes_spend_one_budget_for_a_source() -> None:
    shared = SharedSourceCounts(processes=2, capacity=8)  # what radtrace listen makes before it forks
    settings = ListenerSettings(negotiation_cpu_rate_s=0.2, negotiation_cpu_burst_s=2.0)
    child = _in_child(lambda: Admission(settings, shared=shared).negotiation.charge(ATTACKER, 1.5))
    try:
        here = Admission(settings, shared=shared).negotiation
        # before: this process saw a full 2.0 s, and the source could spend 2 x 2.0 s over the two
        assert here.balance(ATTACKER) == pytest.approx(0.5, abs=0.05)  # (earning 0.2 s a second meanwhile)
        here.charge(ATTACKER, 1.0)
        assert not here.allows(ATTACKER)
        assert here.allows(PACS)  # another source has its own
        assert Admission(settings, shared=shared).negotiation.balance(ATTACKER) < 0  # every process sees the debt
    finally:
        _kill(child)


def test_a_debt_made_by_a_killed_process_is_earned_back_at_the_rate() -> None:
    shared = SharedSourceCounts(processes=2, capacity=8)
    clock = _Clock()

    def spend() -> None:
        NegotiationBudget(rate=0.2, burst=2.0, clock=clock, table=shared.negotiation).charge(ATTACKER, 3.0)

    _kill(_in_child(spend))  # killed: what it charged was spent, and stays charged
    budget = NegotiationBudget(rate=0.2, burst=2.0, clock=clock, table=shared.negotiation)
    assert budget.balance(ATTACKER) == pytest.approx(-1.0)
    clock.now += 5.1  # ... and is earned back as any debt, not kept for ever
    assert budget.allows(ATTACKER)
    clock.now += 3600
    assert budget.balance(ATTACKER) == 2.0


def test_a_process_killed_holding_the_lock_or_writing_leaves_the_table_usable_and_right() -> None:
    """A child makes room again and again (a table of 4 sources, new sources all the time) and is killed at
    random points, 60 times; the parent's debtor must stay in debt, and no operation may wait on a dead process."""
    shared = SharedSourceCounts(processes=2, capacity=8, budget_sources=4)
    clock = _Clock()
    budget = NegotiationBudget(rate=0.001, burst=1.0, clock=clock, table=shared.negotiation)
    budget.charge(ATTACKER, 5.0)

    def churn() -> None:
        other = NegotiationBudget(rate=0.001, burst=1.0, clock=clock, table=shared.negotiation)
        for n in range(10**9):
            other.charge(f"10.1.{n // 250 % 250}.{n % 250 + 1}", 0.5)

    held = _in_child(lambda: shared.negotiation._locked().__enter__())  # killed holding the record lock
    _kill(held)
    for round_ in range(60):
        child = _in_child(churn, wait=False)
        time.sleep(0.002 + 0.001 * (round_ % 7))
        _kill(child)
        started = time.monotonic()
        assert budget.balance(ATTACKER) == pytest.approx(-4.0)
        budget.charge(PACS, 0.1)
        assert time.monotonic() - started < 1.0
        assert 0 < budget.balance(PACS) <= 0.9  # its own charges, or (forgotten as the richest) a full bucket's
        assert budget.sources <= 4
    assert not budget.allows(ATTACKER)


def test_a_torn_slot_is_passed_over_not_read_as_a_bucket() -> None:
    """A slot a killed process left half written (its CRC fails): that source starts with a full bucket once,
    rather than with whatever the torn bytes say (a debt of 1e300 would refuse it for ever)."""
    shared = SharedSourceCounts(processes=2, capacity=8)
    budget = NegotiationBudget(rate=0.2, burst=2.0, clock=_Clock(), table=shared.negotiation)
    budget.charge(ATTACKER, 1.0)
    table = shared.negotiation
    identity = table.identity(ATTACKER)
    offset, bucket, _ = table._find(table._region(), identity)
    assert offset is not None
    assert bucket is not None
    table._map[offset + 16 : offset + 24] = (-1e300).hex().encode()[:8]  # the balance's bytes, half a write
    assert budget.balance(ATTACKER) == 2.0
    budget.charge(ATTACKER, 0.5)  # goes into a new slot; the torn one goes at the next rewrite
    assert budget.balance(ATTACKER) == pytest.approx(1.5)


def test_new_sources_in_a_full_table_do_not_rewrite_it_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making room rewrites the table (some 20 ms at 4,096 sources): a host with many addresses, each new, must
    not make every connection pay for it (d673a00 dropped one bucket per rewrite; now the richest quarter)."""
    clock = _Clock()
    budget = NegotiationBudget(rate=0.0, burst=1.0, clock=clock, max_sources=64)
    budget.charge(ATTACKER, 5.0)
    for n in range(63):
        budget.charge(f"10.1.0.{n + 1}", 0.5)
    rewrites = []
    rewrite = budget.table._rewrite
    monkeypatch.setattr(budget.table, "_rewrite", lambda kept: (rewrites.append(len(kept)), rewrite(kept)))
    for n in range(16):
        budget.charge(f"10.2.0.{n + 1}", 0.5)
    assert rewrites == [48]  # one rewrite for 16 new sources, keeping three quarters of 64
    assert budget.balance(ATTACKER) == -4.0  # the most indebted stays

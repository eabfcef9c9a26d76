"""The refused presentation contexts of every association in a refusal interval reach the audit log, bounded.

Context refusals are aggregated per (source, reason, port, tls): before, only the interval's first event named
contexts (the first association's), and the aggregated count named none, so a peer that proposed something else
in its second association left no trace of it. Now each event lists the distinct contexts of the refusals it
counts, at most MAX_ITEMS of them (each string cut to ITEM_CHARS), with a count of those not listed. And a group's
count so far is written LIVE_S after its last event, so ``radtrace status`` does not lag by the interval.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from radtrace.audit.events import AuditEvent, EventType
from radtrace.dicom_listener.refusals import ITEM_CHARS, LIVE_S, MAX_ITEMS, MAX_KEYS, RefusalAudit

pytestmark = pytest.mark.unit

REASON = "presentation contexts refused at negotiation"
JPEG_XL = "1.2.840.10008.1.2.4.110"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _context(sop_class: str, syntax: str | None = None, result: int = 3) -> dict[str, str | int | None]:
    return {"sop_class_uid": sop_class, "transfer_syntax": syntax, "result": result}


def _audit(clock: _Clock, written: list[AuditEvent]) -> RefusalAudit:
    return RefusalAudit(written.extend, 60, clock=clock, event_type=EventType.INSTANCE_REJECTED, items_key="contexts")


def test_the_aggregated_event_lists_the_distinct_contexts_of_the_later_associations() -> None:
    clock, written = _Clock(), []
    audit = _audit(clock, written)
    c_find, c_move = "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2"
    dx_jpeg_xl = _context("1.2.840.10008.5.1.4.1.1.1.1", JPEG_XL, 4)
    audit.refused("10.0.0.1", REASON, calling_ae="PACS", items=[_context(c_find)], refused=1)
    audit.refused("10.0.0.1", REASON, calling_ae="PACS", items=[_context(c_move), dx_jpeg_xl])
    audit.refused("10.0.0.1", REASON, calling_ae="PACS", items=[_context(c_move), _context(c_find)])
    audit.flush(force=True)
    first, rest = (event.payload for event in written)
    assert first["contexts"] == [{"sop_class_uid": c_find, "result": 3}], first
    assert (first["count"], first["refused"], first["contexts_not_listed"]) == (1, 1, 0), first
    assert rest["count"] == 2, rest  # before: no contexts in it, C-MOVE and the JPEG XL pair lost
    assert rest["contexts"] == [
        {"sop_class_uid": c_move, "result": 3},
        {"sop_class_uid": dx_jpeg_xl["sop_class_uid"], "transfer_syntax": JPEG_XL, "result": 4},
        {"sop_class_uid": c_find, "result": 3},
    ], rest
    assert rest["contexts_not_listed"] == 0


def test_a_peer_proposing_ever_new_huge_contexts_grows_neither_memory_nor_the_event() -> None:
    clock, written = _Clock(), []
    audit = _audit(clock, written)

    def propose(association: int) -> None:  # 128 contexts, every one new, each UID 500 characters
        audit.refused("10.0.0.2", REASON, items=(_context(f"{association}.{n}." + "9" * 500) for n in range(128)))

    tracemalloc.start()
    try:
        for association in range(60):  # the first (the interval's first event), then the allocator's free lists fill
            propose(association)
        before = tracemalloc.take_snapshot()
        for association in range(60, 360):
            propose(association)
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, grown  # MAX_ITEMS items of ITEM_CHARS characters, whatever was proposed
    audit.flush(force=True)
    rest = written[-1].payload
    assert len(rest["contexts"]) == MAX_ITEMS
    assert all(len(c["sop_class_uid"]) == ITEM_CHARS for c in rest["contexts"])
    assert rest["contexts_not_listed"] == 359 * 128 - MAX_ITEMS
    assert len(json.dumps(rest)) < 4 * 1024


def test_the_first_event_lists_at_most_max_items_of_its_own_contexts() -> None:
    written: list[AuditEvent] = []
    audit = _audit(_Clock(), written)
    audit.refused("10.0.0.3", REASON, items=[_context(f"1.2.{n}") for n in range(128)] * 2)
    [first] = written
    assert len(first.payload["contexts"]) == MAX_ITEMS
    assert first.payload["contexts_not_listed"] == 2 * (128 - MAX_ITEMS)  # repeats counted, of listed ones not


def test_later_refusals_are_written_live_s_after_the_last_event_and_only_once() -> None:
    clock, written = _Clock(), []
    audit = RefusalAudit(written.extend, 60, clock=clock)
    for _ in range(3):
        audit.refused("10.0.0.4", "calling AE title not allowed")
    clock.now += LIVE_S - 0.1
    audit.flush()
    assert [e.payload["count"] for e in written] == [1]
    clock.now += 0.1
    audit.flush()
    audit.flush()
    assert [(e.payload["count"], e.payload["aggregated"]) for e in written] == [(1, False), (2, True)]
    audit.refused("10.0.0.4", "calling AE title not allowed")
    clock.now += 60  # the interval's end writes only what was not written yet
    audit.flush()
    assert [e.payload["count"] for e in written] == [1, 2, 1]
    assert sum(e.payload["count"] for e in written) == 4


def test_early_events_are_bounded_per_interval_then_counts_wait_for_its_end() -> None:
    clock, written = _Clock(), []
    audit = RefusalAudit(written.extend, 60, clock=clock)
    for _ in range(0, 57, 3):  # a flood from MAX_KEYS sources: one refusal each every 3 s
        for n in range(MAX_KEYS):
            audit.refused(f"10.9.{n // 256}.{n % 256}", "calling AE title not allowed")
        clock.now += 3
        audit.flush()
    early = [e for e in written if e.payload["aggregated"]]
    assert len(early) == MAX_KEYS  # at most MAX_KEYS early events per interval, whatever the flood
    clock.now += 60
    audit.flush()
    assert len(written) <= 3 * MAX_KEYS  # first, early, final per group at most
    assert sum(e.payload["count"] for e in written) == 19 * MAX_KEYS  # nothing lost

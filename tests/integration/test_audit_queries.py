"""QA queries over a realistic audit log, on real SQLite and PostgreSQL: filters, paging, labels, timelines.

Every query and timeline is itself an audit event naming who asked; these tests read those back too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from audit_support import (
    DEEPMEDIX,
    NV,
    NV_NEW,
    STUDY_A,
    STUDY_B,
    STUDY_D,
    T0,
    Seeded,
    frozen_clock,
    seed_audit_log,
)
from radtrace.audit import queries
from radtrace.audit.chain import verify_chain
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.queries import AuditFilter, AuditQuery, QueryError, export_records, run_query, study_timeline
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

QA_NURSE = Actor(user="qa.nurse", host="ws-12", process="radtrace@ws-12:1")
DAY_TWO = T0 + timedelta(days=1)
WEEK = T0 + timedelta(days=7)

Predicate = Callable[[Seeded], bool]
FILTER_CASES: list[tuple[dict[str, Any], Predicate]] = [
    ({"study_uid": STUDY_A}, lambda s: s.event.study_uid == STUDY_A),
    ({"accession": "ACC-1002"}, lambda s: s.event.accession == "ACC-1002"),
    ({"patient_id": "PAT-0001"}, lambda s: s.event.patient_id == "PAT-0001"),
    ({"since": DAY_TWO, "until": WEEK}, lambda s: DAY_TWO <= s.at < WEEK),
    ({"until": DAY_TWO}, lambda s: s.at < DAY_TWO),
    ({"since": T0 + timedelta(seconds=14), "until": T0 + timedelta(seconds=60.3)},
     lambda s: T0 + timedelta(seconds=14) <= s.at < T0 + timedelta(seconds=60.3)),
    ({"event_type": "inference_completed"}, lambda s: s.event.type is EventType.INFERENCE_COMPLETED),
    ({"model_name": DEEPMEDIX}, lambda s: s.event.model_name == DEEPMEDIX),
    ({"model_name": NV, "model_version": NV_NEW}, lambda s: s.event.model_version == NV_NEW),
    ({"label": "Pleural Effusion"}, lambda s: "Pleural Effusion" in s.event.labels),
    ({"outcome": "serious_failure"}, lambda s: s.event.outcome is Outcome.SERIOUS_FAILURE),
    ({"study_uid": STUDY_B, "event_type": "dispatch_failed", "outcome": "serious_failure"},
     lambda s: s.event.study_uid == STUDY_B and s.event.type is EventType.DISPATCH_FAILED),
]  # fmt: skip


def _seqs(store: Store, **filters: Any) -> list[int]:
    page = run_query(store, AuditQuery(limit=1000, **filters), QA_NURSE)
    assert page.next_after_seq is None
    return [event.seq for event in page.events]


def test_each_filter_selects_exactly_the_matching_events(store: Store) -> None:
    seeded = seed_audit_log(store)
    for filters, matches in FILTER_CASES:
        expected = [s.seq for s in seeded if matches(s)]
        assert 0 < len(expected) < len(seeded), filters  # the case really narrows
        assert _seqs(store, **filters) == expected, filters


def test_rows_come_back_as_stored(store: Store) -> None:
    seeded = seed_audit_log(store)
    (completed,) = (s for s in seeded if s.event.study_uid == STUDY_A and s.event.type is EventType.INFERENCE_COMPLETED)
    (event,) = run_query(store, AuditQuery(study_uid=STUDY_A, event_type="inference_completed"), QA_NURSE).events
    assert (event.seq, event.recorded_at, event.event_type, event.dicom_event_id) == (
        completed.seq, completed.at, "inference_completed", "110103",
    )  # fmt: skip
    assert event.labels == ("Cardiomegaly", "Pleural Effusion")
    assert event.payload == {"raw": completed.event.payload["raw"], "tokens": 512}
    assert (event.model_name, event.actor_process, event.accession) == (NV, "radtrace-worker@gpu1:77", "ACC-1001")
    assert len(event.hash) == 64


LABEL_CASES: list[tuple[str, list[str]]] = [
    ("Effusion", [STUDY_B]),  # not the "Pleural Effusion" of study A
    ("Pleural Effusion", [STUDY_A]),
    ("Nodule_%", [STUDY_D]),  # LIKE metacharacters in a real label match literally
    ("pleural effusion", []),  # exact: case counts, on SQLite as on PostgreSQL
    ("Pleural", []),
    ("Nodule__", []),
    ("%", []),
    ("_", []),
    ("Pleural%", []),
]


def test_label_matches_one_whole_label_literally(store: Store) -> None:
    seed_audit_log(store)
    for label, studies in LABEL_CASES:
        page = run_query(store, AuditQuery(label=label), QA_NURSE)
        assert [event.study_uid for event in page.events] == studies, label


def test_paging_by_seq_is_stable_while_events_are_appended(store: Store) -> None:
    audit = AuditRecorder(store)
    received = [
        AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS"), study_uid=f"1.2.3.{n}") for n in range(25)
    ]
    first_batch = [r.seq for r in audit.record_many(received)]
    seen: list[int] = []
    after, pages = 0, 0
    while True:
        page = run_query(store, AuditQuery(event_type="instance_received", limit=10, after_seq=after), QA_NURSE)
        seen += [event.seq for event in page.events]
        pages += 1
        if pages == 1:  # new studies arrive while QA is paging
            later = [r.seq for r in audit.record_many(received[:7])]
        if page.next_after_seq is None:
            break
        after = page.next_after_seq
    assert seen == first_batch + later  # nothing repeated, nothing skipped, in order
    assert pages == 4


def test_every_query_is_recorded_naming_the_asker_and_the_patient(store: Store) -> None:
    seed_audit_log(store)
    page = run_query(store, AuditQuery(patient_id="PAT-0001", event_type="instance_received", limit=2), QA_NURSE)
    assert len(page.events) == 2
    assert page.next_after_seq == page.events[-1].seq  # PAT-0001 has a third instance, in study C
    # "who looked up this patient?" is itself a query
    who_looked = AuditQuery(patient_id="PAT-0001", event_type="audit_queried")
    (lookup,) = run_query(store, who_looked, Actor(user="dpo")).events
    assert (lookup.actor_user, lookup.actor_host, lookup.patient_id) == ("qa.nurse", "ws-12", "PAT-0001")
    assert lookup.dicom_event_id == "110101"  # DICOM "Audit Log Used"
    assert lookup.payload == {
        "view": "events",
        "filters": {"event_type": "instance_received", "limit": 2, "after_seq": 0},  # the ID is in its column only
        "returned": 2,
        "next_after_seq": page.next_after_seq,
    }
    study_timeline(store, STUDY_A, QA_NURSE)
    last = run_query(store, AuditQuery(event_type="audit_queried", after_seq=lookup.seq), Actor(user="dpo")).events
    assert [(e.actor_user, e.payload.get("view")) for e in last] == [("dpo", "events"), ("qa.nurse", "timeline")]
    assert last[1].payload == {"view": "timeline", "study_uid": STUDY_A, "returned": 8}
    assert last[1].patient_id is None
    assert verify_chain(store).ok


def test_timeline_gives_gaps_and_stage_durations(store: Store) -> None:
    seed_audit_log(store)
    timeline = study_timeline(store, f"  {STUDY_A} ", QA_NURSE)
    assert timeline.study_uid == STUDY_A
    assert [entry.event.event_type for entry in timeline.entries] == [
        "instance_received", "instance_received", "study_queued", "inference_started", "inference_completed",
        "report_created", "dispatch_attempted", "dispatch_delivered",
    ]  # fmt: skip
    gaps = [entry.seconds_since_previous for entry in timeline.entries]
    assert gaps[0] is None
    assert gaps[1:] == pytest.approx([2, 12, 3, 41.5, 0.8, 1, 2.2])
    assert [entry.seconds_since_first for entry in timeline.entries] == pytest.approx(
        [0, 2, 14, 17, 58.5, 59.3, 60.3, 62.5]
    )
    stages = {stage.name: stage.seconds for stage in timeline.stages}
    assert stages == pytest.approx(
        {"receive_to_queue": 14, "queue_wait": 3, "inference": 41.5, "report": 0.8, "dispatch": 3.2, "total": 62.5}
    )
    failed = study_timeline(store, STUDY_B, QA_NURSE)  # dispatch failed: no dispatch or total stage
    assert [stage.name for stage in failed.stages] == ["receive_to_queue", "queue_wait", "inference", "report"]


def test_timeline_of_an_unknown_study_is_empty_and_still_recorded(store: Store) -> None:
    seed_audit_log(store)
    assert study_timeline(store, "9.9.9", QA_NURSE).entries == ()
    (event,) = run_query(store, AuditQuery(event_type="audit_queried"), QA_NURSE).events
    assert event.payload == {"view": "timeline", "study_uid": "9.9.9", "returned": 0}
    with pytest.raises(QueryError, match="study_uid"):
        study_timeline(store, "1" * 65, QA_NURSE)


def test_export_reads_in_batches_and_stops_where_it_began(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    seeded = seed_audit_log(store)
    monkeypatch.setattr(queries, "EXPORT_BATCH_ROWS", 4)
    records = export_records(store, AuditFilter(until=WEEK), Actor(user="auditor"))
    first = next(records)
    with frozen_clock(T0 + timedelta(days=2)):  # arrives during the export and matches its filter
        AuditRecorder(store).record(AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS")))
    exported = [first.seq, *(record.seq for record in records)]
    assert exported == [s.seq for s in seeded]
    with store.engine.connect() as connection:
        row = connection.execute(sa.text("SELECT * FROM audit_events WHERE event_type = 'audit_exported'")).mappings()
        (export_event,) = row.all()
    assert export_event["seq"] == len(seeded) + 1
    assert export_event["actor_user"] == "auditor"
    assert json.loads(export_event["payload"])["filters"] == {"until": "2025-03-10T08:00:00Z"}

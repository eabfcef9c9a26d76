"""A reading history written straight into the tables, for the QA dashboard's tests and its scale measurement.

:func:`seed_history` turns :func:`qa_support.synthetic_history` (studies per day, a planted label drift, a planted
failure burst) into what the pipeline and the console would have left: for every study a ``studies``,
``revisions`` and ``instances`` row; for a read one its ``outbox`` row (draft SR delivered), its ``review_items``
row and the audit events of its path (received, queued, claimed, read, reported, delivered), some opened and
assessed by a radiologist; for a failed or skipped one its reason. About 3 % of studies are skipped (not a
frontal chest film). The audit rows form a valid hash chain (:func:`radtrace.audit.chain.row_hash`). Everything
goes in with core bulk inserts, in batches.

The history ends today (UTC): its day 0 is ``days - 1`` days ago, so the dashboard's default window (the last
30 days) holds the planted drift and burst and the 28 days before it are clean.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from qa_support import DRIFT_LABEL, PREVALENCE, START, synthetic_history
from radtrace.audit.chain import GENESIS_HASH, row_hash
from radtrace.audit.events import EventType, canonical_json
from radtrace.audit.schema import AuditEventRow
from radtrace.console.dashboard_agreement import sync_decisions
from radtrace.console.schema import ReviewItem
from radtrace.store.engine import Store
from radtrace.store.models import Instance, OutboxMessage, Revision, Study

SKIP_REASONS = ("no frontal chest image (lateral only)", "not a chest radiograph (body part: HAND)")
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90")
SENDERS = ("DX_ROOM1", "DX_ROOM2", "CR_WARD")
#: (manufacturer, model, row spacing in mm) of the seeded images: the input mix the dashboard counts.
DETECTORS = (("Acme Imaging", "DR-500", 0.139), ("Borealis", "Flat 43", 0.148), ("Acme Imaging", "DR-700", 0.1))
MODEL = ("NV-Reason-CXR-3B", "rev-2026-10")
DECISIONS = (("accept", 0.80), ("reject", 0.12), ("modify", 0.08))
BATCH = 20_000


@dataclass(frozen=True)
class Seeded:
    """What was written, and where the plants are."""

    studies: int
    events: int
    first_day: date
    drift_label: str
    drift_from: date
    burst_day: date
    #: Every reading as recorded: (inference_completed time, labels present).
    readings: list[tuple[datetime, tuple[str, ...]]]
    #: Every revision row as inserted (state, reason, opened_at, reported_at, finished_at, ...).
    revisions: list[dict[str, Any]]


def seed_history(
    store: Store,
    *,
    days: int = 90,
    per_day: tuple[int, int] = (80, 120),
    seed: int = 17,
    assessed: float = 0.3,
    today: date | None = None,
    model: tuple[str, str] = MODEL,
    decisions: tuple[tuple[str, float], ...] = DECISIONS,
    failure_reasons: tuple[str, ...] = (),
) -> Seeded:
    """Write ``days`` days of history ending ``today`` (see the module doc), read by ``model`` (name, version),
    radiologists deciding each finding with the weights ``decisions``; returns what was planted where. With
    ``failure_reasons`` the failed studies fail for these reasons in turn (revision and ``study_failed`` alike)."""
    today = today or datetime.now(UTC).date()
    history = synthetic_history(seed=seed, days=days, per_day=per_day, drift_from_day=days - 20, burst_day=days - 10)
    shift = (today - timedelta(days=days - 1)) - START
    rng = random.Random(seed + 1)
    tables: dict[Any, list[dict[str, Any]]] = {Study: [], Revision: [], Instance: [], OutboxMessage: [], ReviewItem: []}
    events: list[tuple[datetime, dict[str, Any]]] = []
    readings = iter(history.readings)
    ids = _first_ids(store)
    failures = 0
    for number, outcome in enumerate(history.outcomes):
        when = outcome.when + shift if isinstance(outcome.when, datetime) else None
        assert when is not None
        study_id, uid = ids + number, f"1.2.826.0.1.3680043.10.1017.{ids + number}"
        ending = "skipped" if rng.random() < 0.03 else outcome.ending
        labels = next(readings)[1] if outcome.ending == "reported" else ()
        reason = outcome.reason
        if ending == "failed" and failure_reasons:
            reason, failures = failure_reasons[failures % len(failure_reasons)], failures + 1
        _study(tables, events, rng, study_id, uid, when, ending, reason, labels, assessed, model, decisions)
    written = _insert(store, tables, events)
    return Seeded(
        len(history.outcomes),
        written,
        today - timedelta(days=days - 1),
        DRIFT_LABEL,
        history.drift_from + shift,
        history.burst_day + shift,
        [
            (when, tuple(label for label in (values["labels"] or "").split(",") if label))
            for when, values in events
            if values["event_type"] == EventType.INFERENCE_COMPLETED.value
        ],
        tables[Revision],
    )


def _first_ids(store: Store) -> int:
    with store.session("seeding") as session:
        return int(session.scalar(sa.select(sa.func.coalesce(sa.func.max(Study.id), 0))) or 0) + 1


def _event(kind: EventType, uid: str, payload: dict[str, Any], **columns: Any) -> dict[str, Any]:
    return {
        "event_type": kind.value,
        "dicom_event_id": kind.dicom.code,
        "outcome": columns.pop("outcome", "success"),
        "actor_ae": None,
        "actor_host": "radtrace-host",
        "actor_user": columns.pop("user", None),
        "actor_process": "radtrace-seed",
        "study_uid": uid,
        "accession": f"ACC{uid[-8:]}",
        "patient_id": None,
        "model_name": None,
        "model_version": None,
        "labels": None,
        "payload": canonical_json(payload),
        **columns,
    }


def _study(
    tables: dict[Any, list[dict[str, Any]]],
    events: list[tuple[datetime, dict[str, Any]]],
    rng: random.Random,
    study_id: int,
    uid: str,
    received: datetime,
    ending: str,
    reason: str | None,
    labels: tuple[str, ...],
    assessed: float,
    model: tuple[str, str] = MODEL,
    decisions: tuple[tuple[str, float], ...] = DECISIONS,
) -> None:
    sop = f"{uid}.1.1"
    queued = received + timedelta(seconds=rng.uniform(10, 14))
    started = queued + timedelta(seconds=rng.expovariate(1 / 8))
    completed = started + timedelta(seconds=rng.uniform(18, 45))
    reported = completed + timedelta(seconds=rng.uniform(1, 3))
    delivered = reported + timedelta(seconds=rng.uniform(0.5, 4))
    tables[Study].append(
        {
            "id": study_id,
            "study_uid": uid,
            "study_key": f"{study_id:016x}",
            "accession": f"ACC{uid[-8:]}",
            "created_at": received,
            "last_instance_at": received,
        }
    )
    revision = {
        "id": study_id,
        "study_id": study_id,
        "number": 1,
        "attempts": 1,
        "opened_at": received,
        "queued_at": queued,
        "updated_at": received,
        "priority": "routine",
    }
    syntax = rng.choice(TRANSFER_SYNTAXES)
    tables[Instance].append(
        {
            "id": study_id,
            "study_id": study_id,
            "revision_id": study_id,
            "sop_instance_uid": sop,
            "version": 1,
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.1",
            "series_uid": f"{uid}.1",
            "transfer_syntax_uid": syntax,
            "modality": "DX",
            "body_part": "CHEST",
            "path": f"{uid}/{sop}.dcm",
            "size_bytes": 8_400_000,
            "sha256": hashlib.sha256(sop.encode()).hexdigest(),
            "calling_ae": rng.choice(SENDERS),
            "received_at": received,
            # drawn from the study's number, not the generator, so the other figures' draws stay as they were
            **dict(
                zip(
                    ("manufacturer", "manufacturer_model", "pixel_spacing_mm"),
                    DETECTORS[study_id % len(DETECTORS)],
                    strict=True,
                )
            ),
            "photometric": "MONOCHROME1" if study_id % 5 == 0 else "MONOCHROME2",
        }
    )
    events.append(
        (
            received,
            _event(
                EventType.INSTANCE_RECEIVED,
                uid,
                {"revision": 1, "sop_instance_uid": sop, "transfer_syntax_uid": syntax},
            ),
        )
    )
    if ending == "skipped":
        why = rng.choice(SKIP_REASONS)
        revision.update(state="skipped", reason=why, finished_at=queued, queued_at=None)
        tables[Revision].append(revision)
        events.append((queued, _event(EventType.STUDY_SKIPPED, uid, {"revision": 1, "reason": why})))
        return
    events.append((queued, _event(EventType.STUDY_QUEUED, uid, {"revision": 1, "priority": "routine"})))
    events.append((started, _event(EventType.INFERENCE_STARTED, uid, {"revision": 1, "attempt": 1})))
    if ending == "failed":
        why = f"gave up after 3 attempts: {reason or 'model timeout'}"
        revision.update(state="failed", reason=why, started_at=started, finished_at=completed, attempts=3)
        tables[Revision].append(revision)
        events.append(
            (completed, _event(EventType.STUDY_FAILED, uid, {"revision": 1, "reason": why}, outcome="serious_failure"))
        )
        return
    revision.update(
        state="dispatched",
        started_at=started,
        reported_at=reported,
        finished_at=delivered,
        sr_sop_instance_uid=f"{uid}.9",
    )
    tables[Revision].append(revision)
    flags = ["refused"] if rng.random() < 0.005 else []
    if rng.random() < 0.01:
        flags.append("text-sanitised")
    view = rng.choice(("PA", "PA", "PA", "AP"))
    findings = [
        {
            "label": label,
            "status": "present" if label in labels else "absent",
            "evidence": f"{label}: described in the reasoning." if label in labels else f"No {label.lower()}.",
        }
        for label in PREVALENCE
    ]
    reading = {
        "findings": findings,
        "flags": flags,
        "impression": "Seeded reading.",
        "images": [{"sop_instance_uid": sop, "role": "frontal", "view": view, "view_flags": []}],
    }
    events.append(
        (
            completed,
            _event(
                EventType.INFERENCE_COMPLETED,
                uid,
                {"revision": 1, "attempt": 1, "reading": reading},
                model_name=model[0],
                model_version=model[1],
                labels=f",{','.join(sorted(labels))}," if labels else None,
            ),
        )
    )
    events.append(
        (
            reported,
            _event(
                EventType.REPORT_CREATED,
                uid,
                {"revision": 1, "sr_sop_instance_uid": f"{uid}.9"},
                model_name=model[0],
                model_version=model[1],
            ),
        )
    )
    events.append((delivered, _event(EventType.DISPATCH_DELIVERED, uid, {"revision": 1, "destination": "PACS"})))
    tables[OutboxMessage].append(
        {
            "id": study_id,
            "revision_id": study_id,
            "kind": "sr",
            "destination": "PACS",
            "document_uid": "",
            "payload_path": f"{uid}/sr.dcm",
            "payload_sha256": "0" * 64,
            "state": "delivered",
            "attempts": 1,
            "next_attempt_at": reported,
            "created_at": reported,
            "delivered_at": delivered,
        }
    )
    decided = rng.random() < assessed
    decided_at = delivered + timedelta(minutes=rng.uniform(5, 240))
    tables[ReviewItem].append(
        {
            "revision_id": study_id,
            "study_uid": uid,
            "revision": 1,
            "rank": 1,
            "reported_at": reported,
            "superseded": False,
            "patient_name": f"SEED^{study_id}",
            "patient_id": f"S{study_id:09d}",
            "accession": f"ACC{uid[-8:]}",
            "view": view,
            "findings": ",".join(labels),
            "flags": ",".join(flags),
            "flagged": bool(flags),
            "model_name": model[0],
            "sr_sop_instance_uid": f"{uid}.9",
            "opened_by": "dr.seed" if decided else None,
            "assessed": decided,
            "decision": "accepted" if decided else None,
            "decided_by": "dr.seed" if decided else None,
            "decided_at": decided_at if decided else None,
        }
    )
    if not decided:
        return
    opened = decided_at - timedelta(minutes=2)
    events.append((opened, _event(EventType.STUDY_OPENED, uid, {"revision": 1, "via": "console"}, user="dr.seed")))
    for n, label in enumerate(rng.sample(list(PREVALENCE), 3)):
        verdict = rng.choices([d for d, _ in decisions], [w for _, w in decisions])[0]
        payload = {
            "revision": 1,
            "finding": label,
            "model_status": "present" if label in labels else "absent",
            "decision": verdict,
            "status": "uncertain" if verdict == "modify" else None,
            "supersedes": None,
        }
        events.append(
            (
                opened + timedelta(seconds=10 * (n + 1)),
                _event(EventType.FINDING_ASSESSED, uid, payload, user="dr.seed", labels=f",{label},"),
            )
        )
    events.append(
        (
            decided_at,
            _event(
                EventType.DRAFT_ASSESSED,
                uid,
                {"revision": 1, "decision": "accept", "reason_code": "AGREE"},
                user="dr.seed",
            ),
        )
    )


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


def _insert(
    store: Store, tables: dict[Any, list[dict[str, Any]]], events: list[tuple[datetime, dict[str, Any]]]
) -> int:
    events.sort(key=lambda pair: pair[0])
    with store.session("seeding") as session:
        head = session.execute(
            sa.select(AuditEventRow.seq, AuditEventRow.hash).order_by(AuditEventRow.seq.desc()).limit(1)
        ).first()
    seq, previous = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
    rows = []
    for when, values in events:
        seq += 1
        values.update(seq=seq, recorded_at=when, prev_hash=previous)
        values["hash"] = previous = row_hash(values)
        rows.append(values)
    for model in (Study, Revision, Instance, OutboxMessage, ReviewItem):
        for chunk in _chunks(tables.get(model, [])):
            with store.session("seeding") as session:
                session.execute(sa.insert(model), chunk)
    for chunk in _chunks(rows):
        with store.session("seeding") as session:
            session.execute(sa.insert(AuditEventRow), chunk)
    sync_decisions(store)  # as migration 0008's backfill leaves a database recorded before it
    with store.engine.connect() as connection:  # fresh planner statistics, as a live database would have
        if connection.dialect.name == "postgresql":
            for table in ("studies", "revisions", "instances", "outbox"):
                setval = f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"  # noqa: S608
                connection.execute(sa.text(setval))  # the four names above, not input
        connection.execute(sa.text("ANALYZE"))
        connection.commit()
    if store.engine.dialect.name == "postgresql":  # autovacuum's work: the visibility map index-only scans need
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM"))
    return len(rows)


def seed_decisions(store: Store, decisions: int, *, seed: int = 23, changed: float = 0.1) -> dict[str, Counter[str]]:
    """Write ``decisions`` assessment events (no other rows): per study three findings and the whole draft decided,
    a share ``changed`` of them decided again (the earlier one superseded), spread over the 90 days before now (or
    a second apart after the events already there). Studies are numbered from the same start on every call, so a
    second call decides the first call's studies again. Returns the current decisions of this call's events as the
    agreement page counts them: per label (``""`` for whole drafts) a Counter of verdicts, and under ``"reasons"``
    the whole drafts' reason codes."""
    rng = random.Random(seed)
    events: list[tuple[datetime, dict[str, Any]]] = []
    latest: dict[tuple[str, str], tuple[str, str | None]] = {}
    with store.session("seeding") as session:  # after the events already there, as time goes
        head = session.scalar(sa.select(sa.func.max(AuditEventRow.recorded_at)))
    start = (head.replace(tzinfo=UTC) if head is not None else datetime.now(UTC) - timedelta(days=90)) + timedelta(
        seconds=1
    )
    step = timedelta(days=90) / max(1, decisions) if head is None else timedelta(seconds=1)
    number = _first_ids(store) + 10_000_000
    while len(events) < decisions:
        number += 1
        uid = f"1.2.826.0.1.3680043.10.1023.{number}"
        parts: list[str | None] = [*rng.sample(list(PREVALENCE), 3), None]
        for label in parts:
            for _ in range(2 if rng.random() < changed else 1):
                if len(events) >= decisions:
                    break
                when = start + step * len(events)
                verdict = rng.choices([d for d, _ in DECISIONS], [w for _, w in DECISIONS])[0]
                if label is None:
                    verdict = "accept" if verdict == "accept" else "reject"
                    reason = "RT-A1" if verdict == "accept" else rng.choice(("RT-R1", "RT-R2", "RT-R5"))
                    payload: dict[str, Any] = {"revision": 1, "decision": verdict, "reason_code": reason}
                    events.append((when, _event(EventType.DRAFT_ASSESSED, uid, payload, user="dr.seed")))
                else:
                    reason = None
                    payload = {"revision": 1, "finding": label, "decision": verdict, "model_status": "present",
                               "status": "absent" if verdict == "modify" else None}  # fmt: skip
                    events.append((when, _event(EventType.FINDING_ASSESSED, uid, payload, user="dr.seed")))
                latest[(uid, label or "")] = (verdict, reason)
    expected: dict[str, Counter[str]] = {"reasons": Counter()}
    for (_uid, label), (verdict, reason) in latest.items():
        expected.setdefault(label, Counter())[verdict] += 1
        if reason:
            expected["reasons"][reason] += 1
    _insert(store, {Study: [], Revision: [], Instance: [], OutboxMessage: [], ReviewItem: []}, events)
    return expected


# --- drafts withdrawn as wrong-patient (the agreement figures' left-out tests) ------------------------------------


def draft_tables(
    root: str, start: datetime, studies: dict[str, dict[int, dict[str, Any]]], accessions: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[Any, list[dict[str, Any]]]]:
    """Study UIDs (``root``.1, .2, … in order) and ``studies`` and ``revisions`` rows for :func:`_insert`: each
    study named in ``studies`` with its revisions (number -> the revision row's marks, e.g. ``reassigned_at`` or
    ``rejected_at`` and ``rejection_code``), reported at ``start``; accession ``accessions[name]`` or ``ACC<n>``."""
    uids = {name: f"{root}.{n}" for n, name in enumerate(studies, 1)}
    tables: dict[Any, list[dict[str, Any]]] = {model: [] for model in (Study, Revision, Instance, OutboxMessage,
                                                                        ReviewItem)}  # fmt: skip
    for n, (name, revisions) in enumerate(studies.items(), 1):
        tables[Study].append({"id": n, "study_uid": uids[name], "study_key": f"{n:016x}",
                              "accession": (accessions or {}).get(name, f"ACC{n}"), "created_at": start,
                              "last_instance_at": start})  # fmt: skip
        for number, marks in revisions.items():
            tables[Revision].append({"id": len(tables[Revision]) + 1, "study_id": n, "number": number, "attempts": 1,
                                     "state": "reported", "opened_at": start, "reported_at": start,
                                     "updated_at": start, "priority": "routine", **marks})  # fmt: skip
    return uids, tables


def decided(
    uid: str, label: str | None, decision: str, *, revision: int = 1, user: str = "dr.hand", **columns: Any
) -> dict[str, Any]:
    """A radiologist's decision as the console records it: on finding ``label``, or (None) on the whole draft (reason
    RT-A1 when accepted, RT-R1 otherwise, unless ``reason_code`` is given)."""
    if label is None:
        reason = columns.pop("reason_code", "RT-A1" if decision == "accept" else "RT-R1")
        payload: dict[str, Any] = {"revision": revision, "decision": decision, "reason_code": reason}
        return _event(EventType.DRAFT_ASSESSED, uid, payload, user=user, **columns)
    payload = {"revision": revision, "finding": label, "decision": decision, "model_status": "present"}
    return _event(EventType.FINDING_ASSESSED, uid, payload, user=user, **columns)


def reading(uid: str, revision: int = 1, model: tuple[str, str] = MODEL) -> dict[str, Any]:
    """The ``inference_completed`` event of a study revision's reading by ``model`` (name, version)."""
    return _event(EventType.INFERENCE_COMPLETED, uid, {"revision": revision, "attempt": 1}, model_name=model[0],
                  model_version=model[1])  # fmt: skip


def insert_story(
    store: Store, tables: dict[Any, list[dict[str, Any]]], story: list[dict[str, Any]], start: datetime
) -> None:
    """:func:`_insert` the rows of ``tables`` and the events of ``story``, a minute apart from ``start``."""
    _insert(store, tables, [(start + timedelta(minutes=n), event) for n, event in enumerate(story)])

"""A reading whose drafts could not be stored is drafted again from the audit log, not read again.

Every reading is audited whole as ``inference_completed`` (its ``reading`` payload is :meth:`Reading.to_json`'s).
When the attempt then fails only because its drafts or their outbox payloads could not be written (a full disk, a
quota, an I/O error: :class:`~radtrace.reporting.draft_store.DraftsNotStoredError`, or a ``DispatchError`` from
ENOSPC), its ``report_failed`` says ``reading_kept: true`` (an ``inference_failed`` saying so counts too: the outbox
payloads' waits were audited so from 6262050 until the event became ``report_failed``); a wait before
reading (no room, not read: :class:`~radtrace.worker.disk_space.NoRoomForDraftsError`) says ``read: false``. The next
attempt of that revision drafts from the recorded reading when, newest first, the revision's events after it are only
such failures: anything
else (the drafts could not be built, the study was retried by hand, a reading of its own) means it is read again. So
does a reading one of whose images the revision would no longer read (:func:`.read_instances.still_readable`: the
PACS moved it to another patient or study, or rejected it, while the revision waited to retry): the listener does
not mark a revision that waits (it is read again without the image), so a draft of the kept reading would describe
another patient's image unflagged. Read again, the draft is of the study's own images only, and needs no check.

A reading that is the revision's newest event, with no end after it, is read again: its attempt died (the worker was
killed, or lost its claim), perhaps of the reading itself (drafts that crash or exhaust the worker), and a reading
drafted again every attempt would die the same way each time without ever being read afresh. Only an audited end says
the reading was not the fault. An attempt whose end could not be recorded because the database was away has one too:
its own worker, which outlived the outage, records it (``report_failed``, ``reading_kept: true``, ``attempt_counted:
false``) as it takes the attempt over (:mod:`radtrace.worker.attempts`), so that reading is drafted again.

One query per batch: the batch's studies' events by the indexed Study Instance UID, their kinds picked here. With the
kinds in the query too, SQLite chose the event type's index for several studies, a cost growing with the whole audit
log (16 studies among 2,000 read: 10 ms; 0.5 ms now, 0.3 ms for 16 never read).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.model.reading import Reading
from radtrace.store.engine import Store
from radtrace.worker.claims import Claim
from radtrace.worker.read_instances import still_readable

__all__ = ["audited_events", "kept_readings"]

log = logging.getLogger(__name__)

_KINDS: Final = (
    EventType.INFERENCE_COMPLETED.value,
    EventType.INFERENCE_FAILED.value,
    EventType.REPORT_FAILED.value,
    EventType.REPORT_CREATED.value,
    EventType.STUDY_FAILED.value,
    EventType.STUDY_SKIPPED.value,
    EventType.STUDY_RETRIED.value,
)


_FAILED: Final = (EventType.REPORT_FAILED.value, EventType.INFERENCE_FAILED.value)


def _kept(events: Sequence[tuple[str, dict[str, Any]]]) -> Reading | None:
    """The reading to draft again from one revision's events (oldest first), or None (see the module)."""
    kept = _kept_with_inputs(events)
    return kept[0] if kept is not None else None


def _kept_with_inputs(
    events: Sequence[tuple[str, dict[str, Any]]],
) -> tuple[Reading, list[tuple[str, str]] | None] | None:
    """The reading to draft again from one revision's events (oldest first) with the images it read, or None (see
    the module)."""
    waited_after_reading = False
    for kind, payload in reversed(events):
        if kind == EventType.REPORT_FAILED.value and payload.get("read") is False:
            continue  # waited for space without reading
        if kind in _FAILED and payload.get("reading_kept") is True:  # inference_failed: recorded by 6262050's version
            waited_after_reading = True
            continue
        if kind == EventType.INFERENCE_COMPLETED.value and waited_after_reading and "reading" in payload:
            try:
                return Reading.model_validate(payload["reading"]), _inputs(payload)
            except ValueError as exc:  # recorded by another version of radtrace: read again
                log.info("a recorded reading cannot be used again (%s); reading again", type(exc).__name__)
                return None
        return None
    return None


def _inputs(payload: dict[str, Any]) -> list[tuple[str, str]] | None:
    """``(SOP Instance UID, SHA-256)`` of each image the recorded reading read (None: not recorded)."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list):
        return None
    found = [(item.get("sop_instance_uid"), item.get("sha256")) for item in inputs if isinstance(item, dict)]
    return [(str(sop), str(digest)) for sop, digest in found if sop and digest] if len(found) == len(inputs) else None


def audited_events(
    session: Session, study_uids: Iterable[str], kinds: Collection[str]
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The studies' audit events of ``kinds`` (event type, payload), oldest first, by Study Instance UID: found by
    the indexed Study Instance UID alone, their kinds picked here (see the module)."""
    rows = session.execute(
        sa.select(AuditEventRow.study_uid, AuditEventRow.event_type, AuditEventRow.payload)
        .where(AuditEventRow.study_uid.in_(sorted(set(study_uids))))  # by its index only
        .order_by(AuditEventRow.seq)
    ).all()
    by_study: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for uid, kind, payload in rows:
        if kind in kinds:
            by_study.setdefault(str(uid), []).append((kind, json.loads(payload)))
    return by_study


def kept_readings(store: Store, claims: Sequence[Claim]) -> dict[int, Reading]:
    """The readings of ``claims`` to draft again instead of reading, by revision id."""
    if not claims:
        return {}
    with store.session("looking for kept readings") as session:
        by_study = audited_events(session, {claim.study_uid for claim in claims}, _KINDS)
    found: dict[int, Reading] = {}
    for claim in claims:
        events = [
            (kind, payload)
            for kind, payload in by_study.get(claim.study_uid, [])
            if payload.get("revision") == claim.number or kind == EventType.STUDY_RETRIED.value
        ]
        kept = _kept_with_inputs(events)
        if kept is None:
            continue
        reading, inputs = kept
        with store.session("checking a kept reading's images") as session:
            readable = inputs is not None and still_readable(session, claim.study_id, claim.number, inputs)
        if readable:
            found[claim.revision_id] = reading
        else:  # drafted from, it would describe an image now another patient's (or withdrawn): unflagged
            log.warning(
                "%s: its recorded reading was of an image the PACS has since moved to another study or rejected "
                "(or changed); reading it again without it",
                claim.names(),
            )
    return found

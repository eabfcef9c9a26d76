"""Withdrawing the draft of a revision read from an image the PACS moved or rejected, from every peer it reached.

A revision marked ``reassigned_at`` (an image it read was re-sent by the PACS under another patient or study:
:mod:`radtrace.dicom_listener.reassigned`) or ``rejected_at`` (an IHE IOCM rejection note named it:
:mod:`radtrace.dicom_listener.rejection_note`) has a draft about the wrong patient's lungs, or about an image the
PACS no longer stands by. :func:`withdraw` settles it, in one transaction, from the stored rows alone:

* each draft delivery still pending is cancelled (``cancelled``, ``last_error`` saying it was withdrawn before it
  was sent): it is never sent, never counted as a failed delivery, never asked for again by a retry; the revision
  stays ``reported``, its reason saying which deliveries were withdrawn (:mod:`radtrace.worker.settlement`). The
  outbox does the same before it would claim one (:meth:`.outbox.Outbox.deliver`), so a draft enqueued after the
  mark is not sent either. A delivery in flight (its claim live) is
  waited for: what it sends is withdrawn once its outcome is recorded;
* each peer that got the draft, or may have (a delivery delivered, or one whose ``outbox.reached`` is set: some
  attempt was not refused by the peer, a send cut off by a crash included; not one the peer refused on every
  attempt, a C-STORE failure status, an HL7 AE or AR, an association rejected: it stored nothing, and would refuse
  the withdrawal too; :mod:`.outcomes`, never the wording of ``last_error``), gets one withdrawal, an outbox row of
  its own delivered as any other (claims, leases, retries, holds; :mod:`.outbox`): the IHE IOCM rejection note naming
  radtrace's instances sent to that PACS (``withdrawal``), the corrected ORU to the RIS (``withdrawal-hl7``), both
  into the file drop beside the draft's files, with the FHIR Bundle ``entered-in-error`` where the draft's was
  dropped (``withdrawal-file``; :mod:`radtrace.reporting.withdrawal` builds them). A draft never sent gets none.
* ``report_withdrawn`` is audited in the same transaction: why, the deliveries cancelled, the withdrawals queued. A
  withdrawal that cannot be built (the draft's payload unreadable) is queued ``failed`` with the reason (``not_built``,
  the event then a serious failure, the log line an ERROR): shown, counted and audited once, never silent.

Keyed as every outbox row by (revision, kind, destination), a withdrawal is queued once however often this runs;
delivered at least once, byte-identical each time (the same SOP Instance UID, the same MSH-10), so a peer that got
it twice can tell. The reconciler runs :func:`sweep` on every pass (:mod:`radtrace.worker.reconciler`) and rings the
rows it queued: a process killed anywhere leaves either nothing done (the transaction) or rows the outbox delivers.
A revision whose draft reached no peer (every delivery refused, or never sent) and has nothing pending is not
selected by the sweep at all: it has nothing to withdraw, pass after pass.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

import pydicom
import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings
from radtrace.errors import DispatchRejectedError, PermanentError, RadtraceError, RetryableError
from radtrace.logging import study_key
from radtrace.reporting.codes import Code
from radtrace.reporting.dispatch import claims
from radtrace.reporting.dispatch.kinds import (
    DRAFT_KINDS,
    KIND_COMPANION,
    KIND_FILE,
    KIND_GSPS,
    KIND_HL7,
    KIND_SR,
    KIND_WITHDRAWAL,
    KIND_WITHDRAWAL_FILE,
    KIND_WITHDRAWAL_HL7,
    WITHDRAWAL_KINDS,
    payload_suffix,
)
from radtrace.reporting.dispatch.payloads import PayloadFiles, StagedPayloads
from radtrace.reporting.withdrawal import (
    REJECTED_FOR_PATIENT_SAFETY,
    REJECTION_TITLES,
    build_rejection_note,
    build_withdrawal_fhir,
    build_withdrawal_oru,
    note_bytes,
)
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision

__all__ = ["WITHDRAWAL_KINDS", "Withdrawn", "is_marked", "sweep", "why_withdrawn", "withdraw"]

log = logging.getLogger(__name__)

_PACS_KINDS: Final = (KIND_SR, KIND_COMPANION, KIND_GSPS)  # in this order in a rejection note: the SR first
#: Revisions looked at per sweep, at most (each is one transaction; the next pass takes the rest).
SWEEP_BATCH: Final = 50
REASSIGNED_REASON: Final = (
    "an image this draft was read from was re-sent by the PACS under another patient or study: "
    "the draft may describe another patient's images"
)
REJECTED_REASON: Final = "an image this draft was read from was rejected by the PACS (IHE IOCM rejection note)"
CANCELLED_PREFIX: Final = "withdrawn before it was sent"
NOT_BUILT_PREFIX: Final = "the withdrawal could not be built"


class _Outbox(Protocol):
    """What a withdrawal needs of the outbox (:class:`.outbox.Outbox` is one)."""

    store: Store
    recorder: AuditRecorder
    settings: DispatchSettings
    payloads: PayloadFiles
    actor: Actor
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class Withdrawn:
    """What one :func:`withdraw` did for one revision."""

    revision_id: int
    cancelled: tuple[int, ...] = ()  # draft deliveries cancelled (never to be sent)
    queued: tuple[int, ...] = ()  # withdrawal deliveries queued, to ring
    waiting: bool = False  # a draft send is in flight: looked at again once it is recorded


class _ChangedError(RetryableError):
    """A delivery changed under the withdrawal (a dispatcher claimed it first): rolled back, looked at again."""


def why_withdrawn(reassigned_at: datetime | None, rejected_at: datetime | None) -> str | None:
    """Why a revision's draft is withdrawn (None: it is not)."""
    if reassigned_at is not None:
        return REASSIGNED_REASON
    if rejected_at is not None:
        return REJECTED_REASON
    return None


def is_marked(revision: Revision) -> bool:
    """Whether the revision's draft is withdrawn (never to be sent)."""
    return why_withdrawn(revision.reassigned_at, revision.rejected_at) is not None


def sweep(outbox: _Outbox, *, limit: int = SWEEP_BATCH) -> list[Withdrawn]:
    """:func:`withdraw` each marked revision with a draft delivery pending, or with one that reached (or may have
    reached) a peer and no withdrawal queued yet; returns what changed. A revision that fails is logged and looked
    at again next time."""
    draft = sa.and_(OutboxMessage.revision_id == Revision.id, OutboxMessage.kind.in_(DRAFT_KINDS))
    pending = sa.exists().where(draft, OutboxMessage.state == OutboxState.PENDING)
    reached = sa.exists().where(draft, _reached())
    queued = sa.exists().where(OutboxMessage.revision_id == Revision.id, OutboxMessage.kind.in_(WITHDRAWAL_KINDS))
    with outbox.store.session("finding drafts to withdraw") as session:
        ids = list(
            session.scalars(
                sa.select(Revision.id)
                .where(sa.or_(Revision.reassigned_at.is_not(None), Revision.rejected_at.is_not(None)))
                .where(sa.or_(pending, sa.and_(reached, ~queued)))
                .order_by(Revision.id)
                .limit(limit)
            )
        )
    done: list[Withdrawn] = []
    for revision_id in ids:
        try:
            withdrawn = withdraw(outbox, revision_id)
        except RadtraceError as exc:
            log.warning("revision %s: its draft could not be withdrawn yet: %s", revision_id, exc.reason)
            continue
        if withdrawn.cancelled or withdrawn.queued:
            done.append(withdrawn)
    return done


def withdraw(outbox: _Outbox, revision_id: int) -> Withdrawn:
    """Cancel the revision's draft deliveries still pending and queue one withdrawal per peer the draft reached, in
    one transaction (see the module docstring); nothing when the revision is not marked."""
    staged = outbox.payloads.staged()
    try:
        with outbox.store.session("withdrawing a draft", immediate=True) as session:
            done = _withdraw(outbox, session, revision_id, staged)
    except BaseException:
        staged.discard()
        raise
    staged.keep()
    return done


def _withdraw(outbox: _Outbox, session: Session, revision_id: int, staged: StagedPayloads) -> Withdrawn:
    revision = session.scalar(sa.select(Revision).where(Revision.id == revision_id).with_for_update())
    if revision is None:
        raise DispatchRejectedError(f"revision {revision_id} does not exist")
    reason = why_withdrawn(revision.reassigned_at, revision.rejected_at)
    if reason is None:
        return Withdrawn(revision_id)
    rows = list(
        session.scalars(
            sa.select(OutboxMessage).where(OutboxMessage.revision_id == revision_id).order_by(OutboxMessage.id)
        )
    )
    drafts = [row for row in rows if row.kind in DRAFT_KINDS]
    database_now = claims.database_now(session)
    if any(row.state is OutboxState.PENDING and row.claimed_by is not None and row.next_attempt_at > database_now
           for row in drafts):  # fmt: skip
        return Withdrawn(revision_id, waiting=True)  # its outcome decides whether that peer needs a withdrawal
    cancelled = _cancel(session, [row for row in drafts if row.state is OutboxState.PENDING], reason)
    reached = [row for row in drafts if row.state is OutboxState.DELIVERED or row.reached
               or (row.attempts > 0 and row.last_outcome is None)]  # fmt: skip  # as _reached() selects
    existing = {(row.kind, row.destination) for row in rows}
    planned = _plan(outbox, revision, reached, reason, existing)
    queued: list[OutboxMessage] = []
    not_built: list[OutboxMessage] = []
    for item in planned:
        relative, digest = outbox.payloads.store(item.payload, payload_suffix(item.kind, item.destination), staged)
        row = OutboxMessage(revision_id=revision_id, kind=item.kind, destination=item.destination,
                            payload_path=relative, payload_sha256=digest,
                            state=OutboxState.PENDING if item.error is None else OutboxState.FAILED,
                            attempts=0, next_attempt_at=outbox.clock(), last_error=item.error)  # fmt: skip
        session.add(row)
        (queued if item.error is None else not_built).append(row)
    session.flush()
    if not cancelled and not queued and not not_built:
        return Withdrawn(revision_id)
    study = revision.study
    outbox.recorder.record(
        AuditEvent(
            EventType.REPORT_WITHDRAWN,
            outbox.actor,
            outcome=Outcome.SERIOUS_FAILURE if not_built else Outcome.MINOR_FAILURE,
            study_uid=study.study_uid,
            accession=study.accession,
            payload={
                "revision": revision.number,
                "reason": reason,
                "sr_sop_instance_uid": revision.sr_sop_instance_uid,
                "cancelled": [_described(row, attempts=row.attempts) for row in cancelled],
                "withdrawals": [_described(row, sha256=row.payload_sha256) for row in queued],
                "not_built": [_described(row, error=row.last_error) for row in not_built],
            },
        ),
        session=session,
    )
    log.warning(
        "study %s revision %d: draft withdrawn (%d deliveries cancelled, %d withdrawals queued, %d not built): %s",
        study_key(study.study_uid), revision.number, len(cancelled), len(queued), len(not_built), reason,
    )  # fmt: skip
    for row in not_built:
        log.error("study %s revision %d: %s %s: %s", study_key(study.study_uid), revision.number, row.kind,
                  row.destination, row.last_error)  # fmt: skip
    return Withdrawn(revision_id, tuple(row.id for row in cancelled), tuple(row.id for row in queued))


def _described(row: OutboxMessage, **more: object) -> dict[str, object]:
    return {"id": row.id, "kind": row.kind, "destination": row.destination, **more}


def _cancel(session: Session, pending: Sequence[OutboxMessage], reason: str) -> list[OutboxMessage]:
    """Each pending draft delivery, as read (not claimed since, or its lease over), made ``cancelled``: never sent."""
    for row in pending:
        changed = session.execute(
            sa.update(OutboxMessage)
            .where(OutboxMessage.id == row.id, OutboxMessage.state == OutboxState.PENDING,
                   OutboxMessage.attempts == row.attempts, OutboxMessage.next_attempt_at == row.next_attempt_at)
            .values(state=OutboxState.CANCELLED, last_error=f"{CANCELLED_PREFIX}: {reason}", claimed_by=None,
                    heartbeat_at=None)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise _ChangedError(f"outbox row {row.id} was claimed while its draft was being withdrawn")
        session.refresh(row)
    return list(pending)


def _reached() -> sa.ColumnElement[bool]:
    """A draft delivery that reached its peer, or may have: delivered, or ``reached`` (an attempt not refused by the
    peer, or never recorded: :mod:`.outcomes`), or attempted with no outcome ever recorded (a claim not written by
    :meth:`.outbox.Outbox.deliver`'s, e.g. a dispatcher of an earlier release: the safe side). One refused by the
    peer on every attempt, or never attempted, did not: the peer stored nothing, and would refuse the withdrawal
    too."""
    return sa.or_(
        OutboxMessage.state == OutboxState.DELIVERED,
        OutboxMessage.reached.is_(True),
        sa.and_(OutboxMessage.attempts > 0, OutboxMessage.last_outcome.is_(None)),
    )


@dataclass(frozen=True)
class _Planned:
    """One withdrawal to queue: its payload, or why it could not be built (queued ``failed``, never silent)."""

    kind: str
    destination: str
    payload: bytes
    error: str | None = None


def _built(kind: str, destination: str, build: Callable[[], bytes]) -> _Planned:
    """The withdrawal ``build`` makes; one that cannot be built (its draft's payload unreadable, not DICOM or not HL7)
    is planned ``failed`` with the reason, so that it shows and is audited, once, instead of being tried every pass."""
    try:
        return _Planned(kind, destination, build())
    except PermanentError as exc:
        return _Planned(kind, destination, b"", f"{NOT_BUILT_PREFIX}: {exc.reason}")


def _plan(
    outbox: _Outbox, revision: Revision, reached: Sequence[OutboxMessage], reason: str, existing: set[tuple[str, str]]
) -> list[_Planned]:
    """Each withdrawal not queued yet: one rejection note per PACS, one corrected ORU per RIS, and both into the file
    drop folder the draft's files went to, with the FHIR Bundle ``entered-in-error`` where the draft's was dropped."""
    now = outbox.clock()
    planned: list[_Planned] = []

    title = _title(revision)

    def note(rows: Sequence[OutboxMessage], destination: str) -> Callable[[], bytes]:
        return lambda: note_bytes(build_rejection_note([_dataset(outbox, row) for row in rows], reason,
                                                       destination=destination, created_at=now,
                                                       title=title))  # fmt: skip

    def oru(row: OutboxMessage) -> Callable[[], bytes]:
        return lambda: build_withdrawal_oru(_payload(outbox, row), reason, created_at=now).encode()

    pacs: dict[str, list[OutboxMessage]] = {}
    for kind in _PACS_KINDS:
        for row in reached:
            if row.kind == kind:
                pacs.setdefault(row.destination, []).append(row)
    for destination, sent in pacs.items():
        if (KIND_WITHDRAWAL, destination) not in existing:
            planned.append(_built(KIND_WITHDRAWAL, destination, note(sent, destination)))
    for row in reached:
        if row.kind == KIND_HL7 and (KIND_WITHDRAWAL_HL7, row.destination) not in existing:
            planned.append(_built(KIND_WITHDRAWAL_HL7, row.destination, oru(row)))
    files = [row for row in reached if row.kind == KIND_FILE]
    if files and revision.sr_sop_instance_uid:
        stem = Path(files[0].destination).parent / revision.sr_sop_instance_uid
        dicom = sorted((row for row in files if row.destination.endswith(".dcm")),
                       key=lambda row: row.destination != f"{stem}.dcm")  # fmt: skip  # the SR first
        oru_rows = [row for row in files if row.destination.endswith(".hl7")]
        if dicom and (KIND_WITHDRAWAL_FILE, f"{stem}.withdrawal.dcm") not in existing:
            planned.append(_built(KIND_WITHDRAWAL_FILE, f"{stem}.withdrawal.dcm", note(dicom, "file-drop")))
        if oru_rows and (KIND_WITHDRAWAL_FILE, f"{stem}.withdrawal.hl7") not in existing:
            planned.append(_built(KIND_WITHDRAWAL_FILE, f"{stem}.withdrawal.hl7", oru(oru_rows[0])))
        fhir_rows = [row for row in files if row.destination == f"{stem}.fhir.json"]
        if fhir_rows and (KIND_WITHDRAWAL_FILE, f"{stem}.withdrawal.fhir.json") not in existing:
            planned.append(_built(KIND_WITHDRAWAL_FILE, f"{stem}.withdrawal.fhir.json",
                                  lambda: build_withdrawal_fhir(_payload(outbox, fhir_rows[0]), reason,
                                                                created_at=now)))  # fmt: skip
    return planned


def _title(revision: Revision) -> Code:
    """The rejection note's title: the PACS's own (CID 7011) when it rejected the image read, else 113037 (an image
    re-filed under another patient: the draft may be about someone else)."""
    if revision.reassigned_at is None and revision.rejection_code is not None:
        return REJECTION_TITLES.get(revision.rejection_code, REJECTED_FOR_PATIENT_SAFETY)
    return REJECTED_FOR_PATIENT_SAFETY


def _payload(outbox: _Outbox, row: OutboxMessage) -> bytes:
    return outbox.payloads.read(row.payload_path, row.payload_sha256)


def _dataset(outbox: _Outbox, row: OutboxMessage) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(_payload(outbox, row)), stop_before_pixels=True)
    except (InvalidDicomError, ValueError) as exc:
        raise DispatchRejectedError(f"the payload of outbox row {row.id} is not DICOM: {exc}") from exc

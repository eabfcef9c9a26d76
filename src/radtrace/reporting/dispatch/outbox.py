"""The outbox: every report to every destination is a row, delivered with bounded, audited retries.

``enqueue`` stores each payload once (content-addressed files under the payload folder, their SHA-256
in the row) and inserts one ``outbox`` row per (revision, kind, destination); enqueuing again changes
nothing. ``add_assessments`` does the same for a radiologist's assessment SR, one row per PACS and
document (a revision has many; each is its own SR, never an edit of an earlier one), inside the caller's
transaction so that the decision's audit event and its rows are committed together.

A payload file and its row are one step (:mod:`radtrace.store.pending_files`): the file is written under
``<payload folder>/.pending/`` before the rows are committed and moved to its content-addressed name after
(:class:`StagedPayloads`; the caller of ``add_assessments`` keeps or discards them after its commit). After a
crash in between, a row whose file is still pending finds it there when it is delivered (moved then), and
``settle_pending`` (run by ``deliver`` at most every :data:`SETTLE_EVERY_S` in each process, by ``deliver_due``,
and at the console's start-up) keeps the pending files (older than 10 minutes) a committed row names and removes
the others: no payload without its row, no row without its payload, nothing sent twice.
``deliver(outbox_id)`` makes one attempt if the row is pending and due:

1. *claim*: one conditional UPDATE raises ``attempts`` and pushes ``next_attempt_at`` past a lease (longer than the
   longest send may take: the RIS ACK timeout or a C-STORE's timed phases, plus a margin),
   only if nobody else did so first; a concurrent dispatcher (or a doorbell rung twice) finds the row
   not due and does nothing, so one attempt is in flight per row at a time. ``dispatch_attempted`` is
   audited in the same transaction;
2. *send*, outside any transaction, through the sender for the row's kind (C-STORE, MLLP, file drop);
3. *record*: delivered (``dispatch_delivered``), or a retry scheduled with exponential backoff
   (``dispatch_retry_scheduled``), or failed for good after a permanent error or ``max_attempts``
   (``dispatch_failed`` with the reason, visible to QA; never silent). A PACS that rejects the association
   permanently (an AE title it does not know) puts the destination on hold (:mod:`.holds`): this row and every other
   delivery to it wait, held, without an association, until ``radtrace dispatch retry DESTINATION``
   (:mod:`.redelivery`) lifts it once what the reason says is fixed.

If the process dies between claim and record, the lease expires and the row is tried again: delivery
is at-least-once, and the payload is byte-identical each time (same SR UIDs, same HL7 control ID) so
peers can recognise a repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from radtrace.errors import ConfigError, DispatchRejectedError, RadtraceError, is_retryable
from radtrace.reporting.dispatch import holds
from radtrace.reporting.dispatch.cstore import (
    LONGEST_STORE_S,
    AssociationRejectedError,
    describe_destination,
    store_instance,
)
from radtrace.reporting.dispatch.filedrop import drop_file
from radtrace.reporting.dispatch.mllp import send_message
from radtrace.reporting.dispatch.payloads import PayloadFiles, StagedPayloads
from radtrace.store import pending_files
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, Study

__all__ = [
    "ASSESSMENT_KINDS",
    "KIND_ASSESSMENT",
    "KIND_ASSESSMENT_HL7",
    "KIND_COMPANION",
    "KIND_FHIR",
    "KIND_FILE",
    "KIND_GSPS",
    "KIND_HL7",
    "KIND_SR",
    "Delivery",
    "Outbox",
    "PlannedDelivery",
    "ReportFiles",
    "Sender",
    "StagedPayloads",
    "default_senders",
    "planned_deliveries",
]

log = logging.getLogger(__name__)

KIND_SR: Final = "sr"
KIND_GSPS: Final = "gsps"
KIND_COMPANION: Final = "companion"  # the Basic Text SR beside the TID 1500 SR (radtrace.reporting.companion)
KIND_HL7: Final = "hl7"
KIND_FHIR: Final = "fhir"
KIND_FILE: Final = "file"
#: A radiologist's assessment SR (radtrace.console.assessment): not part of the revision's draft, so it neither
#: records ``report_created`` nor counts when settlement decides the revision's dispatched/failed state.
KIND_ASSESSMENT: Final = "assessment"
KIND_ASSESSMENT_HL7: Final = "assessment-hl7"  # the same assessment as an ORU for the RIS (console.assessment_hl7)
#: The kinds that carry a radiologist's assessment, not the revision's draft.
ASSESSMENT_KINDS: Final = (KIND_ASSESSMENT, KIND_ASSESSMENT_HL7)
_SUFFIX: Final = {KIND_SR: ".dcm", KIND_GSPS: ".dcm", KIND_COMPANION: ".dcm", KIND_HL7: ".hl7", KIND_FHIR: ".json",
                  KIND_ASSESSMENT: ".dcm", KIND_ASSESSMENT_HL7: ".hl7"}  # fmt: skip
LEASE_MARGIN_S: Final = 60.0  # a claim outlasts the longest send by this much
#: How often a dispatcher settles payloads a crash left pending (:meth:`Outbox.settle_pending`), at most.
SETTLE_EVERY_S: Final = 600.0


def _suffix(kind: str, destination: str) -> str:
    """A payload file's suffix: by kind, or the file-drop destination's own, else ``.bin``."""
    return _SUFFIX.get(kind) or "".join(Path(destination).suffixes[-2:]) or ".bin"


def longest_send_s(settings: DispatchSettings) -> float:
    """How long one send may take at most: the RIS's ACK timeout (one deadline for connect, send and ACK), or a
    C-STORE's timed phases."""
    return max(settings.ris.timeout_s if settings.ris is not None else 0.0, LONGEST_STORE_S)


class Sender(Protocol):
    """Delivers one payload to one destination; returns a note to keep (e.g. a DICOM warning) or None.

    Raises a retryable radtrace error when a later attempt may succeed, a permanent one otherwise.
    """

    def __call__(self, destination: str, payload: bytes) -> str | None: ...


@dataclass(frozen=True)
class ReportFiles:
    """The built reports of one revision, as bytes."""

    sr_sop_instance_uid: str
    sr: bytes
    hl7: bytes | None = None
    fhir: bytes | None = None
    gsps: bytes | None = None
    companion: bytes | None = None


@dataclass(frozen=True)
class PlannedDelivery:
    """One payload for one destination."""

    kind: str
    destination: str
    payload: bytes


@dataclass(frozen=True)
class Delivery:
    """What one ``deliver`` call did."""

    outbox_id: int
    state: OutboxState
    attempted: bool
    attempts: int
    error: str | None = None
    held: bool = False  # its destination is on hold (radtrace.reporting.dispatch.holds): it waits, pending


def planned_deliveries(settings: DispatchSettings, reports: ReportFiles) -> list[PlannedDelivery]:
    """Every (kind, destination, payload) the settings ask for: each PACS, the RIS, the file drop."""
    planned = [PlannedDelivery(KIND_SR, describe_destination(pacs), reports.sr) for pacs in settings.pacs]
    if reports.gsps is not None:
        planned += [PlannedDelivery(KIND_GSPS, describe_destination(pacs), reports.gsps) for pacs in settings.pacs]
    if reports.companion is not None:
        planned += [
            PlannedDelivery(KIND_COMPANION, describe_destination(pacs), reports.companion) for pacs in settings.pacs
        ]
    if settings.ris is not None and reports.hl7 is not None:
        planned.append(PlannedDelivery(KIND_HL7, f"{settings.ris.host}:{settings.ris.port}", reports.hl7))
    if settings.file_drop_dir is not None:
        stem = settings.file_drop_dir / reports.sr_sop_instance_uid  # a UID: no patient data in names
        planned.append(PlannedDelivery(KIND_FILE, f"{stem}.dcm", reports.sr))
        if reports.hl7 is not None:
            planned.append(PlannedDelivery(KIND_FILE, f"{stem}.hl7", reports.hl7))
        if reports.fhir is not None:
            planned.append(PlannedDelivery(KIND_FILE, f"{stem}.fhir.json", reports.fhir))
        if reports.gsps is not None:
            planned.append(PlannedDelivery(KIND_FILE, f"{stem}.gsps.dcm", reports.gsps))
        if reports.companion is not None:
            planned.append(PlannedDelivery(KIND_FILE, f"{stem}.companion.dcm", reports.companion))
    return planned


def default_senders(settings: DispatchSettings) -> dict[str, Sender]:
    """The production senders for each kind, bound to the configured destinations."""
    pacs = {describe_destination(destination): destination for destination in settings.pacs}

    def send_sr(destination: str, payload: bytes) -> str | None:  # the SR, the GSPS or the companion
        if destination not in pacs:
            raise ConfigError(f"PACS destination {destination} is no longer configured (dispatch.pacs)")
        return store_instance(payload, pacs[destination], calling_ae_title=settings.calling_ae_title).warning

    def send_hl7(destination: str, payload: bytes) -> str | None:
        ris = settings.ris
        if ris is None or destination != f"{ris.host}:{ris.port}":  # the draft's ORU or an assessment's
            raise ConfigError(f"RIS destination {destination} is no longer configured (dispatch.ris)")
        ack = send_message(payload, ris.host, ris.port, timeout_s=ris.timeout_s)
        return None if ack.code == "AA" else f"ACK {ack.code}"

    def send_file(destination: str, payload: bytes) -> str | None:
        drop_file(payload, Path(destination))
        return None

    return {KIND_SR: send_sr, KIND_GSPS: send_sr, KIND_COMPANION: send_sr, KIND_ASSESSMENT: send_sr,
            KIND_HL7: send_hl7, KIND_ASSESSMENT_HL7: send_hl7, KIND_FILE: send_file}  # fmt: skip


class Outbox:
    """Enqueues and delivers outbound reports; the only writer of ``outbox`` rows."""

    def __init__(
        self,
        store: Store,
        recorder: AuditRecorder,
        settings: DispatchSettings,
        payload_dir: Path,
        *,
        senders: Mapping[str, Sender] | None = None,
        clock: Callable[[], datetime] = utc_now,
        actor: Actor | None = None,
        lease_s: float = 300.0,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.settings = settings
        self.payload_dir = payload_dir
        self.payloads = PayloadFiles(payload_dir)
        self.senders = dict(senders) if senders is not None else default_senders(settings)
        self.clock = clock
        self.actor = actor or Actor()
        # A claim that ran out while its send still waited would let a second dispatcher send the row again.
        self.lease = timedelta(seconds=max(lease_s, longest_send_s(settings) + LEASE_MARGIN_S))
        self._settled_at = -SETTLE_EVERY_S  # monotonic time of the last settle_pending (none yet)

    # --- enqueue -------------------------------------------------------------------------------

    def staged(self) -> StagedPayloads:
        """An empty set of pending payloads for :meth:`add_assessments`."""
        return self.payloads.staged()

    def settle_pending(self, *, min_age_s: float = 600.0) -> tuple[int, int]:
        """After a crash: keep each pending payload (older than ``min_age_s``) that a committed row names, remove
        the others; returns (kept, removed)."""

        def kept_as(paths: list[Path]) -> dict[Path, str | None]:
            wanted = {path: relative for path in paths if (relative := PayloadFiles.kept_as(path)) is not None}
            with self.store.session("finding the rows of pending payloads") as session:
                named = set(
                    session.scalars(
                        sa.select(OutboxMessage.payload_path).where(
                            OutboxMessage.payload_path.in_(sorted(set(wanted.values())))
                        )
                    )
                )
            return {path: relative for path, relative in wanted.items() if relative in named}

        kept, removed = pending_files.settle(self.payload_dir, kept_as, min_age_s=min_age_s)
        if kept or removed:
            log.warning("outbox: %d payloads kept and %d removed after an interrupted enqueue", kept, removed)
        return kept, removed

    def enqueue(
        self,
        revision_id: int,
        deliveries: Sequence[PlannedDelivery],
        *,
        sr_sop_instance_uid: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        drafts: Sequence[Mapping[str, str]] = (),
    ) -> list[int]:
        """Store the payloads and add one pending row per delivery (existing rows are kept as they are).

        Records ``report_created`` naming the SR, each payload's SHA-256 and the kept ``drafts`` (kind, path
        under the drafts folder, SHA-256; see :mod:`radtrace.reporting.draft_store`). Returns the row IDs.
        """
        staged = self.staged()
        try:
            ids = self._enqueue(revision_id, deliveries, staged, sr_sop_instance_uid, model_name, model_version, drafts)
        except BaseException:
            staged.discard()
            raise
        staged.keep()
        return ids

    def _enqueue(
        self,
        revision_id: int,
        deliveries: Sequence[PlannedDelivery],
        staged: StagedPayloads,
        sr_sop_instance_uid: str | None,
        model_name: str | None,
        model_version: str | None,
        drafts: Sequence[Mapping[str, str]],
    ) -> list[int]:
        stored = [(d, *self.payloads.store(d.payload, _suffix(d.kind, d.destination), staged)) for d in deliveries]
        with self.store.session("enqueueing reports", immediate=True) as session:
            revision = session.get(Revision, revision_id)
            if revision is None:
                raise DispatchRejectedError(f"revision {revision_id} does not exist")
            ids: list[int] = []
            for delivery, relative, digest in stored:
                row = session.scalar(
                    sa.select(OutboxMessage).where(
                        OutboxMessage.revision_id == revision_id,
                        OutboxMessage.kind == delivery.kind,
                        OutboxMessage.destination == delivery.destination,
                        OutboxMessage.document_uid == "",
                    )
                )
                if row is None:
                    row = OutboxMessage(
                        revision_id=revision_id,
                        kind=delivery.kind,
                        destination=delivery.destination,
                        payload_path=relative,
                        payload_sha256=digest,
                        state=OutboxState.PENDING,
                        attempts=0,
                        next_attempt_at=self.clock(),
                    )
                    session.add(row)
                    session.flush()
                ids.append(row.id)
            if sr_sop_instance_uid is not None:
                revision.sr_sop_instance_uid = sr_sop_instance_uid
            study = revision.study
            self.recorder.record(
                AuditEvent(
                    EventType.REPORT_CREATED,
                    self.actor,
                    study_uid=study.study_uid,
                    accession=study.accession,
                    model_name=model_name,
                    model_version=model_version,
                    payload={
                        "revision": revision.number,
                        "sr_sop_instance_uid": sr_sop_instance_uid,
                        "drafts": [dict(draft) for draft in drafts],
                        "outbox": [
                            {"id": i, "kind": d.kind, "destination": d.destination, "sha256": digest}
                            for i, (d, _, digest) in zip(ids, stored, strict=True)
                        ],
                    },
                ),
                session=session,
            )
        return ids

    def add_assessments(
        self, session: Session, revision_id: int, document_uid: str, payload: bytes, hl7: bytes | None = None, *,
        staged: StagedPayloads,
    ) -> list[dict[str, object]]:  # fmt: skip
        """Store an assessment SR and add one pending row per configured PACS (and, given ``hl7``, one for the RIS
        with that ORU), in ``session``: the caller's transaction, which records the decision's audit event naming
        these rows (no ``report_created``). The payload files are written pending into ``staged``
        (:meth:`staged`): the caller keeps them after its commit, or discards them.

        Keyed by (revision, kind, destination, ``document_uid``): adding the same SR again adds nothing and
        returns the rows it has. Returns ``{"id", "kind", "destination", "sha256"}`` per row (none when no
        destination is configured).
        """
        if not document_uid or len(document_uid) > 64:
            raise DispatchRejectedError("an assessment SR needs its SOP Instance UID (at most 64 characters)")
        if session.get(Revision, revision_id) is None:
            raise DispatchRejectedError(f"revision {revision_id} does not exist")
        planned = [(KIND_ASSESSMENT, describe_destination(pacs), payload) for pacs in self.settings.pacs]
        if hl7 is not None and self.settings.ris is not None:
            planned.append((KIND_ASSESSMENT_HL7, f"{self.settings.ris.host}:{self.settings.ris.port}", hl7))
        rows: list[dict[str, object]] = []
        for kind, destination, data in planned:
            relative, digest = self.payloads.store(data, _suffix(kind, destination), staged)
            row = session.scalar(
                sa.select(OutboxMessage).where(
                    OutboxMessage.revision_id == revision_id,
                    OutboxMessage.kind == kind,
                    OutboxMessage.destination == destination,
                    OutboxMessage.document_uid == document_uid,
                )
            )
            if row is None:
                row = OutboxMessage(
                    revision_id=revision_id,
                    kind=kind,
                    destination=destination,
                    document_uid=document_uid,
                    payload_path=relative,
                    payload_sha256=digest,
                    state=OutboxState.PENDING,
                    attempts=0,
                    next_attempt_at=self.clock(),
                )
                session.add(row)
                session.flush()
            rows.append({"id": row.id, "kind": row.kind, "destination": row.destination, "sha256": row.payload_sha256})
        return rows

    def earlier_srs(self, revision_id: int, *, except_revisions: Collection[int] = ()) -> list[Dataset]:
        """The SRs enqueued for the study's earlier revisions (for Predecessor Documents), oldest first.

        Read from the stored payloads (whatever their destination), one per SOP Instance UID: TID 1500
        drafts and companion documents alike (:func:`radtrace.reporting.drafts.build_drafts` tells them
        apart by SOP Class). The revisions numbered in ``except_revisions`` are left out unread: the caller has
        their SRs already (the kept drafts, :func:`radtrace.reporting.draft_store.kept_srs`).
        """
        with self.store.session("finding earlier SRs") as session:
            revision = session.get(Revision, revision_id)
            if revision is None:
                raise DispatchRejectedError(f"revision {revision_id} does not exist")
            rows = session.execute(
                sa.select(OutboxMessage.payload_path, OutboxMessage.payload_sha256)
                .join(Revision, OutboxMessage.revision_id == Revision.id)
                .where(
                    Revision.study_id == revision.study_id,
                    Revision.number < revision.number,
                    Revision.number.not_in(sorted(except_revisions)),
                    OutboxMessage.payload_path.like("%.dcm"),
                    OutboxMessage.kind.not_in([KIND_GSPS, KIND_ASSESSMENT]),  # not drafts: never predecessors
                )
                .order_by(Revision.number, OutboxMessage.id)
            ).all()
        found: dict[str, Dataset] = {}
        for path in dict.fromkeys(path for path, _ in rows):  # one file per payload; order kept
            try:
                dataset = pydicom.dcmread(self.payload_dir / path, stop_before_pixels=True)
            except (OSError, InvalidDicomError) as exc:
                raise DispatchRejectedError(f"earlier SR payload {path} cannot be read: {exc}") from exc
            if str(dataset.get("Modality", "")) == "SR":
                found.setdefault(str(dataset.SOPInstanceUID), dataset)
        return list(found.values())

    # --- deliver -------------------------------------------------------------------------------

    def backoff(self, attempts: int) -> timedelta:
        """Delay before the next attempt after ``attempts`` failed ones: doubling, capped."""
        seconds = self.settings.backoff_initial_s * 2 ** max(0, attempts - 1)
        return timedelta(seconds=min(seconds, self.settings.backoff_max_s))

    def due(self) -> list[int]:
        """IDs of pending rows whose next attempt is due, oldest first."""
        with self.store.session("listing due outbox rows") as session:
            rows = session.scalars(
                sa.select(OutboxMessage.id)
                .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.next_attempt_at <= self.clock())
                .where(OutboxMessage.destination.not_in(holds.held()))
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            )
            return list(rows)

    def deliver_due(self) -> list[Delivery]:
        """One attempt for every due row (what a dispatcher's reconcile loop runs), after settling payloads left
        pending by a crash (:meth:`settle_pending`)."""
        self._settle(every_s=0.0)
        return [self.deliver(outbox_id) for outbox_id in self.due()]

    def _settle(self, every_s: float = SETTLE_EVERY_S) -> None:
        """:meth:`settle_pending` unless this outbox did so less than ``every_s`` ago; a failure is logged only (the
        rows are delivered all the same; the next time tries again)."""
        now = time.monotonic()
        if now - self._settled_at < every_s:
            return
        self._settled_at = now
        try:
            self.settle_pending()
        except (OSError, RadtraceError) as exc:
            log.warning("outbox: pending payloads could not be settled: %s", type(exc).__name__)

    def _event(
        self, row: OutboxMessage, study: Study, kind: EventType, outcome: Outcome, **details: object
    ) -> AuditEvent:
        payload: dict[str, object] = {
            "outbox_id": row.id,
            "kind": row.kind,
            "destination": row.destination,
            "attempt": row.attempts,
            "payload_sha256": row.payload_sha256,
        }
        payload.update({key: value for key, value in details.items() if value is not None})
        return AuditEvent(
            kind, self.actor, outcome, study_uid=study.study_uid, accession=study.accession, payload=payload
        )

    def _claim(self, outbox_id: int) -> tuple[OutboxMessage, Study] | Delivery:
        now = self.clock()
        with self.store.session("claiming an outbox row", immediate=True) as session:
            row = session.get(OutboxMessage, outbox_id)
            if row is None:
                raise DispatchRejectedError(f"outbox row {outbox_id} does not exist")
            if row.state is not OutboxState.PENDING or row.next_attempt_at > now:
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts)
            hold = holds.hold_of(session, row.destination)
            if hold is not None:  # no association, no attempt, no event: looked at again later only to find the hold
                row.next_attempt_at = now + holds.recheck_after(self.settings)
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts, error=hold.reason,
                                held=True)  # fmt: skip
            claimed = session.execute(
                sa.update(OutboxMessage)
                .where(
                    OutboxMessage.id == outbox_id,
                    OutboxMessage.state == OutboxState.PENDING,
                    OutboxMessage.attempts == row.attempts,
                    OutboxMessage.next_attempt_at <= now,
                )
                .values(attempts=row.attempts + 1, next_attempt_at=now + self.lease)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]  # someone else claimed it first
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts)
            session.refresh(row)
            study = row.revision.study
            self.recorder.record(
                self._event(row, study, EventType.DISPATCH_ATTEMPTED, Outcome.SUCCESS), session=session
            )
            return row, study

    def deliver(self, outbox_id: int) -> Delivery:
        """Make one attempt for one row if it is pending and due (see the module docstring); now and then (every
        :data:`SETTLE_EVERY_S`) settle the payloads a crash left pending first."""
        self._settle()
        claimed = self._claim(outbox_id)
        if isinstance(claimed, Delivery):
            return claimed
        row, _ = claimed
        note: str | None = None
        error: RadtraceError | None = None
        try:
            sender = self.senders.get(row.kind)
            if sender is None:
                raise ConfigError(f"no sender for outbox kind {row.kind!r}")
            note = sender(row.destination, self.payloads.read(row.payload_path, row.payload_sha256))
        except RadtraceError as exc:
            error = exc
        except Exception as exc:  # a bug in a sender must not leave the row claimed and unexplained
            log.exception("unexpected error delivering outbox row %s", outbox_id)
            error = DispatchRejectedError(f"unexpected {type(exc).__name__}: {exc}")
        return self._record(outbox_id, note, error)

    def _record(self, outbox_id: int, note: str | None, error: RadtraceError | None) -> Delivery:
        now = self.clock()
        with self.store.session("recording a delivery attempt", immediate=True) as session:
            row = session.get(OutboxMessage, outbox_id)
            assert row is not None  # claimed a moment ago; rows are never deleted
            study = row.revision.study
            if error is None:
                row.state, row.delivered_at, row.last_error = OutboxState.DELIVERED, now, note
                event = self._event(row, study, EventType.DISPATCH_DELIVERED, Outcome.SUCCESS, note=note)
            elif is_retryable(error) and row.attempts < self.settings.max_attempts:
                row.next_attempt_at, row.last_error = now + self.backoff(row.attempts), error.reason
                event = self._event(
                    row,
                    study,
                    EventType.DISPATCH_RETRY_SCHEDULED,
                    Outcome.MINOR_FAILURE,
                    error=error.reason,
                    next_attempt_at=row.next_attempt_at.isoformat(),
                )
            elif isinstance(error, AssociationRejectedError):  # a configuration to fix: the destination waits for it
                event = self._held(session, row, study, error, now)
            else:
                reason = (
                    error.reason
                    if not is_retryable(error)
                    else f"gave up after {row.attempts} attempts: {error.reason}"
                )
                row.state, row.last_error = OutboxState.FAILED, reason
                event = self._event(row, study, EventType.DISPATCH_FAILED, Outcome.SERIOUS_FAILURE, error=reason)
            self.recorder.record(event, session=session)
            log.info("outbox %s %s %s: %s (attempt %d)", outbox_id, row.kind, row.destination, row.state, row.attempts)
            held_now = isinstance(error, AssociationRejectedError)
            error_text = row.last_error if error else None
            return Delivery(
                outbox_id, row.state, attempted=True, attempts=row.attempts, error=error_text, held=held_now
            )

    def _held(
        self, session: Session, row: OutboxMessage, study: Study, error: AssociationRejectedError, now: datetime
    ) -> AuditEvent:
        """A permanent rejection: the row waits, held, and the destination goes on hold unless it is already (a
        concurrent refusal was first). The hold's event is ``dispatch_failed`` (``hold: placed``), said once; a
        refusal after it closes its attempt as ``dispatch_retry_scheduled`` waiting for the hold."""
        # The hold first, the row's update after: the order a lift takes its locks in (no deadlock with one).
        placed = holds.place_hold(session, self.settings, row, error, now)
        row.next_attempt_at, row.last_error = now + holds.recheck_after(self.settings), error.reason
        if placed:
            log.warning("outbox %s: %s is on hold: %s", row.id, row.destination, error.reason)
            details = {"error": error.reason, **holds.hold_payload(holds.PLACED, now, error.reason),
                       "rejection": error.rejection.codes}  # fmt: skip
            return self._event(row, study, EventType.DISPATCH_FAILED, Outcome.SERIOUS_FAILURE, **details)
        hold = holds.hold_of(session, row.destination)
        waits = holds.hold_payload(holds.HELD, hold.held_since, hold.reason) if hold is not None else {}
        return self._event(row, study, EventType.DISPATCH_RETRY_SCHEDULED, Outcome.MINOR_FAILURE, error=error.reason,
                           **waits)  # fmt: skip

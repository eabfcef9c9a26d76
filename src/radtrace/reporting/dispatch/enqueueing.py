"""The outbox's enqueue half: its rows and payload files are added here; delivered by :class:`radtrace.reporting.
dispatch.outbox.Outbox`, which is this class with the delivery half.

``enqueue`` stores each payload once (content-addressed files under the payload folder, their SHA-256
in the row) and inserts one ``outbox`` row per (revision, kind, destination); enqueuing again changes
nothing. ``add_assessments`` does the same for a radiologist's assessment SR, one row per PACS and
document (a revision has many; each is its own SR, never an edit of an earlier one), inside the caller's
transaction so that the decision's audit event and its rows are committed together.

A payload file and its row are one step (:mod:`radtrace.store.pending_files`): the file is written under
``<payload folder>/.pending/`` before the rows are committed and moved to its content-addressed name after
(:class:`StagedPayloads`; the caller of ``add_assessments`` keeps or discards them after its commit). After a
crash in between, a row whose file is still pending finds it there when it is delivered (moved then), and
``settle_pending`` (run by ``deliver`` at most every :data:`.outbox.SETTLE_EVERY_S` in each process, by ``deliver_due``,
and at the console's start-up) keeps the pending files (older than 10 minutes) a committed row names and removes
the others: no payload without its row, no row without its payload, nothing sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pydicom
import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings
from radtrace.errors import DispatchRejectedError
from radtrace.reporting.dispatch.cstore import describe_destination
from radtrace.reporting.dispatch.kinds import (
    KIND_ASSESSMENT,
    KIND_ASSESSMENT_FILE,
    KIND_ASSESSMENT_HL7,
    KIND_GSPS,
    NOT_DRAFT_KINDS,
    PlannedDelivery,
    file_drop_deliveries,
    payload_suffix,
)
from radtrace.reporting.dispatch.payloads import PayloadFiles, StagedPayloads
from radtrace.store import pending_files
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision

__all__ = ["OutboxRows"]

log = logging.getLogger("radtrace.reporting.dispatch.outbox")  # one logger for the outbox, as before the split


class OutboxRows:
    """Adds the outbox's rows and payload files (the state is set by :class:`radtrace.reporting.dispatch.outbox.
    Outbox`)."""

    store: Store
    recorder: AuditRecorder
    settings: DispatchSettings
    payload_dir: Path
    payloads: PayloadFiles
    clock: Callable[[], datetime]
    actor: Actor

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
        stored = [
            (d, *self.payloads.store(d.payload, payload_suffix(d.kind, d.destination), staged)) for d in deliveries
        ]
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
        with that ORU), and with ``dispatch.file_drop_dir`` one per file (``<SR UID>.assessment.dcm`` and, given
        ``hl7``, ``<SR UID>.assessment.hl7``), in ``session``: the caller's transaction, which records the decision's
        audit event naming these rows (no ``report_created``). The payload files are written pending into ``staged``
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
        dropped = [(".assessment.dcm", payload), (".assessment.hl7", hl7)]  # named apart from the drafts' files
        planned += [
            (d.kind, d.destination, d.payload)
            for d in file_drop_deliveries(self.settings, KIND_ASSESSMENT_FILE, document_uid, dropped)
        ]
        rows: list[dict[str, object]] = []
        for kind, destination, data in planned:
            relative, digest = self.payloads.store(data, payload_suffix(kind, destination), staged)
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
            payloads = self.earlier_sr_payloads(session, revision_id, except_revisions=except_revisions)
        return self.read_earlier_srs(payloads)

    def earlier_sr_payloads(
        self, session: Session, revision_id: int, *, except_revisions: Collection[int] = ()
    ) -> list[tuple[int, str]]:
        """The payloads :meth:`earlier_srs` reads, found in the caller's session (nothing read from disk): (revision
        number, payload path) of each SR row of the study's earlier revisions but those numbered in
        ``except_revisions``, oldest revision first. The worker finds these and the withdrawn revisions in one
        transaction (:meth:`radtrace.worker.reading_record.ReadingRecord.predecessors`)."""
        revision = session.get(Revision, revision_id)
        if revision is None:
            raise DispatchRejectedError(f"revision {revision_id} does not exist")
        rows = session.execute(
            sa.select(Revision.number, OutboxMessage.payload_path)
            .join(Revision, OutboxMessage.revision_id == Revision.id)
            .where(
                Revision.study_id == revision.study_id,
                Revision.number < revision.number,
                Revision.number.not_in(sorted(except_revisions)),
                OutboxMessage.payload_path.like("%.dcm"),
                OutboxMessage.kind.not_in([KIND_GSPS, *NOT_DRAFT_KINDS]),  # not drafts: never predecessors
            )
            .order_by(Revision.number, OutboxMessage.id)
        ).all()
        return [(int(number), str(path)) for number, path in rows]

    def read_earlier_srs(self, payloads: Sequence[tuple[int, str]], *, have: Collection[int] = ()) -> list[Dataset]:
        """The SR documents of ``payloads`` (:meth:`earlier_sr_payloads`), headers only, in their order, one per SOP
        Instance UID and each file read once; those of the revisions numbered in ``have`` are left out unread (the
        caller has their SRs already). A payload that cannot be read is a :class:`DispatchRejectedError`."""
        found: dict[str, Dataset] = {}
        for path in dict.fromkeys(path for number, path in payloads if number not in have):  # order kept
            try:
                dataset = pydicom.dcmread(self.payload_dir / path, stop_before_pixels=True)
            except (OSError, InvalidDicomError) as exc:
                raise DispatchRejectedError(f"earlier SR payload {path} cannot be read: {exc}") from exc
            if str(dataset.get("Modality", "")) == "SR":
                found.setdefault(str(dataset.SOPInstanceUID), dataset)
        return list(found.values())

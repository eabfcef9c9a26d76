"""The work tables: the single source of truth for every study, revision, instance, job and message.

A Celery message carries only the IDs of these rows (DESIGN.md, principle 1). State names follow the
study lifecycle contract::

    receiving → queued → processing → reported → dispatched      or  skipped(reason) / failed(reason)

This module holds the shape of the data, not the rules for moving between states; those live in
the packages that own each step.
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from radtrace.store.base import Base, UtcDateTime, utc_now

__all__ = [
    "DeliveryOutcome",
    "Instance",
    "Job",
    "JobState",
    "OutboxMessage",
    "OutboxState",
    "Priority",
    "Revision",
    "RevisionState",
    "Study",
]

UID = sa.String(64)  # DICOM UI VR: at most 64 characters
SHA256_HEX = sa.String(64)


class RevisionState(enum.StrEnum):
    """Where one revision of a study is in its lifecycle."""

    RECEIVING = "receiving"
    QUEUED = "queued"
    PROCESSING = "processing"
    REPORTED = "reported"
    DISPATCHED = "dispatched"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """Whether nothing more will happen to the revision without an operator."""
        return self in {RevisionState.DISPATCHED, RevisionState.SKIPPED, RevisionState.FAILED}


class Priority(enum.StrEnum):
    """How urgently a revision is read: STAT ones go before routine ones."""

    ROUTINE = "routine"
    STAT = "stat"


class JobState(enum.StrEnum):
    """One attempt at one step."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"


class OutboxState(enum.StrEnum):
    """Delivery state of one outbound message to one destination."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    #: Never to be sent, on purpose: a draft delivery of a revision whose draft was withdrawn before it was sent
    #: (radtrace.reporting.dispatch.withdrawals). Settled, never retried, never a failed delivery.
    CANCELLED = "cancelled"


class DeliveryOutcome(enum.StrEnum):
    """How the last recorded attempt of one delivery ended (radtrace.reporting.dispatch.outcomes)."""

    DELIVERED = "delivered"
    #: The peer answered that it did not take it (a C-STORE failure status, an HL7 AE/AR/CE/CR, an association it
    #: rejected, a SOP class or PDU size it refused): it stored nothing.
    REFUSED = "refused"
    #: No answer, a timeout, a dropped connection, or any other error: the peer may have stored it.
    FAILED = "failed"


def _enum(enum_type: type[enum.StrEnum], name: str) -> sa.Enum:
    # Stored as short strings with a CHECK constraint: readable in SQL and portable to SQLite.
    return sa.Enum(
        enum_type,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Study(Base):
    """One DICOM study as radtrace knows it. Its state is that of its latest revision."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_key: Mapped[str] = mapped_column(sa.String(16), index=True, doc="hashed key, the only one used in logs")
    accession: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    study_description: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    last_instance_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    revisions: Mapped[list[Revision]] = relationship(back_populates="study", order_by="Revision.number")
    instances: Mapped[list[Instance]] = relationship(back_populates="study")


class Revision(Base):
    """A set of instances processed together. Instances arriving after a revision was queued open the next one."""

    __tablename__ = "revisions"
    __table_args__ = (
        sa.UniqueConstraint("study_id", "number"),
        sa.Index("ix_revisions_state_finished_at", "state", "finished_at"),  # the QA dashboard's skips and failures
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id"), index=True)
    number: Mapped[int] = mapped_column(doc="1 for the first revision of a study")
    state: Mapped[RevisionState] = mapped_column(
        _enum(RevisionState, "revision_state"), default=RevisionState.RECEIVING, index=True
    )
    reason: Mapped[str | None] = mapped_column(sa.Text, doc="why it was skipped or failed")
    attempts: Mapped[int] = mapped_column(default=0)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, index=True)
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reported_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(255), doc="the worker processing it")
    claim_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, doc="after this another worker may take it")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, doc="a retry of a queued revision is due")
    rung_at: Mapped[datetime | None] = mapped_column(UtcDateTime, doc="the reconciler last rang its doorbell")
    priority: Mapped[Priority] = mapped_column(
        _enum(Priority, "revision_priority"), default=Priority.ROUTINE, server_default=Priority.ROUTINE.value
    )
    reassigned_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime,
        index=True,
        doc="an image it read was re-sent by the PACS under another patient or study (first time)",
    )
    rejected_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime,
        index=True,
        doc="an image it read was rejected by the PACS: an IHE IOCM rejection note (first time)",
    )
    rejection_code: Mapped[str | None] = mapped_column(
        sa.String(16), doc="the title (DCM code, CID 7011) of the rejection note that set rejected_at"
    )
    # A radiologist checked the flags above (radtrace.console.flag_checks): accepting its draft is allowed from then
    # on; a later mark clears the check (it did not cover it).
    flags_checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, doc="its flags were checked")
    flags_checked_by: Mapped[str | None] = mapped_column(sa.String(255), doc="the console user who checked them")
    flags_checked_reason: Mapped[str | None] = mapped_column(sa.Text, doc="what they checked, in their words")

    study: Mapped[Study] = relationship(back_populates="revisions")
    instances: Mapped[list[Instance]] = relationship(back_populates="revision")
    jobs: Mapped[list[Job]] = relationship(back_populates="revision")
    outbox: Mapped[list[OutboxMessage]] = relationship(back_populates="revision")


class Instance(Base):
    """One received SOP instance as spooled: where it is, what it is, and its bytes' hash."""

    __tablename__ = "instances"
    __table_args__ = (
        sa.UniqueConstraint("sop_instance_uid", "version"),
        # The QA dashboard: a revision's last image (index-only), and the input mix per day.
        sa.Index("ix_instances_revision_received", "revision_id", "received_at"),
        sa.Index(
            "ix_instances_received_mix",
            "received_at",
            "transfer_syntax_uid",
            "modality",
            "body_part",
            "sop_class_uid",
            "calling_ae",
            "manufacturer",
            "manufacturer_model",
            "photometric",
            "pixel_spacing_mm",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id"), index=True)
    revision_id: Mapped[int] = mapped_column(sa.ForeignKey("revisions.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    version: Mapped[int] = mapped_column(default=1, doc="a different object under the same SOP UID is version 2…")
    sop_class_uid: Mapped[str] = mapped_column(UID)
    series_uid: Mapped[str | None] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    modality: Mapped[str | None] = mapped_column(sa.String(16))
    body_part: Mapped[str | None] = mapped_column(sa.String(16), doc="Body Part Examined as sent")
    requested_priority: Mapped[str | None] = mapped_column(sa.String(16), doc="Requested Procedure Priority as sent")
    # The input mix QA watches for drift (radtrace.console.dashboard), as sent; NULL before migration 0009.
    manufacturer: Mapped[str | None] = mapped_column(sa.String(64), doc="Manufacturer (0008,0070)")
    manufacturer_model: Mapped[str | None] = mapped_column(sa.String(64), doc="Manufacturer's Model Name (0008,1090)")
    photometric: Mapped[str | None] = mapped_column(sa.String(16), doc="Photometric Interpretation (0028,0004)")
    pixel_spacing_mm: Mapped[float | None] = mapped_column(
        sa.Float, doc="row spacing in mm: Imager Pixel Spacing (0018,1164), else Pixel Spacing (0028,0030)"
    )
    deviations: Mapped[list[dict[str, str]] | None] = mapped_column(
        sa.JSON(none_as_null=True),
        doc="header deviations it was accepted with: [{tag, keyword, problem}], never values",
    )
    path: Mapped[str] = mapped_column(sa.Text, doc="relative to the spool directory")
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(SHA256_HEX, index=True)
    calling_ae: Mapped[str | None] = mapped_column(sa.String(16))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    rejected_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, doc="an IHE IOCM rejection note named this version: no later reading reads it"
    )
    rejection_code: Mapped[str | None] = mapped_column(
        sa.String(16), doc="the title (DCM code, CID 7011) of the rejection note that set rejected_at"
    )

    study: Mapped[Study] = relationship(back_populates="instances")
    revision: Mapped[Revision] = relationship(back_populates="instances")


class Job(Base):
    """One attempt at one step for one revision (process or dispatch), for retries and timelines."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    revision_id: Mapped[int] = mapped_column(sa.ForeignKey("revisions.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    attempt: Mapped[int]
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), default=JobState.RUNNING)
    worker: Mapped[str | None] = mapped_column(sa.String(255))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(sa.Text)

    revision: Mapped[Revision] = relationship(back_populates="jobs")


class OutboxMessage(Base):
    """One report to deliver to one destination; delivered only when the peer confirmed receipt."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("revision_id", "kind", "destination", "document_uid"),
        # The QA dashboard: when a revision's draft SR first reached a PACS, and deliveries per day.
        sa.Index("ix_outbox_revision_delivered", "revision_id", "kind", "state", "delivered_at"),
        sa.Index("ix_outbox_kind_delivered", "kind", "state", "delivered_at", "revision_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    revision_id: Mapped[int] = mapped_column(sa.ForeignKey("revisions.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16), doc="see radtrace.reporting.dispatch.outbox KIND_*")
    destination: Mapped[str] = mapped_column(sa.String(255))
    document_uid: Mapped[str] = mapped_column(
        sa.String(64), default="", server_default="",
        doc="the SOP Instance UID of an assessment SR (several per revision); empty for the revision's draft",
    )  # fmt: skip
    payload_path: Mapped[str] = mapped_column(sa.Text)
    payload_sha256: Mapped[str] = mapped_column(SHA256_HEX)
    state: Mapped[OutboxState] = mapped_column(
        _enum(OutboxState, "outbox_state"), default=OutboxState.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, index=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    claimed_by: Mapped[str | None] = mapped_column(
        sa.String(512), doc="the dispatcher sending it now (radtrace.reporting.dispatch.claims); None between attempts"
    )
    heartbeat_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, doc="renewed by that dispatcher while its send is in flight"
    )
    last_outcome: Mapped[DeliveryOutcome | None] = mapped_column(
        _enum(DeliveryOutcome, "delivery_outcome"), doc="how its last recorded attempt ended; None: none recorded"
    )
    reached: Mapped[bool] = mapped_column(
        server_default=sa.false(),
        doc="the peer has, or may have, the payload: set by each claim (a send in flight may reach it), set back by "
        "an attempt the peer refused (radtrace.reporting.dispatch.outcomes)",
    )

    revision: Mapped[Revision] = relationship(back_populates="outbox")

"""The console's tables: accounts, sessions, and the worklist's projection of reported revisions.

``console_users`` keeps each account's role and argon2 hash (never a password) and its run of failed logins;
``console_sessions`` keeps the SHA-256 of each session cookie (never the cookie) with its CSRF token.
``console_keys``, ``study_handles`` and ``saved_searches`` are what the console's addresses stand for instead of
patient identifiers (:mod:`radtrace.console.links`): kept in the database so every console process and a restart
read a link alike.
``review_items`` is a projection, one row per reported revision, built from the work tables, the reading
recorded in ``inference_completed`` and the spooled header: it exists so the worklist pages through 50,000
studies on an index instead of decoding audit payloads. Decisions themselves are audit events; a row's
``assessed`` columns only mirror the latest whole-draft decision for sorting and filtering.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from radtrace.store.base import Base, UtcDateTime, utc_now

__all__ = [
    "ConsoleKey",
    "ConsoleSession",
    "ConsoleUser",
    "QaAgreementCount",
    "QaDecision",
    "ReviewItem",
    "SavedSearch",
    "StudyHandle",
]


class ConsoleUser(Base):
    """One person who signs in to the console: radiologist, qa or admin."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255), doc="argon2id; NULL: trusted-header only")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    failed_logins: Mapped[int] = mapped_column(default=0, doc="failed logins since the last success")
    locked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ConsoleSession(Base):
    """One signed-in browser: the cookie's SHA-256, its CSRF token and when it was last used."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("console_users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    host: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ReviewItem(Base):
    """One reported revision as the worklist shows it (a projection; see the module doc)."""

    __tablename__ = "review_items"
    __table_args__ = (
        # The worklist's orders: STAT first (rank 0), then oldest; one index per filter.
        sa.Index("ix_review_items_queue", "superseded", "assessed", "rank", "reported_at", "revision_id"),
        sa.Index("ix_review_items_all", "superseded", "rank", "reported_at", "revision_id"),
        sa.Index("ix_review_items_flagged", "superseded", "flagged", "assessed", "rank", "reported_at", "revision_id"),
        sa.Index("ix_review_items_mine", "opened_by", "superseded", "rank", "reported_at", "revision_id"),
        sa.Index("ix_review_items_reported_at", "reported_at", "view", "flags"),  # the QA dashboard's, per day
    )

    revision_id: Mapped[int] = mapped_column(sa.ForeignKey("revisions.id"), primary_key=True, autoincrement=False)
    study_uid: Mapped[str] = mapped_column(sa.String(64), index=True)
    revision: Mapped[int]
    rank: Mapped[int] = mapped_column(doc="0 STAT, 1 routine")
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime)
    superseded: Mapped[bool] = mapped_column(default=False, doc="a later revision of the study is reported")
    patient_name: Mapped[str | None] = mapped_column(sa.String(255))
    patient_id: Mapped[str | None] = mapped_column(sa.String(64))
    patient_age: Mapped[str | None] = mapped_column(sa.String(8))
    patient_sex: Mapped[str | None] = mapped_column(sa.String(8))
    accession: Mapped[str | None] = mapped_column(sa.String(64))
    study_date: Mapped[str | None] = mapped_column(sa.String(8))
    view: Mapped[str | None] = mapped_column(sa.String(16))
    findings: Mapped[str] = mapped_column(sa.String(1024), default="", doc="present labels, comma-separated")
    flags: Mapped[str] = mapped_column(sa.String(255), default="", doc="comma-separated")
    flagged: Mapped[bool] = mapped_column(default=False)
    model_name: Mapped[str | None] = mapped_column(sa.String(255))
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(sa.String(64))
    opened_by: Mapped[str | None] = mapped_column(sa.String(64), doc="the radiologist who first opened it")
    assessed: Mapped[bool] = mapped_column(default=False)
    decision: Mapped[str | None] = mapped_column(sa.String(16), doc="accepted or rejected (latest draft decision)")
    decided_by: Mapped[str | None] = mapped_column(sa.String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    names_read_as: Mapped[str | None] = mapped_column(
        sa.String(16),
        doc="the character-set settings the patient header was read under (radtrace.console.worklist.names_reading); "
        "NULL: added before migration 0020. A row read under others is read again (the site's rule reaches it)",
    )
    sender: Mapped[str | None] = mapped_column(
        sa.String(16),
        doc="the calling AE title of the image its patient header was read from ('' none recorded): names_read_as is "
        "that sender's digest, so a rule's change re-reads only its rows. NULL: added before migration 0025 (every "
        "rule's digest, as before; recorded when it is next read)",
    )


class QaDecision(Base):
    """One assessment event (``finding_assessed``, ``draft_assessed``) as the QA dashboard counts it: a projection
    of the audit row's payload kept in step by :func:`radtrace.console.dashboard_agreement.sync_decisions`, so
    the dashboard counts decisions by label and day on an index instead of decoding a million payloads."""

    __tablename__ = "qa_decisions"
    __table_args__ = (
        # Per day and per model version, index-only (migration 0015 added the model columns).
        sa.Index(
            "ix_qa_decisions_recorded_at",
            "recorded_at",
            "superseded",
            "label",
            "decision",
            "model_name",
            "model_version",
        ),
        sa.Index("ix_qa_decisions_key", "study_uid", "revision", "label", "seq"),
        # The agreement page's counts of current decisions and whole-draft reasons, index-only (migration 0010).
        sa.Index("ix_qa_decisions_current", "superseded", "label", "decision", "reason_code"),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False, doc="the audit event's")
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    study_uid: Mapped[str] = mapped_column(sa.String(64))
    revision: Mapped[int]
    label: Mapped[str] = mapped_column(sa.String(255), doc="the finding's label; empty for a whole-draft decision")
    decision: Mapped[str] = mapped_column(sa.String(16), doc="accept, reject or modify")
    reason_code: Mapped[str | None] = mapped_column(sa.String(16), doc="a whole-draft decision's; NULL otherwise")
    model_name: Mapped[str | None] = mapped_column(
        sa.String(255), doc="the model of the reading decided on (its inference_completed); NULL: none recorded"
    )
    model_version: Mapped[str | None] = mapped_column(sa.String(255), doc="that reading's model version")
    superseded: Mapped[bool] = mapped_column(
        default=False, server_default=sa.false(), doc="a later decision on the same study, revision and label exists"
    )


class QaAgreementCount(Base):
    """How many current decisions (none later replaced them) there are per label, decision and reason code: kept in
    the same transaction as the ``qa_decisions`` rows it counts by
    :func:`radtrace.console.dashboard_agreement.sync_decisions`, so the agreement page reads a few rows instead of
    counting a million (migration 0011)."""

    __tablename__ = "qa_agreement_counts"

    label: Mapped[str] = mapped_column(sa.String(255), primary_key=True, doc="empty for whole drafts")
    decision: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    reason_code: Mapped[str] = mapped_column(sa.String(16), primary_key=True, doc="a whole draft's; empty otherwise")
    count: Mapped[int] = mapped_column(sa.BigInteger)


class ConsoleKey(Base):
    """A secret every console process shares (the key of the study handles), made once by the first that needs it
    (migration 0012)."""

    __tablename__ = "console_keys"

    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    secret: Mapped[str] = mapped_column(sa.String(128), doc="hex")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class StudyHandle(Base):
    """The Study Instance UID an address's handle stands for: ``kind`` ``study`` (the review console's study pages,
    kept) or ``timeline`` (the audit explorer's timelines, kept a while after last shown) (migration 0012)."""

    __tablename__ = "study_handles"
    __table_args__ = (sa.Index("ix_study_handles_kind_shown_at", "kind", "shown_at"),)

    handle: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    study_uid: Mapped[str] = mapped_column(sa.String(64))
    shown_at: Mapped[datetime] = mapped_column(UtcDateTime, doc="when a page last showed a link with it")


class SavedSearch(Base):
    """The patient identifiers of an audit search, kept under a random token for a while, so that they never sit
    in a URL (migration 0012)."""

    __tablename__ = "saved_searches"

    token: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    filters: Mapped[str] = mapped_column(sa.Text, doc="JSON object of filter name to value")
    saved_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)

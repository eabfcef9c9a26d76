"""The dashboard's agreement figures: how often radiologists accept, reject or modify each finding and whole drafts.

The ``finding_assessed`` and ``draft_assessed`` audit events are copied once into ``qa_decisions`` (label,
revision and decision taken out of the payload; migration 0008 copied those recorded before it) by
:func:`sync_decisions`, which also marks each decision a later one on the same (study, revision, label) replaced.
Agreement is then an index count of the current decisions recorded in the window (:func:`read_agreement`), as
:func:`radtrace.qa.agreement.agreement_by_label` counts, with Wilson 95 % intervals
(:class:`radtrace.qa.intervals.Proportion`); :func:`agreement_studies` lists the studies behind one count.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.dashboard_queries import Window, aware, json_text, within
from radtrace.console.schema import QaDecision
from radtrace.qa.agreement import DECISIONS, LabelAgreement
from radtrace.qa.intervals import Proportion
from radtrace.store.engine import Store, is_postgresql

__all__ = ["WHOLE_DRAFT", "agreement_studies", "read_agreement", "sync_decisions"]

#: How the dashboard names the whole-draft decisions (their ``label`` in ``qa_decisions`` is empty).
WHOLE_DRAFT: Final = "(whole draft)"


def sync_decisions(store: Store) -> int:
    """Copy the assessment events recorded since the last copy into ``qa_decisions`` (label, revision and decision
    from each payload); returns how many. Safe to run concurrently: a row already copied is skipped."""
    table = AuditEventRow
    with store.session("copying assessment events for the QA dashboard") as session:
        last_seq, last_at = session.execute(
            sa.select(sa.func.max(QaDecision.seq), sa.func.max(QaDecision.recorded_at))
        ).one()
        conditions: list[sa.ColumnElement[bool]] = [
            table.event_type.in_([EventType.FINDING_ASSESSED.value, EventType.DRAFT_ASSESSED.value])
        ]
        if last_seq is not None:
            # seq and recorded_at grow together (both set under the audit lock); the minute's margin covers a clock
            # step back, the seq test keeps it exact.
            conditions += [table.recorded_at >= aware(last_at) - timedelta(minutes=1), table.seq > last_seq]
        label = sa.case(
            (table.event_type == EventType.DRAFT_ASSESSED.value, sa.literal("")),
            else_=sa.func.substr(sa.func.coalesce(json_text(store, table.payload, "finding"), ""), 1, 255),
        )
        source = sa.select(
            table.seq,
            table.recorded_at,
            sa.func.coalesce(table.study_uid, ""),
            sa.cast(sa.func.coalesce(json_text(store, table.payload, "revision"), "0"), sa.Integer),
            label,
            sa.func.substr(sa.func.coalesce(json_text(store, table.payload, "decision"), ""), 1, 16),
        ).where(*conditions)
        insert = postgresql.insert if is_postgresql(store.engine) else sqlite.insert
        columns = ["seq", "recorded_at", "study_uid", "revision", "label", "decision"]
        statement = insert(QaDecision).from_select(columns, source).on_conflict_do_nothing()
        # RETURNING counts the rows copied on both databases (psycopg reports no rowcount for this statement).
        copied = len(session.execute(statement.returning(QaDecision.seq)).all())
        if copied:
            _supersede(session, last_seq or 0)
        return copied


def _supersede(session: Any, after_seq: int) -> None:
    """Mark every decision that a decision copied after ``after_seq`` replaces (same study, revision and label)."""
    later = aliased(QaDecision)
    new = sa.select(QaDecision.study_uid, QaDecision.revision, QaDecision.label).where(QaDecision.seq > after_seq)
    newest = (
        sa.select(sa.func.max(later.seq))
        .where(later.study_uid == QaDecision.study_uid, later.revision == QaDecision.revision,
               later.label == QaDecision.label)
        .scalar_subquery()
    )  # fmt: skip
    session.execute(
        sa.update(QaDecision)
        .where(
            ~QaDecision.superseded,
            sa.tuple_(QaDecision.study_uid, QaDecision.revision, QaDecision.label).in_(new),
            QaDecision.seq < newest,
        )
        .values(superseded=True)
        .execution_options(synchronize_session=False)
    )


def _current_decisions(window: Window, whole_draft: bool) -> list[sa.ColumnElement[bool]]:
    """Decisions recorded in the window that no later one replaced (the agreement page's "current decisions")."""
    return [
        within(QaDecision.recorded_at, window.start, window.last),
        ~QaDecision.superseded,
        (QaDecision.label == "") if whole_draft else (QaDecision.label != ""),
    ]


def read_agreement(session: Any, window: Window) -> list[LabelAgreement]:
    """Accepted, rejected and modified shares per finding label (whole drafts last), of the current decisions
    recorded in ``window``."""
    counts: dict[str, Counter[str]] = {}
    for whole_draft in (False, True):
        rows = session.execute(
            sa.select(QaDecision.label, QaDecision.decision, sa.func.count())
            .where(*_current_decisions(window, whole_draft))
            .group_by(QaDecision.label, QaDecision.decision)
        )
        for name, verdict, count in rows:
            counts.setdefault(name or WHOLE_DRAFT, Counter())[str(verdict)] += count
    result = []
    for name in sorted(counts, key=lambda n: (n == WHOLE_DRAFT, n)):
        per = counts[name]
        total = sum(per[d] for d in DECISIONS)
        result.append(
            LabelAgreement(name, total, Proportion.of(per["accept"], total), Proportion.of(per["reject"], total),
                           Proportion.of(per["modify"], total))
        )  # fmt: skip
    return result


def agreement_studies(
    store: Store, window: Window, label: str, decision: str, limit: int = 500
) -> list[tuple[str, int, datetime, str | None]]:
    """The studies behind one agreement cell: (study UID, revision, decided at, by whom), newest first."""
    sync_decisions(store)
    whole = label == WHOLE_DRAFT
    with store.session("listing the studies behind an agreement figure") as session:
        rows = session.execute(
            sa.select(QaDecision.study_uid, QaDecision.revision, QaDecision.recorded_at, AuditEventRow.actor_user)
            .join(AuditEventRow, AuditEventRow.seq == QaDecision.seq)
            .where(
                *_current_decisions(window, whole),
                QaDecision.decision == decision,
                QaDecision.label == ("" if whole else label),
            )
            .order_by(QaDecision.seq.desc())
            .limit(limit)
        ).all()
    return [(str(uid), int(revision), at, user) for uid, revision, at, user in rows]

"""The dashboard's agreement figures: how often radiologists accept, reject or modify each finding and whole drafts.

The ``finding_assessed`` and ``draft_assessed`` audit events are copied once into ``qa_decisions`` (label,
revision and decision taken out of the payload; migration 0008 copied those recorded before it) by
:func:`sync_decisions`, which also marks each decision a later one on the same (study, revision, label) replaced.
Agreement is then an index count of the current decisions recorded in the window (:func:`read_agreement`), as
:func:`radtrace.qa.agreement.agreement_by_label` counts, with Wilson 95 % intervals
(:class:`radtrace.qa.intervals.Proportion`); :func:`read_agreement_by_model` splits the same counts by the model
version of the reading each decision was about; :func:`agreement_studies` lists the studies behind one count.

Decisions on a draft withdrawn as wrong-patient (:func:`wrong_patient_drafts`: an image it read was re-sent by the
PACS under another patient or study, or rejected by an IOCM note titled for patient safety or a wrong worklist
entry) are left out of every agreement figure: a radiologist who rejected the findings of another patient's film
said nothing about the model's agreement on this patient's. They are counted apart (:class:`LeftOut`, shown with
the figures); their audit events, and their ``qa_decisions`` rows, stay as recorded. The figures are read as before
(index-only) and the few decisions on withdrawn drafts, found on ``ix_qa_decisions_key``, are taken away.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.dashboard_queries import Window, as_date, json_text, local_day
from radtrace.console.review import IMPRESSION
from radtrace.console.schema import QaAgreementCount, QaDecision
from radtrace.qa.agreement import DECISIONS, LabelAgreement
from radtrace.qa.intervals import Proportion
from radtrace.qa.recorded_times import readable_time
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Revision, Study

__all__ = [
    "NO_READING",
    "WHOLE_DRAFT",
    "WRONG_PATIENT_REJECTIONS",
    "Agreement",
    "AgreementFigures",
    "LeftOut",
    "agreement_studies",
    "current_agreement",
    "label_order",
    "model_named",
    "on_withdrawn",
    "read_agreement",
    "read_agreement_by_model",
    "read_agreement_by_period",
    "read_left_out",
    "read_left_out_by_model",
    "read_left_out_by_period",
    "sync_decisions",
    "wrong_patient_drafts",
]

#: How the dashboard names the whole-draft decisions (their ``label`` in ``qa_decisions`` is empty).
WHOLE_DRAFT: Final = "(whole draft)"


def sync_decisions(store: Store) -> int:
    """Copy the assessment events recorded since the last copy into ``qa_decisions`` (label, revision and decision
    from each payload); returns how many. Safe to run concurrently: a row already copied is skipped.

    Every dashboard and agreement view calls it. It first looks, in a read-only transaction, for an event it would
    copy, and takes SQLite's write lock only when there is one: before, each view took the lock (``BEGIN
    IMMEDIATE``) even with nothing new, and a radiologist's decision recorded meanwhile waited for it."""
    with store.session("looking for assessment events the QA dashboard has not copied") as session:
        if not _copyable_after(session, store, session.scalar(sa.select(sa.func.max(QaDecision.seq)))):
            return 0
    # SQLite's write lock from BEGIN: two copies at once (two console requests) read the same last seq and then
    # both write; the second one's write failed at once with "database is locked" instead of waiting its turn.
    with store.session("copying assessment events for the QA dashboard", immediate=True) as session:
        return _copy(session, store)


def _new_assessments(store: Store, last_seq: int | None) -> list[sa.ColumnElement[bool]]:
    """The assessment events after ``last_seq`` (all when None) whose recorded time the figures can place."""
    table = AuditEventRow
    # A row whose time was edited into a non-time (SQLite) is never copied: the figures cannot place it.
    conditions: list[sa.ColumnElement[bool]] = [
        # Through coalesce(): an index on event_type would have SQLite walk every assessment ever recorded
        # (0.96 s at 50,000) instead of the primary key's range of the rows after last_seq.
        sa.func.coalesce(table.event_type, "").in_([EventType.FINDING_ASSESSED.value,
                                                    EventType.DRAFT_ASSESSED.value]),
        readable_time(store, table.recorded_at),
    ]  # fmt: skip
    if last_seq is not None:
        # The seq alone (the primary key: a range scan of the new rows). Before, only rows recorded at most a
        # minute before the last copied one's time were taken too, so a host clock set back further (NTP, a VM
        # snapshot) left the decisions recorded until it caught up out of the figures for good (migration 0017
        # copied those a site had lost).
        conditions.append(table.seq > last_seq)
    return conditions


def _copyable_after(session: Any, store: Store, last_seq: int | None) -> bool:
    """Whether an event after ``last_seq`` would be copied (read only; stops at the first one). A row left out for
    good (an unreadable payload) does not count, or every view would take the write lock again for it."""
    rows = session.execute(
        sa.select(AuditEventRow.payload).where(*_new_assessments(store, last_seq)).order_by(AuditEventRow.seq)
    )
    return any(copyable_assessment(payload) for (payload,) in rows)


def _copy(session: Any, store: Store) -> int:
    """Under the write lock: copy the new assessment events (see :func:`sync_decisions`); returns how many."""
    table = AuditEventRow
    last_seq = session.scalar(sa.select(sa.func.max(QaDecision.seq)))
    conditions = _new_assessments(store, last_seq)
    # A payload edited into something the SQL below cannot read (not JSON, a revision that is not a whole
    # number) made every later copy fail, and the agreement page with it; such a row is left out, as migration
    # 0008 leaves it out (radtrace audit verify reports the edit).
    unreadable = [seq for seq, payload in session.execute(sa.select(table.seq, table.payload).where(*conditions))
                  if not copyable_assessment(payload)]  # fmt: skip
    if unreadable:
        conditions.append(table.seq.not_in(unreadable))
    label = sa.case(
        (table.event_type == EventType.DRAFT_ASSESSED.value, sa.literal("")),
        else_=sa.func.substr(sa.func.coalesce(json_text(store, table.payload, "finding"), ""), 1, 255),
    )
    reason = sa.case(  # a whole draft's reason code (the agreement page counts them)
        (table.event_type == EventType.DRAFT_ASSESSED.value,
         sa.func.substr(json_text(store, table.payload, "reason_code"), 1, 16)),
        else_=sa.null(),
    )  # fmt: skip
    source = sa.select(
        table.seq,
        table.recorded_at,
        sa.func.coalesce(table.study_uid, ""),
        sa.cast(sa.func.coalesce(json_text(store, table.payload, "revision"), "0"), sa.Integer),
        label,
        sa.func.substr(sa.func.coalesce(json_text(store, table.payload, "decision"), ""), 1, 16),
        reason,
    ).where(*conditions)
    insert = postgresql.insert if is_postgresql(store.engine) else sqlite.insert
    columns = ["seq", "recorded_at", "study_uid", "revision", "label", "decision", "reason_code"]
    statement = insert(QaDecision).from_select(columns, source).on_conflict_do_nothing()
    # RETURNING counts the rows copied on both databases (psycopg reports no rowcount for this statement).
    # Each decision copied counts once, each one a later decision replaces is taken away: in this transaction.
    copied: list[Any] = list(
        session.execute(
            statement.returning(QaDecision.label, QaDecision.decision, QaDecision.reason_code, QaDecision.seq,
                                QaDecision.study_uid, QaDecision.revision)
        )
    )  # fmt: skip
    if copied:
        _copy_models(session, [(seq, uid, revision) for *_, seq, uid, revision in copied])
        counts: Counter[tuple[str, str, str]] = Counter()
        for sign, rows in ((1, [row[:3] for row in copied]), (-1, _supersede(session, last_seq or 0))):
            for label, verdict, reason in rows:
                counts[(str(label), str(verdict), str(reason or ""))] += sign
        _add_counts(session, store, counts)
    return len(copied)


#: Study UIDs per query when the readings of copied decisions are looked up (each a short ``IN`` list on the
#: ``study_uid`` index; their payloads are read, so the batch is kept small).
_READINGS_BATCH: Final = 500


def _copy_models(session: Any, decisions: list[tuple[int, str, int]]) -> None:
    """Give each decision copied (seq, study UID, revision) the model name and version of the reading it was about:
    the last ``inference_completed`` of the same study and revision recorded before it (migration 0015 did the
    same for the decisions copied before it). A decision whose reading was never recorded keeps NULL."""
    by_study: dict[str, list[tuple[int, int]]] = {}
    for seq, uid, revision in decisions:
        by_study.setdefault(str(uid), []).append((int(seq), int(revision)))
    models: dict[tuple[str | None, str | None], list[int]] = {}
    studies = sorted(by_study)
    for start in range(0, len(studies), _READINGS_BATCH):
        batch = studies[start : start + _READINGS_BATCH]
        readings: dict[str, list[tuple[int, int, str | None, str | None]]] = {}
        rows = session.execute(
            sa.select(AuditEventRow.seq, AuditEventRow.study_uid, AuditEventRow.payload, AuditEventRow.model_name,
                      AuditEventRow.model_version)
            .where(AuditEventRow.study_uid.in_(batch),
                   AuditEventRow.event_type == EventType.INFERENCE_COMPLETED.value)
            .order_by(AuditEventRow.seq)
        )  # fmt: skip
        for seq, uid, payload, name, version in rows:
            read = _payload_revision(payload)
            if read is not None:
                readings.setdefault(str(uid), []).append((int(seq), read, name, version))
        for uid in batch:
            for seq, revision in by_study[uid]:
                about = [(n, v) for at, r, n, v in readings.get(uid, ()) if r == revision and at < seq]
                if about:
                    models.setdefault(about[-1], []).append(seq)
    for (name, version), seqs in models.items():
        for start in range(0, len(seqs), 1000):
            session.execute(
                sa.update(QaDecision)
                .where(QaDecision.seq.in_(seqs[start : start + 1000]))
                .values(model_name=name, model_version=version)
                .execution_options(synchronize_session=False)
            )


def _payload_revision(payload: object) -> int | None:
    """The revision a reading's payload names (a whole number, or its digits as text), or None when it cannot be
    read (an edited row: passed over, as :func:`copyable_assessment` passes over an unreadable decision)."""
    if not copyable_assessment(payload):
        return None
    revision = json.loads(str(payload)).get("revision")
    if isinstance(revision, str):
        return int(revision)
    return revision if isinstance(revision, int) else None


def copyable_assessment(payload: object) -> bool:
    """Whether an assessment event's payload is a JSON object whose revision (if any) is a whole number of at most
    nine digits, which both databases read as an INTEGER: what :func:`sync_decisions` copies (and migration 0008,
    :func:`radtrace.store.migration_payloads.copyable_assessment_sql`)."""
    try:
        fields = json.loads(payload) if isinstance(payload, str) else None
    except ValueError:
        return False
    if not isinstance(fields, dict):
        return False
    revision = fields.get("revision")
    if revision is None:
        return True
    if isinstance(revision, int) and not isinstance(revision, bool):
        return abs(revision) < 10**9
    return isinstance(revision, str) and revision.isascii() and revision.isdigit() and len(revision) <= 9


def _add_counts(session: Any, store: Store, counts: Counter[tuple[str, str, str]]) -> None:
    """Add to ``qa_agreement_counts`` (in key order: two copies at once on PostgreSQL lock the rows alike)."""
    values = [
        {"label": label, "decision": verdict, "reason_code": reason, "count": count}
        for (label, verdict, reason), count in sorted(counts.items())
        if count
    ]
    if not values:
        return
    insert = postgresql.insert if is_postgresql(store.engine) else sqlite.insert
    statement = insert(QaAgreementCount).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["label", "decision", "reason_code"],
            set_={"count": QaAgreementCount.count + statement.excluded["count"]},
        )
    )


def _supersede(session: Any, after_seq: int) -> list[Any]:
    """Mark every decision that a decision copied after ``after_seq`` replaces (same study, revision and label);
    returns the label, decision and reason code of each one marked."""
    later = aliased(QaDecision)
    new = sa.select(QaDecision.study_uid, QaDecision.revision, QaDecision.label).where(QaDecision.seq > after_seq)
    newest = (
        sa.select(sa.func.max(later.seq))
        .where(later.study_uid == QaDecision.study_uid, later.revision == QaDecision.revision,
               later.label == QaDecision.label)
        .scalar_subquery()
    )  # fmt: skip
    marked: list[Any] = session.execute(
        sa.update(QaDecision)
        .where(
            ~QaDecision.superseded,
            sa.tuple_(QaDecision.study_uid, QaDecision.revision, QaDecision.label).in_(new),
            QaDecision.seq < newest,
        )
        .values(superseded=True)
        .returning(QaDecision.label, QaDecision.decision, QaDecision.reason_code)
        .execution_options(synchronize_session=False)
    ).all()
    return marked


def _current_decisions(window: Window, whole_draft: bool) -> list[sa.ColumnElement[bool]]:
    """Decisions recorded in the window that no later one replaced (the agreement page's "current decisions")."""
    return [
        window.within(QaDecision.recorded_at, window.start, window.last),
        ~QaDecision.superseded,
        (QaDecision.label == "") if whole_draft else (QaDecision.label != ""),
    ]


#: The IOCM rejection note titles (PS3.16 CID 7011) that withdraw a film as another patient's: "Rejected for Patient
#: Safety Reasons" (the title radtrace's own note gives a draft whose image was re-filed under another patient:
#: radtrace.reporting.withdrawal) and "Incorrect Modality Worklist Entry" (acquired against another patient's order).
#: "Rejected for Quality Reasons" and "Data Retention Policy Expired" leave the film this patient's: their drafts'
#: decisions still say how far the radiologists agreed with the model, and are counted.
WRONG_PATIENT_REJECTIONS: Final = frozenset({"113037", "113038"})
#: Study UIDs per query when the decisions on withdrawn drafts are counted (a short ``IN`` list on
#: ``ix_qa_decisions_key``).
_WITHDRAWN_BATCH: Final = 500


def wrong_patient_drafts(session: Any) -> dict[str, frozenset[int]]:
    """The drafts withdrawn as wrong-patient, study UID -> revision numbers: an image each read was re-sent by the
    PACS under another patient or study (``revisions.reassigned_at``: radtrace.dicom_listener.reassigned), or
    rejected by an IOCM note with one of :data:`WRONG_PATIENT_REJECTIONS` (``rejection_code``). Read on the
    indexes of ``reassigned_at`` and ``rejected_at``: rows a site has few of."""
    wrong = sa.or_(
        Revision.reassigned_at.is_not(None),
        sa.and_(Revision.rejected_at.is_not(None), Revision.rejection_code.in_(sorted(WRONG_PATIENT_REJECTIONS))),
    )
    found: dict[str, set[int]] = {}
    for uid, number in session.execute(
        sa.select(Study.study_uid, Revision.number).join(Study, Study.id == Revision.study_id).where(wrong)
    ):
        found.setdefault(str(uid), set()).add(int(number))
    return {uid: frozenset(numbers) for uid, numbers in found.items()}


def on_withdrawn(
    session: Any, withdrawn: dict[str, frozenset[int]], where: list[sa.ColumnElement[bool]], columns: tuple[Any, ...]
) -> Counter[tuple[Any, ...]]:
    """How many decisions matching ``where`` are on the ``withdrawn`` drafts, per value of ``columns`` (a tuple,
    as the figure's own query groups them: an expression is grouped by its position, as PostgreSQL needs)."""
    counts: Counter[tuple[Any, ...]] = Counter()
    studies = sorted(withdrawn)
    positions: list[sa.ColumnClause[Any]] = [sa.literal_column(str(n)) for n in range(1, len(columns) + 3)]
    # Each batch is planned for its own 500 study UIDs: radtrace prepares no statement (store.engine.PREPARE_THRESHOLD).
    # Prepared by psycopg (before e23d1b7), PostgreSQL planned it once for any UIDs from a connection's third view on
    # (a generic plan): 0.5-1 s a batch instead of 5-30 ms.
    for start in range(0, len(studies), _WITHDRAWN_BATCH):
        rows = session.execute(
            sa.select(*columns, QaDecision.study_uid, QaDecision.revision, sa.func.count())
            .where(*where, QaDecision.study_uid.in_(studies[start : start + _WITHDRAWN_BATCH]))
            .group_by(*positions)
        )
        for *key, uid, revision, count in rows:
            if int(revision) in withdrawn.get(str(uid), ()):
                counts[tuple(key)] += int(count)
    return counts


@dataclass(frozen=True)
class LeftOut:
    """The current decisions left out of the agreement figures because their draft was withdrawn as wrong-patient
    (:func:`wrong_patient_drafts`), and how many drafts they were on."""

    decisions: int = 0
    drafts: int = 0


def read_left_out(session: Any, window: Window | None) -> LeftOut:
    """The current decisions recorded in ``window`` (None: all time) that the agreement figures leave out: those on
    drafts withdrawn as wrong-patient."""
    where = [~QaDecision.superseded]
    if window is not None:
        where.append(window.within(QaDecision.recorded_at, window.start, window.last))
    per_draft = on_withdrawn(session, wrong_patient_drafts(session), where, (QaDecision.study_uid,
                                                                                QaDecision.revision))  # fmt: skip
    return LeftOut(sum(per_draft.values()), len(per_draft))


def read_left_out_by_model(session: Any, window: Window) -> tuple[LeftOut, dict[str, dict[str, int]]]:
    """:func:`read_left_out` for ``window`` and the same decisions per model (named as
    :func:`read_agreement_by_model` names it) and label (whole drafts as :data:`WHOLE_DRAFT`): model -> label -> how
    many. Summed over models, a label's decisions left out; over both, ``LeftOut.decisions``. One look-up."""
    where = [window.within(QaDecision.recorded_at, window.start, window.last), ~QaDecision.superseded]
    columns = (QaDecision.model_name, QaDecision.model_version, QaDecision.label, QaDecision.study_uid,
               QaDecision.revision)  # fmt: skip
    per_model: dict[str, dict[str, int]] = {}
    drafts = set()
    for (name, version, label, uid, revision), count in on_withdrawn(
        session, wrong_patient_drafts(session), where, columns
    ).items():
        drafts.add((uid, revision))
        per_label = per_model.setdefault(model_named(name, version), {})
        per_label[label or WHOLE_DRAFT] = per_label.get(label or WHOLE_DRAFT, 0) + count
    total = sum(count for per_label in per_model.values() for count in per_label.values())
    return LeftOut(total, len(drafts)), {model: per_model[model] for model in sorted(per_model)}


def model_named(name: str | None, version: str | None) -> str:
    """How the agreement figures name the model (name and version) of the reading a decision was about."""
    return f"{name or ''} {version or ''}".strip() or NO_READING


def read_agreement(session: Any, window: Window) -> list[LabelAgreement]:
    """Accepted, rejected and modified shares per finding label (whole drafts last), of the current decisions
    recorded in ``window``; decisions on drafts withdrawn as wrong-patient are left out (:func:`read_left_out`)."""
    counts: dict[str, Counter[str]] = {}
    withdrawn = wrong_patient_drafts(session)
    for whole_draft in (False, True):
        where = _current_decisions(window, whole_draft)
        rows = session.execute(
            sa.select(QaDecision.label, QaDecision.decision, sa.func.count())
            .where(*where)
            .group_by(QaDecision.label, QaDecision.decision)
        ).all()
        left = on_withdrawn(session, withdrawn, where, (QaDecision.label, QaDecision.decision))
        for name, verdict, count in rows:
            if count - left[(name, verdict)] > 0:
                counts.setdefault(name or WHOLE_DRAFT, Counter())[str(verdict)] += count - left[(name, verdict)]
    return _agreements(counts)


#: How the dashboard names the model of a decision whose reading has no ``inference_completed`` event.
NO_READING: Final = "(no reading recorded)"


def read_agreement_by_model(session: Any, store: Store, window: Window) -> dict[str, list[LabelAgreement]]:
    """:func:`read_agreement`'s counts per model (name and version) of the reading the decisions were about: the
    last ``inference_completed`` of the same study and revision recorded before the decision (copied with it into
    ``qa_decisions``). A version that changed mid-window (a new model rolled out) is then compared with the one
    before, label by label.

    An index-only count on ``ix_qa_decisions_recorded_at``, as :func:`read_agreement`'s (before migration 0015 the
    reading of each study revision decided was looked up at every request: 1.7 s at 2 versions x 50,000 decisions on
    PostgreSQL). ``store`` is unused, kept for the callers."""
    del store
    where = [window.within(QaDecision.recorded_at, window.start, window.last), ~QaDecision.superseded]
    columns = (QaDecision.model_name, QaDecision.model_version, QaDecision.label, QaDecision.decision)
    rows = session.execute(sa.select(*columns, sa.func.count()).where(*where).group_by(*columns)).all()
    left = on_withdrawn(session, wrong_patient_drafts(session), where, columns)
    counts: dict[str, dict[str, Counter[str]]] = {}
    for name, version, label, verdict, count in rows:
        kept = count - left[(name, version, label, verdict)]
        if kept <= 0:
            continue
        per_label = counts.setdefault(model_named(name, version), {})
        per_label.setdefault(label or WHOLE_DRAFT, Counter())[str(verdict)] += kept
    return {name: _agreements(counts[name]) for name in sorted(counts)}


def read_agreement_by_period(session: Any, store: Store, window: Window) -> dict[str, dict[date, Counter[str]]]:
    """:func:`read_agreement`'s counts per label (whole drafts last) and per local day the decision was recorded:
    label -> day -> decision -> count (an index-only count on ``ix_qa_decisions_recorded_at``; decisions on drafts
    withdrawn as wrong-patient taken away)."""
    where = [window.within(QaDecision.recorded_at, window.start, window.last), ~QaDecision.superseded]
    columns = (local_day(store, window, QaDecision.recorded_at), QaDecision.label, QaDecision.decision)
    rows = session.execute(
        sa.select(*columns, sa.func.count())
        .where(*where)
        .group_by(sa.literal_column("1"), QaDecision.label, QaDecision.decision)
    ).all()
    left = on_withdrawn(session, wrong_patient_drafts(session), where, columns)
    counts: dict[str, dict[date, Counter[str]]] = {}
    for day, label, verdict, count in rows:
        kept = count - left[(day, label, verdict)]
        if kept > 0:
            counts.setdefault(label or WHOLE_DRAFT, {}).setdefault(as_date(str(day)), Counter())[str(verdict)] += kept
    return {name: counts[name] for name in sorted(counts, key=label_order)}


def read_left_out_by_period(session: Any, store: Store, window: Window) -> dict[str, dict[date, int]]:
    """The decisions :func:`read_agreement_by_period` takes away, per label (whole drafts last) and per local day
    they were recorded: label -> day -> how many current decisions on drafts withdrawn as wrong-patient. Summed
    over labels and days, :func:`read_left_out`'s ``decisions``."""
    where = [window.within(QaDecision.recorded_at, window.start, window.last), ~QaDecision.superseded]
    columns = (local_day(store, window, QaDecision.recorded_at), QaDecision.label)
    counts: dict[str, dict[date, int]] = {}
    for (day, label), count in on_withdrawn(session, wrong_patient_drafts(session), where, columns).items():
        per_day = counts.setdefault(label or WHOLE_DRAFT, {})
        per_day[as_date(str(day))] = per_day.get(as_date(str(day)), 0) + count
    return {name: counts[name] for name in sorted(counts, key=label_order)}


def label_order(name: str) -> tuple[bool, bool, str]:
    """Where a label's row goes in the agreement figures: findings by name, then the impression, then whole drafts."""
    return (name == WHOLE_DRAFT, name == IMPRESSION, name)


def _agreements(counts: dict[str, Counter[str]]) -> list[LabelAgreement]:
    """Shares per label from decision counts: findings, then the impression, then whole drafts."""
    result = []
    for name in sorted(counts, key=label_order):
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
    """The studies behind one agreement cell: (study UID, revision, decided at, by whom), newest first; as the cell
    counts them, without the drafts withdrawn as wrong-patient."""
    sync_decisions(store)
    whole = label == WHOLE_DRAFT
    with store.session("listing the studies behind an agreement figure") as session:
        withdrawn = [(uid, number) for uid, numbers in wrong_patient_drafts(session).items() for number in numbers]
        counted = [sa.tuple_(QaDecision.study_uid, QaDecision.revision).not_in(withdrawn)] if withdrawn else []
        rows = session.execute(
            sa.select(QaDecision.study_uid, QaDecision.revision, QaDecision.recorded_at, AuditEventRow.actor_user)
            .join(AuditEventRow, AuditEventRow.seq == QaDecision.seq)
            .where(
                *_current_decisions(window, whole),
                *counted,
                QaDecision.decision == decision,
                QaDecision.label == ("" if whole else label),
            )
            .order_by(QaDecision.seq.desc())
            .limit(limit)
        ).all()
    return [(str(uid), int(revision), at, user) for uid, revision, at, user in rows]


@dataclass(frozen=True)
class Agreement:
    """How radiologists' current decisions on one finding label (or on whole drafts) are spread."""

    label: str
    accept: int = 0
    reject: int = 0
    modify: int = 0

    @property
    def total(self) -> int:
        """Decisions counted."""
        return self.accept + self.reject + self.modify

    @property
    def accepted_share(self) -> float | None:
        """Accepted as a share of all decisions (None when there are none)."""
        return self.accept / self.total if self.total else None


@dataclass(frozen=True)
class AgreementFigures:
    """The agreement page's figures: per finding label, for the impression and for whole drafts, and the reasons
    given for whole drafts (code to count)."""

    findings: tuple[Agreement, ...]
    impression: Agreement
    drafts: Agreement
    reasons: dict[str, int]
    #: the current decisions left out: on drafts withdrawn as wrong-patient
    left_out: LeftOut = LeftOut()


def current_agreement(store: Store) -> AgreementFigures:
    """The agreement page's figures, all time: per finding label, for the impression and for whole drafts the
    current decisions (a superseded one is not counted), and the reasons of the current whole-draft decisions;
    decisions on drafts withdrawn as wrong-patient are taken away and counted apart (:attr:`AgreementFigures.left_out`).

    Read from ``qa_agreement_counts`` (brought up to date first: :func:`sync_decisions` adds each decision copied and
    takes away each one replaced), a few rows, instead of counting every decision on every request."""
    sync_decisions(store)
    with store.session("reading the current decisions' counts") as session:
        rows = session.execute(
            sa.select(QaAgreementCount.label, QaAgreementCount.decision, QaAgreementCount.reason_code,
                      QaAgreementCount.count)
        ).all()  # fmt: skip
        reason_code = sa.func.coalesce(QaDecision.reason_code, "")  # as the counts key it
        per_draft = on_withdrawn(session, wrong_patient_drafts(session), [~QaDecision.superseded],
                                  (QaDecision.label, QaDecision.decision, reason_code, QaDecision.study_uid,
                                   QaDecision.revision))  # fmt: skip
    left: Counter[tuple[Any, ...]] = Counter()
    for (label, verdict, reason, *_draft), count in per_draft.items():
        left[(label, verdict, reason)] += count
    left_out = LeftOut(sum(per_draft.values()), len({tuple(key[3:]) for key in per_draft}))
    counts: dict[str, dict[str, int]] = {}
    reasons: Counter[str] = Counter()
    for label, verdict, reason, stored in rows:
        count = stored - left[(label, verdict, reason)]
        per = counts.setdefault(label, {"accept": 0, "reject": 0, "modify": 0})
        if verdict in per:
            per[verdict] += count
        if label == "" and reason:
            reasons[reason] += count
    drafts = counts.pop("", {"accept": 0, "reject": 0, "modify": 0})
    impression = counts.pop(IMPRESSION, {"accept": 0, "reject": 0, "modify": 0})
    findings = tuple(Agreement(label, **per) for label, per in sorted(counts.items()) if sum(per.values()))
    return AgreementFigures(findings, Agreement("impression", **impression), Agreement("whole draft", **drafts),
                            {code: count for code, count in sorted(reasons.items()) if count}, left_out)  # fmt: skip

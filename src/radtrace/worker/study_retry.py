"""``radtrace study retry``: :func:`retry_revision` opens a new attempt of a failed or skipped revision, audited as
``study_retried``. A revision that failed for a delivery is not read again (its draft is made): its failed deliveries
are made pending again, each audited as ``dispatch_retry_scheduled`` as ``radtrace dispatch retry`` does, and it goes
back to ``reported``. Before, it was queued, the pipeline found its outbox rows, left them failed, and the revision
failed again.

A revision flagged because an image it read was re-sent by the PACS under another patient or study (``reassigned_at``)
or rejected by an IHE IOCM note (``rejected_at``) is not retried: its draft is withdrawn for good (an IOCM withdrawal
cannot be undone), a new reading of it would read the images it had, as they were filed then (after A -> B -> A, A's
first version again), and be withdrawn in turn, and a retried delivery would make a withdrawn draft's deliveries
pending again. The refusal says why and which revision reads the study's images as the PACS files them now (the
study's latest unflagged one: retry that one if it failed); it changes nothing, so it is not audited, as no refusal
of a retry is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.errors import PermanentError
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study

__all__ = ["Retried", "StudyNotRetriableError", "failed_deliveries", "retry_revision"]

_RETRIABLE = (RevisionState.FAILED, RevisionState.SKIPPED)


class StudyNotRetriableError(PermanentError):
    """``radtrace study retry`` named no study, or a revision that is not failed or skipped."""


def failed_deliveries(*revision_ids: int) -> sa.Select[OutboxMessage]:
    """The failed deliveries of a draft (assessments' and withdrawals' deliveries are not the draft's: the settlement
    leaves them out too; a draft's delivery cancelled when it was withdrawn is ``cancelled``, never failed, so never
    asked for again), oldest first."""
    from radtrace.reporting.dispatch.kinds import NOT_DRAFT_KINDS  # here: it imports pynetdicom (0.5 s at start)

    return (
        sa.select(OutboxMessage)
        .where(
            OutboxMessage.revision_id.in_(revision_ids),
            OutboxMessage.state == OutboxState.FAILED,
            OutboxMessage.kind.not_in(NOT_DRAFT_KINDS),
        )
        .order_by(OutboxMessage.id)
    )


def _flagged(session: Session, rev: Revision, study_uid: str) -> str:
    """Why a flagged revision is not retried, and what reads the study's images now (its latest revision, where that
    is a later one, not flagged), as the refusal says it."""
    why = (
        "an image it read was re-sent by the PACS under another patient or study (audit: instance_reassigned)"
        if rev.reassigned_at is not None
        else "an image it read was rejected by the PACS (IOCM rejection note; audit: instance_rejection_noted)"
    )
    said = (
        f"revision {rev.number} of study {study_uid} is not retried: {why}; its draft is withdrawn and stays so, and "
        "reading it again would read the images it had, as they were filed then"
    )
    later = session.execute(
        sa.select(Revision.number, Revision.state, Revision.reassigned_at, Revision.rejected_at)
        .where(Revision.study_id == rev.study_id, Revision.number > rev.number)
        .order_by(Revision.number.desc())
        .limit(1)
    ).first()  # the study's latest revision: it reads every image the study holds now
    if later is None or later.reassigned_at is not None or later.rejected_at is not None:
        return (
            f"{said}. No later revision reads the study's images as the PACS files them now: one opens when the PACS "
            f"sends the study a new or corrected image (radtrace study show {study_uid})"
        )
    number, state = int(later.number), RevisionState(later.state)
    if state in _RETRIABLE:
        return (
            f"{said}. Revision {number} reads the study's images as the PACS files them now and is {state.value}: "
            f"radtrace study retry {study_uid} --revision {number}"
        )
    return (
        f"{said}. Revision {number} reads the study's images as the PACS files them now ({state.value}): "
        f"radtrace study show {study_uid}"
    )


@dataclass(frozen=True)
class Retried:
    """What :func:`retry_revision` did: the revision, the state it had, and, for one that failed for a delivery,
    the deliveries made pending again (outbox id, "kind destination") instead of queueing it to be read again."""

    number: int
    previous: RevisionState
    redelivered: list[tuple[int, str]] = field(default_factory=list)


def retry_revision(store: Store, study_uid: str, number: int | None, actor: Actor) -> Retried:
    """Ask again for a failed or skipped revision (the latest such one unless ``number``).

    A reading that failed or was skipped is queued as a new attempt: its attempt count starts again (the earlier
    jobs stay in ``jobs``). A revision that failed for a delivery (its draft is made) goes back to ``reported`` with
    its failed deliveries pending again, due now, attempts from 0, each audited as ``dispatch_retry_scheduled``
    (``requested_by: operator``, the error it had), as ``radtrace dispatch retry`` does for a whole destination.
    ``study_retried`` records who asked and what the revision had ended with (``redelivery``: the destinations).

    Raises:
        StudyNotRetriableError: no such study or revision, one that is not failed or skipped, or one flagged (an
            image it read re-sent under another patient or study, or rejected by the PACS): see the module docstring.
    """
    now = utc_now()
    recorder = AuditRecorder(store, actor)
    with store.session("retrying a revision", immediate=True) as session:
        query = (
            sa.select(Revision, Study).join(Study, Revision.study_id == Study.id).where(Study.study_uid == study_uid)
        )
        if number is not None:
            query = query.where(Revision.number == number)
        else:
            query = query.where(Revision.state.in_(_RETRIABLE)).order_by(Revision.number.desc()).limit(1)
        row = session.execute(query).first()
        if row is None:
            which = f"revision {number} of study" if number is not None else "failed or skipped revision of study"
            raise StudyNotRetriableError(f"no {which} {study_uid}")
        rev, study = row[0], row[1]
        previous = RevisionState(rev.state)
        if previous not in _RETRIABLE:
            raise StudyNotRetriableError(
                f"revision {rev.number} of study {study_uid} is {previous.value}: only failed or skipped ones retry"
            )
        if rev.reassigned_at is not None or rev.rejected_at is not None:
            raise StudyNotRetriableError(_flagged(session, rev, study_uid))
        # locked as read (as redeliver_failed does): a released holder's late success marking one delivered waits,
        # then finds it pending again and marks it delivered; unlocked, it was written back to pending and sent again
        undelivered = (
            list(session.scalars(failed_deliveries(rev.id).with_for_update()))
            if previous is RevisionState.FAILED
            else []
        )
        # A draft whose delivery failed needs delivering, not reading: queued, the pipeline would find its outbox
        # rows, leave the failed ones failed, and the revision would fail again with the same reason.
        values: dict[str, object] = (
            {"state": RevisionState.REPORTED, "reason": None, "finished_at": None, "updated_at": now}
            if undelivered
            else {"state": RevisionState.QUEUED, "reason": None, "attempts": 0, "next_attempt_at": None,
                  "claimed_by": None, "claim_expires_at": None, "finished_at": None, "queued_at": now,
                  "updated_at": now}
        )  # fmt: skip
        changed = session.execute(
            sa.update(Revision)
            .where(Revision.id == rev.id, Revision.state == previous)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise StudyNotRetriableError(f"revision {rev.number} of study {study_uid} changed meanwhile; try again")
        from radtrace.reporting.dispatch.redelivery import deliver_again  # here: it imports pynetdicom

        redelivered = [deliver_again(session, recorder, actor, delivery, now) for delivery in undelivered]
        payload: dict[str, object] = {"revision": rev.number, "previous_state": previous.value,
                                      "previous_reason": rev.reason, "previous_attempts": rev.attempts}  # fmt: skip
        if undelivered:
            payload["redelivery"] = sorted({delivery.destination for delivery in undelivered})
        recorder.record(
            AuditEvent(EventType.STUDY_RETRIED, actor, study_uid=study.study_uid, accession=study.accession,
                       payload=payload),
            session=session,
        )  # fmt: skip
        return Retried(rev.number, previous, redelivered)

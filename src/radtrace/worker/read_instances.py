"""Which instances a revision is READ from: the study's own, never one the PACS moved away or rejected.

A revision reads the newest version, within its study, of each SOP instance of every revision up to it
(:func:`radtrace.store.instances.revision_instances`, which the review console shows as what the study held). Two
of those the worker leaves out, whatever revision holds them:

* an instance the PACS re-sent under another Study UID (a wrong-patient or wrong-study correction,
  :mod:`radtrace.dicom_listener.reassigned`): the newest version of its SOP Instance UID anywhere is newer than the
  study's and lives in another study. When the PACS undoes its correction (A -> B -> A) the newest version is the
  study's own again, and it is read again;
* a version an IHE IOCM rejection note named (``instances.rejected_at``, :mod:`radtrace.dicom_listener.rejection_note`).

A radiologist's draft for one patient is never read from an image now filed under another, or withdrawn by the PACS.
When nothing is left, :class:`EveryImageWithdrawnError` ends the revision ``failed`` with that reason (a permanent
error: reading it again cannot help), never a draft of nothing and never silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from radtrace.errors import DicomInputError
from radtrace.store.instances import revision_instances
from radtrace.store.models import Instance, Study

__all__ = [
    "WITHDRAWN_REASON",
    "EveryImageWithdrawnError",
    "Withdrawn",
    "readable_instances",
    "still_readable",
    "withdrawn_instances",
]

log = logging.getLogger(__name__)

WITHDRAWN_REASON: Final = "every image was moved to another study or rejected by the PACS"


class EveryImageWithdrawnError(DicomInputError):
    """Every instance of the revision was moved to another study or rejected by the PACS: nothing is read."""


@dataclass(frozen=True)
class Withdrawn:
    """SOP Instance UIDs of a study the worker no longer reads: ``moved`` (newest version in another study) and
    ``rejected`` (named by a rejection note)."""

    moved: frozenset[str]
    rejected: frozenset[str]

    def __contains__(self, sop_instance_uid: object) -> bool:
        return sop_instance_uid in self.moved or sop_instance_uid in self.rejected


def withdrawn_instances(session: Session, study_id: int) -> Withdrawn:
    """The study's instances moved to another study since (their newest version anywhere is elsewhere and newer
    than the study's newest) or whose newest version in the study a rejection note named."""
    here, elsewhere, mine = aliased(Instance), aliased(Instance), aliased(Instance)
    newest_here = (
        sa.select(sa.func.max(mine.version))
        .where(mine.sop_instance_uid == here.sop_instance_uid, mine.study_id == here.study_id)
        .scalar_subquery()
    )
    moved = session.scalars(
        sa.select(here.sop_instance_uid)
        .where(here.study_id == study_id, here.version == newest_here)
        .where(
            sa.exists().where(
                elsewhere.sop_instance_uid == here.sop_instance_uid,
                elsewhere.study_id != here.study_id,
                elsewhere.version > here.version,
            )
        )
    ).all()
    rejected = session.scalars(
        sa.select(here.sop_instance_uid).where(
            here.study_id == study_id, here.version == newest_here, here.rejected_at.is_not(None)
        )
    ).all()
    return Withdrawn(frozenset(map(str, moved)), frozenset(map(str, rejected)))


def readable_instances(session: Session, study_id: int, revision: int) -> dict[str, tuple[str, str]]:
    """What revision number ``revision`` of the study is read from: :func:`revision_instances` less the withdrawn
    ones (:func:`withdrawn_instances`). :class:`EveryImageWithdrawnError` when that leaves none of several."""
    held = revision_instances(session, study_id, revision)
    withdrawn = withdrawn_instances(session, study_id)
    kept = {sop: where for sop, where in held.items() if sop not in withdrawn}
    if len(kept) < len(held):
        left_out = [sop for sop in held if sop in withdrawn]
        key = session.scalar(sa.select(Study.study_key).where(Study.id == study_id))
        log.warning(
            "study %s revision %d: %d image(s) moved to another study and %d rejected by the PACS are not read",
            key,
            revision,
            sum(sop in withdrawn.moved for sop in left_out),
            sum(sop in withdrawn.rejected and sop not in withdrawn.moved for sop in left_out),
        )
    if held and not kept:
        raise EveryImageWithdrawnError(WITHDRAWN_REASON)
    return kept


def still_readable(session: Session, study_id: int, revision: int, inputs: Iterable[tuple[str, str]]) -> bool:
    """Whether every image a recorded reading read (``(SOP Instance UID, SHA-256)``) is still one revision number
    ``revision`` of the study reads, as it was: none moved away, rejected or re-sent since
    (:mod:`radtrace.worker.kept_readings` drafts again from such a reading only)."""
    held = revision_instances(session, study_id, revision)
    withdrawn = withdrawn_instances(session, study_id)
    wanted = list(inputs)
    return bool(wanted) and all(
        sop not in withdrawn and sop in held and held[sop][1] == digest for sop, digest in wanted
    )

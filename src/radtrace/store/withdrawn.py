"""Which revisions' drafts are withdrawn: the one query the listener (which marks them) and the worker (which leaves
them out of a later draft's Predecessor Documents) share.

A revision is withdrawn once an image it read was re-sent by the PACS under another patient or study
(``reassigned_at``, set by :mod:`radtrace.dicom_listener.reassigned`) or rejected by the PACS (``rejected_at``,
:mod:`radtrace.dicom_listener.rejection_note`). The query runs in the caller's session, so that the worker finds a
revision's predecessors in one transaction (:meth:`radtrace.worker.reading_record.ReadingRecord.predecessors`).
"""

from __future__ import annotations

from typing import Final, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.store.models import Revision

__all__ = ["withdrawn_revisions"]

_REVISIONS: Final = cast(sa.Table, Revision.__table__)


def withdrawn_revisions(session: Session, study_id: int) -> frozenset[int]:
    """The numbers of the study's revisions whose drafts are withdrawn, or never to be sent: an image each read was
    re-sent under another patient or study (``reassigned_at``) or rejected by the PACS (``rejected_at``). No later
    draft names theirs in its Predecessor Documents Sequence: PS3.3 C.17.2 (Table C.17-2) has it "refer to SR SOP
    Instances (e.g., prior or preliminary reports) whose content has been wholly or partially included in this
    document", and a later reading includes nothing of a draft about another patient's image, nor of one an IHE IOCM
    rejection note (sent by radtrace: :mod:`radtrace.reporting.withdrawal`) took out of the PACS; a viewer that
    follows the sequence would offer the withdrawn draft as the earlier version of the new one."""
    marked = sa.or_(_REVISIONS.c.reassigned_at.is_not(None), _REVISIONS.c.rejected_at.is_not(None))
    rows = session.execute(sa.select(_REVISIONS.c.number).where(_REVISIONS.c.study_id == study_id, marked))
    return frozenset(int(number) for number in rows.scalars())

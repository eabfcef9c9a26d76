"""Which spooled instances a revision is read from: the one query the worker and the review console share."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.store.models import Instance, Revision

__all__ = ["revision_instances"]


def revision_instances(session: Session, study_id: int, revision: int) -> dict[str, tuple[str, str]]:
    """Of every revision of the study up to number ``revision``, the newest version of each SOP instance:
    ``{SOP Instance UID: (path under the spool, SHA-256)}``, in SOP Instance UID order."""
    rows = session.execute(
        sa.select(Instance.sop_instance_uid, Instance.path, Instance.sha256)
        .join(Revision, Instance.revision_id == Revision.id)
        .where(Instance.study_id == study_id, Revision.number <= revision)
        .order_by(Instance.sop_instance_uid, Instance.version)
    ).all()
    newest = {str(sop): (str(path), str(digest)) for sop, path, digest in rows}  # a later version replaces
    return dict(sorted(newest.items()))

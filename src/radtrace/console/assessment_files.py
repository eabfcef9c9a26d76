"""Where assessment SRs are kept, and how a file and the decision naming it are made one step.

An assessment SR is written before the decision that names it is committed (the outbox rows in the same
transaction carry its bytes), so a crash between the two must not leave a kept SR that no decision names, nor
a decision naming a missing SR. :func:`keep_pending` writes the file durably under ``<root>/.pending/``, where
nothing serves it; :meth:`PendingAssessment.promote` renames it to ``<root>/<study>/<revision>/<SOP UID>.dcm``
once the decision is committed, and :meth:`PendingAssessment.discard` removes it when the decision is not
recorded (refused, a conflict, an error). After a crash, :func:`settle_pending` promotes each pending file a
committed ``draft_assessed`` event names and removes the others (only those older than ``min_age``: a decision
still being recorded in another process keeps its file).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from pydicom.dataset import Dataset

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.worklist import audit_payload
from radtrace.errors import ReportError
from radtrace.store import pending_files
from radtrace.store.engine import Store
from radtrace.store.pending_files import PENDING

__all__ = ["PENDING", "PendingAssessment", "keep_pending", "recorded_assessments", "settle_pending"]

log = logging.getLogger(__name__)

_UID_CHARACTERS: Final = frozenset("0123456789.")


@dataclass(frozen=True)
class PendingAssessment:
    """An assessment SR written durably but not yet kept: ``relative`` is where it will be (and what the decision
    records), ``data`` its bytes (what the outbox queues)."""

    root: Path
    study_uid: str
    revision: int
    sop_instance_uid: str
    data: bytes
    sha256: str

    @property
    def pending(self) -> Path:
        """The file as written, before the decision is committed."""
        return self.root / PENDING / f"{self.sop_instance_uid}.dcm"

    @property
    def relative(self) -> str:
        """Where it is kept once the decision is committed, relative to the root (``study/revision/UID.dcm``)."""
        return f"{self.study_uid}/{self.revision}/{self.sop_instance_uid}.dcm"

    def record(self) -> dict[str, str]:
        """What the decision's audit event says of it."""
        return {"sop_instance_uid": self.sop_instance_uid, "path": self.relative, "sha256": self.sha256}

    def promote(self) -> Path:
        """The decision is committed: move the file to where it is kept (atomic rename, directories fsynced)."""
        return _promote(self.root, self.pending, self.relative)

    def discard(self) -> None:
        """The decision was not recorded: the file goes."""
        pending_files.discard(self.pending)


def keep_pending(root: Path, study_uid: str, revision: int, sr: Dataset) -> PendingAssessment:
    """Write an assessment SR durably under ``root/.pending`` (temporary name, fsync, rename, directory fsync)."""
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    kept = PendingAssessment(root, study_uid, revision, str(sr.SOPInstanceUID), data, hashlib.sha256(data).hexdigest())
    try:
        pending_files.write_pending(root, f"{kept.sop_instance_uid}.dcm", data)
    except OSError as exc:
        raise ReportError(f"the assessment SR could not be stored under {root}: {exc.strerror or exc}") from exc
    return kept


def _promote(root: Path, pending: Path, relative: str) -> Path:
    try:
        return pending_files.promote(root, pending, relative)
    except OSError as exc:
        raise ReportError(f"the assessment SR could not be kept under {root}: {exc.strerror or exc}") from exc


def recorded_assessments(store: Store, sop_instance_uids: list[str]) -> dict[str, str | None]:
    """Of these assessment SRs, those a committed ``draft_assessed`` event names: SOP UID to the kept path, or to
    None when the only events naming it were edited in the database into something no longer readable (the file
    is then neither kept nor removed: ``radtrace audit verify`` names the row, and someone has to look)."""
    table = AuditEventRow
    wanted = set(sop_instance_uids)
    found: dict[str, str | None] = {}
    if not wanted:
        return found
    with store.session("finding the decisions that name assessment SRs") as session:
        for uid in sorted(wanted):  # rare (after a crash): one bounded LIKE per file
            for text in session.scalars(
                sa.select(table.payload).where(
                    table.event_type == EventType.DRAFT_ASSESSED.value, table.payload.contains(f'"{uid}"')
                )
            ):
                payload = audit_payload(text)
                kept = payload.get("assessment_sr")
                if isinstance(kept, dict) and kept.get("sop_instance_uid") == uid and isinstance(kept.get("path"), str):
                    found[uid] = kept["path"]
                elif not payload:  # an edited row that still names the file
                    found.setdefault(uid, None)
    return found


def _uid(path: Path) -> str | None:
    """The SOP Instance UID a pending file is named by (None: not an assessment SR's name)."""
    uid = path.name.removesuffix(".dcm")
    return uid if path.name.endswith(".dcm") and uid and set(uid) <= _UID_CHARACTERS else None


def settle_pending(store: Store, root: Path, *, min_age_s: float = 600.0, only: str | None = None) -> tuple[int, int]:
    """After a crash: promote each pending assessment SR (older than ``min_age_s``; or just ``only``, a SOP UID)
    that a committed decision names, remove the others; returns (promoted, removed)."""

    def kept_as(paths: list[Path]) -> dict[Path, str | None]:
        uids = {uid: path for path in paths if (uid := _uid(path)) is not None}
        named = recorded_assessments(store, list(uids))
        found: dict[Path, str | None] = {}
        for uid, relative in named.items():
            if relative is None:
                found[uids[uid]] = None
            elif relative.count("/") == 2 and relative.endswith(f"/{uid}.dcm"):
                found[uids[uid]] = relative
        return found

    try:
        promoted, removed = pending_files.settle(
            root, kept_as, min_age_s=min_age_s, only=None if only is None else (lambda path: _uid(path) == only)
        )
    except OSError as exc:
        raise ReportError(f"pending assessment SRs could not be settled under {root}: {exc.strerror or exc}") from exc
    if promoted or removed:
        log.warning("console: %d assessment SRs kept and %d removed after an interrupted decision", promoted, removed)
    return promoted, removed

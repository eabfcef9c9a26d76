"""What a claimed revision is read from: its spooled images (checked against their recorded SHA-256) and their
source datasets, or, when an earlier attempt already enqueued its deliveries, those outbox rows.

:class:`RevisionInputs` is one of :class:`radtrace.worker.pipeline.StudyPipeline`'s two seams (the other:
:mod:`radtrace.worker.reading_record`); the pipeline guards each call (a failure ends that revision's attempt only)
and audits a patient identity conflict among the images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.config import Settings
from radtrace.errors import DicomInputError
from radtrace.model.study import StudyImage, spooled_as_received
from radtrace.store.engine import Store
from radtrace.store.models import Instance, OutboxMessage, Revision
from radtrace.worker.read_instances import readable_instances

__all__ = ["RevisionInputs"]


def _file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB pieces (a film is not held whole to be hashed)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


class RevisionInputs:
    """Finds a claimed revision's inputs in the store and the spool."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def existing_outbox(self, revision_id: int) -> list[int]:
        """The revision's outbox rows, by ID: an earlier attempt that died after enqueueing left them."""
        with self.store.session("reading the outbox") as session:
            rows = session.scalars(
                sa.select(OutboxMessage.id).where(OutboxMessage.revision_id == revision_id).order_by(OutboxMessage.id)
            )
            return list(rows)

    def images(self, revision_id: int) -> tuple[list[StudyImage], list[Any]]:
        """The study's instances up to this revision, the newest version of each SOP instance, less those the PACS
        moved to another study or rejected (:mod:`radtrace.worker.read_instances`)."""
        with self.store.session("selecting images") as session:
            rev = session.get(Revision, revision_id)
            assert rev is not None  # claimed a moment ago; revisions are never deleted
            newest = readable_instances(session, rev.study_id, rev.number)  # none moved away or rejected
            senders = self._senders(session, rev.study_id)
        if not newest:
            raise DicomInputError("the revision has no instances")
        images: list[StudyImage] = []
        for sop, (path, digest) in newest.items():
            file = self.settings.spool_dir / path
            try:
                if _file_sha256(file) != digest:  # changed on disk since it was accepted
                    raise DicomInputError(f"spooled instance {sop} does not match its recorded SHA-256")
            except OSError as exc:
                raise DicomInputError(f"spooled instance {sop} cannot be read: {exc.strerror}") from exc
            # the header: pixel data is read for the chosen views only
            images.append(spooled_as_received(file, digest, self.settings.listener, senders.get(path)))
        return images, [image.dataset for image in images]

    def _senders(self, session: Session, study_id: int) -> dict[str, str | None]:
        """The calling AE of each of the study's spooled files, where the site has ``sender_character_sets``."""
        if not self.settings.listener.sender_character_sets:
            return {}
        rows = session.execute(sa.select(Instance.path, Instance.calling_ae).where(Instance.study_id == study_id))
        return {str(path): calling for path, calling in rows}

"""What a claimed revision is read from: its spooled images (checked against their recorded SHA-256) and their
source datasets, or, when an earlier attempt already enqueued its deliveries, those outbox rows.

:class:`RevisionInputs` is one of :class:`radtrace.worker.pipeline.StudyPipeline`'s two seams (the other:
:mod:`radtrace.worker.reading_record`); the pipeline guards each call (a failure ends that revision's attempt only)
and audits a patient identity conflict among the images.

A spooled file that this node cannot read (opening or reading it raised ``OSError``: missing, permission denied, an
I/O error, a stale NFS handle on a shared data directory) is the node's failure, not the study's: another node, or
this one after a remount, may read it. Its attempt ends with :class:`SpoolReadError` (retryable: the attempt counts
and is retried after the backoff; a study no node can read ends ``failed`` after ``broker.max_attempts`` with that
reason, which names the file relative to ``data_dir`` and the node, never patient data; a log line scrubs the UIDs
of its path). A file that is read but is not what was accepted (another SHA-256) or not DICOM is the study's:
:class:`~radtrace.errors.DicomInputError`, failed at once.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.config import Settings
from radtrace.errors import DicomInputError, RadtraceError, RetryableError
from radtrace.model.study import StudyImage, spooled_as_received
from radtrace.store.engine import Store
from radtrace.store.models import Instance, OutboxMessage, Revision
from radtrace.worker.read_instances import readable_instances

__all__ = ["RevisionInputs", "SpoolChangedError", "SpoolReadError"]


class SpoolReadError(RetryableError):
    """A spooled file this node could not read (an ``OSError``, see the module): retried, the attempt counted.
    ``identifiers``: the UIDs its path is made of, which a log line scrubs (a line names a study by its key)."""

    identifiers: tuple[str, ...] = ()


class SpoolChangedError(DicomInputError):
    """A spooled file read whole whose bytes no longer hash to the SHA-256 recorded when it was accepted: the study's
    (failed at once). ``identifiers`` as for :class:`SpoolReadError`."""

    identifiers: tuple[str, ...] = ()


def _file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB pieces (a film is not held whole to be hashed)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def _path_identifiers(file: Path) -> tuple[str, ...]:
    """The UIDs a spooled file's path is made of: its study's directory and its SOP Instance UID (``<sop>.dcm`` or
    ``<sop>.v<N>.dcm``)."""
    return tuple(value for value in (file.parent.name, file.name.split(".v")[0].removesuffix(".dcm")) if value)


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
        for path, digest in newest.values():
            file = self.settings.spool_dir / path
            try:
                matches = _file_sha256(file) == digest
            except OSError as exc:
                raise self._unreadable(exc, file) from exc
            if not matches:  # changed on disk since it was accepted: the study's bytes, not this node's
                changed = SpoolChangedError(f"{self._shown(file)} does not match its recorded SHA-256")
                changed.identifiers = _path_identifiers(file)
                raise changed
            try:  # the header: pixel data is read for the chosen views only
                images.append(spooled_as_received(file, digest, self.settings.listener, senders.get(path)))
            except DicomInputError as exc:
                failure = self.read_failure(exc, file)
                if failure is exc:  # read, and not DICOM: the study's
                    raise
                raise failure from exc.__cause__
        return images, [image.dataset for image in images]

    def read_failure(self, error: RadtraceError, file: Path | None = None) -> RadtraceError:
        """``error`` as the attempt should end: a :class:`DicomInputError` that an ``OSError`` of the file system
        caused (the header or, as the model reads, the pixel data could not be read from the spool) is this node's
        (:class:`SpoolReadError`); any other error is returned as it is."""
        cause = error.__cause__
        if isinstance(error, DicomInputError) and isinstance(cause, OSError) and cause.errno is not None:
            return self._unreadable(cause, file)
        return error

    def _unreadable(self, exc: OSError, file: Path | None) -> SpoolReadError:
        """The retryable error for a spooled file this node could not read: its path relative to ``data_dir``
        (``spool/<Study Instance UID>/<SOP Instance UID>.dcm``), this node's name and the system's word."""
        where = Path(exc.filename) if isinstance(exc.filename, str) and exc.filename else file
        why = exc.strerror or type(exc).__name__
        shown = "a spooled file" if where is None else self._shown(where)
        error = SpoolReadError(f"{shown} cannot be read on {socket.gethostname()}: {why}")
        error.identifiers = () if where is None else _path_identifiers(where)
        error.__cause__ = exc
        return error

    def _shown(self, file: Path) -> str:
        """How a reason names a spooled file: relative to ``data_dir`` (``spool/<Study UID>/<SOP UID>.dcm``), or by
        its name alone where it is not under it (a symlinked spool): never a host path."""
        try:
            return f"spooled file {file.relative_to(self.settings.data_dir)}"
        except ValueError:
            return f"spooled file {file.name}"

    def _senders(self, session: Session, study_id: int) -> dict[str, str | None]:
        """The calling AE of each of the study's spooled files, where the site has ``sender_character_sets``."""
        if not self.settings.listener.sender_character_sets:
            return {}
        rows = session.execute(sa.select(Instance.path, Instance.calling_ae).where(Instance.study_id == study_id))
        return {str(path): calling for path, calling in rows}

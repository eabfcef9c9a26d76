"""The durable spool: an accepted instance is on disk, fsynced, under its final name before success.

Layout: ``<spool>/<study uid>/<sop uid>.dcm`` (a different object under the same SOP Instance UID is
``<sop uid>.v2.dcm`` …). Received data first lands in ``<spool>/.incoming`` under a temporary name
(pynetdicom streams it there chunk by chunk), is hashed and fsynced, and is renamed into place only
when its database row is about to commit; a rename within one file system is atomic, so a reader
never sees half an instance. Whatever is left in ``.incoming`` after a crash was never acknowledged
and is removed at start. Unparsable input is moved to the quarantine directory for inspection.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from radtrace.durable import fsync_directory
from radtrace.errors import DicomInputError

__all__ = ["FileDigest", "Spool", "StagedFile", "check_uid", "out_of_space"]

log = logging.getLogger(__name__)

INCOMING: Final = ".incoming"
_CHUNK: Final = 1024 * 1024
_UID: Final = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def out_of_space(exc: OSError) -> bool:
    """Whether a failed write means the file system (or the user's quota) is full."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def check_uid(value: object, what: str) -> str:
    """``value`` as a DICOM UID (digits and dots, at most 64 characters), else :class:`DicomInputError`.

    UIDs become file and directory names here, so a hostile value such as ``../x`` must never pass.
    """
    text = str(value).strip().rstrip("\x00") if value is not None else ""
    if not text or len(text) > 64 or not _UID.match(text):
        raise DicomInputError(f"{what} is missing or not a valid UID")
    return text


@dataclass(frozen=True)
class FileDigest:
    """A file's SHA-256 and size, taken by whoever wrote it; ``error`` when writing it failed (e.g. disk full)."""

    sha256: str
    size: int
    error: OSError | None = None


@dataclass(frozen=True)
class StagedFile:
    """Received bytes in ``.incoming``: hashed and fsynced, not yet visible in the spool."""

    path: Path
    sha256: str
    size: int


class Spool:
    """Staging, committing and quarantining received instances under one spool directory."""

    def __init__(self, root: Path, quarantine_dir: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.quarantine_dir = quarantine_dir
        self.incoming = root / INCOMING

    def prepare(self) -> int:
        """Create the directories and remove leftovers of unacknowledged transfers; returns how many."""
        for directory in (self.root, self.incoming, self.quarantine_dir):
            directory.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.incoming.iterdir():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
        if removed:
            log.warning("removed %d partial transfer(s) left in %s by an earlier run", removed, self.incoming)
        return removed

    def free_bytes(self) -> int:
        """Free space on the spool's file system."""
        return shutil.disk_usage(self.root).free

    def stage_file(self, source: Path, *, digest: FileDigest | None = None) -> StagedFile:
        """Take a received file into ``.incoming`` (moved when on the same file system), hash and fsync it.

        ``digest``: the file's hash and size, when the receiver took them as it wrote the file; it is
        then not read back (a copy across file systems is still hashed as it is read).
        """
        target = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copyfile(source, target)
            digest = None
        if digest is None:
            return self._seal(target)
        if self.fsync:
            with open(target, "rb") as handle:
                os.fsync(handle.fileno())
        return StagedFile(target, digest.sha256, digest.size)

    def stage_bytes(self, data: bytes) -> StagedFile:
        """Write received bytes into ``.incoming``, fsynced."""
        target = self.incoming / f"{uuid.uuid4().hex}.part"
        with open(target, "wb") as handle:
            handle.write(data)
        return self._seal(target)

    def _seal(self, path: Path) -> StagedFile:
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            if self.fsync:
                os.fsync(handle.fileno())
        return StagedFile(path, digest.hexdigest(), size)

    def final_path(self, study_uid: str, sop_uid: str, version: int) -> Path:
        """Where a version of an instance lives, relative to the spool root."""
        sop = check_uid(sop_uid, "SOP Instance UID")
        name = f"{sop}.dcm" if version == 1 else f"{sop}.v{version}.dcm"
        return Path(check_uid(study_uid, "Study Instance UID")) / name

    def commit(self, staged: StagedFile, relative: Path) -> Path:
        """Atomically rename a staged file to ``relative`` under the spool, and make the rename durable."""
        target = self.root / relative
        directory = target.parent
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)
        if self.fsync:
            fsync_directory(directory)
            if created:
                fsync_directory(directory.parent)
        return target

    def discard(self, staged: StagedFile) -> None:
        """Drop a staged file that will not be kept (an identical duplicate)."""
        with contextlib.suppress(FileNotFoundError):
            staged.path.unlink()

    def quarantine(self, staged: StagedFile, reason: str) -> Path:
        """Move staged input that cannot be accepted to the quarantine directory, with a note of why."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / f"{staged.sha256[:16]}-{uuid.uuid4().hex[:8]}.dcm"
        os.replace(staged.path, target)
        target.with_suffix(".reason.txt").write_text(reason + "\n", encoding="utf-8")
        return target

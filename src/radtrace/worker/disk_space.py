"""Room for drafts, looked at before the model reads: a full disk costs no readings.

A revision's drafts (SR, companion, HL7, FHIR, GSPS) are kept under ``<data_dir>/drafts`` and copied once more into the
outbox's payload folder (``<data_dir>/outbox``, the same file system unless a site moved it). When the drafts cannot
be stored (ENOSPC, EDQUOT) the revision waits for space, its attempt not counted (:mod:`radtrace.worker.attempts`);
before this module each retry read the study again (decode, model) only to find the disk still full.

:class:`DraftSpace` answers, before a batch is read, how many of its revisions the free space of the drafts' file
system holds: twice the largest revision this worker has stored (drafts plus the outbox's copy), at least
:data:`FLOOR_BYTES`. The others wait, not read, with :class:`NoRoomForDraftsError` as their reason (``disk full:
<drafts folder>, N MB free …``). One ``statvfs`` per batch (7 µs on a loaded machine). A quota (EDQUOT) is not
seen by ``statvfs``: there the write fails after the reading, and the reading is drafted again from the audit log
(:mod:`radtrace.worker.kept_readings`) instead of being read again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from radtrace.reporting.draft_store import DRAFT_FILES, DraftsDiskFullError

__all__ = [
    "FLOOR_BYTES",
    "FULL_BYTES",
    "DraftSpace",
    "NoRoomForDraftsError",
    "data_disk_line",
    "disk_full_line",
    "drafts_size",
    "free_bytes",
    "megabytes",
]

log = logging.getLogger(__name__)

#: The least a revision is assumed to need: a chest X-ray's drafts are 20-60 KB; 1 MiB leaves room for a large
#: GSPS, the SQLite work database's growth where it shares the disk, and the outbox's copies.
FLOOR_BYTES: Final = 1 << 20


#: Below this much free space ``radtrace status`` says the data disk is full (a few hundred revisions' drafts).
FULL_BYTES: Final = 64 << 20


class NoRoomForDraftsError(DraftsDiskFullError):
    """Too little free space for a revision's drafts, seen before reading it: it waits, not read, not counted."""


def megabytes(count: int) -> str:
    """``count`` bytes in whole MB (MiB), rounded down: '0 MB' on a full disk."""
    return f"{max(count, 0) >> 20} MB"


def free_bytes(path: Path, statvfs: Callable[[str], Any] = os.statvfs) -> int:
    """Free space for an unprivileged writer where ``path`` is (or would be: its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    found = statvfs(str(probe))
    return int(found.f_bavail) * int(found.f_frsize)


def disk_full_line(path: Path) -> str:
    """'disk full: <path>, N MB free' (the free space as it is now; '? MB' when it cannot be asked)."""
    try:
        free = megabytes(free_bytes(path))
    except OSError:
        free = "? MB"
    return f"disk full: {path}, {free} free"


def data_disk_line(data_dir: Path, min_free_bytes: int) -> str | None:
    """``radtrace status``'s line on the data directory's disk, or None while it has room: 'disk full: …' below
    :data:`FULL_BYTES` (nothing is received, read or rung), 'disk low: …' below ``listener.min_free_bytes`` (the
    listener refuses studies)."""
    try:
        free = free_bytes(data_dir)
    except OSError as exc:
        return f"data disk: {data_dir}: free space unknown ({exc.strerror or exc})"
    limit = f"listener.min_free_bytes {megabytes(min_free_bytes)}"
    if free < min(FULL_BYTES, min_free_bytes) or free < FLOOR_BYTES:
        return (f"disk full: {data_dir}, {megabytes(free)} free ({limit}): the listener refuses studies (0xA700), "
                "workers read only what the space holds and the rest wait, not read, and the embedded broker "
                "rings no doorbell (the reconciler rings again); nothing is lost: free space there")  # fmt: skip
    if free < min_free_bytes:
        return (f"disk low: {data_dir}, {megabytes(free)} free, below {limit}: the listener refuses studies "
                "(0xA700) until space is freed there")  # fmt: skip
    return None


class DraftSpace:
    """How many revisions' drafts the drafts' file system has room for; logs when it fills and when space is back."""

    def __init__(self, root: Path, *, statvfs: Callable[[str], Any] = os.statvfs) -> None:
        self.root = root
        self.statvfs = statvfs
        self.largest = 0  # bytes of the largest revision's drafts this worker stored
        self.full = False
        self._lock = threading.Lock()  # noted from the thread that finishes batches

    def noted(self, size: int) -> None:
        """A revision's drafts of ``size`` bytes were stored."""
        with self._lock:
            self.largest = max(self.largest, size)

    @property
    def per_revision(self) -> int:
        """The free space one revision is assumed to need: its drafts and the outbox's copy of them."""
        return max(FLOOR_BYTES, 2 * self.largest)

    def room_for(self, count: int) -> tuple[int, NoRoomForDraftsError | None]:
        """How many of ``count`` revisions may be read now, and the reason the others wait (None: all may)."""
        need = self.per_revision
        try:
            free = free_bytes(self.root, self.statvfs)
        except OSError as exc:  # not this module's to judge: the write says what is wrong
            log.debug("free space under %s not known (%s); reading on", self.root, exc)
            return count, None
        room = free // need
        if room >= count:
            if self.full:
                self.full = False
                log.warning("disk space again: %s, %s free; reading again", self.root, megabytes(free))
            return count, None
        error = NoRoomForDraftsError(
            f"disk full: {self.root}, {megabytes(free)} free (a revision's drafts need about {megabytes(need)}"
            f" or more); not read until there is space"
        )
        if not self.full:
            self.full = True
            log.warning("%s: %d of %d revisions wait, not read, until space is freed there", error.reason,
                        count - room, count)  # fmt: skip
        return int(room), error


def drafts_size(files: Any) -> int:
    """The bytes of one revision's built drafts (a :class:`~radtrace.reporting.dispatch.outbox.ReportFiles`)."""
    return sum(len(getattr(files, kind, None) or b"") for kind in DRAFT_FILES)

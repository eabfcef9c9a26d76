"""Signed checkpoints as the audit chain's anchor outside the database, and what a verification covers.

The hash chain proves each row against the one before it; it cannot prove that the rows after some point are
the ones radtrace wrote. Whoever can write the database can rewrite the tail and recompute every hash, append
rows of their own, or delete rows from the end, and the chain stays valid. A checkpoint is the HMAC-SHA256 of
(seq, hash, time) under ``audit.checkpoint_key``, a key the database never holds, written to a file in
``audit.checkpoint_dir`` (``radtrace audit checkpoint``; the deployments take one every hour) and meant to be
copied off the host. Verification checks the chain against **every** checkpoint it finds there
(``audit-checkpoint-*.json``, and any file named on the command line), so:

* rows up to the newest checkpoint that holds are *anchored*: an edit, insertion or removal among them, with
  hashes recomputed or not, and rows removed from the end below it, all show;
* rows after it are only *chained*: a rewrite of them with recomputed hashes, rows appended by someone with
  database rights, or rows removed back to the checkpoint do not show. A checkpoint taken later vouches for
  what the log holds then, so it catches a later rewrite of those rows, never an earlier one.

``audit checkpoint`` walks the chain against the checkpoints already held before it signs, and signs the head
that walk ended at: it never vouches for a chain that does not verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from radtrace.audit.chain import Checkpoint, Verification, read_checkpoint
from radtrace.errors import PermanentError

if TYPE_CHECKING:
    from radtrace.config import Settings

__all__ = ["CheckpointSource", "HeldCheckpoints", "checkpoint_dir", "coverage", "load_checkpoints"]

MAX_CHECKPOINT_FILES: Final = 100_000  # ten years of hourly checkpoints
FILE_PATTERN: Final = "audit-checkpoint-*.json"  # as radtrace audit checkpoint names them in the folder


@dataclass(frozen=True)
class CheckpointSource:
    """Where checkpoints are kept and the key that signs them (from settings ``audit.*``)."""

    key: bytes | None
    directory: Path | None
    files: tuple[Path, ...] = ()

    @classmethod
    def for_settings(cls, settings: Settings, files: Sequence[Path] = ()) -> CheckpointSource:
        """The service's checkpoints: ``audit.checkpoint_key`` and ``audit.checkpoint_dir`` (by default
        ``<data_dir>/checkpoints``), plus files named by hand."""
        key = settings.audit.checkpoint_key
        return cls(key.get_secret_value().encode("utf-8") if key else None, checkpoint_dir(settings), tuple(files))


def checkpoint_dir(settings: Settings) -> Path:
    """Where ``radtrace audit checkpoint`` writes and every verify looks: ``audit.checkpoint_dir``, by default
    ``<data_dir>/checkpoints``."""
    return settings.audit.checkpoint_dir or settings.data_dir / "checkpoints"


@dataclass(frozen=True)
class HeldCheckpoints:
    """The checkpoints found: those whose signature holds, and a line for each file that is not one."""

    checkpoints: tuple[Checkpoint, ...]
    problems: tuple[str, ...]
    unchecked_files: int  # found, but no key to check them with


def load_checkpoints(source: CheckpointSource | None) -> HeldCheckpoints:
    """Read every checkpoint in the folder (:data:`FILE_PATTERN`) and each named file; a file that is damaged or
    forged is a problem."""
    if source is None:
        return HeldCheckpoints((), (), 0)
    paths = list(source.files)
    if source.directory is not None and source.directory.is_dir():
        try:
            found = sorted(path for path in source.directory.glob(FILE_PATTERN) if path.is_file())
        except OSError as exc:
            return HeldCheckpoints((), (f"cannot list checkpoints in {source.directory}: {exc.strerror or exc}",), 0)
        paths += [path for path in found if path not in paths][:MAX_CHECKPOINT_FILES]
    if source.key is None:
        return HeldCheckpoints((), (), len(paths))
    held, problems = [], []
    for path in paths:
        try:
            held.append(read_checkpoint(path, source.key))
        except PermanentError as exc:
            problems.append(exc.reason)
    return HeldCheckpoints(tuple(held), tuple(problems), 0)


def coverage(result: Verification, held: HeldCheckpoints) -> tuple[str, str]:
    """(what this verification proves, what it does not), in words for the CLI, the API and the console."""
    head = result.head_seq
    if result.anchored_seq is not None and result.anchored_seq > 0:
        rows = "row 1 matches" if result.anchored_seq == 1 else f"rows 1 to {result.anchored_seq} match"
        covered = (
            f"{rows} a signed checkpoint ({result.checkpoints_checked} checked): "
            "an edit, insertion or removal there shows even with hashes recomputed"
        )
    elif head:
        covered = f"rows 1 to {head} are chained to each other (no signed checkpoint vouches for any of them)"
    else:
        covered = "the log is empty"
    start = (result.anchored_seq or 0) + 1
    if held.unchecked_files:
        why = f"{held.unchecked_files} checkpoint files were not checked: audit.checkpoint_key is not set. "
    elif not result.checkpoints_checked:
        why = "no signed checkpoint was found (radtrace audit checkpoint; audit.checkpoint_dir). "
    else:
        why = ""
    after = f"rows {start} to {head} are" if start < head else f"row {head} is" if start == head else "rows to come are"
    not_covered = (
        f"{why}{after} not anchored: rows removed from the end leave a valid, shorter chain, and whoever can "
        "write the database could rewrite these rows with recomputed hashes or append rows of their own without "
        "this walk showing it (a checkpoint taken later vouches only for what the log holds then). Take "
        "checkpoints regularly (radtrace audit checkpoint), keep copies off this host, and check one kept "
        "elsewhere with radtrace audit verify --checkpoint FILE"
    )
    return covered, not_covered

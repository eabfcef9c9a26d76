"""The outbox's payload files: each payload once, under its SHA-256 (``<folder>/<2 hex>/<digest><suffix>``), written
pending (:mod:`radtrace.store.pending_files`) until the rows that name it are committed.

:class:`StagedPayloads` holds the files an enqueue wrote pending (kept after its commit, discarded if it did not
commit); :meth:`PayloadFiles.read` gives a row's payload, checked against its recorded SHA-256, and moves a payload a
crash left pending into place first.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from radtrace.errors import DispatchError, DispatchRejectedError
from radtrace.store import pending_files

__all__ = ["PayloadFiles", "StagedPayloads"]

log = logging.getLogger("radtrace.reporting.dispatch.outbox")

_PENDING_MARK: Final = "~"  # <digest><suffix>~<random>: one pending file per writer, named after the kept one


@dataclass
class StagedPayloads:
    """Payload files written pending for rows not yet committed: :meth:`keep` once the transaction that adds the
    rows has committed, :meth:`discard` when it did not."""

    root: Path
    files: list[tuple[Path, str]] = field(default_factory=list)  # (pending file, where it is kept)

    def keep(self) -> None:
        """The rows are committed: each file goes to its content-addressed name."""
        while self.files:
            pending, relative = self.files.pop()
            try:
                pending_files.promote(self.root, pending, relative)
            except OSError as exc:  # the row is committed: delivering it moves the pending file (see _payload)
                log.warning("outbox: a payload stays pending until it is delivered: %s", exc.strerror or exc)

    def discard(self) -> None:
        """The rows were not committed: the files go."""
        while self.files:
            pending_files.discard(self.files.pop()[0])


class PayloadFiles:
    """The content-addressed payload files under ``root`` (the outbox's payload folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def store(self, payload: bytes, suffix: str, staged: StagedPayloads) -> tuple[str, str]:
        """Write ``payload`` pending (unless its content-addressed file is kept already) into ``staged``; returns
        the path the row records and the SHA-256."""
        digest = hashlib.sha256(payload).hexdigest()
        relative = f"{digest[:2]}/{digest}{suffix}"
        if not (self.root / relative).is_file():
            name = f"{digest}{suffix}{_PENDING_MARK}{secrets.token_hex(8)}"
            try:
                staged.files.append((pending_files.write_pending(self.root, name, payload), relative))
            except OSError as exc:
                raise DispatchError(f"cannot store a payload under {self.root}: {exc.strerror or exc}") from exc
        return relative, digest

    def staged(self) -> StagedPayloads:
        """An empty set of pending payloads."""
        return StagedPayloads(self.root)

    @staticmethod
    def kept_as(pending: Path) -> str | None:
        """The path a pending payload file is kept under once its row is committed (None: not a payload's)."""
        name = pending.name.partition(_PENDING_MARK)[0]
        return f"{name[:2]}/{name}" if _PENDING_MARK in pending.name and len(name) > 64 else None

    def _promote_pending(self, relative: str, sha256: str) -> None:
        """A committed row whose payload is still pending (a crash, or a dispatcher quicker than the writer's
        :meth:`StagedPayloads.keep`): the pending file with its content is moved to the name the row records."""
        for pending in pending_files.pending_files(self.root):
            if self.kept_as(pending) == relative and hashlib.sha256(pending.read_bytes()).hexdigest() == sha256:
                pending_files.promote(self.root, pending, relative)
                return

    def read(self, relative: str, sha256: str) -> bytes:
        """The payload a row names (``relative``), checked against its recorded SHA-256."""
        path = self.root / relative
        try:
            if not path.is_file():
                self._promote_pending(relative, sha256)
            payload = path.read_bytes()
        except OSError as exc:
            raise DispatchRejectedError(f"payload file {relative} cannot be read: {exc.strerror}") from exc
        if hashlib.sha256(payload).hexdigest() != sha256:
            raise DispatchRejectedError(f"payload file {relative} does not match its recorded SHA-256")
        if not payload:  # no delivery is empty: a withdrawal that could not be built is stored so (withdrawals)
            raise DispatchRejectedError(f"payload file {relative} is empty: there is nothing to send")
        return payload

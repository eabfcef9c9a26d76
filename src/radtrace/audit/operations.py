"""Operations on the audit log that are themselves audited: verification and signed checkpoints.

The CLI, the HTTP API and the console call these; each records an "audit log used" event naming who asked, and
a failed verification (or a refused checkpoint) also records a security alert. What a verification covers and
what it cannot see is in :mod:`radtrace.audit.checkpoints`.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from radtrace.audit.chain import Checkpoint, Verification, verify_chain, write_checkpoint
from radtrace.audit.checkpoints import CheckpointSource, HeldCheckpoints, coverage, load_checkpoints
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.errors import ConfigError, PermanentError
from radtrace.store.engine import Store

__all__ = ["AuditVerification", "ChainNotVerifiedError", "checkpoint_audit_log", "local_operator", "verify_audit_log"]


def local_operator() -> Actor:
    """The person running a CLI command on this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return Actor(user=user, host=socket.gethostname())


@dataclass(frozen=True)
class AuditVerification:
    """A verification and what it covers: the walk's result, the checkpoints held, and the words for both."""

    result: Verification
    held: HeldCheckpoints
    covered: str
    not_covered: str

    @property
    def problems(self) -> list[str]:
        """Everything wrong, first the broken row, then each checkpoint that failed or is not one."""
        result = self.result
        listed = result.breaks or ((result.first_break,) if result.first_break is not None else ())
        found = [f"audit chain broken at seq {broken.seq}: {broken.problem}" for broken in listed]
        if result.broken_rows > len(listed):
            more = result.broken_rows - len(listed)
            found.append(f"{more:,} more broken rows after seq {listed[-1].seq}, not listed")
        if self.result.checkpoint_problem is not None:
            found.append(f"checkpoint does not match: {self.result.checkpoint_problem}")
        found += [f"checkpoint refused: {problem}" for problem in self.held.problems]
        return found

    @property
    def ok(self) -> bool:
        """Whether the chain, every checkpoint and every checkpoint file hold."""
        return not self.problems


def verify_audit_log(
    store: Store,
    asked_by: Actor,
    *,
    checkpoint_file: Path | None = None,
    checkpoint_key: bytes | None = None,
    checkpoints: CheckpointSource | None = None,
    progress: Callable[[int], None] | None = None,
) -> AuditVerification:
    """Verify the chain against every signed checkpoint ``checkpoints`` holds (and ``checkpoint_file``), and
    record who verified and the outcome (a security alert when anything fails)."""
    if checkpoint_file is not None:
        if checkpoint_key is None and (checkpoints is None or checkpoints.key is None):
            raise ConfigError("audit.checkpoint_key is required to check a signed checkpoint")
        base = checkpoints or CheckpointSource(checkpoint_key, None)
        checkpoints = CheckpointSource(checkpoint_key or base.key, base.directory, (*base.files, checkpoint_file))
    held = load_checkpoints(checkpoints)
    result = verify_chain(store, checkpoints=held.checkpoints, progress=progress)
    covered, not_covered = coverage(result, held)
    verification = AuditVerification(result, held, covered, not_covered)
    payload = {
        "rows_checked": result.rows_checked,
        "head_seq": result.head_seq,
        "head_hash": result.head_hash,
        "checkpoints_checked": result.checkpoints_checked,
        "anchored_seq": result.anchored_seq,
        "first_break": None
        if result.first_break is None
        else {"seq": result.first_break.seq, "problem": result.first_break.problem},
        "breaks": [{"seq": broken.seq, "problem": broken.problem} for broken in result.breaks],
        "broken_rows": result.broken_rows,
        "checkpoint_problem": result.checkpoint_problem,
        "checkpoint_files_refused": list(held.problems),
    }
    events = [
        AuditEvent(
            EventType.AUDIT_VERIFIED,
            asked_by,
            Outcome.SUCCESS if verification.ok else Outcome.SERIOUS_FAILURE,
            payload=payload,
        )
    ]
    if not verification.ok:
        events.append(AuditEvent(EventType.TAMPER_DETECTED, asked_by, Outcome.MAJOR_FAILURE, payload=payload))
    AuditRecorder(store).record_many(events)
    return verification


class ChainNotVerifiedError(PermanentError):
    """``audit checkpoint`` refused to sign: the chain, or a checkpoint already held, does not verify."""


def checkpoint_audit_log(
    store: Store, asked_by: Actor, key: bytes, path: Path, *, held_in: Path | None = None
) -> Checkpoint:
    """Verify the chain against the checkpoints held in ``held_in`` (default: ``path``'s folder), then sign the
    head that walk ended at, write it to ``path`` and record that it was taken.

    A chain that does not verify is not signed: :class:`ChainNotVerifiedError`, and a ``tamper_detected`` alert.
    """
    source = CheckpointSource(key, held_in or path.parent)
    held = load_checkpoints(source)
    result = verify_chain(store, checkpoints=held.checkpoints)
    covered, not_covered = coverage(result, held)
    verification = AuditVerification(result, held, covered, not_covered)
    if not verification.ok:
        payload = {"refused": "checkpoint", "problems": verification.problems, "head_seq": result.head_seq}
        AuditRecorder(store).record(AuditEvent(EventType.TAMPER_DETECTED, asked_by, Outcome.MAJOR_FAILURE,
                                               payload=payload))  # fmt: skip
        raise ChainNotVerifiedError(
            "no checkpoint written, the chain does not verify: " + "; ".join(verification.problems) + ". (If the "
            "database was restored from a backup on purpose, move the checkpoints newer than it out of "
            f"{source.directory} and keep them: they record the events the restore lost.)"
        )
    checkpoint = write_checkpoint(store, key, path, head=(result.head_seq, result.head_hash))
    AuditRecorder(store).record(
        AuditEvent(
            EventType.AUDIT_CHECKPOINTED,
            asked_by,
            payload={"seq": checkpoint.seq, "hash": checkpoint.hash, "file": str(path)},
        )
    )
    return checkpoint

"""Operations on the audit log that are themselves audited: verification and signed checkpoints.

The CLI and the HTTP API call these; each records an "audit log used" event naming who asked, and a
failed verification also records a security alert.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from pathlib import Path

from radtrace.audit.chain import Checkpoint, Verification, read_checkpoint, verify_chain, write_checkpoint
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.errors import ConfigError
from radtrace.store.engine import Store

__all__ = ["checkpoint_audit_log", "local_operator", "verify_audit_log"]


def local_operator() -> Actor:
    """The person running a CLI command on this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return Actor(user=user, host=socket.gethostname())


def verify_audit_log(
    store: Store,
    asked_by: Actor,
    *,
    checkpoint_file: Path | None = None,
    checkpoint_key: bytes | None = None,
    progress: Callable[[int], None] | None = None,
) -> Verification:
    """Verify the chain (and a signed checkpoint, if given) and record who verified and the outcome."""
    checkpoint: Checkpoint | None = None
    if checkpoint_file is not None:
        if checkpoint_key is None:
            raise ConfigError("audit.checkpoint_key is required to check a signed checkpoint")
        checkpoint = read_checkpoint(checkpoint_file, checkpoint_key)
    result = verify_chain(store, checkpoint=checkpoint, progress=progress)
    payload = {
        "rows_checked": result.rows_checked,
        "head_seq": result.head_seq,
        "head_hash": result.head_hash,
        "checkpoint_seq": checkpoint.seq if checkpoint else None,
        "first_break": None
        if result.first_break is None
        else {"seq": result.first_break.seq, "problem": result.first_break.problem},
        "checkpoint_problem": result.checkpoint_problem,
    }
    events = [
        AuditEvent(
            EventType.AUDIT_VERIFIED,
            asked_by,
            Outcome.SUCCESS if result.ok else Outcome.SERIOUS_FAILURE,
            payload=payload,
        )
    ]
    if not result.ok:
        events.append(AuditEvent(EventType.TAMPER_DETECTED, asked_by, Outcome.MAJOR_FAILURE, payload=payload))
    AuditRecorder(store).record_many(events)
    return result


def checkpoint_audit_log(store: Store, asked_by: Actor, key: bytes, path: Path) -> Checkpoint:
    """Write a signed checkpoint of the current head to ``path`` and record that it was taken."""
    checkpoint = write_checkpoint(store, key, path)
    AuditRecorder(store).record(
        AuditEvent(
            EventType.AUDIT_CHECKPOINTED,
            asked_by,
            payload={"seq": checkpoint.seq, "hash": checkpoint.hash, "file": str(path)},
        )
    )
    return checkpoint

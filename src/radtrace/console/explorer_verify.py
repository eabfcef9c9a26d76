"""The audit chain's verification as the console runs it: at most one walk at a time per console process, in a
thread of its own, so a walk over millions of rows neither blocks the event loop nor runs twice
(:mod:`radtrace.console.explorer` serves its pages and the progress poll)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from radtrace.audit.checkpoints import CheckpointSource
from radtrace.audit.events import Actor
from radtrace.audit.operations import AuditVerification, verify_audit_log
from radtrace.audit.schema import AuditEventRow
from radtrace.errors import RadtraceError
from radtrace.store.engine import Store

__all__ = ["Verifier", "VerifyRun"]

log = logging.getLogger("radtrace.console.explorer")


@dataclass
class VerifyRun:
    """One walk of the chain started from the console: who, when, how far, and how it ended."""

    started_by: str
    started_at: datetime
    total: int = 0
    checked: int = 0
    finished_at: datetime | None = None
    result: AuditVerification | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        """Whether the walk is still going."""
        return not self.done.is_set()

    def as_json(self) -> dict[str, Any]:
        """What the progress poll returns."""
        return {"running": self.running, "checked": self.checked, "total": self.total}


class Verifier:
    """At most one verification at a time per console process, in a thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: VerifyRun | None = None

    def start(self, store: Store, actor: Actor, checkpoints: CheckpointSource) -> tuple[VerifyRun, bool]:
        """Start a walk unless one is running; returns the run to show and whether this call started it."""
        with self._lock:
            if self.current is not None and self.current.running:
                return self.current, False
            run = VerifyRun(started_by=actor.user or "?", started_at=datetime.now(UTC))
            self.current = run
        threading.Thread(
            target=self._walk, args=(store, actor, checkpoints, run), name="console-audit-verify", daemon=True
        ).start()
        return run, True

    @staticmethod
    def _walk(store: Store, actor: Actor, checkpoints: CheckpointSource, run: VerifyRun) -> None:
        def advance(checked: int) -> None:
            run.checked = checked

        try:
            table = AuditEventRow.__table__
            with store.session("reading the audit head") as session:
                run.total = int(session.scalar(sa.select(sa.func.max(table.c.seq))) or 0)
            run.result = verify_audit_log(store, actor, checkpoints=checkpoints, progress=advance)
            run.checked = run.result.result.rows_checked
        except RadtraceError as exc:
            run.error = exc.reason
            log.warning("console: audit verification failed: %s", exc.reason)
        except Exception:  # the page must say it ended, whatever went wrong
            run.error = "internal error (see the service's log)"
            log.exception("console: audit verification failed")
        finally:
            run.finished_at = datetime.now(UTC)
            run.done.set()

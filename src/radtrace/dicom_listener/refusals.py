"""Refused associations in the audit log, aggregated so that strangers cannot grow it without bound.

Refusals are grouped by source address, reason and door (the listener port they came in on and whether it is
the TLS one: with ``listener.plain_port`` a scan of the plain port is told apart from one of the TLS port). The
first refusal of a group in an interval is recorded at once, with its details; the others in the same interval are
only counted, and one more event with their count (``"aggregated": true``) is written when the interval ends (at
the next refusal or the listener's next :meth:`RefusalAudit.flush`). Both events carry the door (``port``,
``tls``) when it is known. At most :data:`MAX_KEYS` groups are told apart per interval; past that, refusals are
counted under the source ``"*"`` (still per reason and door). A flood of any size thus costs at most two rows per
group per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome

__all__ = ["MAX_KEYS", "RefusalAudit"]

log = logging.getLogger(__name__)

#: Distinct (source, reason, door) groups told apart per interval.
MAX_KEYS: Final = 256

#: A refusal's group: source address, reason, port (``None``: not known) and whether over TLS.
_Key = tuple[str, str, int | None, bool | None]


@dataclass
class _Pending:
    first_at: float
    calling_ae: str | None
    count: int = 0
    details: dict[str, Any] = field(default_factory=dict)


class RefusalAudit:
    """Decides which refusals become audit events; ``write`` records them (never raises into the caller)."""

    def __init__(
        self,
        write: Callable[[list[AuditEvent]], None],
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        event_type: EventType = EventType.ASSOCIATION_REJECTED,
    ) -> None:
        """``event_type``: the events written (``association_rejected``; ``instance_rejected`` for the presentation
        contexts an association had refused at negotiation)."""
        self._write = write
        self.event_type = event_type
        self.interval_s = interval_s
        self._clock = clock
        self._pending: dict[_Key, _Pending] = {}
        self._lock = threading.Lock()

    def refused(
        self,
        host: str,
        reason: str,
        *,
        calling_ae: str | None = None,
        port: int | None = None,
        tls: bool | None = None,
        **details: Any,
    ) -> None:
        """One refusal from ``host`` for ``reason`` on ``port`` (``tls``: whether that port is the TLS one); details
        go into the first event of the interval."""
        now = self._clock()
        events = self._due(now)
        with self._lock:
            key: _Key = (host, reason, port or None, tls if port else None)
            if key not in self._pending and len(self._pending) >= MAX_KEYS:
                key = ("*", *key[1:])
            entry = self._pending.get(key)
            if entry is None:
                self._pending[key] = _Pending(first_at=now, calling_ae=calling_ae)
                events.append(_event(self.event_type, key, calling_ae, 1, aggregated=False, details=details))
            else:
                entry.count += 1
        self._record(events)

    def flush(self, *, force: bool = False) -> None:
        """Write the counts of intervals that have ended (all of them with ``force``, e.g. at stop)."""
        self._record(self._due(self._clock(), force=force))

    def _due(self, now: float, *, force: bool = False) -> list[AuditEvent]:
        events = []
        with self._lock:
            for key, entry in list(self._pending.items()):
                if force or now - entry.first_at >= self.interval_s:
                    del self._pending[key]
                    if entry.count:
                        calling = entry.calling_ae
                        events.append(_event(self.event_type, key, calling, entry.count, aggregated=True, details={}))
        return events

    def _record(self, events: list[AuditEvent]) -> None:
        if not events:
            return
        try:
            self._write(events)
        except Exception as exc:  # the refusal stands; the log says the audit row is missing
            log.error("could not record %d refusal audit event(s): %s", len(events), type(exc).__name__)


def _event(
    event_type: EventType,
    key: _Key,
    calling_ae: str | None,
    count: int,
    *,
    aggregated: bool,
    details: dict[str, Any],
) -> AuditEvent:
    host, reason, port, tls = key
    payload: dict[str, Any] = {"reason": reason, "count": count, "aggregated": aggregated, **details}
    if port is not None:
        payload.update(port=port, tls=tls)
    return AuditEvent(
        event_type,
        Actor(ae_title=None if aggregated else calling_ae or None, host=host),
        outcome=Outcome.MINOR_FAILURE,
        payload=payload,
    )

"""Refused associations in the audit log, aggregated so that strangers cannot grow it without bound.

Refusals are grouped by source address, reason and door (the listener port they came in on and whether it is
the TLS one: with ``listener.plain_port`` a scan of the plain port is told apart from one of the TLS port). The
first refusal of a group in an interval is recorded at once, with its details; the others in the same interval are
counted, and an event with their count (``"aggregated": true``) is written when the interval ends (at the next
refusal or the listener's next :meth:`RefusalAudit.flush`, which the listener's watchdog calls four times a second).
So that ``radtrace status`` (which reads the audit log) shows a group's later refusals within seconds rather than at
the interval's end, a group's count so far is also written once :data:`LIVE_S` have passed since its last event,
while the interval lasts: at most :data:`MAX_KEYS` such early events per interval in all (past that, counts wait
for the interval's end, as a flood's do). Both events carry the door (``port``, ``tls``) when it is known. At most
:data:`MAX_KEYS` groups are told apart per interval; past that, refusals are counted under the source ``"*"``
(still per reason and door). A flood of any size thus costs at most two rows per group per interval, plus
:data:`MAX_KEYS` early ones in all.

A refusal may name *items* (the presentation contexts an association had refused): each event lists the distinct
items of the refusals it counts, at most :data:`MAX_ITEMS` of them (each string cut to :data:`ITEM_CHARS`), and
how many it did not list (``<items_key>_not_listed``, repeats included): what a group holds in memory is bounded
whatever the peers propose.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome

#: The audit reason of contexts refused for a SOP class of another DICOM service than storage (Query/Retrieve,
#: worklist, MPPS, storage commitment …; :func:`.contexts.another_service`): no instance was refused. A PACS's C-ECHO
#: (Orthanc's) and many modalities propose them with every association; counted as refusals they paged hospital IT
#: for nothing. Here, not in :mod:`.contexts`, so ``radtrace status`` reads it without importing pynetdicom.
SERVICES_NOT_OFFERED: Final = "services other than storage proposed, not offered"

__all__ = ["ITEM_CHARS", "LIVE_S", "MAX_ITEMS", "MAX_KEYS", "SERVICES_NOT_OFFERED", "DistinctItems", "RefusalAudit"]

log = logging.getLogger(__name__)

#: Distinct (source, reason, door) groups told apart per interval.
MAX_KEYS: Final = 256

#: A group's count so far is written this long after its last event (while early events are left this interval).
LIVE_S: Final = 3.0

#: Distinct items (refused presentation contexts) one event lists.
MAX_ITEMS: Final = 16

#: Characters kept of each string in an item (a UID is at most 64).
ITEM_CHARS: Final = 64

#: A refusal's group: source address, reason, port (``None``: not known) and whether over TLS.
_Key = tuple[str, str, int | None, bool | None]

#: An item: its fields, in order (hashable, so that repeats are told apart).
_Item = tuple[tuple[str, str | int | None], ...]


@dataclass
class DistinctItems:
    """The distinct items of some refusals, the first :data:`MAX_ITEMS` of them, and a count of those not kept."""

    kept: dict[_Item, None] = field(default_factory=dict)
    not_listed: int = 0

    def add(self, items: Iterable[Mapping[str, str | int | None]]) -> None:
        """Keep ``items`` not seen yet while there is room; count the others that are not kept."""
        for item in items:
            key: _Item = tuple((name, _cut(value)) for name, value in item.items())
            if key in self.kept:
                continue
            if len(self.kept) < MAX_ITEMS:
                self.kept[key] = None
            else:
                self.not_listed += 1

    def payload(self, items_key: str) -> dict[str, Any]:
        """``{items_key: [...], items_key_not_listed: n}``."""
        listed = [{name: value for name, value in item if value is not None} for item in self.kept]
        return {items_key: listed, f"{items_key}_not_listed": self.not_listed}


def _cut(value: str | int | None) -> str | int | None:
    return value[:ITEM_CHARS] if isinstance(value, str) else value


@dataclass
class _Pending:
    first_at: float
    calling_ae: str | None
    written_at: float
    count: int = 0  # refusals since the group's last event
    items: DistinctItems = field(default_factory=DistinctItems)


class RefusalAudit:
    """Decides which refusals become audit events; ``write`` records them (never raises into the caller)."""

    def __init__(
        self,
        write: Callable[[list[AuditEvent]], None],
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        event_type: EventType = EventType.ASSOCIATION_REJECTED,
        items_key: str = "items",
    ) -> None:
        """``event_type``: the events written (``association_rejected``; ``instance_rejected`` for the presentation
        contexts an association had refused at negotiation). ``items_key``: the payload key of a refusal's items."""
        self._write = write
        self.event_type = event_type
        self.interval_s = interval_s
        self.items_key = items_key
        self._clock = clock
        self._pending: dict[_Key, _Pending] = {}
        self._early_since = clock()
        self._early_written = 0
        self._lock = threading.Lock()

    def refused(
        self,
        host: str,
        reason: str,
        *,
        calling_ae: str | None = None,
        port: int | None = None,
        tls: bool | None = None,
        items: Iterable[Mapping[str, str | int | None]] | None = None,
        **details: Any,
    ) -> None:
        """One refusal from ``host`` for ``reason`` on ``port`` (``tls``: whether that port is the TLS one); details
        go into the first event of the interval, ``items`` (distinct, bounded) into the event that counts it."""
        now = self._clock()
        events = self._due(now)
        with self._lock:
            key: _Key = (host, reason, port or None, tls if port else None)
            if key not in self._pending and len(self._pending) >= MAX_KEYS:
                key = ("*", *key[1:])
            entry = self._pending.get(key)
            if entry is None:
                self._pending[key] = _Pending(first_at=now, calling_ae=calling_ae, written_at=now)
                if items is not None:
                    first = DistinctItems()
                    first.add(items)
                    details = {**details, **first.payload(self.items_key)}
                events.append(_event(self.event_type, key, calling_ae, 1, aggregated=False, details=details))
            else:
                entry.count += 1
                if items is not None:
                    entry.items.add(items)
        self._record(events)

    def flush(self, *, force: bool = False) -> None:
        """Write the counts of intervals that have ended (all of them with ``force``, e.g. at stop), and the counts
        so far of groups whose last event is :data:`LIVE_S` old."""
        self._record(self._due(self._clock(), force=force))

    def _due(self, now: float, *, force: bool = False) -> list[AuditEvent]:
        events = []
        with self._lock:
            if now - self._early_since >= self.interval_s:
                self._early_since, self._early_written = now, 0
            for key, entry in list(self._pending.items()):
                ended = force or now - entry.first_at >= self.interval_s
                early = entry.count and now - entry.written_at >= LIVE_S and self._early_written < MAX_KEYS
                if ended:
                    del self._pending[key]
                elif early:
                    self._early_written += 1
                else:
                    continue
                if entry.count:
                    events.append(self._aggregated(key, entry))
                entry.count, entry.items, entry.written_at = 0, DistinctItems(), now
        return events

    def _aggregated(self, key: _Key, entry: _Pending) -> AuditEvent:
        details = entry.items.payload(self.items_key) if entry.items.kept or entry.items.not_listed else {}
        return _event(self.event_type, key, entry.calling_ae, entry.count, aggregated=True, details=details)

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

"""The listener's refusals of the last hour, for ``radtrace status``: per port (TLS or not) and reason, with counts.

The listener audits refusals in aggregate (:mod:`radtrace.dicom_listener.refusals`): per (source, reason, port, tls)
and interval, a first event (``count`` 1, naming the calling AE title) and, when more came, one ``"aggregated":
true`` event with their count. Here those of both event types (``association_rejected``: associations refused;
``instance_rejected``: presentation contexts refused at negotiation, an instance refused for a full spool) are summed
per (event type, port, tls, reason), with the sources as the events name them (calling AE title and address). Only
the actor's AE title and address and the payload's reason, count, port and tls are read: none of them is patient
data. One query over the ``(event_type, recorded_at, …)`` index, at most :data:`ROW_LIMIT` rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.dicom_listener.refusals import SERVICES_NOT_OFFERED

__all__ = ["ROW_LIMIT", "WINDOW", "RecentRefusals", "RefusalGroup", "recent_refusals"]

#: How far back ``radtrace status`` looks.
WINDOW = timedelta(hours=1)

#: Rows read at most (the aggregation writes at most two per group and interval; past this the counts are a floor).
ROW_LIMIT = 5000

#: Sources named per group (the rest counted).
SOURCES_SHOWN = 5

_TYPES = (EventType.ASSOCIATION_REJECTED.value, EventType.INSTANCE_REJECTED.value)

#: Refusals whose kind is not their event type's (``radtrace.dicom_listener.served``'s refused DIMSE requests are
#: ``instance_rejected`` events, but no instance or context was refused).
_KINDS = {"DIMSE request refused": "DIMSE request"}


@dataclass(frozen=True)
class RefusalGroup:
    """Refusals of one kind, on one port, for one reason, in the window."""

    event_type: str
    port: int | None  # None: not named (an event from before 8cda536, or a refusal of no port)
    tls: bool | None
    reason: str
    count: int
    sources: tuple[str, ...]  # "AE at host", or "host" where no event named the calling AE title

    def door(self) -> str:
        """The port, and TLS or not."""
        if self.port is None:
            return "port not recorded"
        return f"port {self.port} ({'TLS' if self.tls else 'no TLS'})"

    def describe(self) -> str:
        """One line: door, reason, count, sources."""
        shown = ", ".join(self.sources[:SOURCES_SHOWN])
        more = len(self.sources) - SOURCES_SHOWN
        if more > 0:
            shown += f" and {more} more"
        if self.reason == SERVICES_NOT_OFFERED:
            return (
                f"{self.door()}: {self.count} association(s) proposed other services, not offered; "
                f"from {shown or 'unknown'}"
            )
        kind = _KINDS.get(self.reason) or (
            "association" if self.event_type == EventType.ASSOCIATION_REJECTED.value else "instance/context"
        )
        return f"{self.door()}: {self.count} {kind} refusal(s): {self.reason}; from {shown or 'unknown'}"

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {
            "event_type": self.event_type,
            "port": self.port,
            "tls": self.tls,
            "reason": self.reason,
            "count": self.count,
            "sources": list(self.sources),
        }


@dataclass(frozen=True)
class RecentRefusals:
    """The refusals recorded since ``since``, grouped."""

    since: datetime
    groups: list[RefusalGroup]
    truncated: bool = False  # more than ROW_LIMIT rows: the counts are at least these

    def commands(self) -> list[str]:
        """The commands that show them in full, one per event type present."""
        since = f"{self.since:%Y-%m-%dT%H:%M:%SZ}"  # UTC, as radtrace audit query echoes it
        types = [t for t in _TYPES if any(group.event_type == t for group in self.groups)]
        return [f"radtrace audit query --event-type {t} --since {since}" for t in types]

    def refusals(self) -> list[RefusalGroup]:
        """The groups that refused something a peer sends or would send (not :meth:`other_services`)."""
        return [group for group in self.groups if group.reason != SERVICES_NOT_OFFERED]

    def other_services(self) -> list[RefusalGroup]:
        """Contexts of other services than storage that peers proposed (a PACS's C-ECHO proposes Query/Retrieve and
        worklist too): no instance refused, so shown apart and not counted as refusals."""
        return [group for group in self.groups if group.reason == SERVICES_NOT_OFFERED]

    def lines(self) -> list[str]:
        """How ``radtrace status`` shows them (nothing when there were none)."""
        if not self.groups:
            return []
        floor = " (at least: more rows than read)" if self.truncated else ""
        since = f"since {self.since:%Y-%m-%d %H:%M:%S} UTC (last hour)"
        lines = []
        if refusals := self.refusals():
            lines.append(f"listener refusals {since}: {sum(group.count for group in refusals)}{floor}")
            lines.extend(f"  {group.describe()}" for group in refusals)
        if others := self.other_services():
            lines.append(
                f"other services proposed {since} (not offered; no instance refused): "
                f"{sum(group.count for group in others)}{floor}"
            )
            lines.extend(f"  {group.describe()}" for group in others)
        return lines + [f"  again: {command}" for command in self.commands()]

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {
            "since": self.since.isoformat(),
            "total": sum(group.count for group in self.refusals()),
            "other_services": sum(group.count for group in self.other_services()),
            "truncated": self.truncated,
            "groups": [group.as_json() for group in self.groups],
            "again": self.commands(),
        }


def refusals_query(since: datetime, limit: int = ROW_LIMIT) -> sa.Select[str, str | None, str | None, str]:
    """The one query: the refusal events since ``since`` (a range over the event type and time index)."""
    return (
        sa.select(AuditEventRow.event_type, AuditEventRow.actor_ae, AuditEventRow.actor_host, AuditEventRow.payload)
        .where(AuditEventRow.event_type.in_(_TYPES), AuditEventRow.recorded_at >= since)
        .limit(limit + 1)
    )


def recent_refusals(session: Session, now: datetime, limit: int = ROW_LIMIT) -> RecentRefusals:
    """The refusals recorded in the :data:`WINDOW` before ``now``, per (event type, port, tls, reason)."""
    since = now - WINDOW
    rows = session.execute(refusals_query(since, limit)).all()
    counts: dict[tuple[str, int | None, bool | None, str], int] = {}
    sources: dict[tuple[str, int | None, bool | None, str], dict[str, set[str]]] = {}
    for event_type, ae, host, payload in rows[:limit]:
        try:
            data = json.loads(payload)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        port = data.get("port")
        port = port if isinstance(port, int) and not isinstance(port, bool) and port else None
        tls = data.get("tls") if port is not None and isinstance(data.get("tls"), bool) else None
        reason = str(data.get("reason") or "(no reason recorded)")
        count = data.get("count")
        count = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1
        key = (str(event_type), port, tls, reason)
        counts[key] = counts.get(key, 0) + count
        titles = sources.setdefault(key, {}).setdefault(host or "unknown address", set())
        if ae:
            titles.add(ae)
    groups = [
        RefusalGroup(*key, count=counts[key], sources=_sources(sources[key]))
        for key in sorted(counts, key=lambda k: (-counts[k], k[0], k[1] or 0, bool(k[2]), k[3]))
    ]
    return RecentRefusals(since, groups, truncated=len(rows) > limit)


def _sources(by_host: dict[str, set[str]]) -> tuple[str, ...]:
    """``AE at host`` per AE title named from each host; a host whose events named none, alone."""
    named: list[str] = []
    for host in sorted(by_host):
        titles = sorted(by_host[host])
        if titles:
            named.extend(f"{title} at {host}" for title in titles)
        else:
            named.append(host)
    return tuple(named)

"""How much CPU one source may spend on association negotiation: a token bucket per source, in CPU seconds.

An A-ASSOCIATE-RQ is the costliest thing a stranger can make the listener do before any policy has seen it:
pynetdicom builds objects for every item, so 128 presentation contexts x 12 transfer syntaxes (44 KB, a valid
RQ) cost some 40 ms of CPU to decode and answer. One host sending such RQs back to back took a core.

Each connection's negotiation is charged to its source here, as the CPU its DUL and association threads used
until the association was established (or the connection ended): :meth:`NegotiationBudget.charge`. A source
starts with ``listener.negotiation_cpu_burst_s`` (default :data:`BURST_CPU_S`) and earns
``listener.negotiation_cpu_rate_s`` (default :data:`RATE_CPU_S_PER_S`) back each second; a source in debt has its
next connections closed at once, before a byte is read or a TLS handshake made (:meth:`~NegotiationBudget.allows`),
and an RQ that arrives on a connection opened before the debt is not decoded. Debt is never forgiven, so over any
interval a source costs at most the rate plus the burst plus the connections it had already opened.

A real PACS opens a handful of associations a second, each a few milliseconds of negotiation: far below the rate.
IPv6 sources are counted per /64 (one host usually holds a whole /64); IPv4 per address.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from radtrace.config import ListenerSettings

__all__ = ["BURST_CPU_S", "RATE_CPU_S_PER_S", "REFUSED_REASON", "NegotiationBudget", "source_key"]

#: CPU seconds per second one source earns back by default (``listener.negotiation_cpu_rate_s``): a fifth of the
#: listener process's core (pynetdicom holds the GIL, so a process uses one core at most).
RATE_CPU_S_PER_S: Final[float] = ListenerSettings.model_fields["negotiation_cpu_rate_s"].default
#: CPU seconds a source may spend at once before the rate binds, by default (``listener.negotiation_cpu_burst_s``):
#: some 50 of the largest valid RQs.
BURST_CPU_S: Final[float] = ListenerSettings.model_fields["negotiation_cpu_burst_s"].default
#: Sources told apart at once; past it the one with the most credit left is forgotten (it starts full again).
MAX_SOURCES: Final = 4096
#: The reason in the audit log, the metrics and the log line.
REFUSED_REASON: Final = "negotiation CPU budget of this source spent"


@functools.lru_cache(maxsize=MAX_SOURCES)
def source_key(host: str) -> str:
    """The budget's key for a source address: the address (IPv4), its /64 (IPv6), or the text as given."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Bucket:
    balance: float
    updated_at: float
    logged_at: float | None = None


class NegotiationBudget:
    """Per-source CPU credit for negotiation (thread-safe); :meth:`for_settings` builds the listener's."""

    def __init__(
        self,
        rate: float = RATE_CPU_S_PER_S,
        burst: float = BURST_CPU_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_sources = max_sources
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_settings(
        cls, settings: ListenerSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> NegotiationBudget:
        """The budget ``listener.negotiation_cpu_rate_s`` and ``listener.negotiation_cpu_burst_s`` set."""
        return cls(settings.negotiation_cpu_rate_s, settings.negotiation_cpu_burst_s, clock=clock)

    def _balance(self, bucket: _Bucket, now: float) -> float:
        return min(self.burst, bucket.balance + (now - bucket.updated_at) * self.rate)

    def balance(self, host: str) -> float:
        """The source's credit now, in CPU seconds (negative: its debt)."""
        with self._lock:
            bucket = self._buckets.get(source_key(host))
            return self.burst if bucket is None else self._balance(bucket, self.clock())

    def allows(self, host: str) -> bool:
        """Whether a connection from ``host`` may negotiate (the source is not in debt)."""
        return self.balance(host) > 0

    def charge(self, host: str, cpu_s: float) -> None:
        """Charge ``cpu_s`` seconds of CPU spent negotiating for ``host``."""
        key = source_key(host)
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_sources:
                    self._make_room(now)
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.balance = self._balance(bucket, now) - max(cpu_s, 0.0)
            bucket.updated_at = now

    def details(self, host: str) -> dict[str, float]:
        """The figures an audit event of a refusal carries (CPU seconds)."""
        return {
            "balance_cpu_s": round(self.balance(host), 3),
            "rate_cpu_s_per_s": self.rate,
            "burst_cpu_s": self.burst,
        }

    def first_refusal(self, host: str, interval_s: float) -> bool:
        """Whether a refusal of ``host`` now is the first in ``interval_s`` (for one log line per interval)."""
        with self._lock:
            bucket = self._buckets.get(source_key(host))
            now = self.clock()
            if bucket is None or (bucket.logged_at is not None and now - bucket.logged_at < interval_s):
                return False
            bucket.logged_at = now
            return True

    def _make_room(self, now: float) -> None:
        full = [key for key, bucket in self._buckets.items() if self._balance(bucket, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_sources:
            richest = max(self._buckets, key=lambda key: self._balance(self._buckets[key], now))
            del self._buckets[richest]

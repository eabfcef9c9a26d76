"""How much CPU one source may spend on association negotiation: a token bucket per source, in CPU seconds.

An A-ASSOCIATE-RQ is the costliest thing a stranger can make the listener do before any policy has seen it:
pynetdicom builds objects for every item, so 128 presentation contexts x 12 transfer syntaxes (44 KB, a valid
RQ) cost some 40 ms of CPU to decode and answer. One host sending such RQs back to back took a core.

Each connection's negotiation is charged to its source here, as the CPU its DUL and association threads used
until the association was established (or the connection ended), less the garbage collections that ran in them
(:func:`thread_cpu_s`): :meth:`NegotiationBudget.charge`. A source
starts with ``listener.negotiation_cpu_burst_s`` (default :data:`BURST_CPU_S`) and earns
``listener.negotiation_cpu_rate_s`` (default :data:`RATE_CPU_S_PER_S`) back each second; a source in debt has its
next connections closed at once, before a byte is read or a TLS handshake made (:meth:`~NegotiationBudget.allows`),
and an RQ that arrives on a connection opened before the debt is not decoded. Debt is never forgiven, so over any
interval a source costs at most the rate plus the burst plus the connections it had already opened.

A real PACS opens a handful of associations a second, each a few milliseconds of negotiation: far below the rate.
IPv6 sources are counted per /64 (one host usually holds a whole /64); IPv4 per address.

The processes of one ``radtrace listen`` (``listener.processes``) share one bucket per source
(:class:`~radtrace.dicom_listener.shared_counts.SharedBuckets`): the rate and burst are the source's over all of
them, not per process. A process killed part way through leaves no share behind to clear: what it charged was
spent, and is earned back as any debt.
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import threading
import time
from collections.abc import Callable
from typing import Final

from radtrace.config import ListenerSettings
from radtrace.dicom_listener.shared_counts import BUDGET_SOURCES, Bucket, SharedBuckets

__all__ = ["BURST_CPU_S", "RATE_CPU_S_PER_S", "REFUSED_REASON", "NegotiationBudget", "source_key", "thread_cpu_s"]

#: CPU seconds per second one source earns back by default (``listener.negotiation_cpu_rate_s``): a fifth of the
#: listener process's core (pynetdicom holds the GIL, so a process uses one core at most).
RATE_CPU_S_PER_S: Final[float] = ListenerSettings.model_fields["negotiation_cpu_rate_s"].default
#: CPU seconds a source may spend at once before the rate binds, by default (``listener.negotiation_cpu_burst_s``):
#: some 50 of the largest valid RQs.
BURST_CPU_S: Final[float] = ListenerSettings.model_fields["negotiation_cpu_burst_s"].default
#: Sources told apart at once; past it those with a full bucket are forgotten, else the quarter with the most credit
#: left (they start full again).
MAX_SOURCES: Final = BUDGET_SOURCES
#: The reason in the audit log, the metrics and the log line.
REFUSED_REASON: Final = "negotiation CPU budget of this source spent"


_collections = threading.local()  # per thread: ``started`` (a collection's start) and ``spent`` (CPU s in all)


def _count_collection(phase: str, info: dict[str, int]) -> None:
    """A :data:`gc.callbacks` entry: the CPU each collection took, added to the thread it ran in."""
    now = time.thread_time()
    if phase == "start":
        _collections.started = now
        return
    started = getattr(_collections, "started", None)
    if started is not None:
        _collections.spent = getattr(_collections, "spent", 0.0) + now - started
        _collections.started = None


gc.callbacks.append(_count_collection)


def thread_cpu_s() -> float:
    """This thread's CPU seconds so far, less the garbage collections that ran in it.

    A collection sweeps the whole process's heap, in whichever thread's allocation set it off: in a listener that
    has held many datasets a full one takes a second or more, which is not the peer's cost (a PACS's second
    association was refused once for the listener's own collection).
    """
    return time.thread_time() - getattr(_collections, "spent", 0.0)


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


class NegotiationBudget:
    """Per-source CPU credit for negotiation (thread- and process-safe); :meth:`for_settings` builds the listener's.

    ``table``: the buckets, shared with the other processes of one ``radtrace listen``
    (:attr:`radtrace.dicom_listener.shared_counts.SharedSourceCounts.negotiation`); without one the budget keeps
    its own. Every process must use the same clock: :func:`time.monotonic` (CLOCK_MONOTONIC) is the host's.
    """

    def __init__(
        self,
        rate: float = RATE_CPU_S_PER_S,
        burst: float = BURST_CPU_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = MAX_SOURCES,
        table: SharedBuckets | None = None,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.table = table if table is not None else SharedBuckets(max_sources, across_processes=False)
        self.max_sources = self.table.max_sources

    @classmethod
    def for_settings(
        cls,
        settings: ListenerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        table: SharedBuckets | None = None,
    ) -> NegotiationBudget:
        """The budget ``listener.negotiation_cpu_rate_s`` and ``listener.negotiation_cpu_burst_s`` set."""
        return cls(settings.negotiation_cpu_rate_s, settings.negotiation_cpu_burst_s, clock=clock, table=table)

    def _balance(self, bucket: Bucket, now: float) -> float:
        # A bucket written at a later time than now (another process's clock read a moment after ours) has earned
        # nothing more; one from the future by more than that (a clock that is not the host's) cannot add credit.
        return min(self.burst, bucket.balance + max(now - bucket.updated_at, 0.0) * self.rate)

    @property
    def sources(self) -> int:
        """Sources with a bucket now."""
        return len(self.table)

    def balance(self, host: str) -> float:
        """The source's credit now, in CPU seconds (negative: its debt); reads without taking the table's lock."""
        bucket = self.table.peek(self.table.identity(source_key(host)))
        return self.burst if bucket is None else self._balance(bucket, self.clock())

    def allows(self, host: str) -> bool:
        """Whether a connection from ``host`` may negotiate (the source is not in debt)."""
        return self.balance(host) > 0

    def charge(self, host: str, cpu_s: float) -> None:
        """Charge ``cpu_s`` seconds of CPU spent negotiating for ``host``."""

        def charged(bucket: Bucket | None) -> Bucket:
            now = self.clock()
            balance = self.burst if bucket is None else self._balance(bucket, now)
            return Bucket(balance - max(cpu_s, 0.0), now, None if bucket is None else bucket.logged_at)

        self.table.update(self.table.identity(source_key(host)), charged, self._make_room)

    def details(self, host: str) -> dict[str, float]:
        """The figures an audit event of a refusal carries (CPU seconds)."""
        return {
            "balance_cpu_s": round(self.balance(host), 3),
            "rate_cpu_s_per_s": self.rate,
            "burst_cpu_s": self.burst,
        }

    def first_refusal(self, host: str, interval_s: float) -> bool:
        """Whether a refusal of ``host`` now is the first in ``interval_s`` (for one log line per interval, over
        all the processes sharing the table)."""

        def logged(bucket: Bucket | None) -> Bucket | None:
            now = self.clock()
            if bucket is None or (bucket.logged_at is not None and now - bucket.logged_at < interval_s):
                return None
            bucket.logged_at = now
            return bucket

        return self.table.update(self.table.identity(source_key(host)), logged, self._make_room) is not None

    def _make_room(self, buckets: list[tuple[bytes, Bucket]]) -> list[tuple[bytes, Bucket]]:
        """Which buckets stay when a new source finds the table full: every one but those full (they would start
        full again); if none is full, every one but the quarter with the most credit. A quarter, not one: making
        room rewrites the table (some 20 ms at 4,096 sources), which one new source at a time would pay for each
        connection from a host with many addresses."""
        now = self.clock()
        kept = [(identity, bucket) for identity, bucket in buckets if self._balance(bucket, now) < self.burst]
        if len(kept) >= self.max_sources:
            kept.sort(key=lambda item: self._balance(item[1], now))
            del kept[len(kept) - max(1, self.max_sources // 4) :]
        return kept

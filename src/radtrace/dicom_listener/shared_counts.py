"""Per-source tables the listener processes that share one port (``listener.processes`` > 1) keep together.

* Associations per source (:class:`SharedSourceCounts`): ``listener.max_associations_per_source`` was counted per
  process: with N processes on the port (the kernel spreads connections over them) one source could hold N times
  the cap. Here each process publishes, in its own row of a small shared table, how many associations it holds
  from each source; the cap is checked against the sum of the rows. A process publishes before it reads, so of two
  processes admitting the same source at once at least one sees the other (both may refuse, as two threads of one
  process may). The parent clears the row of a child that has exited, so a killed process's associations are not
  counted against its sources.
* The negotiation CPU budget's buckets (:class:`SharedBuckets`, used by
  :class:`radtrace.dicom_listener.rq_budget.NegotiationBudget`): one bucket per source for all the processes, so
  that N processes give a source the rate and burst once, not N times. A bucket holds no process's share: what a
  killed process charged stays charged (the CPU was spent) and is earned back at the rate, as any debt.

Each table is an anonymous shared memory file (``memfd``) that the parent makes before it forks; updates and reads
hold a POSIX record lock on it (``lockf``: the kernel drops it if a process dies holding it) and a thread lock (a
record lock does not exclude the threads of the process that holds it). One update is a few microseconds, once
per association admitted or ended, or per accept and negotiation charged: nothing is added per PDU.

Only processes forked by one ``radtrace listen`` share a table; separately started listeners on one port (or on
several machines) each count their own.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import math
import mmap
import os
import struct
import threading
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Final

__all__ = ["BUDGET_SOURCES", "Bucket", "SharedBuckets", "SharedSourceCounts"]

#: Sources the negotiation budget tells apart at once (``rq_budget.MAX_SOURCES``).
BUDGET_SOURCES: Final = 4096

_COUNT: Final = struct.Struct("<I")
_ENTRY: Final = struct.Struct("<16sI")


def _key(host: str) -> bytes:
    """A source address as 16 bytes (IPv4 in its IPv6-mapped form; anything else hashed)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return hashlib.blake2b(host.encode(), digest_size=16).digest()
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{address}").packed
    return address.packed


class SharedSourceCounts:
    """A table of associations per source, one row per listener process, in memory shared across ``fork``."""

    def __init__(self, processes: int, capacity: int, budget_sources: int = BUDGET_SOURCES) -> None:
        """``capacity``: the most sources one process can hold associations from (its most connections);
        ``budget_sources``: the negotiation budget's (:attr:`negotiation`)."""
        self.negotiation = SharedBuckets(budget_sources)
        self.processes = processes
        self.capacity = capacity
        self._row_size = _COUNT.size + capacity * _ENTRY.size
        self._fd = os.memfd_create("radtrace-listener-sources", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, processes * self._row_size)
        self._map = mmap.mmap(self._fd, processes * self._row_size, mmap.MAP_SHARED)
        self._thread_lock = threading.Lock()
        self.index: int | None = None

    def attach(self, index: int) -> None:
        """This process writes row ``index`` (in a child, after the fork)."""
        self.index = index
        self.publish({})

    def publish(self, counts: Mapping[str, int]) -> None:
        """Replace this process's row with ``counts`` (sources with no association are left out)."""
        if self.index is None:
            return
        entries = [(_key(host), count) for host, count in counts.items() if count > 0][: self.capacity]
        row = _COUNT.pack(len(entries)) + b"".join(_ENTRY.pack(key, count) for key, count in entries)
        with self._locked():
            start = self.index * self._row_size
            self._map[start : start + len(row)] = row

    def others(self, host: str) -> int:
        """Associations from ``host`` that the other processes hold."""
        key = _key(host)
        total = 0
        with self._locked():
            for index in range(self.processes):
                if index != self.index:
                    total += self._row_count(index, key)
        return total

    def clear(self, index: int) -> None:
        """Empty a row (its process has exited)."""
        with self._locked():
            start = index * self._row_size
            self._map[start : start + _COUNT.size] = _COUNT.pack(0)

    def _row_count(self, index: int, key: bytes) -> int:
        start = index * self._row_size
        (entries,) = _COUNT.unpack_from(self._map, start)
        offset = start + _COUNT.size
        for _ in range(min(entries, self.capacity)):
            entry_key, count = _ENTRY.unpack_from(self._map, offset)
            if entry_key == key:
                return int(count)
            offset += _ENTRY.size
        return 0

    def _locked(self) -> _Locked:
        return _Locked(self._fd, self._thread_lock)


class _Locked:
    """The thread lock, then the record lock on the whole table."""

    def __init__(self, fd: int, thread_lock: threading.Lock) -> None:
        self._fd = fd
        self._thread_lock = thread_lock

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *_: object) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


@dataclass
class Bucket:
    """One source's negotiation credit: CPU seconds at ``updated_at`` (negative: debt), and when a refusal of it
    was last logged."""

    balance: float
    updated_at: float
    logged_at: float | None = None


# A table: a header (the region in use, 0 or 1) and two regions, each a count and slots. A slot: the source's
# 16-byte identity, the bucket, a CRC-32 of the 40 bytes before it, and 1 when the slot is taken. A rewrite
# (making room) fills the region not in use and then switches the header to it, one aligned 4-byte store: a
# process killed part way leaves the table as it was. A slot is one 48-byte store; one torn by a kill fails its
# CRC and is passed over (that source starts again with a full bucket, once).
_HEADER_SIZE: Final = 16
_REGION_IN_USE: Final = struct.Struct("<I")
_SLOT: Final = struct.Struct("<16sdddII")
_SLOT_BODY: Final = struct.Struct("<16sddd")
_TAKEN: Final = 1
_NO_IDENTITY: Final = bytes(16)


class SharedBuckets:
    """Negotiation budget buckets by source, in memory shared across ``fork`` (open addressing, linear probing).

    :meth:`peek` reads without a lock (the accept path: a slot's CRC tells a read torn by a writer in another
    process, which is then read again under the lock); :meth:`update` reads and writes under the table's locks.
    Holds at most ``max_sources`` buckets: where a new source finds the table full, ``update`` asks its caller
    which to keep. ``across_processes`` False: the table is one process's, and only the thread lock is taken.
    """

    def __init__(self, max_sources: int = BUDGET_SOURCES, *, across_processes: bool = True) -> None:
        self.max_sources = max(1, max_sources)
        self.slots = max(8, 2 * self.max_sources)  # at most half full: a lookup probes about 1.5 slots
        self._region_size = _COUNT.size + self.slots * _SLOT.size
        size = _HEADER_SIZE + 2 * self._region_size
        self._fd = os.memfd_create("radtrace-listener-negotiation", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)  # zeros: region 0 in use, empty
        self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED)
        self._view = memoryview(self._map)
        # A keyed hash: a peer cannot choose addresses that fall on one slot chain.
        self._hash_key = os.urandom(16)
        self._identities: dict[str, bytes] = {}
        self._thread_lock = threading.Lock()
        self._record_lock = across_processes
        weakref.finalize(self, _close, self._view, self._map, self._fd)

    def identity(self, source: str) -> bytes:
        """The 16 bytes a source key is stored under."""
        identity = self._identities.get(source)
        if identity is None:
            if len(self._identities) >= 4 * self.max_sources:
                self._identities.clear()
            identity = self._identities[source] = hashlib.blake2b(
                source.encode(), digest_size=16, key=self._hash_key
            ).digest()
        return identity

    def peek(self, identity: bytes) -> Bucket | None:
        """The source's bucket, or None, read without the lock (again with it where a write was under way)."""
        for _ in range(2):
            _, bucket, torn = self._find(self._region(), identity)
            if not torn:
                return bucket
        with self._locked():
            return self._find(self._region(), identity)[1]

    def update(
        self,
        identity: bytes,
        change: Callable[[Bucket | None], Bucket | None],
        make_room: Callable[[list[tuple[bytes, Bucket]]], list[tuple[bytes, Bucket]]],
    ) -> Bucket | None:
        """Under the lock: the source's bucket (None if it has none) through ``change``; a bucket returned is
        written. A new source in a full table first has ``make_room`` choose which buckets stay (of every readable
        one). What ``change`` returned."""
        with self._locked():
            base = self._region()
            offset, old, _ = self._find(base, identity)
            new = change(None if old is None else replace(old))
            if new is None:
                return None
            if old is None:
                (count,) = _COUNT.unpack_from(self._map, base)
                if offset is None or count >= self.max_sources:
                    self._rewrite(make_room(list(self._buckets(base))))
                    base = self._region()
                    offset, _, _ = self._find(base, identity)
                    (count,) = _COUNT.unpack_from(self._map, base)
                if offset is None or count >= self.max_sources:
                    return new  # make_room kept every bucket: this source goes uncounted
                self._write(offset, identity, new)
                _COUNT.pack_into(self._map, base, count + 1)
            elif offset is not None:
                self._write(offset, identity, new)
            return new

    def __len__(self) -> int:
        """Buckets held (slots taken, a torn one included)."""
        return int(_COUNT.unpack_from(self._map, self._region())[0])

    def _locked(self) -> _Locked | threading.Lock:
        return _Locked(self._fd, self._thread_lock) if self._record_lock else self._thread_lock

    def _buckets(self, base: int) -> Iterator[tuple[bytes, Bucket]]:
        for index in range(self.slots):
            identity, bucket, _ = self._read(base + _COUNT.size + index * _SLOT.size)
            if bucket is not None:
                yield identity, bucket

    def _rewrite(self, kept: list[tuple[bytes, Bucket]]) -> None:
        """Replace the buckets by ``kept``: written into the other region, then switched to."""
        other = 1 - self._in_use()
        base = _HEADER_SIZE + other * self._region_size
        self._map[base : base + self._region_size] = bytes(self._region_size)
        kept = kept[: self.max_sources]
        for identity, bucket in kept:
            offset, _, _ = self._find(base, identity)
            if offset is not None:
                self._write(offset, identity, bucket)
        _COUNT.pack_into(self._map, base, len(kept))
        _REGION_IN_USE.pack_into(self._map, 0, other)

    def _in_use(self) -> int:
        return int(_REGION_IN_USE.unpack_from(self._map, 0)[0]) & 1

    def _region(self) -> int:
        return _HEADER_SIZE + self._in_use() * self._region_size

    def _find(self, base: int, identity: bytes) -> tuple[int | None, Bucket | None, bool]:
        """The slot holding ``identity`` and its bucket, else the empty slot where it would go and None; whether
        a torn slot was passed on the way (one being written now, or one a killed process left half written)."""
        start = int.from_bytes(identity[:8], "little") % self.slots
        torn = False
        for step in range(self.slots):
            offset = base + _COUNT.size + (start + step) % self.slots * _SLOT.size
            found, bucket, taken = self._read(offset)
            if not taken:
                return offset, None, torn
            if bucket is None:
                torn = True
            elif found == identity:
                return offset, bucket, torn
        return None, None, torn

    def _read(self, offset: int) -> tuple[bytes, Bucket | None, bool]:
        """A slot's identity, its bucket (None where it is torn) and whether it is taken (any byte written)."""
        identity, balance, updated_at, logged_at, crc, taken = _SLOT.unpack_from(self._map, offset)
        if taken != _TAKEN:  # empty, or a first write under way (the identity goes first)
            return identity, None, taken != 0 or identity != _NO_IDENTITY
        if zlib.crc32(self._view[offset : offset + _SLOT_BODY.size]) != crc or not (
            math.isfinite(balance) and math.isfinite(updated_at)
        ):
            return identity, None, True
        return identity, Bucket(balance, updated_at, None if math.isnan(logged_at) else logged_at), True

    def _write(self, offset: int, identity: bytes, bucket: Bucket) -> None:
        logged_at = math.nan if bucket.logged_at is None else bucket.logged_at
        body = _SLOT_BODY.pack(identity, bucket.balance, bucket.updated_at, logged_at)
        self._map[offset : offset + _SLOT.size] = _SLOT.pack(
            identity, bucket.balance, bucket.updated_at, logged_at, zlib.crc32(body), _TAKEN
        )


def _close(view: memoryview, table: mmap.mmap, fd: int) -> None:
    view.release()
    table.close()
    os.close(fd)

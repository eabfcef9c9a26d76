"""Associations per source across the listener processes that share one port (``listener.processes`` > 1).

``listener.max_associations_per_source`` was counted per process: with N processes on the port (the kernel spreads
connections over them) one source could hold N times the cap. Here each process publishes, in its own row of a
small shared table, how many associations it holds from each source; the cap is checked against the sum of the
rows. A process publishes before it reads, so of two processes admitting the same source at once at least one sees
the other (both may refuse, as two threads of one process may).

The table is an anonymous shared memory file (``memfd``) that the parent makes before it forks; updates and reads
hold a POSIX record lock on it (``lockf``: the kernel drops it if a process dies holding it) and a thread lock (a
record lock does not exclude the threads of the process that holds it). The parent clears the row of a child
that has exited, so a killed process's associations are not counted against its sources. One update is a few
microseconds, once per association admitted or ended: nothing is added per PDU.

Only processes forked by one ``radtrace listen`` share a table; separately started listeners on one port (or on
several machines) each count their own.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import mmap
import os
import struct
import threading
from collections.abc import Mapping
from typing import Final

__all__ = ["SharedSourceCounts"]

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

    def __init__(self, processes: int, capacity: int) -> None:
        """``capacity``: the most sources one process can hold associations from (its most connections)."""
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

"""Log lines that a peer's behaviour causes, bounded per source so that a stranger cannot fill the disk with them.

Every refused or aborted association is audited in aggregate (:mod:`.refusals`) and counted in the metrics; its
log line is for the person reading the log. Before, each one wrote its own line: 1,000 associations from a caller
not in ``listener.allowed_callers`` wrote 1,000 warnings of about 400 bytes (in 6 s, one connection at a time),
and 300 HTTP requests to the DICOM port 300 more, without end. Now the first line of a kind from a source is
logged, and the others within ``listener.refusal_audit_interval_s`` (the interval the audit aggregates over) are
counted; the next line logged of that kind and source says how many were left out. A rejected association's kind
names its reason and AE titles, so a caller corrected by hand is logged at once; a stranger varying its titles is
told apart :data:`MAX_SOURCES` times per interval at most, then counted with every other source past that bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_SOURCES", "PeerLog"]

#: Distinct (source, kind) pairs told apart per interval; past that, sources are counted together as ``"*"``.
MAX_SOURCES: Final = 256


#: A pair whose left-out lines were never reported (its source went quiet) is forgotten after this many intervals.
_FORGET_AFTER: Final = 10


@dataclass
class _Seen:
    logged_at: float
    left_out: int = 0


class PeerLog:
    """Decides which of the lines a peer causes are logged: one per source and kind per interval."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._lock = threading.Lock()

    def admit(self, host: str, kind: str) -> str | None:
        """Whether to log a line of ``kind`` caused by ``host`` now: ``None`` when not (it is counted), else the
        suffix to end the line with (empty, or how many such lines were left out since the last one)."""
        now = self._clock()
        with self._lock:
            for old, entry in list(self._seen.items()):
                age = now - entry.logged_at
                if age >= self.interval_s and (not entry.left_out or age >= _FORGET_AFTER * self.interval_s):
                    del self._seen[old]
            key = (host, kind)
            if key not in self._seen and len(self._seen) >= MAX_SOURCES:
                key = ("*", kind)
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = _Seen(logged_at=now)
                return ""
            if now - seen.logged_at < self.interval_s:
                seen.left_out += 1
                return None
            left_out, since = seen.left_out, now - seen.logged_at
            seen.logged_at, seen.left_out = now, 0
        if not left_out:
            return ""
        source = "other sources" if key[0] == "*" else "this source"
        return f" ({left_out} more like it from {source} not logged in the last {since:.0f} s)"

"""Process-wide resource ceilings, applied once by an entry point before any work is taken."""

from __future__ import annotations

import logging
import resource

__all__ = ["apply_memory_ceiling"]

log = logging.getLogger(__name__)


def apply_memory_ceiling(limit_bytes: int | None) -> int | None:
    """Cap this process's address space (``RLIMIT_AS``) at ``limit_bytes``; ``None`` leaves it as it is.

    Past the ceiling an allocation fails (``MemoryError`` in Python, an error from a decoder) in the
    step that asked for it, which fails one study, instead of the kernel's OOM killer choosing a
    process on the host. Never raises the hard limit. Returns the soft limit now in force.
    """
    if limit_bytes is None:
        return None
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    log.info("address space of this process capped at %d bytes", soft)
    return soft

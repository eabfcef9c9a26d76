"""Child processes that end with the process that started them, even when it is killed with ``kill -9``.

A parent killed outright cannot stop its children: without this they ran on, orphaned, holding what they held (the
listener's ports and locks, the GPU, the embedded broker), and the next start was refused or doubled them. Linux
(``prctl(PR_SET_PDEATHSIG)``) has the kernel send the child a signal when its parent ends; elsewhere this is a no-op.
Used by ``radtrace serve``'s supervisor for every child it starts and by ``radtrace listen`` for its listener
processes.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

__all__ = ["PR_SET_PDEATHSIG", "ending_with_parent"]

#: prctl(2) option: the signal a process gets when its parent ends.
PR_SET_PDEATHSIG = 1


def ending_with_parent(signum: int) -> Callable[[], int]:
    """A function for a child to call right after the fork (``subprocess.Popen(preexec_fn=...)``, or first thing
    after ``os.fork()``) that has it sent ``signum`` when this process, the one calling now, ends.

    Made in the parent: the C library is loaded and the parent's pid taken here, so the child, between fork and exec,
    only calls prctl and getppid (loading a library there could deadlock on a lock another thread held at the fork).
    A parent that ended between the fork and the prctl is caught by getppid: the child sends itself ``signum``.
    The function returns 0, or prctl's errno when it refused (the child cannot follow its parent; it may say so once
    it can log).
    """
    if not sys.platform.startswith("linux"):
        return lambda: 0
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> int:
        refused = ctypes.get_errno() if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0 else 0
        if os.getppid() != parent:  # it ended between the fork and the prctl
            os.kill(os.getpid(), signum)
        return refused

    return arm

"""Ending a long-running command's process once it has stopped, without the interpreter's teardown.

Python's own exit waits for the process's non-daemon threads, runs the ``atexit`` functions, flushes stdout and
stderr, and then frees every object and module one by one. With torch, transformers, SQLAlchemy and Celery loaded
that last step is seconds of CPU (the cyclic garbage collector over the whole heap, measured with perf): 4 to 5 s of
an idle ``radtrace worker``'s 4.8 s stop on SIGTERM, and about 3 s of ``radtrace serve``'s own, after its children
had gone. Nothing radtrace keeps depends on it: what a stopping command had in hand is settled before it gets here,
its databases' connections closed, and the operating system takes back memory, files and sockets.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

__all__ = ["end_process"]


def end_process(code: int) -> NoReturn:
    """End this process with exit status ``code`` as Python's own exit does, less its teardown: wait for its
    non-daemon threads, run the ``atexit`` functions (logging's flush, multiprocessing's reaping of child
    processes), flush stdout and stderr, then ``os._exit``. Main thread only, at the very end of a command."""
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx does first: joins non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)

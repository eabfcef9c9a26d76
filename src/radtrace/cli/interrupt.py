"""Ctrl-C while ``radtrace`` is still starting: one line and status 130, never a traceback.

Python's own handler raises KeyboardInterrupt wherever the main thread is: during the imports of the first
second that printed a traceback of 20 to 60 lines, and raised inside a garbage-collector callback it is printed
as "Exception ignored" and lost. Until a command is under way nothing has been started or written, so the
handler of that phase ends the process at once. Each command then takes Ctrl-C over (:func:`hand_over`).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

__all__ = ["EXIT_INTERRUPTED", "exit_while_starting", "hand_over"]

EXIT_INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)
_MESSAGE = b"radtrace: interrupted (Ctrl-C) while starting; nothing was started\n"


def _exit_now(_signum: int, _frame: FrameType | None) -> None:
    os.write(2, _MESSAGE)
    os._exit(EXIT_INTERRUPTED)


def exit_while_starting() -> None:
    """From now until :func:`hand_over`, Ctrl-C prints one line and exits 130 (unless SIGINT is ignored)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_now)


def hand_over() -> None:
    """A command is under way: Ctrl-C is Python's KeyboardInterrupt again (the command, or click, handles it)."""
    if signal.getsignal(signal.SIGINT) is _exit_now:
        signal.signal(signal.SIGINT, signal.default_int_handler)

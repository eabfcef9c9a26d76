"""Making a file's rename survive power loss: the one place radtrace fsyncs a directory.

A rename is atomic, but it is durable only once the directory holding the new name is fsynced. The
listener's spool (before it answers C-STORE success) and the report file drop both rely on this.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory"]


def fsync_directory(directory: Path) -> None:
    """fsync ``directory`` itself, so entries created or renamed in it are on disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

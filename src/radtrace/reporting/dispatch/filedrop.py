"""File drop: write a report file into a folder that a site's own tooling collects.

A file appears complete or not at all: it is written under a temporary name in the same folder,
fsynced, then renamed (a collector never sees half a file). Writing the same name again replaces it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from radtrace.durable import fsync_directory
from radtrace.errors import DispatchError, DispatchRejectedError

__all__ = ["drop_file"]


def drop_file(payload: bytes, target: Path) -> Path:
    """Write ``payload`` to ``target`` atomically; the folder must exist (it is the site's, not ours)."""
    folder = target.parent
    if not folder.is_dir():
        raise DispatchError(f"file drop folder {folder} does not exist (not mounted?)")
    if target.name.startswith(".") or not target.name:
        raise DispatchRejectedError(f"invalid file drop name {target.name!r}")
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=".radtrace-", suffix=".part", dir=folder)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_directory(folder)
    except OSError as exc:
        raise DispatchError(f"cannot write {target.name} into {folder}: {exc.strerror or exc}") from exc
    return target

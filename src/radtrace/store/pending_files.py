"""Files that belong to a database transaction: written pending, kept once the rows naming them are committed.

A file a row names (an outbox payload, an assessment SR) is written before the transaction that inserts the row
commits, and moved to where it is kept only after. :func:`write_pending` writes it durably under
``<root>/.pending/`` (temporary name, fsync, rename, directory fsync), where nothing reads it; :func:`promote`
renames it to ``<root>/<relative>`` once the rows are committed; a transaction that did not commit removes it
(:func:`discard`). A crash leaves at most pending files, never a kept file no row names; :func:`settle` then keeps
each pending file a committed row names (the caller says which) and removes the others, only those older than
``min_age_s`` (a transaction still running in another process keeps its file). A row committed just before a
crash finds its file among the pending ones (:func:`promote` of it again is harmless: same name, same bytes).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

from radtrace.durable import fsync_directory

__all__ = ["PENDING", "discard", "mkdirs", "pending_files", "promote", "settle", "write_pending"]

log = logging.getLogger(__name__)

#: The folder (under a root) of files whose rows are not committed yet.
PENDING: Final = ".pending"


def mkdirs(root: Path, *parts: str) -> Path:
    """``root/part/part…``, each folder created (and its parent fsynced) when missing."""
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        fsync_directory(root.parent)
    directory = root
    for part in parts:
        directory = directory / part
        if not directory.is_dir():
            directory.mkdir(exist_ok=True)
            fsync_directory(directory.parent)
    return directory


def write_pending(root: Path, name: str, data: bytes) -> Path:
    """Write ``data`` durably as ``root/.pending/name`` and return that path (raises :class:`OSError`)."""
    directory = mkdirs(root, PENDING)
    temporary = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return directory / name


def promote(root: Path, pending: Path, relative: str) -> Path:
    """The rows naming it are committed: move ``pending`` to ``root/relative`` (atomic rename, both folders
    fsynced). A pending file already moved (by :func:`settle` or a reader that needed it) is fine when the kept
    one is there; raises :class:`OSError` otherwise."""
    target = root / relative
    directory = mkdirs(root, *Path(relative).parent.parts)
    try:
        os.replace(pending, target)
    except FileNotFoundError:
        if not target.is_file():
            raise
        return target
    fsync_directory(directory)
    fsync_directory(pending.parent)
    return target


def discard(pending: Path) -> None:
    """The rows naming it were not committed: the pending file goes."""
    pending.unlink(missing_ok=True)


def pending_files(root: Path) -> Iterator[Path]:
    """The pending files under ``root`` (not the temporary files being written)."""
    directory = root / PENDING
    if directory.is_dir():
        yield from (path for path in directory.iterdir() if not path.name.startswith("."))


def settle(
    root: Path,
    kept_as: Callable[[list[Path]], Mapping[Path, str | None]],
    *,
    min_age_s: float,
    only: Callable[[Path], bool] | None = None,
) -> tuple[int, int]:
    """After a crash: of the pending files older than ``min_age_s`` (or those ``only`` picks, whatever their age),
    promote those ``kept_as`` maps to where a committed row keeps them (a path relative to ``root``), leave those it
    maps to None (someone has to look; logged), remove the others unless ``only`` picked them. Returns (promoted,
    removed)."""
    now = time.time()
    candidates = [
        path
        for path in pending_files(root)
        if (only is None and now - path.stat().st_mtime >= min_age_s) or (only is not None and only(path))
    ]
    if not candidates:
        return 0, 0
    named = kept_as(candidates)
    promoted = removed = 0
    for path in candidates:
        relative = named.get(path)
        if path in named and relative is None:
            log.warning("a pending file is named only by a row that cannot be read; left in %s", root / PENDING)
        elif relative is not None:
            promote(root, path, relative)
            promoted += 1
        elif only is None:
            discard(path)
            removed += 1
    return promoted, removed

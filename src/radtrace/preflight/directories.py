"""The data directory and what it holds: who may use it, that it can be written, and the free space beside it."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import threading
from pathlib import Path

from radtrace.config import Settings
from radtrace.preflight.check import Check

__all__ = ["data_dir_problem", "free_space", "writable_directory"]


def data_dir_problem(data_dir: Path, *, create: bool = False) -> str | None:
    """Why this user cannot use the data directory (another user's, or read-only here), or ``None``.

    The night-shift case: the service runs as its own user (or was first started with sudo) and a command is run
    as someone else; without this it ended in a PermissionError traceback or "unable to open database file".
    A data directory that does not exist is no problem here unless ``create`` (then its parent must be writable).
    """
    target = data_dir.absolute()
    stray = next((part for part in target.parts if part != part.strip()), None)
    if stray is not None:  # ' /srv/radtrace' (a space after '=') became <current folder>/ /srv/radtrace
        return (
            f"data directory {str(target)!r} has a folder name beginning or ending with a space ({stray!r}): "
            "remove the stray space from RADTRACE_DATA_DIR (or data_dir in the config file)"
        )
    path, needed = target, os.R_OK | os.W_OK | os.X_OK
    while True:
        try:
            path.stat()
        except FileNotFoundError:
            if path.parent == path or not create:
                return None
            path, needed = path.parent, os.W_OK | os.X_OK
            continue
        except PermissionError:  # inside a folder this user may not search
            path, needed = path.parent, os.X_OK
            continue
        except OSError:
            return None
        break
    if path == target and not path.is_dir():
        return f"data directory {target} is not a directory: point RADTRACE_DATA_DIR (data_dir) at a directory"
    blocked = None if os.access(path, needed) else path
    database = target / "radtrace.db"
    if blocked is None and path == target and os.access(database, os.F_OK):
        blocked = None if os.access(database, os.R_OK | os.W_OK) else database
    if blocked is None:
        return None
    if _read_only(blocked):  # os.access says no for a read-only mount too: the owner is not what is wrong
        return (
            f"data directory {target} is on a read-only file system ({blocked}): remount it read-write, or point "
            "RADTRACE_DATA_DIR (data_dir) at a writable directory"
        )
    status = blocked.stat()
    owner, user = _user_name(status.st_uid), _user_name(os.geteuid())
    return (
        f"user {user} may not use data directory {target}: {blocked} belongs to {owner} "
        f"({stat.filemode(status.st_mode)}); run radtrace as {owner}, the user the service runs as "
        f"(sudo -u {owner} ...), or point RADTRACE_DATA_DIR (data_dir) at a directory {user} owns"
    )


def _read_only(path: Path) -> bool:
    """Whether ``path`` is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def writable_directory(name: str, directory: Path) -> Check:
    """``directory`` made if missing and written to. A data directory made with folders above it (``/mnt/nas``
    for ``/mnt/nas/radtrace``) is a warning: that is what a shared file system that is not mounted looks like, and
    radtrace then spools studies onto the local disk that the other hosts do not see."""
    made = next((folder for folder in reversed(directory.absolute().parents) if not folder.exists()), None)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # one name per process and thread: serve's children check the same folders at once, and a shared name
        # was unlinked under another's probe ("spool: No such file or directory", a dispatcher not started)
        probe = directory / f".radtrace-write-probe-{os.getpid()}-{threading.get_ident()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check(name, "failed", f"{directory}: {exc.strerror or exc}")
    if made is not None and name == "data directory":
        return Check(name, "warning", f"{directory.resolve()} was made, and {made} above it, on {_mount_point(made)}: "
                     "if a file system (NFS, a volume) should be mounted there, it is not; mount it and start again. "
                     "A new folder chosen on purpose says nothing from the next start on")  # fmt: skip
    return Check(name, "ok", str(directory.resolve()))


def _mount_point(path: Path) -> str:
    """The file system ``path`` is on, by its mount point (``/`` for the root disk)."""
    path = path.absolute()
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return f"the file system mounted at {path}"


def free_space(settings: Settings) -> Check:
    try:
        free = shutil.disk_usage(settings.data_dir).free
    except OSError as exc:
        return Check("free disk space", "failed", f"{settings.data_dir}: {exc.strerror or exc}")
    need = settings.listener.min_free_bytes
    if free >= need:
        return Check("free disk space", "ok", f"{_size(free)} free; listener.min_free_bytes is {_size(need)}")
    return Check(
        "free disk space",
        "failed",
        f"{_size(free)} free where {settings.data_dir} is, below listener.min_free_bytes ({_size(need)}): free "
        "space there, put data_dir on a larger disk (RADTRACE_DATA_DIR), or lower the limit "
        "(RADTRACE_LISTENER__MIN_FREE_BYTES; below it the listener refuses studies)",
    )  # not a configuration error for listen and worker: under systemd they are restarted until space is freed


def _size(count: int) -> str:
    return f"{count / 1024**3:.1f} GiB" if count >= 1024**3 else f"{count / 1024**2:.0f} MiB"

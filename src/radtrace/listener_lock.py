"""One DICOM listener per data directory and per port.

The listener binds with ``SO_REUSEPORT`` (so that ``listener.processes`` share a port), which also lets a
second, unrelated ``radtrace listen`` bind the same port silently: the kernel then splits the studies
between them, and those the second one takes land in a database no worker reads. Before binding, a
listener therefore takes two locks, held for its life (``flock``: released when the process ends, even
by ``kill -9``):

* ``<data_dir>/listener.lock``: one listener per data directory;
* ``radtrace-listener-<port>.lock`` in the system's temporary folder, for ``listener.port`` and for
  ``listener.plain_port`` when set: one radtrace listener per port on this machine, whatever its data directory
  and whichever of its ports it is;

and checks that nothing else already accepts connections on either port. Each refusal is a
:class:`ListenerLockError` (a configuration error: exit 2) saying who holds what.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from radtrace.config import Settings
from radtrace.errors import ConfigError
from radtrace.ports import bound_socket

__all__ = ["ListenerLockError", "listener_locks", "listener_ports", "port_lock_path"]


class ListenerLockError(ConfigError):
    """Another listener holds this data directory or port, or another program holds the port."""


def port_lock_path(port: int) -> Path:
    """The machine-wide lock file of a listener port."""
    return Path(tempfile.gettempdir()) / f"radtrace-listener-{port}.lock"


def listener_ports(settings: Settings) -> list[tuple[int, str]]:
    """Each port the listener binds, with the setting (and variable) that names it, for what is said about it."""
    ports = [(settings.listener.port, "listener.port, RADTRACE_LISTENER__PORT")]
    if settings.listener.plain_port is not None:
        ports.append((settings.listener.plain_port, "listener.plain_port, RADTRACE_LISTENER__PLAIN_PORT"))
    return ports


def _holder(path: Path) -> dict[str, object]:
    try:
        held = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def _take(path: Path, what: str, settings: Settings) -> IO[str]:
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise ListenerLockError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        held = _holder(path)
        plain = f", plain_port {held['plain_port']}" if "plain_port" in held else ""
        raise ListenerLockError(
            f"another radtrace listener (pid {held.get('pid', '?')}, port {held.get('port', '?')}{plain}, data "
            f"directory {held.get('data_dir', '?')}) already {what}; stop it first, or give this one another "
            "listener.port and data_dir (RADTRACE_LISTENER__PORT, RADTRACE_DATA_DIR)"
        ) from exc
    handle.seek(0)
    handle.truncate()
    holder: dict[str, object] = {"pid": os.getpid(), "port": settings.listener.port, "data_dir": str(settings.data_dir)}
    if settings.listener.plain_port is not None:
        holder["plain_port"] = settings.listener.plain_port
    json.dump(holder, handle)
    handle.flush()
    return handle


def _port_answers(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host  # noqa: S104
    with contextlib.suppress(OSError), socket.create_connection((target, port), timeout=0.5):
        return True
    return False


def _port_bound_elsewhere(host: str, port: int) -> bool:
    """Whether another socket holds ``host:port`` though nothing may answer there (bound, not listening): a probe
    bind as the listener binds."""
    try:
        bound_socket(host, port).close()
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    return False


@contextlib.contextmanager
def listener_locks(settings: Settings) -> Iterator[None]:
    """Hold the data-directory and port locks for the block; raises :class:`ListenerLockError` if taken."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    held: list[IO[str]] = []
    try:
        held.append(_take(settings.data_dir / "listener.lock", f"uses data directory {settings.data_dir}", settings))
        for port, setting in listener_ports(settings):
            held.append(_take(port_lock_path(port), f"listens on port {port}", settings))
            if _port_answers(settings.listener.host, port) or _port_bound_elsewhere(settings.listener.host, port):
                raise ListenerLockError(
                    f"port {port} is already in use by another program ({setting}): choose a free port or stop "
                    "that program"
                )
        yield
    finally:
        for handle in held:
            handle.close()

"""Binding a TCP port as radtrace's servers bind it, for the start-up checks and for the servers themselves."""

from __future__ import annotations

import socket

__all__ = ["bound_socket"]


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` as radtrace's servers bind (``SO_REUSEADDR``, so a port in TIME_WAIT
    after an earlier run of ours is free; not ``SO_REUSEPORT``, which would share another program's port instead of
    finding it), not yet listening. Raises ``OSError`` when the address cannot be bound (``EADDRINUSE``: another
    socket holds it, listening or only bound)."""
    bound = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound.bind((host, port))
    except OSError:
        bound.close()
        raise
    return bound

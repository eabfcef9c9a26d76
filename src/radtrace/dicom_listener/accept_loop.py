"""The listener's accept loop, which a stop wakes at once.

socketserver's ``serve_forever`` looks whether ``shutdown()`` was asked only when its ``select`` returns: a
connection, or the end of its poll interval (pynetdicom's 0.5 s). An idle listener therefore took up to half a
second per port to stop on SIGTERM (each port's server one after the other), and ``shutdown()`` on a server whose
loop had not started yet waited for ever. :class:`WakeableAcceptLoop` runs the same loop with a second descriptor in
its ``select``: a pipe that :meth:`~WakeableAcceptLoop.shutdown` writes one byte to.

What the loop does per turn is socketserver's (accept one connection, then ``service_actions``); connections already
accepted are not touched: their associations are ended by the listener (:meth:`radtrace.dicom_listener.ae.Listener.
stop`), as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from radtrace.dicom_listener.handshake_failures import peer_address
from radtrace.logging import escape

__all__ = ["WakeableAcceptLoop"]

log = logging.getLogger(__name__)


class WakeableAcceptLoop:
    """A mixin for a ``socketserver`` server (before it in the bases): ``serve_forever`` and ``shutdown`` with a
    wake-up pipe. :meth:`open_wake_pipe` must be called once the server exists (``server_activate``)."""

    _wake: tuple[int, int] | None = None
    _stop_asked = False

    def open_wake_pipe(self) -> None:
        """The pipe :meth:`shutdown` wakes the loop through, and the lock the loop holds while it runs."""
        self._wake = os.pipe()
        os.set_blocking(self._wake[1], False)
        self._looping = threading.Lock()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections until :meth:`shutdown`; ``poll_interval`` only paces ``service_actions`` now."""
        server: Any = self
        with self._looping:
            if self._stop_asked or self._wake is None:  # stopped before the loop's thread got here
                return
            with selectors.DefaultSelector() as selector:
                selector.register(server, selectors.EVENT_READ, "accept")
                selector.register(self._wake[0], selectors.EVENT_READ, "wake")
                while not self._stop_asked:
                    ready = selector.select(poll_interval)
                    if self._stop_asked:
                        break
                    if any(key.data == "accept" for key, _events in ready):
                        server._handle_request_noblock()
                    server.service_actions()

    def shutdown(self) -> None:
        """Stop the loop (at once, idle or not), close the listening socket, and unregister from the AE, as
        pynetdicom's ``AssociationServer.shutdown`` does; a server whose loop never ran is closed all the same."""
        server: Any = self
        self._stop_asked = True
        if self._wake is not None:
            with contextlib.suppress(OSError):  # a full pipe has a byte in it already
                os.write(self._wake[1], b"\0")
            with self._looping:  # the loop's turn in hand (an accept, a gc) ends first
                pass
        server.server_close()
        with contextlib.suppress(ValueError):  # a server the AE never listed (closed before it was registered)
            server.ae._servers.remove(server)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception that a connection's thread did not catch (pynetdicom's ``process_request_thread`` hands it
        here): one line in radtrace's log, the peer, the exception and where it was raised.

        socketserver's own printed a traceback straight to stderr: a dozen lines past the log's filters (its format,
        its JSON, the patient-value redaction), and text from the exception's message unescaped.
        """
        exc = sys.exc_info()[1]
        where = ""
        if exc is not None and exc.__traceback__ is not None:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f" (raised at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"
        log.error(
            "serving the connection from %s failed: %s: %s%s",
            escape(peer_address(client_address)),
            type(exc).__name__ if exc is not None else "no exception",
            escape(str(exc)[:200]) if exc is not None else "",
            escape(where),
        )

    def close_wake_pipe(self) -> None:
        """Close the pipe (with the listening socket, ``server_close``)."""
        wake, self._wake = self._wake, None
        for descriptor in wake or ():
            with contextlib.suppress(OSError):
                os.close(descriptor)

"""The QA API's and console's HTTP server: uvicorn (h11) with every peer bounded, and refusals that say why.

uvicorn alone holds a connection for as long as a peer likes while it drips a request's headers or never sends the
body it declared, accepts as many connections as file descriptors allow (under systemd's default of 1,024, a
thousand slow connections from one address locked everyone out), reads a whole request body into memory before the
application sees it, and answers every malformed request with the same "Invalid HTTP request received.". Here:

* :class:`GuardedH11Protocol` (the connection): at most ``api.max_connections`` connections, at most
  ``api.max_connections_per_address`` from one address other than a proxy uvicorn trusts (503 and closed; when full,
  a newcomer first closes the connection that has waited longest for its peer's request, else refuses a request
  waiting its turn); a request's headers must arrive within ``api.header_timeout_s`` of the connection (or of the
  previous response) and its body within ``api.body_timeout_s`` of the headers (408 and closed); a malformed request
  is answered with h11's status (400, 431 headers too large, 501) and its reason; a peer that leaves its answer
  unread for :attr:`~radtrace.http_limits.PeerLimits.send_timeout_s` (the send buffer full, or a closing
  connection's last bytes) is cut off (aborted: closing would wait for it to read).
* :class:`~radtrace.http_guard.RequestGuard` (the ASGI middleware, :mod:`radtrace.http_guard`): request smuggling
  shapes, URL, header and body sizes, the failed-authentication throttle and sign-ins checked at once.

The limits live in a :class:`PeerLimits` (:meth:`PeerLimits.for_settings`); the module's constants are the
settings' defaults.

Every refusal is JSON ``{"detail": reason}`` and a log line naming the client's address and the reason, never the
path, query or headers (they may carry patient IDs); repeated refusals are summed into one line per
:data:`LOG_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar, Final, cast

import h11
import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol

from radtrace.http_guard import RequestGuard
from radtrace.http_limits import (
    BACKLOG,
    LINGER_S,
    LOG_EVERY_S,
    MAX_HEADER_BYTES,
    App,
    PeerLimits,
    Receive,
    Scope,
    Send,
    connection_limit,
    refusal,
)

__all__ = [
    "DIRECT_PEER",
    "GuardedH11Protocol",
    "RequestGuard",
    "direct_peer_host",
    "guarded_config",
    "protocol_class",
    "serve_http",
]

log = logging.getLogger(__name__)

#: What h11 quotes of the request in its error messages ("illegal header line: bytearray(b'...')", "Illegal header
#: value b'...'"): the rest of the message, from the quote on.
_QUOTED: Final = re.compile(r":?\s*(?:bytearray\()?b['\"].*", re.DOTALL)


class _RecordingConnection(h11.Connection):
    """h11's connection, remembering the protocol error it raised (uvicorn drops it and says only "invalid")."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with per-address connection limits and deadlines for a request's headers and body.

    Subclassed per server by :func:`protocol_class` (``limits`` is a class attribute, as uvicorn builds the
    protocol itself).
    """

    limits: PeerLimits = PeerLimits()
    #: The connections waiting for their peer (a request's headers or body, or an idle keep-alive), longest first.
    waiting: ClassVar[dict[GuardedH11Protocol, None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_header_bytes: int = self.conn._max_incomplete_event_size
        self.conn = _RecordingConnection(h11.SERVER, self._max_header_bytes)
        self._source = "-"
        self._admitted = False
        self._phase = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._sending: asyncio.TimerHandle | None = None
        self._stopping = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._source = self.client[0] if self.client else "-"
        problem = self.limits.admit(self._source, make_room=self._make_room)
        if problem is not None:
            self._refuse(503, problem, retry_after_s=5)
            return
        self._admitted = True
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting.pop(self, None)
        self._cancel_deadline()
        self._stop_send_deadline()
        if self._admitted:
            self._admitted = False
            self.limits.release(self._source)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            # Answered before the body was read (a refusal): the rest is discarded for a moment, so that the
            # peer reads the answer before the connection closes, instead of for as long as it keeps sending.
            self._arm("linger", LINGER_S)
        self._track()
        self._watch_sending()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_sending()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_send_deadline()  # the peer took some: a fresh deadline for the rest, if any is still waiting
        self._watch_sending()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._watch_sending()

    def shutdown(self) -> None:
        """The server is stopping (SIGTERM): a request whose body is still awaited is refused (503) at once, and a
        peer slow to read its answer gets half of ``shutdown_grace_s`` (uvicorn cancels what is left after it)."""
        self._stopping = True
        if self._phase == "body" and not self.transport.is_closing():
            self._refuse(503, "the server is shutting down; try again shortly", retry_after_s=5)
            return
        super().shutdown()
        self._watch_sending()

    def send_400_response(self, msg: str) -> None:
        error = self.conn.last_error if isinstance(self.conn, _RecordingConnection) else None
        status = error.error_status_hint if error is not None and 400 <= error.error_status_hint < 600 else 400
        what = str(error) if error is not None else "unreadable"
        if status == 431:
            what = f"request headers over {self._max_header_bytes} bytes"
        # h11 quotes the line it could not read: said back to the client, never logged (a path or header may hold
        # a Study UID or a patient ID).
        unquoted = _QUOTED.sub("", what)
        self._refuse(status, f"malformed HTTP request: {what[:200]}", logged=f"malformed HTTP request: {unquoted}")

    def _track(self) -> None:
        """Arm the deadline of the phase the request is in: its headers, its body, or none while it is answered."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        phase = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else ""
        if phase == self._phase or self._phase == "linger":
            return
        if phase:
            self._arm(phase, self.limits.header_timeout_s if phase == "headers" else self.limits.body_timeout_s)
        else:
            self._phase = ""
            self.waiting.pop(self, None)
            self._cancel_deadline()

    def _arm(self, phase: str, seconds: float) -> None:
        self._phase = phase
        self.waiting.pop(self, None)
        if phase in ("headers", "body"):
            self.waiting[self] = None  # waited for since now: the newest
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, self._expired, phase, seconds)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:  # answered already: only close
            self.cycle.disconnected = True
            self.transport.close()
            self._watch_sending()
            return
        if phase == "headers" and not self.conn.trailing_data[0] and self.cycle is not None:
            self.transport.close()  # an idle keep-alive connection: nothing to answer (uvicorn's own timer)
            self._watch_sending()
            return
        self._refuse(408, f"request {phase} not complete within {seconds:g} s")

    def _make_room(self) -> bool:
        """The server is full: close the connection that has waited longest for its peer, else refuse a request
        waiting its turn, if any (True)."""
        for oldest in list(self.waiting):
            del self.waiting[oldest]
            if oldest._admitted and not oldest.transport.is_closing():
                oldest._admitted = False
                self.limits.release(oldest._source)  # now: connection_lost comes later
                if oldest._phase == "headers" and not oldest.conn.trailing_data[0] and oldest.cycle is not None:
                    oldest.transport.close()  # an idle keep-alive connection: nothing to answer
                else:
                    limit = self.limits.max_connections
                    reason = f"the server holds {limit} connections, its limit; this one waited longest for a request"
                    oldest._refuse(503, reason, retry_after_s=5)
                return True
        # Else a request still waiting its turn (FairShare) is refused, of the address with the most waiting; its
        # connection is counted until it closes, just after its answer.
        limit = self.limits.max_connections
        reason = f"the server holds {limit} connections, its limit; this request waited its turn behind others of yours"
        return self.limits.fair.drop_one(reason)

    def _watch_sending(self) -> None:
        """Give the peer :attr:`PeerLimits.send_timeout_s` to take what waits for it (from now): while the send
        buffer is full (writing paused), or after a response or on closing with bytes still unsent."""
        if self.transport is None or not self.transport.get_write_buffer_size():
            return
        if not self.flow.write_paused and not self.transport.is_closing():
            answering = self.cycle is not None and not self.cycle.response_complete
            if answering or self._sending is not None:
                return  # a response still being written, taken as fast as it is written
        self._stop_send_deadline()
        self._sending = self.loop.call_later(self._send_timeout_s(), self._send_expired)

    def _send_timeout_s(self) -> float:
        limits = self.limits
        return min(limits.send_timeout_s, limits.shutdown_grace_s / 2) if self._stopping else limits.send_timeout_s

    def _stop_send_deadline(self) -> None:
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None

    def _send_expired(self) -> None:
        self._sending = None
        if not self.transport.get_write_buffer_size():
            return
        if self.cycle is not None and not self.cycle.response_complete and not self.flow.write_paused:
            return  # a later response, still being written and taken
        seconds = self._send_timeout_s()
        self.limits.refusals.cut_off(self._source, f"the answer was not taken (read) within {seconds:g} s")
        if self.cycle is not None:
            self.cycle.disconnected = True
        self.transport.abort()  # close() would wait for the peer to read what is left

    def _refuse(
        self, status: int, reason: str, *, retry_after_s: float | None = None, logged: str | None = None
    ) -> None:
        """Answer ``status`` with ``reason`` on the wire (whatever state h11 is in) and close the connection; the
        log says ``logged`` where given, else ``reason``."""
        self.limits.refusals.refused(self._source, status, reason if logged is None else logged)
        if self.cycle is not None:
            self.cycle.disconnected = True  # the application's answer, if any, goes nowhere
        headers, body = refusal(status, reason, retry_after_s=retry_after_s)
        head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(head + b"\r\n" + body)
        self.transport.close()
        self._watch_sending()


def protocol_class(limits: PeerLimits) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` bound to ``limits`` (what uvicorn's ``http`` option takes)."""
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits, "waiting": {}})


class _FloodFilter(logging.Filter):
    """uvicorn's and asyncio's lines a peer can repeat at will (a bad request, an upgrade, no file descriptor
    left): the first, then at most one a :data:`LOG_EVERY_S`."""

    _MESSAGES: Final = ("Invalid HTTP request received.", "Unsupported upgrade request.", "socket.accept() out of")

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        kind = next((known for known in self._MESSAGES if message.startswith(known)), None)
        if kind is None:
            return True
        if kind == "Invalid HTTP request received.":
            return False  # GuardedH11Protocol logs its own line, with the reason
        now = time.monotonic()
        if now - self._last.get(kind, 0.0) < LOG_EVERY_S:
            return False
        self._last[kind] = now
        return True


#: The ASGI scope key holding the connection's own (host, port), whatever X-Forwarded-For says.
DIRECT_PEER: Final = "radtrace.direct_peer"


class _KeepDirectPeer:
    """Records the connection's address in the scope before X-Forwarded-For can replace ``client``."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[DIRECT_PEER] = scope.get("client")
        await self.app(scope, receive, send)


def direct_peer_host(scope: Scope) -> str | None:
    """The address of the connection a request came over (a proxy's, behind one); the client's where the request
    did not come through :func:`guarded_config` (in-process test clients)."""
    peer = scope.get(DIRECT_PEER, scope.get("client"))
    return str(peer[0]) if peer else None


def guarded_config(
    app: App,
    *,
    limits: PeerLimits | None = None,
    on_throttled: Callable[[str, int], None] | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
) -> uvicorn.Config:
    """uvicorn's configuration serving ``app`` with every peer bounded (see the module docstring).

    uvicorn's access log stays off: it prints paths and query strings, which may hold patient IDs.
    """
    limits = limits or PeerLimits(max_connections=connection_limit())
    for name in ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(known, _FloodFilter) for known in logger.filters):
            logger.addFilter(_FloodFilter())
    guarded = RequestGuard(app, limits=limits, on_throttled=on_throttled)
    # A proxy in api.forwarded_allow_ips forwards many clients over its connections: it is not held to the
    # per-address cap (the total cap and the deadlines still apply), and the request limits and failed-authentication
    # throttle count the client it names in X-Forwarded-For. uvicorn's own proxy layer is applied here, inside one
    # that keeps the connection's own address (direct_peer_host), so that what only the proxy may send (the
    # console's trusted user header) is still checked against the proxy, not against the client it names.
    # uvicorn's ASGI types are narrower TypedDicts than starlette's mappings; the callables are the same protocol.
    forwarded: Any = ProxyHeadersMiddleware(cast(Any, guarded), trusted_hosts=limits.proxies)
    config = uvicorn.Config(
        _KeepDirectPeer(forwarded),
        host=host,
        port=port,
        http=protocol_class(limits),
        ws="none",
        backlog=BACKLOG,
        log_config=None,
        access_log=False,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        proxy_headers=False,
        timeout_graceful_shutdown=math.ceil(limits.shutdown_grace_s),  # uvicorn's default: wait for ever
    )
    return config


def serve_http(
    app: App,
    listening: socket.socket,
    *,
    limits: PeerLimits | None = None,
    on_throttled: Callable[[str, int], None] | None = None,
) -> None:
    """Serve ``app`` on the bound socket ``listening`` until SIGTERM/SIGINT, every peer bounded by ``limits``
    (:meth:`PeerLimits.for_settings`; default: the api.* settings' defaults)."""
    limits = limits or PeerLimits(max_connections=connection_limit())
    log.info(
        "HTTP limits: %d connections (%d per address), %d requests answered at once (%d per address), headers "
        "within %g s, body within %g s and %d bytes",
        limits.max_connections, limits.max_per_source, limits.in_flight, limits.in_flight_per_source,
        limits.header_timeout_s, limits.body_timeout_s, limits.max_body_bytes,
    )  # fmt: skip
    if limits.in_flight_per_source >= limits.in_flight > 1:
        log.warning(
            "HTTP: api.requests_in_flight_per_address is api.requests_in_flight (%d): one address may take every "
            "turn and the others wait behind it; behind a reverse proxy, list it in api.forwarded_allow_ips "
            "instead, so that each client is counted by its own address",
            limits.in_flight,
        )
    config = guarded_config(app, limits=limits, on_throttled=on_throttled)
    uvicorn.Server(config).run(sockets=[listening])

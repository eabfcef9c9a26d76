"""The QA API's and console's HTTP server: uvicorn (h11) with every peer bounded, and refusals that say why.

uvicorn alone holds a connection for as long as a peer likes while it drips a request's headers or never sends the
body it declared, accepts as many connections as file descriptors allow (under systemd's default of 1,024, a
thousand slow connections from one address locked everyone out), reads a whole request body into memory before the
application sees it, and answers every malformed request with the same "Invalid HTTP request received.". Here:

* :class:`GuardedH11Protocol` (the connection): at most ``api.max_connections`` connections, at most
  ``api.max_connections_per_address`` from one address other than a proxy uvicorn trusts (503 and closed; when
  full, a newcomer first closes the connection that has waited longest for its peer's request); a
  request's headers must arrive within ``api.header_timeout_s`` of the connection (or of the previous response)
  and its body within ``api.body_timeout_s`` of the headers (408 and closed); a malformed request is answered
  with h11's status (400, 431 headers too large, 501) and its reason; a peer that leaves its answer unread for
  :attr:`~radtrace.http_limits.PeerLimits.send_timeout_s` (the send buffer full, or a closing connection's last
  bytes) is cut off (aborted: closing would wait for it to read).
* :class:`RequestGuard` (the ASGI middleware): a request with both Content-Length and Transfer-Encoding is 400
  and the connection closed (RFC 9112 6.1; behind a proxy, a smuggled second request), a URL over
  :data:`MAX_TARGET_BYTES` is 414, headers over
  :data:`MAX_HEADER_BYTES` or :data:`MAX_HEADER_LINES` 431, a body over ``api.max_body_bytes`` 413 (read no
  further); an address with ``api.failed_auth_limit`` failed authentications (a 401, a failed console sign-in)
  within ``api.failed_auth_window_s`` is refused for ``api.failed_auth_pause_s`` (429; one audit event for the
  episode instead of one per attempt), and at most :data:`SIGN_INS_PER_SOURCE` console sign-ins per address
  (:data:`SIGN_INS_IN_FLIGHT` in all) are checked at once.

The limits live in a :class:`PeerLimits` (:meth:`PeerLimits.for_settings`); the module's constants are the
settings' defaults.

Every refusal is JSON ``{"detail": reason}`` and a log line naming the client's address and the reason, never the
path, query or headers (they may carry patient IDs); repeated refusals are summed into one line per
:data:`LOG_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Final, cast

import h11
import uvicorn
from starlette.requests import ClientDisconnect
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol

from radtrace.http_limits import (
    BACKLOG,
    LINGER_S,
    LOG_EVERY_S,
    MAX_HEADER_BYTES,
    MAX_HEADER_LINES,
    MAX_SOURCES,
    MAX_TARGET_BYTES,
    SIGN_INS_IN_FLIGHT,
    SIGN_INS_PER_SOURCE,
    App,
    Message,
    PeerLimits,
    Receive,
    Scope,
    Send,
    connection_limit,
    refusal,
)
from radtrace.logging import escape

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

#: Paths served to anyone, throttled or not: they need no credentials and record nothing.
_PUBLIC: Final = ("/healthz", "/docs", "/openapi.json", "/static-offline-docs/", "/console/static/")
_SIGN_IN: Final = "/console/login"
_CONSOLE: Final = "/console"


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
        super().shutdown()
        self._watch_sending()

    def send_400_response(self, msg: str) -> None:
        error = self.conn.last_error if isinstance(self.conn, _RecordingConnection) else None
        status = error.error_status_hint if error is not None and 400 <= error.error_status_hint < 600 else 400
        what = str(error) if error is not None else "unreadable"
        if status == 431:
            what = f"request headers over {self._max_header_bytes} bytes"
        self._refuse(status, f"malformed HTTP request: {what[:200]}")

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
        """The server is full: close the connection that has waited longest for its peer, if any (True)."""
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
        return False

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
        self._sending = self.loop.call_later(self.limits.send_timeout_s, self._send_expired)

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
        seconds = self.limits.send_timeout_s
        self.limits.refusals.cut_off(self._source, f"the answer was not taken (read) within {seconds:g} s")
        if self.cycle is not None:
            self.cycle.disconnected = True
        self.transport.abort()  # close() would wait for the peer to read what is left

    def _refuse(self, status: int, reason: str, *, retry_after_s: float | None = None) -> None:
        """Answer ``status`` with ``reason`` on the wire (whatever state h11 is in) and close the connection."""
        self.limits.refusals.refused(self._source, status, reason)
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


@dataclass
class _Source:
    failures: deque[float]  # the times of the last failed_auth_limit failures
    throttled_until: float = 0.0
    sign_ins: int = 0


class RequestGuard:
    """ASGI middleware: URL, header and body sizes, the failed-authentication throttle and sign-in concurrency.

    ``limits``: the body limit and the throttle (and the refusal log) it shares with the connections.
    ``on_throttled(address, failures)`` is called (in a thread) once each time an address starts being refused,
    to record it in the audit log.
    """

    def __init__(
        self,
        app: App,
        *,
        limits: PeerLimits | None = None,
        on_throttled: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.on_throttled = on_throttled
        self.limits = limits or PeerLimits()
        self.refusals = self.limits.refusals
        self.max_body_bytes = self.limits.max_body_bytes
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._sign_ins = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        source = scope["client"][0] if scope.get("client") else "-"
        problem = self._size_problem(scope)
        if problem is not None:
            await self._refuse(send, source, *problem)
            return
        path: str = scope["path"]
        record = self._source(source)
        now = time.monotonic()
        if record.throttled_until > now and not path.startswith(_PUBLIC) and not self._sign_in_form(scope):
            wait = record.throttled_until - now
            reason = f"too many failed authentications from your address; try again in {wait:.0f} s"
            await self._refuse(send, source, 429, reason, wait)
            return
        body: list[Message] | None = None
        if not path.startswith(_CONSOLE) and _has_body(scope):
            # Read (up to the limit) before the application does: FastAPI would hold any size in memory.
            body = await self._read_body(scope, receive)
            if body is None:
                await self._refuse(send, source, 413, f"request body over {self.max_body_bytes} bytes")
                return
        sign_in = scope["method"] == "POST" and path == _SIGN_IN
        if sign_in:
            if record.sign_ins >= SIGN_INS_PER_SOURCE:
                reason = f"{SIGN_INS_PER_SOURCE} sign-ins from your address are being checked; wait for them"
                await self._refuse(send, source, 429, reason, 1)
                return
            if self._sign_ins >= SIGN_INS_IN_FLIGHT:
                await self._refuse(send, source, 503, "too many sign-ins are being checked; try again shortly", 1)
                return
            record.sign_ins += 1
            self._sign_ins += 1
        status = 0
        location = b""
        capped = _Capped(receive, self.max_body_bytes)

        async def watch(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                location = dict(message.get("headers", [])).get(b"location", b"")
                if location.startswith((b"http://", b"https://")):  # Starlette's redirects name the Host sent
                    message["headers"] = [(k, _path_only(v) if k == b"location" else v) for k, v in message["headers"]]
            await send(message)

        try:
            await self.app(scope, _replay(body, receive) if body is not None else capped, watch)
        except ClientDisconnect:  # the peer left, its body passed the limit, or a deadline passed
            if capped.over and not status:
                await self._refuse(send, source, 413, f"request body over {self.max_body_bytes} bytes")
            return
        finally:
            if sign_in:
                record.sign_ins -= 1
                self._sign_ins -= 1
        if (status == 401 and not self._sign_in_form(scope)) or (sign_in and status == 303 and b"failed=" in location):
            await self._failed(source, record)

    def _sign_in_form(self, scope: Scope) -> bool:
        return bool(scope["method"] == "GET" and scope["path"] == _SIGN_IN)

    def _size_problem(self, scope: Scope) -> tuple[int, str] | None:
        names = {name for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:  # RFC 9112 6.1: a smuggling shape
            return 400, "request with both Content-Length and Transfer-Encoding: send one of them"
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > MAX_TARGET_BYTES:
            return 414, f"URL of {target} bytes, over the limit of {MAX_TARGET_BYTES}"
        if len(scope["headers"]) > MAX_HEADER_LINES:
            return 431, f"{len(scope['headers'])} request headers, over the limit of {MAX_HEADER_LINES}"
        headers = sum(len(name) + len(value) + 4 for name, value in scope["headers"])  # ": " and CRLF
        if headers > MAX_HEADER_BYTES:
            return 431, f"request headers of {headers} bytes, over the limit of {MAX_HEADER_BYTES}"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes and not scope["path"].startswith(_CONSOLE):
            return 413, f"request body of {int(declared)} bytes, over the limit of {self.max_body_bytes}"
        return None

    def _source(self, source: str) -> _Source:
        record = self._sources.pop(source, None) or _Source(deque(maxlen=self.limits.failed_auth_limit))
        self._sources[source] = record  # most recent last
        if len(self._sources) > MAX_SOURCES:
            self._sources.popitem(last=False)  # the least recent address is forgotten
        return record

    async def _failed(self, source: str, record: _Source) -> None:
        now = time.monotonic()
        limits = self.limits
        record.failures.append(now)
        if len(record.failures) < limits.failed_auth_limit or now - record.failures[0] > limits.failed_auth_window_s:
            return
        record.throttled_until = now + limits.failed_auth_pause_s
        record.failures.clear()
        failures = limits.failed_auth_limit
        log.warning(
            "HTTP %s: %d failed authentications; refused for %.0f s (429)",
            escape(source), failures, limits.failed_auth_pause_s,
        )  # fmt: skip
        if self.on_throttled is not None:
            try:
                await asyncio.to_thread(self.on_throttled, source, failures)
            except Exception:
                log.exception("HTTP %s: the throttle could not be recorded in the audit log", escape(source))

    async def _read_body(self, scope: Scope, receive: Receive) -> list[Message] | None:
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    async def _refuse(
        self, send: Send, source: str, status: int, reason: str, retry_after_s: float | None = None
    ) -> None:
        self.refusals.refused(source, status, reason)
        headers, body = refusal(status, reason, retry_after_s=retry_after_s)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _path_only(location: bytes) -> bytes:
    """An absolute redirect made relative: the host in it is the one the client put in its Host header, which a
    cache in front would hand to everyone else (the console and the API only ever redirect to themselves)."""
    path = location.split(b"://", 1)[1].partition(b"/")[2]
    return b"/" + path


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") not in (b"", b"0") or b"transfer-encoding" in headers


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class _Capped:
    """``receive`` that ends the request (a disconnect) after its body passes the limit: for the console's routes,
    which read forms themselves (16 KiB) and answer some requests without reading the body at all. The message
    that passes the limit still reaches the application, which may refuse it in its own words."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.size = 0

    @property
    def over(self) -> bool:
        """Whether the body passed the limit."""
        return self.size > self.limit

    async def __call__(self) -> Message:
        if self.over:
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
        return message


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
        "HTTP limits: %d connections (%d per address), headers within %g s, body within %g s and %d bytes",
        limits.max_connections, limits.max_per_source, limits.header_timeout_s, limits.body_timeout_s,
        limits.max_body_bytes,
    )  # fmt: skip
    config = guarded_config(app, limits=limits, on_throttled=on_throttled)
    uvicorn.Server(config).run(sockets=[listening])

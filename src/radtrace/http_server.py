"""The QA API's and console's HTTP server: uvicorn (h11) with every peer bounded, and refusals that say why.

uvicorn alone holds a connection for as long as a peer likes while it drips a request's headers or never sends the
body it declared, accepts as many connections as file descriptors allow (under systemd's default of 1,024, a
thousand slow connections from one address locked everyone out), reads a whole request body into memory before the
application sees it, and answers every malformed request with the same "Invalid HTTP request received.". Here:

* :class:`GuardedH11Protocol` (the connection): at most ``api.max_connections`` connections, at most
  ``api.max_connections_per_address`` from one address other than a proxy uvicorn trusts (503 and closed); a
  request's headers must arrive within ``api.header_timeout_s`` of the connection (or of the previous response)
  and its body within ``api.body_timeout_s`` of the headers (408 and closed); a malformed request is answered
  with h11's status (400, 431 headers too large, 501) and its reason.
* :class:`RequestGuard` (the ASGI middleware): a URL over :data:`MAX_TARGET_BYTES` is 414, headers over
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
import contextlib
import ipaddress
import json
import logging
import resource
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

import h11
import uvicorn
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from radtrace.config import ApiSettings
from radtrace.logging import escape

__all__ = [
    "BODY_TIMEOUT_S",
    "HEADER_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_SOURCE",
    "GuardedH11Protocol",
    "PeerLimits",
    "RequestGuard",
    "guarded_config",
    "serve_http",
]

log = logging.getLogger(__name__)

# The defaults of the api.* settings (api.max_connections, ...), which PeerLimits.for_settings applies.
_API: Final = ApiSettings.model_fields
MAX_CONNECTIONS: Final[int] = _API["max_connections"].default
MAX_CONNECTIONS_PER_SOURCE: Final[int] = _API["max_connections_per_address"].default
HEADER_TIMEOUT_S: Final[float] = _API["header_timeout_s"].default
BODY_TIMEOUT_S: Final[float] = _API["body_timeout_s"].default
MAX_BODY_BYTES: Final[int] = _API["max_body_bytes"].default
FAILED_AUTH_BURST: Final[int] = _API["failed_auth_limit"].default
FAILED_AUTH_WINDOW_S: Final[float] = _API["failed_auth_window_s"].default
THROTTLE_S: Final[float] = _API["failed_auth_pause_s"].default
LINGER_S: Final = 1.0  # a body left unread after the answer is discarded this long, then the connection closed
MAX_TARGET_BYTES: Final = 8 * 1024
MAX_HEADER_BYTES: Final = 16 * 1024
MAX_HEADER_LINES: Final = 100
SIGN_INS_PER_SOURCE: Final = 2
SIGN_INS_IN_FLIGHT: Final = 8
LOG_EVERY_S: Final = 10.0
MAX_SOURCES: Final = 10_000  # addresses remembered for the failure counts (least recent forgotten first)
FD_RESERVE: Final = 128  # file descriptors kept for the database, logs and the process itself
#: Connections accepted in one turn of the event loop before any is counted (asyncio accepts up to the backlog).
BACKLOG: Final = 128

#: Paths served to anyone, throttled or not: they need no credentials and record nothing.
_PUBLIC: Final = ("/healthz", "/docs", "/openapi.json", "/static-offline-docs/", "/console/static/")
_SIGN_IN: Final = "/console/login"
_CONSOLE: Final = "/console"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def refusal(status: int, reason: str, *, retry_after_s: float | None = None) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of a refusal: JSON ``{"detail": reason}``, the connection closed after it."""
    body = json.dumps({"detail": reason}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after_s))).encode()))
    return headers, body


class RefusalLog:
    """At most one log line per status per :data:`LOG_EVERY_S` (a peer repeats a refusal at will), saying how many
    more were refused since and from how many addresses."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, int, set[str]]] = {}

    def refused(self, source: str, status: int, reason: str) -> None:
        """Log (or count) one refusal."""
        now = time.monotonic()
        last, count, sources = self._last.get(status, (-LOG_EVERY_S, 0, set()))
        if now - last < LOG_EVERY_S:
            if len(sources) < MAX_SOURCES:
                sources.add(source)
            self._last[status] = (last, count + 1, sources)
            return
        self._last[status] = (now, 0, set())
        addresses = f"{len(sources)} address{'es' if len(sources) > 1 else ''}"
        more = f" (and {count} more {status}s from {addresses} since the last line)" if count else ""
        log.warning("HTTP %s refused: %d %s%s", escape(source), status, reason, more)


@dataclass
class PeerLimits:
    """What the connections and requests of one server share: its limits (the api.* settings, see
    :meth:`for_settings`), counts per address, refusals."""

    max_connections: int = MAX_CONNECTIONS
    max_per_source: int = MAX_CONNECTIONS_PER_SOURCE
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_body_bytes: int = MAX_BODY_BYTES
    failed_auth_limit: int = FAILED_AUTH_BURST
    failed_auth_window_s: float = FAILED_AUTH_WINDOW_S
    failed_auth_pause_s: float = THROTTLE_S
    connections: dict[str, int] = field(default_factory=dict)
    refusals: RefusalLog = field(default_factory=RefusalLog)
    #: Proxies (uvicorn's forwarded_allow_ips): their connections carry many clients, so only the total cap applies.
    proxies: str | list[str] = ""

    @classmethod
    def for_settings(cls, api: ApiSettings) -> PeerLimits:
        """The limits the api.* settings set; ``api.max_connections`` lowered to fit the file descriptor limit
        (:func:`connection_limit`)."""
        return cls(
            max_connections=connection_limit(api.max_connections),
            max_per_source=api.max_connections_per_address,
            header_timeout_s=api.header_timeout_s,
            body_timeout_s=api.body_timeout_s,
            max_body_bytes=api.max_body_bytes,
            failed_auth_limit=api.failed_auth_limit,
            failed_auth_window_s=api.failed_auth_window_s,
            failed_auth_pause_s=api.failed_auth_pause_s,
        )

    @property
    def open_connections(self) -> int:
        """Connections held now."""
        return sum(self.connections.values())

    def admit(self, source: str) -> str | None:
        """Count a new connection from ``source``, or say why it is refused."""
        if self.open_connections >= self.max_connections:
            return f"the server holds {self.max_connections} connections, its limit; try again shortly"
        if self.connections.get(source, 0) >= self.max_per_source and not _listed(source, self.proxies):
            return f"{self.max_per_source} connections from your address are open, the limit; close some first"
        self.connections[source] = self.connections.get(source, 0) + 1
        return None

    def release(self, source: str) -> None:
        """A connection admitted from ``source`` closed."""
        left = self.connections.get(source, 0) - 1
        if left > 0:
            self.connections[source] = left
        else:
            self.connections.pop(source, None)


def _listed(address: str, listed: str | list[str]) -> bool:
    """Whether ``address`` is in a list of addresses and networks written as uvicorn's forwarded_allow_ips."""
    entries = [entry.strip() for entry in (listed.split(",") if isinstance(listed, str) else listed) if entry.strip()]
    if "*" in entries:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address in entries
    for entry in entries:
        with contextlib.suppress(ValueError):
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
    return False


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_header_bytes: int = self.conn._max_incomplete_event_size
        self.conn = _RecordingConnection(h11.SERVER, self._max_header_bytes)
        self._source = "-"
        self._admitted = False
        self._phase = ""
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._source = self.client[0] if self.client else "-"
        problem = self.limits.admit(self._source)
        if problem is not None:
            self._refuse(503, problem, retry_after_s=5)
            return
        self._admitted = True
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
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
            self._cancel_deadline()

    def _arm(self, phase: str, seconds: float) -> None:
        self._phase = phase
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
            return
        if phase == "headers" and not self.conn.trailing_data[0] and self.cycle is not None:
            self.transport.close()  # an idle keep-alive connection: nothing to answer (uvicorn's own timer)
            return
        self._refuse(408, f"request {phase} not complete within {seconds:g} s")

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


def protocol_class(limits: PeerLimits) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` bound to ``limits`` (what uvicorn's ``http`` option takes)."""
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


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


def connection_limit(wanted_connections: int = MAX_CONNECTIONS) -> int:
    """``wanted_connections`` (``api.max_connections``), or fewer when the file descriptor limit cannot be raised to
    hold them.

    The soft limit is raised towards the hard one first (systemd's default soft limit is 1,024).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = wanted_connections + BACKLOG + FD_RESERVE * 2
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted_connections
    return max(16, min(wanted_connections, soft - BACKLOG - FD_RESERVE))


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
    config = uvicorn.Config(
        guarded,
        host=host,
        port=port,
        http=protocol_class(limits),
        ws="none",
        backlog=BACKLOG,
        log_config=None,
        access_log=False,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    # A proxy uvicorn trusts (FORWARDED_ALLOW_IPS, default 127.0.0.1 and ::1) forwards many clients over its
    # connections: it is not held to the per-address cap (the total cap and the deadlines still apply), and the
    # failed-authentication throttle counts the client it names in X-Forwarded-For.
    limits.proxies = config.forwarded_allow_ips
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

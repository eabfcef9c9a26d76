"""The limits every HTTP peer of the QA API and console is held to, and how a refusal is said and logged.

:class:`PeerLimits` holds one server's limits (the ``api.*`` settings, :meth:`PeerLimits.for_settings`; the
module's constants are their defaults), its counts of connections per address and its :class:`RefusalLog`;
:func:`refusal` is the answer every refusal gets (JSON ``{"detail": reason}``). :mod:`radtrace.http_server` applies
them, to the connection (uvicorn's h11 protocol) and to the request (an ASGI guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import resource
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from radtrace.config import ApiSettings
from radtrace.logging import escape

__all__ = [
    "BODY_TIMEOUT_S",
    "HEADER_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_SOURCE",
    "MAX_FORM_BYTES",
    "SEND_TIMEOUT_S",
    "SHUTDOWN_GRACE_S",
    "FairShare",
    "PeerLimits",
    "RefusalLog",
    "connection_limit",
    "refusal",
]

#: Refusals are logged under the server's name, where an operator looks for them.
log = logging.getLogger("radtrace.http_server")

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
#: A peer must take (read) an answer it asked for: once it has left the server's send buffer full (or a closing
#: connection's last bytes unread) this long, the connection is cut off.
SEND_TIMEOUT_S: Final = 30.0
#: On SIGTERM, connections still open this long after the server stopped accepting are dropped (requests in progress
#: cancelled): under radtrace-api.service's TimeoutStopSec=30 and Kubernetes' default grace of 30 s.
SHUTDOWN_GRACE_S: Final = 20.0
#: Requests answered at once, in all (api.requests_in_flight: anyio's thread pool, which runs the database queries,
#: has 40 threads) and from one address (api.requests_in_flight_per_address); a request beyond waits its turn, at
#: most QUEUED_PER_SOURCE of one address (more: 503 at once). They wait rather than being refused: refused, a
#: flooding client reconnects at once, and 640 connections doing so filled the listening socket's queue, where
#: another client's connection waited 5 s (the kernel dropped its SYN).
IN_FLIGHT: Final[int] = _API["requests_in_flight"].default
IN_FLIGHT_PER_SOURCE: Final[int] = _API["requests_in_flight_per_address"].default
QUEUED_PER_SOURCE: Final = MAX_CONNECTIONS_PER_SOURCE
LINGER_S: Final = 1.0  # a body left unread after the answer is discarded this long, then the connection closed
MAX_TARGET_BYTES: Final = 8 * 1024
#: The console's forms are read up to this before their turn, and refused above it (radtrace.console.pages).
MAX_FORM_BYTES: Final = 16 * 1024
MAX_HEADER_BYTES: Final = 16 * 1024
MAX_HEADER_LINES: Final = 100
SIGN_INS_PER_SOURCE: Final = 2
SIGN_INS_IN_FLIGHT: Final = 8
LOG_EVERY_S: Final = 10.0
MAX_SOURCES: Final = 10_000  # addresses remembered for the failure counts (least recent forgotten first)
FD_RESERVE: Final = 128  # file descriptors kept for the database, logs and the process itself
#: Connections accepted in one turn of the event loop before any is counted (asyncio accepts up to the backlog).
BACKLOG: Final = 128

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
        self._last: dict[str, tuple[float, int, set[str]]] = {}

    def refused(self, source: str, status: int, reason: str) -> None:
        """Log (or count) one refusal."""
        self._say(source, f"{status}s", f"refused: {status} {reason}")

    def cut_off(self, source: str, reason: str) -> None:
        """Log (or count) one connection cut off without an answer (the peer would not read one)."""
        self._say(source, "cut off", f"cut off: {reason}")

    def _say(self, source: str, kind: str, what: str) -> None:
        now = time.monotonic()
        last, count, sources = self._last.get(kind, (-LOG_EVERY_S, 0, set()))
        if now - last < LOG_EVERY_S:
            if len(sources) < MAX_SOURCES:
                sources.add(source)
            self._last[kind] = (last, count + 1, sources)
            return
        self._last[kind] = (now, 0, set())
        addresses = f"{len(sources)} address{'es' if len(sources) > 1 else ''}"
        more = f" (and {count} more {kind} from {addresses} since the last line)" if count else ""
        log.warning("HTTP %s %s%s", escape(source), what, more)


class FairShare:
    """Turns at being answered, shared fairly between addresses: at most ``per_source`` requests of one address and
    ``total`` in all are answered at once; the others wait, at most ``queued_per_source`` of one address (beyond:
    refused; :meth:`drop_one` refuses one that waits), and each freed turn goes to the address that has waited
    longest since its last turn. An address sending many requests at once delays its own, not everyone else's (640
    connections from 20 addresses asking /healthz over and over made a client from another address wait 8 s).

    ``exempt(address)``: addresses held only to ``total`` (proxies, whose requests name no client).
    Used from one event loop only.
    """

    def __init__(
        self, total: int, per_source: int, queued_per_source: int, exempt: Callable[[str], bool] = lambda _: False
    ) -> None:
        self.total = total
        self.per_source = per_source
        self.queued_per_source = queued_per_source
        self.exempt = exempt
        self.running = 0
        self._running: dict[str, int] = {}
        self._waiting: OrderedDict[str, deque[asyncio.Future[str | None]]] = OrderedDict()  # longest since a turn first

    async def enter(self, source: str) -> str | None:
        """Wait for a turn of ``source`` (then :meth:`leave` after the answer): None, or why it is refused."""
        if source not in self._waiting and self._may_run(source):
            self._start(source)
            return None
        queue = self._waiting.get(source)
        if queue is not None and len(queue) >= self.queued_per_source and not self.exempt(source):
            answered = self._running.get(source, 0)
            return (
                f"{answered} requests from your address are being answered and {len(queue)} wait their turn, "
                "the limit; try again shortly"
            )
        turn: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(source, deque()).append(turn)
        try:
            return await turn  # None: its turn; or why it was dropped (drop_one)
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result() is None:
                self.leave(source)  # given its turn, then cancelled before it started
            elif source in self._waiting and turn in self._waiting[source]:
                self._waiting[source].remove(turn)
                if not self._waiting[source]:
                    del self._waiting[source]
            raise

    def drop_one(self, reason: str) -> bool:
        """Refuse (``reason``) the request that came last of the address with the most waiting, if any (True)."""
        for source in sorted(self._waiting, key=lambda waiting: len(self._waiting[waiting]), reverse=True):
            queue = self._waiting[source]
            while queue:
                turn = queue.pop()
                if not turn.done():
                    turn.set_result(reason)
                    if not queue:
                        del self._waiting[source]
                    return True
            del self._waiting[source]
        return False

    def queued(self, source: str) -> int:
        """Requests of ``source`` waiting for their turn now."""
        return len(self._waiting.get(source, ()))

    def leave(self, source: str) -> None:
        """A request of ``source`` that :meth:`enter` let in is answered: the next turn goes out."""
        self.running -= 1
        left = self._running.get(source, 0) - 1
        if left > 0:
            self._running[source] = left
        else:
            self._running.pop(source, None)
        while self.running < self.total:
            source = next((waiting for waiting in self._waiting if self._may_run(waiting)), "")
            if not source:
                return
            queue = self._waiting[source]
            turn = queue.popleft()
            if queue:
                self._waiting.move_to_end(source)  # its next request waits for the others' turns
            else:
                del self._waiting[source]
            if not turn.done():  # not given up (cancelled) while waiting
                self._start(source)
                turn.set_result(None)

    def _may_run(self, source: str) -> bool:
        cap = self.total if self.exempt(source) else self.per_source
        return self.running < self.total and self._running.get(source, 0) < cap

    def _start(self, source: str) -> None:
        self.running += 1
        self._running[source] = self._running.get(source, 0) + 1


def forwarded_allow_ips(configured: list[str] | None) -> list[str]:
    """The proxies believed: ``api.forwarded_allow_ips`` where set, else uvicorn's FORWARDED_ALLOW_IPS (what the
    documentation named before the setting existed), else 127.0.0.1 and ::1."""
    if configured is not None:
        return [entry.strip() for entry in configured]
    return [
        entry.strip() for entry in os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1").split(",") if entry.strip()
    ]


@dataclass
class PeerLimits:
    """What the connections and requests of one server share: its limits (the api.* settings, see
    :meth:`for_settings`), counts per address, refusals."""

    max_connections: int = MAX_CONNECTIONS
    max_per_source: int = MAX_CONNECTIONS_PER_SOURCE
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_body_bytes: int = MAX_BODY_BYTES
    send_timeout_s: float = SEND_TIMEOUT_S
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    failed_auth_limit: int = FAILED_AUTH_BURST
    failed_auth_window_s: float = FAILED_AUTH_WINDOW_S
    failed_auth_pause_s: float = THROTTLE_S
    in_flight: int = IN_FLIGHT
    in_flight_per_source: int = IN_FLIGHT_PER_SOURCE
    queued_per_source: int = QUEUED_PER_SOURCE
    connections: dict[str, int] = field(default_factory=dict)
    refusals: RefusalLog = field(default_factory=RefusalLog)
    #: Proxies (``api.forwarded_allow_ips``): their connections carry many clients, so only the total cap applies,
    #: and the clients they name in X-Forwarded-For are counted instead.
    proxies: str | list[str] = field(default_factory=lambda: forwarded_allow_ips(None))
    #: Turns at being answered (:class:`FairShare`), from the three limits above.
    fair: FairShare = field(init=False, repr=False)

    def __post_init__(self) -> None:
        proxies = self.proxies
        self.fair = FairShare(
            self.in_flight, self.in_flight_per_source, self.queued_per_source, lambda source: _listed(source, proxies)
        )

    @classmethod
    def for_settings(cls, api: ApiSettings) -> PeerLimits:
        """The limits the api.* settings set; ``api.max_connections`` lowered to fit the file descriptor limit
        (:func:`connection_limit`)."""
        return cls(
            max_connections=connection_limit(api.max_connections),
            max_per_source=api.max_connections_per_address,
            in_flight=api.requests_in_flight,
            in_flight_per_source=api.requests_in_flight_per_address,
            queued_per_source=api.max_connections_per_address,
            header_timeout_s=api.header_timeout_s,
            body_timeout_s=api.body_timeout_s,
            max_body_bytes=api.max_body_bytes,
            failed_auth_limit=api.failed_auth_limit,
            failed_auth_window_s=api.failed_auth_window_s,
            failed_auth_pause_s=api.failed_auth_pause_s,
            proxies=forwarded_allow_ips(api.forwarded_allow_ips),
        )

    @property
    def open_connections(self) -> int:
        """Connections held now."""
        return sum(self.connections.values())

    def admit(self, source: str, make_room: Callable[[], bool] | None = None) -> str | None:
        """Count a new connection from ``source``, or say why it is refused. When the server is full,
        ``make_room`` may close another connection (True when it did)."""
        if self.connections.get(source, 0) >= self.max_per_source and not _listed(source, self.proxies):
            return f"{self.max_per_source} connections from your address are open, the limit; close some first"
        if self.open_connections >= self.max_connections and (make_room is None or not make_room()):
            return f"the server holds {self.max_connections} connections, its limit; try again shortly"
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

"""The QA API's and console's request guard (ASGI middleware): sizes, the failed-authentication throttle, sign-ins.

:class:`RequestGuard` refuses a request with both Content-Length and Transfer-Encoding (400, the connection closed:
RFC 9112 6.1, a smuggled second request behind a proxy), a URL over :data:`MAX_TARGET_BYTES` (414), headers over
:data:`MAX_HEADER_BYTES` or :data:`MAX_HEADER_LINES` (431), a body over ``api.max_body_bytes`` (413, read no
further); it throttles an address after ``api.failed_auth_limit`` failed authentications (429, one audit event for
the episode) and checks at most :data:`SIGN_INS_PER_SOURCE` console sign-ins per address
(from their arrival; :data:`SIGN_INS_IN_FLIGHT` in all, while checked) at once; it reads a request's body (up to
``api.max_body_bytes``, a console form's up to :data:`~radtrace.http_limits.MAX_FORM_BYTES`) before the request
waits its turn, so that a peer dripping one holds no turn; and it lets requests be answered in fair turns
(:class:`~radtrace.http_limits.FairShare`: ``PeerLimits.in_flight_per_source`` of one address at once, a few more
waiting, beyond them 503 with Retry-After). :mod:`radtrace.http_server` puts it in front of the application, behind
the connection limits of its protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from starlette.requests import ClientDisconnect

from radtrace.http_limits import (
    MAX_FORM_BYTES,
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
    refusal,
)
from radtrace.logging import escape

__all__ = ["RequestGuard"]

#: Logged under the server's name, where an operator looks for its refusals.
log = logging.getLogger("radtrace.http_server")

#: Paths served to anyone, throttled or not: they need no credentials and record nothing.
_PUBLIC: Final = ("/healthz", "/docs", "/openapi.json", "/static-offline-docs/", "/console/static/")
_SIGN_IN: Final = "/console/login"
_CONSOLE: Final = "/console"


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
        sign_in = scope["method"] == "POST" and path == _SIGN_IN
        if sign_in:  # counted from its arrival: its own address's third waits for none of them
            if record.sign_ins >= SIGN_INS_PER_SOURCE:
                reason = f"{SIGN_INS_PER_SOURCE} sign-ins from your address are being checked; wait for them"
                await self._refuse(send, source, 429, reason, 1)
                return
            record.sign_ins += 1
        try:
            await self._read_then_answer(scope, receive, send, source, record, sign_in)
        finally:
            if sign_in:
                record.sign_ins -= 1

    async def _read_then_answer(
        self, scope: Scope, receive: Receive, send: Send, source: str, record: _Source, sign_in: bool
    ) -> None:
        """Read the request's body, then wait for its turn and pass it on."""
        console = scope["path"].startswith(_CONSOLE)
        limit = min(self.max_body_bytes, MAX_FORM_BYTES) if console else self.max_body_bytes
        body: list[Message] | None = None
        declared = dict(scope["headers"]).get(b"content-length", b"")
        unread = int(declared) if console and declared.isdigit() and int(declared) > limit else 0
        if unread:
            body = []  # a form declared past its limit: the console refuses it by its length, the body unread
        elif _has_body(scope):
            # Read (up to the limit) before the application does, and before the request takes a turn: FastAPI
            # would hold any size in memory, and a peer dripping a body (a console form) held the turn for
            # body_timeout_s. A console form past its limit is refused by the console, in its own words.
            body, over = await self._read_body(receive, limit)
            if over and not console:
                await self._refuse(send, source, 413, f"request body over {limit} bytes")
                return
            if body[-1]["type"] != "http.request":
                return  # the peer left, or its body was not complete in time (408): no one to answer
        refused = await self.limits.fair.enter(source)
        if refused is not None:
            await self._refuse(send, source, 503, refused, 1)
            return
        answering = True

        def answered() -> None:  # the turn ends as the answer's last part is handed over, before the next request
            nonlocal answering  # on the connection (pipelined) starts: it does not wait behind its predecessor
            if answering:
                answering = False
                self.limits.fair.leave(source)

        try:
            replayed = _replay(body, receive) if body is not None else receive
            capped = _Capped(replayed, limit, size=unread)
            await self._answer(scope, capped, send, source, record, sign_in, answered)
        finally:
            answered()

    async def _answer(
        self,
        scope: Scope,
        capped: _Capped,
        send: Send,
        source: str,
        record: _Source,
        sign_in: bool,
        answered: Callable[[], None],
    ) -> None:
        """Pass the request on (its turn come, its body read), count sign-ins being checked and failed
        authentications."""
        if sign_in:
            if self._sign_ins >= SIGN_INS_IN_FLIGHT:
                await self._refuse(send, source, 503, "too many sign-ins are being checked; try again shortly", 1)
                return
            self._sign_ins += 1
        status = 0
        location = b""

        async def watch(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                location = dict(message.get("headers", [])).get(b"location", b"")
                if location.startswith((b"http://", b"https://")):  # Starlette's redirects name the Host sent
                    message["headers"] = [(k, _path_only(v) if k == b"location" else v) for k, v in message["headers"]]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                answered()
            await send(message)

        try:
            await self.app(scope, capped, watch)
        except ClientDisconnect:  # the peer left, its body passed the limit, or a deadline passed
            if capped.over and not status:
                await self._refuse(send, source, 413, f"request body over {capped.limit} bytes")
            return
        finally:
            if sign_in:
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

    async def _read_body(self, receive: Receive, limit: int) -> tuple[list[Message], bool]:
        """The request's body messages, read until it ends, the peer leaves or it passes ``limit`` bytes; and
        whether it passed the limit (the message that did is the last one read)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, False
            size += len(message.get("body", b""))
            if size > limit:
                return messages, True
            if not message.get("more_body", False):
                return messages, False

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
    """``receive`` that ends the request (a disconnect) after its body passes the limit (``size``: bytes counted
    already): for the console's routes, which read forms themselves (16 KiB) and answer some requests without
    reading the body at all. The message that passes the limit still reaches the application, which may refuse it
    in its own words."""

    def __init__(self, receive: Receive, limit: int, *, size: int = 0) -> None:
        self.receive = receive
        self.limit = limit
        self.size = size

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

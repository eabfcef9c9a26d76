"""One bounded HTTP exchange with a vLLM server (its OpenAI-compatible API), under the bounds that hold whatever the
server does: the whole request (connect, headers, body) ends at its deadline (a watchdog shuts the socket down, so a
server dripping one byte at a time cannot stretch it; httpx's own timeouts are per read), and at most
:data:`MAX_REPLY_BYTES` of reply are read (a larger Content-Length is refused before reading, a body that never ends
is cut there; no compression is accepted, so no decompression bomb either). Text the server sends back into an
error is cut short and quoted.

Errors: an unreachable server is :class:`PeerUnavailableError`; no answer in time, 5xx or 429 is
:class:`ModelServerError`; an answer broken off or too large, or a body that is no JSON object, is
:class:`ModelError` (all retryable); any other refusal is :class:`ModelRequestError` (permanent).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any, Final

import httpx

from radtrace.errors import ModelError, ModelRequestError, ModelServerError, PeerUnavailableError

__all__ = ["MAX_JSON_VALUES", "MAX_REPLY_BYTES", "VllmHttp", "json_reply", "quoted"]

#: The most reply bytes read per request: far above any completion (tokens times bytes per token in JSON), far below
#: what would hurt a worker running ``max_concurrency`` requests at once.
MAX_REPLY_BYTES: Final = 8 * 1024 * 1024
#: The most JSON values a reply may hold before it is parsed, counted as the bytes that open or separate one (``[``,
#: ``{``, ``,``; inside strings too: a count, not a parse). Parsed, each is a Python object of 24 to 64 bytes for as
#: few as 3 bytes of reply: 8 MiB of ``[],`` is 2.8 million lists, 189 MB. A completion has a few dozen; a model's
#: text as many as it has commas and brackets, far fewer than its max_new_tokens times a few.
MAX_JSON_VALUES: Final = 100_000
_ERROR_BODY_BYTES: Final = 64 * 1024  # enough of a refusal's body to quote its start
_QUOTED_CHARS: Final = 200


def quoted(text: object, limit: int = _QUOTED_CHARS) -> str:
    """A peer's text for an error reason: cut short and quoted (repr escapes control characters)."""
    value = str(text)
    return repr(value[:limit] + ("…" if len(value) > limit else ""))


def json_reply(data: bytes, base_url: str) -> Any:
    """A reply's JSON, parsed within bounds: at most :data:`MAX_JSON_VALUES` values (see there), nested no deeper
    than Python's parser can go (it raises RecursionError, not ValueError, past its recursion limit).

    Raises:
        ModelError: not JSON, too many values, nested too deep.
    """
    values = data.count(b"[") + data.count(b"{") + data.count(b",")
    if values > MAX_JSON_VALUES:
        raise ModelError(
            f"vLLM server at {base_url} sent a reply of about {values} JSON values (more than {MAX_JSON_VALUES}): "
            "not parsed"
        )
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ModelError(f"vLLM server at {base_url} sent a reply that is not JSON (nested too deep)") from exc
    except ValueError as exc:
        raise ModelError(f"vLLM server at {base_url} sent a reply that is not JSON") from exc


class _Deadline:
    """Ends one request at its deadline: shuts the connection's socket down, which makes a blocked read return.

    The socket comes from httpcore's ``trace`` extension (``connection.connect_tcp.complete``); the client keeps
    no idle connections, so every request opens its own and is seen here.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        found = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = found if isinstance(found, socket.socket) else None
            if self.expired:
                self._shut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class VllmHttp:
    """The HTTP client of one vLLM server: a connection per request (so that :class:`_Deadline` sees each)."""

    def __init__(
        self, base_url: str, *, timeout_s: float, api_key: str | None, transport: httpx.BaseTransport | None
    ) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        headers = {"Accept-Encoding": "identity"} | ({"Authorization": f"Bearer {api_key}"} if api_key else {})
        self._client = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_keepalive_connections=0),  # a connection per request: _Deadline sees each
            transport=transport,
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def request(self, method: str, path: str, *, timeout_s: float | None = None, **kwargs: Any) -> dict[str, Any]:
        """:meth:`fetch`, then the reply as a JSON object; an error status raises its error (:meth:`_refused`)."""
        status, headers, data = self.fetch(method, path, timeout_s=timeout_s, **kwargs)
        if 300 <= status < 400:  # no redirect is followed: the server configured is the one asked, and its answer
            raise ModelRequestError(
                f"vLLM server at {self.base_url} answered {status} to {path}, a redirect to "
                f"{quoted(headers.get('location', ''), 80)}: radtrace follows no redirect; set model.vllm_url to "
                "the server itself"
            )
        if status >= 400:
            self._refused(path, status, headers.get("retry-after"), data.decode("utf-8", "replace"))
        body = json_reply(data, self.base_url)
        if not isinstance(body, dict):
            raise ModelError(f"vLLM server at {self.base_url} sent a reply that is not a JSON object")
        return body

    def fetch(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float | None = None,
        limit: int = MAX_REPLY_BYTES,
        cut: bool = False,
        **kwargs: Any,
    ) -> tuple[int, httpx.Headers, bytes]:
        """One request, ended at ``timeout_s`` (default the request timeout) whatever the server does: its status,
        headers and body (at most ``limit`` bytes: past it, the start with ``cut``, else a :class:`ModelError`;
        an error status's body: its first 64 KiB)."""
        seconds = self.timeout_s if timeout_s is None else timeout_s
        deadline = _Deadline(seconds)
        late = f"vLLM server at {self.base_url} did not answer {path} within {seconds:g} s"
        try:
            with self._client.stream(
                method, path, extensions={"trace": deadline.trace}, timeout=httpx.Timeout(seconds), **kwargs
            ) as response:
                status = response.status_code
                if status >= 400:
                    data = self._read(response, _ERROR_BODY_BYTES, cut=True)
                else:
                    data = self._read(response, limit, cut=cut)
                return status, response.headers, data
        except httpx.TimeoutException as exc:
            raise ModelServerError(late) from exc
        except httpx.TransportError as exc:
            if deadline.expired:
                raise ModelServerError(late) from exc
            if isinstance(exc, httpx.ConnectError):
                raise PeerUnavailableError(f"vLLM server at {self.base_url} is not reachable: {exc}") from exc
            raise ModelError(f"vLLM server at {self.base_url} broke off its answer to {path}: {quoted(exc)}") from exc
        finally:
            deadline.cancel()

    def _read(self, response: httpx.Response, limit: int, *, cut: bool) -> bytes:
        """At most ``limit`` bytes of the body; past it, the start (``cut``) or a :class:`ModelError`."""
        too_large = f"vLLM server at {self.base_url} sent a reply larger than {limit // (1024 * 1024)} MiB"
        announced = response.headers.get("content-length", "")
        if not cut and announced.isdigit() and int(announced) > limit:
            raise ModelError(f"{too_large} (Content-Length {int(announced)})")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if cut:
                    break
                raise ModelError(too_large)
        return b"".join(chunks)[:limit]

    def _refused(self, path: str, status: int, retry_after: str | None, detail: str) -> None:
        """Raise the error for an HTTP error status: 429 and 5xx retryable (with the server's Retry-After)."""
        if status == 429 or status >= 500:
            # seconds only (an HTTP date is not used), and a sane count of digits: int() of thousands raises
            asked = int(retry_after) if retry_after and retry_after.isdigit() and len(retry_after) <= 9 else None
            wait = f"; it asks to retry after {asked} s" if asked is not None else ""
            raise ModelServerError(f"vLLM server at {self.base_url} answered {status} to {path}{wait}", asked)
        raise ModelRequestError(f"vLLM server at {self.base_url} refused {path} with {status}: {quoted(detail)}")

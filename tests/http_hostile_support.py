"""The hostile HTTP client's tools (tests/integration/http_hostile): raw sockets from chosen loopback addresses, the
answer's status and reason, and :class:`Served`, a running ``radtrace api`` process with what the tests read of it
(its descriptors, memory, audit rows, log)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from http_support import guarded_serving
from radtrace.audit.api import create_api
from radtrace.audit.events import Actor
from radtrace.http_limits import PeerLimits
from radtrace.store.engine import Store

OPERATOR = Actor(user="root", host="radtrace-host")
PATIENT_ID = "PAT-HTTP-7731"  # sent in queries, headers and bodies; must never reach the log
FORGED = "FORGED-LOG-LINE"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+: ")


@dataclass
class Served:
    """A running ``radtrace api`` process."""

    port: int
    pid: int
    token: str
    log_file: Path
    store: Store

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_mib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024  # type: ignore[union-attr]

    def innocent(self) -> int:
        """An ordinary authenticated request from 127.0.0.1; its status."""
        answer = httpx.get(
            f"http://127.0.0.1:{self.port}/v1/events",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        return answer.status_code

    def auth_failures(self, host: str) -> list[dict[str, object]]:
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT outcome, payload FROM audit_events WHERE event_type = 'api_authentication_failed' "
                    "AND actor_host = :host ORDER BY seq"
                ),
                {"host": host},
            )
            return [{"outcome": outcome, **json.loads(payload)} for outcome, payload in rows]

    def log_problems(self) -> list[str]:
        """Lines of the log that are neither a record nor part of a traceback, and any patient ID or raw control."""
        problems = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            raw = PATIENT_ID in line or "\x1b" in line or FORGED in line.split(":", 1)[0]
            if raw or not (LOG_LINE.match(line) or line.startswith(("Traceback", "  ", "|", "+")) or _exception(line)):
                problems.append(line)
        return problems


def _exception(line: str) -> bool:
    return bool(re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Disconnect|Exit|Interrupt)\b", line))


def connect(port: int, source: str, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def answer_of(peer: socket.socket, limit: int = 65536) -> bytes:
    """What the server sends until it closes or stops (the socket's timeout)."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while len(data) < limit:
            chunk = peer.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def exchange(port: int, request: bytes, source: str = "127.0.0.1", timeout: float = 5) -> bytes:
    with connect(port, source, timeout) as peer:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            peer.sendall(request)
        return answer_of(peer)


def status_of(answer: bytes) -> int:
    found = re.match(rb"HTTP/1.1 (\d{3}) ", answer)
    return int(found.group(1)) if found else 0


def detail_of(answer: bytes) -> str:
    body = answer.split(b"\r\n\r\n", 1)[1]
    detail: str = json.loads(body)["detail"]
    return detail


def guarded(store: Store, limits: PeerLimits) -> contextlib.AbstractContextManager[int]:
    """The guarded server over ``store`` with ``limits``, in a thread; yields its port."""
    return guarded_serving(create_api(store), limits)

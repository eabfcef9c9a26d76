"""Private PostgreSQL and Redis servers for fault tests that stop, restart or flush them, and hostile peers.

The machine's shared servers (127.0.0.1:5432, :6379) serve every other test running at the same time,
so a test that takes its database or broker down gets its own: a PostgreSQL cluster made with
``initdb`` in a fresh directory owned by ``postgres`` (PostgreSQL refuses to run as root), and a
``redis-server`` without persistence, each on a free port. ``stop`` and ``start`` keep the data
directory and the port, as a real restart does; the context managers always stop them.

``hostile_peer`` is a server on raw sockets that reads one request (HTTP or MLLP) and then misbehaves as told.
A library server would answer correctly; it writes bytes by hand so that a test can send what a broken or hostile
vLLM server, RIS or proxy could: a body that never ends, a drip of one byte at a time, a length far beyond what
follows, garbage after a valid answer. ``sent`` counts the bytes the peer managed to write, so a test can show that
the client stopped reading early.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from radtrace.testing.services import free_port
from serve_support import wait_until

__all__ = [
    "HostilePeer",
    "PrivatePostgres",
    "PrivateRedis",
    "drip",
    "hostile_peer",
    "private_postgres",
    "private_redis",
    "read_http_request",
    "read_mllp_message",
    "stream_forever",
]

PG_USER = "postgres"
END_BLOCK = b"\x1c\x0d"  # MLLP


def _pg_bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return str(versions[-1] / name)


def _as_postgres(*command: str) -> list[str]:
    """Run as the postgres user when we are root (PostgreSQL will not run as root)."""
    return ["runuser", "-u", PG_USER, "--", *command] if os.geteuid() == 0 else list(command)


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own: ``url(name)`` for a database on it; ``stop``/``start`` restart it."""

    directory: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "radtrace") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres", connect_timeout=2) as c:
                c.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _pg_ctl(self, *args: str) -> None:
        command = _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data_dir), *args)
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.directory / "postgres.log"), "-w", "-t", "30", "start")
        wait_until(self.ready, 30, "PostgreSQL accepting connections")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` ends every session; ``immediate`` is a crash)."""
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop")

    def create_database(self, name: str = "radtrace") -> str:
        import psycopg

        with psycopg.connect(f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """initdb a cluster in a new directory owned by postgres, run it on a free port; remove it afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="radtrace-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        os.chown(directory, user.pw_uid, user.pw_gid)
    server = PrivatePostgres(directory, free_port())
    try:
        init = subprocess.run(
            _as_postgres(_pg_bin("initdb"), "-D", str(server.data_dir), "-A", "trust", "-U", PG_USER, "-E", "UTF8"),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
        server.start()
        yield server
    finally:
        if (server.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A redis-server of our own (no persistence): ``stop``/``start`` restart it on the same port, empty."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ready(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_until(self.ready, 30, "Redis answering PING")

    def stop(self) -> None:
        """Kill the server: without persistence every key, every queued message, is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def flush(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    """redis-server on a free port with its files under ``directory``; killed afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis(directory, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- hostile peers on raw sockets ----------------------------------------------------------------


@dataclass
class HostilePeer:
    """Where the peer listens, what it received (and when: ``time.monotonic()`` once each request was read) and how
    many bytes it wrote."""

    host: str
    port: int
    received: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def write(self, connection: socket.socket, data: bytes) -> bool:
        """Write ``data``; False once the client has gone (or the test is over)."""
        if self.stop.is_set():
            return False
        try:
            connection.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        return True


def read_http_request(connection: socket.socket) -> bytes:
    """One HTTP/1.1 request with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def read_mllp_message(connection: socket.socket) -> bytes:
    """One MLLP-framed message (up to and including its end block)."""
    data = b""
    while END_BLOCK not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def drip(peer: HostilePeer, connection: socket.socket, data: bytes, every_s: float) -> None:
    """Write ``data`` one byte at a time, ``every_s`` apart."""
    for index in range(len(data)):
        if not peer.write(connection, data[index : index + 1]):
            return
        time.sleep(every_s)


def stream_forever(peer: HostilePeer, connection: socket.socket, chunk: bytes, limit: int = 1 << 30) -> None:
    """Write ``chunk`` again and again until the client stops reading (or ``limit`` bytes: a test's safety net)."""
    while peer.sent < limit and peer.write(connection, chunk):
        pass


@contextlib.contextmanager
def hostile_peer(
    behave: Callable[[HostilePeer, socket.socket], None],
    read: Callable[[socket.socket], bytes] = read_http_request,
) -> Iterator[HostilePeer]:
    """Listen on a free local port; for each connection read one request, then run ``behave`` on it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    peer = HostilePeer("127.0.0.1", server.getsockname()[1])
    threads: list[threading.Thread] = []

    def handle(connection: socket.socket) -> None:
        with connection:
            connection.settimeout(30)
            try:
                peer.received.append(read(connection))
                peer.arrivals.append(time.monotonic())
                behave(peer, connection)
            except OSError:
                pass

    def accept() -> None:
        while not peer.stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=handle, args=(connection,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield peer
    finally:
        peer.stop.set()
        acceptor.join(5)
        server.close()
        for thread in threads:
            thread.join(5)

"""Real local services for tests and benchmarks: PostgreSQL, Redis and free TCP ports.

Tests run against the real servers on 127.0.0.1 (PostgreSQL 5432 with trust auth, Redis 6379). When
one is down, :func:`ensure_postgres` / :func:`ensure_redis` start it with the machine's own
commands, so a fresh CI machine and a developer's machine behave the same. Each test then gets
its own PostgreSQL database and its own Redis key prefix, removed afterwards.

``python -m radtrace.testing.services`` starts whatever is down (used by ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "POSTGRES_ADMIN_URL",
    "REDIS_URL",
    "RedisNamespace",
    "ensure_postgres",
    "ensure_redis",
    "free_port",
    "temporary_postgres_database",
    "temporary_redis_namespace",
]

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
POSTGRES_ADMIN_URL = f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
START_TIMEOUT_S = 60.0


class ServiceUnavailableError(RuntimeError):
    """A test service is down and could not be started; the message says what was tried."""


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (and to ``bind(0)``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORT_FLOOR = 10000
_PORT_SLICES = 8
_next_port: dict[int, int] = {}


def _port_slice() -> tuple[int, int]:
    """This test process's own range of ports, below the ephemeral range and apart from other xdist workers'."""
    top = max(_ephemeral_low(), _PORT_FLOOR + 8 * _PORT_SLICES)
    size = (top - _PORT_FLOOR) // _PORT_SLICES
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) % (_PORT_SLICES - 1) if worker[2:].isdigit() else _PORT_SLICES - 1
    start = _PORT_FLOOR + index * size
    return start, start + size


def _bindable(host: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, also_udp: bool = False, consecutive: int = 1) -> int:
    """A TCP port on ``host`` that nothing listens on right now (for listeners started by tests); with
    ``consecutive`` > 1 the ports after it are free too, with ``also_udp`` the same UDP port(s).

    Ports come from below the kernel's ephemeral range, each xdist worker from its own slice, handed out in turn.
    ``bind(0)`` would give an ephemeral port: between the test closing its probe and the server (often a subprocess)
    binding it, any outgoing connection on the machine (to PostgreSQL, Redis, another test's server) may be given
    the same port, and the server then fails with "address in use" (seen in CI: test_pacs_loop under two workers).
    Below the ephemeral range only a deliberate bind can take a port, and the other workers look elsewhere.
    """
    start, end = _port_slice()
    size = end - start
    key = start
    # Start where this process's pid points, so a test's subprocess that also asks does not walk the parent's path.
    offset = _next_port.get(key, (os.getpid() * 7919) % size)
    for step in range(size):
        port = start + (offset + step) % size
        if port + consecutive > end:
            continue
        ports = range(port, port + consecutive)
        if all(_bindable(host, p, socket.SOCK_STREAM) for p in ports) and (
            not also_udp or all(_bindable(host, p, socket.SOCK_DGRAM) for p in ports)
        ):
            _next_port[key] = (offset + step + consecutive) % size
            return port
    raise RuntimeError(f"no free port in {start}-{end} on {host}")


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def _wait_for(check_ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if check_ready():
            return
        time.sleep(0.25)
    raise ServiceUnavailableError(f"{what} did not become ready within {START_TIMEOUT_S:.0f} s")


def _postgres_ready() -> bool:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def ensure_postgres() -> str:
    """Make sure PostgreSQL answers on 127.0.0.1:5432, starting the local cluster if needed.

    Returns the admin URL. Raises :class:`ServiceUnavailableError` with the command's output otherwise.
    """
    if _postgres_ready():
        return POSTGRES_ADMIN_URL
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*") if p.is_dir())
    if not versions:
        raise ServiceUnavailableError("PostgreSQL is not running and no cluster exists under /etc/postgresql")
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 and "already running" not in result.stderr:
        raise ServiceUnavailableError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    _wait_for(_postgres_ready, "PostgreSQL")
    return POSTGRES_ADMIN_URL


def _redis_ready() -> bool:
    import redis

    try:
        return bool(redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def ensure_redis() -> str:
    """Make sure Redis answers on 127.0.0.1:6379, starting a non-persistent server if needed."""
    if _redis_ready():
        return REDIS_URL
    log_dir = Path("/var/log/redis")
    log_file = log_dir / "ci.log" if log_dir.is_dir() else Path("/tmp/radtrace-redis.log")  # noqa: S108
    data_dir = Path("/var/lib/redis") if Path("/var/lib/redis").is_dir() else Path("/tmp")  # noqa: S108
    command = [
        "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
        "--save", "", "--appendonly", "no", "--dir", str(data_dir), "--logfile", str(log_file),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceUnavailableError(f"redis-server failed to start: {result.stderr.strip() or result.stdout.strip()}")
    _wait_for(_redis_ready, "Redis")
    return REDIS_URL


@contextlib.contextmanager
def temporary_postgres_database(prefix: str = "radtrace_test", server_url: str | None = None) -> Iterator[str]:
    """Create a fresh, empty database and yield its SQLAlchemy URL; drop it (forcibly) afterwards.

    On the server of ``server_url`` (any database URL of it; its database name is ignored), else on the local
    one, started if need be.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(server_url or ensure_postgres())
    admin_url = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class RedisNamespace:
    """A Redis server URL plus a key prefix that only one test uses."""

    url: str
    prefix: str

    def key(self, name: str) -> str:
        """A key inside this namespace."""
        return f"{self.prefix}{name}"


@contextlib.contextmanager
def temporary_redis_namespace(prefix: str = "radtrace-test", url: str | None = None) -> Iterator[RedisNamespace]:
    """Yield a unique key prefix on the Redis at ``url`` (else the local one, started if need be); delete every
    key under it afterwards."""
    import redis

    url = url or ensure_redis()
    namespace = RedisNamespace(url=url, prefix=f"{prefix}-{uuid.uuid4().hex[:12]}:")
    try:
        yield namespace
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{namespace.prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def main() -> int:
    """Start PostgreSQL and Redis if they are down; print what is running."""
    try:
        print(f"postgresql: ready at {ensure_postgres()}")
        print(f"redis: ready at {ensure_redis()}")
    except ServiceUnavailableError as exc:
        print(f"radtrace test services: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

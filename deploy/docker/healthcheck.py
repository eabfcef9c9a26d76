"""Container health check for radtrace: exit 0 when the component in this container answers, 1 when not.

A command held after exit 2 (``hold_on_exit_2.py``: its file ``HOLD_ON_EXIT_2_FILE`` exists) is unhealthy, with
the file's words. Usage: ``healthcheck.py [listen|api|worker]``; without an argument the component is read from PID
1's command line (``radtrace listen``, ``radtrace api``, ``radtrace worker ...``), so one image-level HEALTHCHECK
serves every role. Nothing here writes to the audit log:

* listen: a TCP connection to the DICOM port, closed before any association (a C-ECHO would be an audited,
  allow-listed association every interval);
* api: ``GET /healthz`` (database answers and is migrated);
* worker: the work database answers (``SELECT 1``) and so does the broker (Redis ``PING``; the embedded broker's
  file exists). Celery workers have no HTTP endpoint of their own; a hung study is caught by the claim timeout
  and the reconciler, not by this check.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path

ROLES = ("listen", "api", "worker")


def _role_of_pid1() -> str | None:
    argv = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    for word in argv:
        if word in ROLES or word == "serve":
            return word
    return None  # a one-off command (db upgrade, audit checkpoint): nothing long-running to check


def _check_listen() -> None:
    port = int(os.environ.get("RADTRACE_LISTENER__PORT", "11112"))
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def _check_api() -> None:
    port = int(os.environ.get("RADTRACE_API__PORT", "8080"))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=8) as response:
        if response.status != 200:
            raise OSError(f"/healthz answered {response.status}")


def _check_worker() -> None:
    import sqlalchemy as sa

    from radtrace.config import load_settings

    settings = load_settings()
    engine = sa.create_engine(settings.store_url, pool_pre_ping=False)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()
    url = settings.broker_url
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    elif url.startswith("sqla+sqlite:///") and not Path(url[len("sqla+sqlite:///") :]).exists():
        raise OSError(f"embedded broker file {url} is missing")


def main(argv: list[str]) -> int:
    held = Path(os.environ.get("HOLD_ON_EXIT_2_FILE", "/tmp/radtrace-held"))  # noqa: S108 - hold_on_exit_2.py's
    if held.exists():  # a command that exited 2 and is held, not restarted: unhealthy, saying why
        print(f"healthcheck: unhealthy: {held.read_text().strip()}", file=sys.stderr)
        return 1
    role = argv[1] if len(argv) > 1 else _role_of_pid1()
    if role is None:
        return 0
    checks = {"listen": _check_listen, "api": _check_api, "worker": _check_worker, "serve": _check_listen}
    if role not in checks:
        print(f"healthcheck: unknown component {role!r}; use one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    try:
        checks[role]()
    except Exception as exc:  # any failure is "unhealthy", with the reason on stderr for `docker inspect`
        print(f"healthcheck: {role} unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""A real pgbouncer (Debian's, 1.18) in front of a test PostgreSQL database, for the tests of radtrace behind a
connection pooler (tests/integration/test_upgrade_pgbouncer.py, test_store_pgbouncer_pooling.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from radtrace.testing.services import free_port

__all__ = ["PGBOUNCER", "pgbouncer"]

PGBOUNCER = "/usr/sbin/pgbouncer"


@contextlib.contextmanager
def pgbouncer(url: str, pool_mode: str) -> Iterator[str]:
    """A real pgbouncer in front of the database of ``url`` (trust, as the test server); yields its URL."""
    if shutil.which(PGBOUNCER) is None:
        raise RuntimeError(f"{PGBOUNCER} not found: apt-get install pgbouncer")
    parsed = make_url(url)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="radtrace-pgbouncer-") as folder:
        directory = Path(folder)
        directory.chmod(0o755)  # run as root, pgbouncer drops to the postgres user (-u) and reads its files as it
        users = directory / "users.txt"
        users.write_text(f'"{parsed.username}" ""\n', encoding="utf-8")
        config = directory / "pgbouncer.ini"
        config.write_text(
            f"[databases]\n{parsed.database} = host={parsed.host} port={parsed.port or 5432} "
            f"dbname={parsed.database}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = {pool_mode}\n"
            "ignore_startup_parameters = extra_float_digits,options\n",
            encoding="utf-8",
        )
        for path in (users, config):
            path.chmod(0o644)
        log = directory / "pgbouncer.log"
        command_line = [PGBOUNCER, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(config)]
        with log.open("wb") as written:
            process = subprocess.Popen(command_line, stdout=written, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:  # listening: a connection is accepted
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"pgbouncer did not start: {log.read_text(errors='replace')}")
                time.sleep(0.05)
            yield parsed.set(port=port).render_as_string(hide_password=False)
        finally:
            process.terminate()
            process.wait(timeout=30)

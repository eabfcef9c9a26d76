"""One listener per data directory and per port: a second `radtrace listen` that would share the port
(SO_REUSEPORT) or the data directory fails at once with a clear message and exit 2 (issue 15: a second
listener took 4 of 6 studies into a database no worker read)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from radtrace.testing.services import free_port
from serve_support import wait_until
from tests_support import radtrace

pytestmark = pytest.mark.integration


def _env(data_dir: Path, port: int) -> dict[str, str]:
    return {
        "RADTRACE_DATA_DIR": str(data_dir),
        "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(port),
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
    }


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_a_second_listener_on_the_same_port_or_data_directory_is_refused(tmp_path: Path) -> None:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | _env(tmp_path / "a", port)
    first = subprocess.Popen(
        [sys.executable, "-m", "radtrace", "listen"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: _answers(port), 30, "the first listener")

        same_port = radtrace("listen", env=_env(tmp_path / "b", port), timeout=60)
        assert same_port.returncode == 2, same_port.stderr
        assert f"already listens on port {port}" in same_port.stderr
        assert "RADTRACE_LISTENER__PORT" in same_port.stderr  # the setting to change is named
        assert f"pid {first.pid}" in same_port.stderr

        same_dir = radtrace("listen", env=_env(tmp_path / "a", free_port()), timeout=60)
        assert same_dir.returncode == 2, same_dir.stderr
        assert f"already uses data directory {tmp_path / 'a'}" in same_dir.stderr
        assert first.poll() is None  # the first one is untouched
    finally:
        first.terminate()
        first.communicate(timeout=30)

    with socket.create_server(("127.0.0.1", 0)) as other_program:
        taken = other_program.getsockname()[1]
        refused = radtrace("listen", env=_env(tmp_path / "c", taken), timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert f"port {taken} is already in use by another program" in refused.stderr

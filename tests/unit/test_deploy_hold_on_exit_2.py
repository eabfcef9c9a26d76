"""deploy/docker/hold_on_exit_2.py, which compose's atna-forwarder runs under: a command that exits 2 (restarting
cannot help) holds the container, unhealthy by the image's health check with the command's reason, instead of
exiting (Docker's unless-stopped restarted it every few seconds); other exits and a stop pass through.

Run with the real ``radtrace audit forward`` (refused, exit 2: atna.host unset) and the real healthcheck.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DOCKER = Path(__file__).resolve().parents[2] / "deploy" / "docker"
HOLD = DOCKER / "hold_on_exit_2.py"


def _environment(tmp_path: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    bin_dir = str(Path(sys.executable).parent)  # the venv's radtrace, as the image's PATH has it
    return environment | {"HOLD_ON_EXIT_2_FILE": str(tmp_path / "held"), "RADTRACE_DATA_DIR": str(tmp_path / "var"),
                          "PATH": f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"}  # fmt: skip


def _hold(tmp_path: Path, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HOLD), *command], env=_environment(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _healthcheck(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py")], env=_environment(tmp_path), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def _stopped(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()  # reads and closes its pipes


def test_a_command_that_exits_2_is_held_unhealthy_saying_why_until_stopped(tmp_path: Path) -> None:
    held = _hold(tmp_path, "radtrace", "audit", "forward")
    try:
        assert held.stderr is not None
        said = []
        for line in held.stderr:  # the command's refusal, then the holder's line; no timed wait
            said.append(line)
            if line.startswith("hold_on_exit_2:"):
                break
        text = "".join(said)
        assert "atna.host is not set (RADTRACE_ATNA__HOST)" in text, text
        assert "'radtrace audit forward' exited 2: restarting cannot help" in said[-1], text
        assert "held, not restarted" in said[-1]
        assert held.poll() is None  # still running: Docker's restart policy has nothing to restart

        health = _healthcheck(tmp_path)
        assert health.returncode == 1, health.stderr
        assert "unhealthy: 'radtrace audit forward' exited 2" in health.stderr, health.stderr

        held.send_signal(signal.SIGTERM)  # docker compose stop / restart
        assert held.wait(timeout=60) == 0
    finally:
        _stopped(held)


def test_other_exits_and_a_stop_pass_through_unheld(tmp_path: Path) -> None:
    crashed = _hold(tmp_path, sys.executable, "-c", "raise SystemExit(1)")
    try:
        assert crashed.wait(timeout=60) == 1  # restarted by Docker, as before
    finally:
        _stopped(crashed)
    assert not (tmp_path / "held").exists()
    assert _healthcheck(tmp_path).returncode == 0  # healthy as far as the holder goes (a one-off command: no role)

    # A command that exits 2 because it was asked to stop is not held: the container stops.
    stopping = _hold(tmp_path, sys.executable, "-c", (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    ))  # fmt: skip
    try:
        assert stopping.stdout is not None
        assert stopping.stdout.readline().strip() == "ready"
        stopping.send_signal(signal.SIGTERM)  # passed on to the command
        assert stopping.wait(timeout=60) == 2
    finally:
        _stopped(stopping)
    assert not (tmp_path / "held").exists()

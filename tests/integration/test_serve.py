"""``radtrace serve`` supervising its children: waiting for weights, restarting what dies, refusing bad settings."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from radtrace.dicom_listener.dcmtk import storescu
from radtrace.store.migrate import head_revision
from radtrace.testing.services import free_port
from radtrace.testing.studies import make_study, write_study
from serve_support import alive, running_serve, wait_until
from tests_support import radtrace

pytestmark = pytest.mark.integration


def serve_env(tmp_path: Path, listener_port: int, **extra: str) -> dict[str, str]:
    return {
        "RADTRACE_DATA_DIR": str(tmp_path / "radtrace"),
        "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(listener_port),
        "RADTRACE_LISTENER__SETTLE_SECONDS": "0.5",
        "RADTRACE_LISTENER__ALLOWED_CALLERS": json.dumps([{"ae_title": "PACS"}]),
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_API__PORT": str(free_port()),
        "COLUMNS": "200",
    } | extra


def revision_states(env: dict[str, str]) -> dict[str, int]:
    result = radtrace("status", "--json", "--no-broker", env=env)
    assert result.returncode == 0, result.stderr
    states: dict[str, int] = json.loads(result.stdout)["revisions"]
    return {state: count for state, count in states.items() if count}


def test_without_weights_studies_wait_queued_and_inference_starts_when_the_weights_appear(
    tmp_path: Path, listener_port: int, tiny_model_dir: Path
) -> None:
    weights = tmp_path / "weights"  # not there yet
    drop = tmp_path / "drop"
    drop.mkdir()
    env = serve_env(
        tmp_path, listener_port, RADTRACE_MODEL__PATH=str(weights), RADTRACE_MODEL__DEVICE="cpu",
        RADTRACE_MODEL__MAX_NEW_TOKENS="32", RADTRACE_DISPATCH__FILE_DROP_DIR=str(drop),
    )  # fmt: skip
    log_file = tmp_path / "serve.log"
    with running_serve(env, log_file, listener_port=listener_port) as serve:
        log = log_file.read_text()
        assert f"SQLite created at schema {head_revision()}" in log  # the start-up checks ran and made the database
        assert "inference is waiting for model weights" in log
        assert "RADTRACE_MODEL__PATH" in log
        assert storescu(write_study(make_study(), tmp_path / "study"), listener_port).returncode == 0
        wait_until(lambda: revision_states(env) == {"queued": 1}, 20, "the study queued", log_file)

        weights.symlink_to(tiny_model_dir)
        wait_until(lambda: bool(list(drop.glob("*.dcm"))), 60, "an SR once the weights appeared", log_file)
        assert "model weights found" in log_file.read_text()
        assert serve.stop(timeout=30) == 0
        assert [pid for pid in serve.seen if alive(pid)] == []


def test_a_child_that_dies_is_restarted_and_the_others_keep_running(tmp_path: Path, listener_port: int) -> None:
    env = serve_env(tmp_path, listener_port, RADTRACE_MODEL__PATH=str(tmp_path / "no-weights"))
    log_file = tmp_path / "serve.log"
    with running_serve(env, log_file, listener_port=listener_port) as serve:
        listener_pid = int(re.findall(r"started listener \(pid (\d+)\)", log_file.read_text())[0])
        os.kill(listener_pid, signal.SIGKILL)
        wait_until(
            lambda: len(re.findall(r"started listener \(pid (\d+)\)", log_file.read_text())) == 2,
            20, "the listener restarted", log_file,
        )  # fmt: skip
        assert "listener exited unexpectedly (status -9); restart 1" in log_file.read_text()
        # the restarted listener takes studies again
        wait_until(
            lambda: storescu(write_study(make_study(), tmp_path / "study"), listener_port).returncode == 0,
            30, "the restarted listener storing a study", log_file,
        )  # fmt: skip
        assert serve.stop(timeout=30) == 0
        assert [pid for pid in serve.seen if alive(pid)] == []


def test_a_child_refusing_its_configuration_stops_serve_with_status_2(tmp_path: Path, listener_port: int) -> None:
    # A port another program holds (listening or only bound) is refused by serve's own checks
    # (test_firsthour_ports_taken); one taken after them, before the listener child binds it, is found by the child,
    # which refuses its configuration: serve stops with status 2 instead of restarting it for ever.
    env = serve_env(tmp_path, listener_port, RADTRACE_MODEL__PATH=str(tmp_path / "no-weights"))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    with socket.socket() as taken:
        serve = subprocess.Popen([sys.executable, "-m", "radtrace", "serve"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=environment)  # fmt: skip
        try:
            assert serve.stdout is not None
            for line in serve.stdout:  # the start-up table; its last line comes before any child is started
                if line.startswith("└"):
                    break
            taken.bind(("127.0.0.1", listener_port))  # the listener child is still importing (seconds)
            _, stderr = serve.communicate(timeout=90)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
    assert serve.returncode == 2, stderr[-3000:]
    assert f"port {listener_port} is already in use by another program (listener.port" in stderr, stderr[-3000:]
    assert "listener refused its configuration (exit 2); stopping radtrace serve" in stderr

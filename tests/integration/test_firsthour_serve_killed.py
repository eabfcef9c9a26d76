"""``kill -9`` of ``radtrace serve``'s supervisor takes every child with it at once, and serve starts again at once.

Found by the first-hour exploration: the children were sent SIGTERM when the supervisor died, and the worker's and
dispatcher's Celery warm shutdown ran on for 5 to 25 s (a study in hand: minutes) with nobody waiting for them, the
listener for seconds more holding its port and locks; a serve started again meanwhile was refused ("another radtrace
listener (pid <the dead supervisor's child>)").
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from radtrace.testing.services import free_port
from tests_support import radtrace
from worker_support import NORMAL_READING, Reply, completion, fake_vllm_server

pytestmark = pytest.mark.integration

CHILDREN = ("listener", "worker", "dispatcher", "api")


class _Serve:
    """A ``radtrace serve`` whose stdout and stderr are read as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {"COLUMNS": "200"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "radtrace", "serve"], env=environment | env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        ]
        for reader in self.readers:
            reader.start()

    def close(self, pids: list[int]) -> None:
        """Kill what is left of it (``pids``: its children, which have their own process groups), close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        _kill_all(pids)
        for reader in self.readers:
            reader.join(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    def text(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def wait_for(self, done: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while done not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.1)

    def children(self) -> dict[str, int]:
        started = re.findall(r"started (\w+) \(pid (\d+)\)", "".join(self.stderr))
        return {name: int(pid) for name, pid in started}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits for whoever reaps it


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


FILM = Path("tests/data/real-cxr/fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm")
FILM_STUDY = "1.2.392.200036.9125.0.199302241758.16"


def test_kill_9_of_the_supervisor_ends_every_child_at_once_and_serve_starts_again(tmp_path: Path) -> None:
    """The worker has a study in hand (its model server holds the reading): a warm shutdown would wait for it. After
    the kill, a serve started at once takes the study up again and reports it."""
    with fake_vllm_server() as model:
        held = threading.Event()

        def answer(_request: dict[str, Any]) -> Reply | None:
            if not held.is_set():
                held.set()
                return None  # the first reading hangs (until released)
            return completion(NORMAL_READING)

        model.answer = answer
        env = {
            "RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_LISTENER__PORT": str(free_port()),
            "RADTRACE_API__PORT": str(free_port()), "RADTRACE_MODEL__BACKEND": "vllm",
            "RADTRACE_MODEL__VLLM_URL": model.url, "RADTRACE_LISTENER__SETTLE_SECONDS": "1",
            "RADTRACE_LISTENER__ALLOWED_CALLERS": '[{"ae_title": "RADTRACE-SEND", "host": "127.0.0.1"}]',
            "RADTRACE_BROKER__CLAIM_TIMEOUT_S": "6", "RADTRACE_BROKER__RECONCILE_INTERVAL_S": "2",
        }  # fmt: skip
        first = _Serve(env)
        pids: list[int] = []
        try:
            first.wait_for("Follow it:")
            for role in ("radtrace-gpu@", "radtrace-dispatch@"):  # both Celery workers are up, consuming
                first.wait_for(f"worker {role}")
            children = first.children()
            assert sorted(children) == sorted(CHILDREN), first.text()
            pids = list(children.values())
            sent = radtrace("send", "--port", env["RADTRACE_LISTENER__PORT"], "--called-ae", "RADTRACE",
                            "--calling-ae", "RADTRACE-SEND", str(FILM), env=env)  # fmt: skip
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert held.wait(60), first.text()  # the worker is reading it
            killed = time.monotonic()
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
            while any(_alive(pid) for pid in pids) and time.monotonic() - killed < 60:
                time.sleep(0.02)
            gone_s = time.monotonic() - killed
            lingering = [name for name, pid in children.items() if _alive(pid)]
            assert not lingering, f"{lingering} still running {gone_s:.1f} s after the supervisor was killed"
            assert gone_s < 2.0, f"the children took {gone_s:.1f} s to end"
            model.released.set()  # the hung reading's connection may end now

            second = _Serve(env)  # at once: the ports, the listener's locks and the data directory are free
            try:
                second.wait_for("Follow it:")
                assert "another radtrace listener" not in second.text()
                drafts = tmp_path / "var" / "drafts" / FILM_STUDY
                deadline = time.monotonic() + 120
                while not list(drafts.glob("*/sr.dcm")):  # the study in hand is taken up again and reported
                    assert time.monotonic() < deadline, second.text()
                    time.sleep(0.5)
                second.process.send_signal(signal.SIGTERM)
                assert second.process.wait(timeout=90) == 0, second.text()
            finally:
                second.close(list(second.children().values()))
        finally:
            first.close(pids)

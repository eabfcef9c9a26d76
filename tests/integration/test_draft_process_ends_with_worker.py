"""A GPU worker's draft process ends with the worker, even when the worker is killed with SIGKILL: before, it ran on
for ever, orphaned (about 240 MB each, with multiprocessing's resource tracker beside it), and every crash of a
worker that ``radtrace serve`` restarted left two more processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WORKER = """
import os, sys, time
from radtrace.config import load_settings
from radtrace.worker.drafting import PoolDrafter
drafter = PoolDrafter(load_settings(data_dir=sys.argv[1]), 1)
pool = drafter._spawn_pool()  # the pool PoolDrafter.submit starts: the same initializer and arguments
print(pool.submit(os.getpid).result(), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an orphan that exited may wait unreaped under PID 1)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_draft_process_ends_when_its_worker_is_killed_outright(tmp_path: Path) -> None:
    draft_pid = 0
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path / "radtrace")], stdout=subprocess.PIPE, text=True
    ) as worker:
        try:
            assert worker.stdout is not None
            draft_pid = int(worker.stdout.readline())
            assert draft_pid != worker.pid
            assert _running(draft_pid)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
            deadline = time.monotonic() + 30  # a bound on waiting, not a speed requirement: it looks every second
            while _running(draft_pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _running(draft_pid), "the draft process outlived its worker"
        finally:
            worker.kill()
            if draft_pid and _running(draft_pid):
                os.kill(draft_pid, signal.SIGKILL)

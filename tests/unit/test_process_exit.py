"""``end_process``: a stopped command's process ends as Python's exit would (threads joined, atexit run, streams
flushed, its status kept), without the interpreter's teardown (seconds of CPU with torch loaded: bench/stop.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from radtrace.process_exit import end_process

    class Noisy:
        def __del__(self):
            sys.stderr.write("torn down\\n")

    kept = Noisy()  # a module global: only the interpreter's teardown would finalise it
    atexit.register(lambda: print("atexit ran", flush=True))
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished"))).start()
    print("unflushed", end="")
    end_process(int(sys.argv[1]))
    print("never")
    """
)


@pytest.mark.parametrize("code", [0, 2])
def test_a_process_ended_keeps_its_status_joins_its_threads_runs_atexit_and_flushes(tmp_path: Path, code: int) -> None:
    script = tmp_path / "ending.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert done.stdout.splitlines() == ["unflushedthread finished", "atexit ran"]
    assert "torn down" not in done.stderr  # the teardown was left out
    assert "never" not in done.stdout

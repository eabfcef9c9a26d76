"""Ctrl-C at any instant of ``radtrace serve``'s first second: one line and status 130, never a traceback.

Found by the first-hour exploration: pressed in the first half second (while Python imports radtrace's modules,
before serve's own handler is installed) Ctrl-C printed a KeyboardInterrupt traceback 20 to 60 lines long.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radtrace.testing.services import free_port

pytestmark = pytest.mark.unit

ONE_LINE = "radtrace: interrupted (Ctrl-C)"


def _serve_interrupted_after(delay_s: float, data_dir: Path) -> tuple[int, str, str]:
    """Start the installed ``radtrace`` script as a terminal would, press Ctrl-C ``delay_s`` later."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    env |= {
        "RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_LISTENER__PORT": str(free_port()),
        "RADTRACE_API__PORT": str(free_port()), "COLUMNS": "200",
    }  # fmt: skip
    script = Path(sys.executable).parent / "radtrace"
    process = subprocess.Popen(
        [str(script), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        time.sleep(delay_s)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return process.returncode, stdout, stderr


def _before_radtrace_ran(stderr: str) -> bool:
    """Whether Ctrl-C came while Python itself was still importing ``radtrace.cli`` for the console script, before
    :func:`radtrace.cli.main` could install its handler (about 25 ms on an idle machine; a loaded one, such as two
    pytest workers on two cores, stretches it): Python's own KeyboardInterrupt traceback, which no code of radtrace
    can prevent; or earlier still, while the interpreter imported its ``site`` module ("Fatal Python error:
    init_import_site", seen in CI under load at delay 0). Any frame of main() or later is still a failure."""
    in_python_itself = "from radtrace.cli import main" in stderr or "Fatal Python error: init_import_site" in stderr
    return (
        "KeyboardInterrupt" in stderr
        and in_python_itself
        and "exit_while_starting()" not in stderr
        and "radtrace/cli/application.py" not in stderr
    )


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0])
def test_ctrl_c_in_the_first_second_of_serve_is_one_line_and_status_130(delay_s: float, tmp_path: Path) -> None:
    code, stdout, stderr = _serve_interrupted_after(delay_s, tmp_path / "var")
    shown = stdout + stderr
    if _before_radtrace_ran(stderr):
        return
    for noise in ("Traceback", "KeyboardInterrupt", "Exception ignored"):
        assert noise not in shown, shown
    if code == -signal.SIGINT:
        # Before the interpreter installs any handler the default action ends it silently (the shell shows 130).
        assert shown == "", shown
        return
    if "radtrace serve (pid" in stderr:  # its banner: the supervisor had Ctrl-C and stops what it started
        assert code == 0, shown
        assert "radtrace serve stopped" in stderr
        return
    assert code == 130, shown
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(ONE_LINE), stderr
    assert "nothing was started" in lines[0]

"""The newcomer's first hour, scripted: the README's quick start, its commands only, from a fresh data directory.

`make run DEMO=1` (the Makefile's own command line) → the "what next" lines it prints → the send command they
give, with the real Fuji CR film → `radtrace drafts list` until the draft is there → `radtrace drafts show` prints
it. The settings added are the isolation a shared CI machine needs (a fresh data directory and free ports) and one
more, below; the README's commands are checked against what `make run` prints. The wall time from `make run` to the
opened draft is printed and must stay under two minutes (issue 15: it took a newcomer about 23).

One setting is not the newcomer's: the study settles in 1 s, not ``listener.settle_seconds``' default 10 s (a fixed
wait, 9 s of CI time: the one-image study is complete when ``send`` returns). The newcomer's time printed and held
to the budget adds the 9 s back.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from radtrace.config_listener import ListenerSettings
from radtrace.testing.services import free_port
from serve_support import kill_tree

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
VENV = Path(sys.prefix)
BUDGET_S = 120.0
DEMO_MARK = "DEMO \u2013 NOT A MODEL READING"
SETTLE_S = 1.0
#: The settle a newcomer waits and this test does not.
SETTLE_NOT_WAITED_S = float(ListenerSettings.model_fields["settle_seconds"].default) - SETTLE_S


def quick_start() -> list[list[str]]:
    """The README quick start's code blocks, as command lines (comments dropped)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [[line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


@dataclass
class Output:
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, prefix: str) -> str | None:
        with self.lock:
            return next((line for line in self.lines if line.startswith(prefix)), None)

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)

    def tail(self) -> str:
        with self.lock:
            return "\n".join(self.lines[-60:])


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Output, dict[str, str]]]:
    (first,) = quick_start()[0]
    assert first == "make run DEMO=1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {
        "RADTRACE_DATA_DIR": str(tmp_path / "var"),  # a fresh data directory
        "RADTRACE_LISTENER__PORT": str(free_port()),  # free ports: CI runs other services
        "RADTRACE_API__PORT": str(free_port()),
        "RADTRACE_LISTENER__SETTLE_SECONDS": str(SETTLE_S),  # not a newcomer's: the time adds the rest back
        "COLUMNS": "200",
    }
    stamp = VENV / ".radtrace-installed"  # the environment is already set up: do not reinstall
    process = subprocess.Popen(
        [*shlex.split(first), f"VENV={VENV}", "-o", str(stamp)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    output = Output()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with output.lock:
                output.lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield process, output, env
    finally:
        # kill -9, not Ctrl-C: nothing here is about stopping, and serve's graceful stop (the Celery workers' warm
        # shutdown) was seconds of this test's time
        kill_tree(process.pid)
        process.wait(timeout=10)
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def _program(words: list[str]) -> list[str]:
    """A README command line with `.venv/bin/radtrace` pointing at this environment's script."""
    return [str(VENV / "bin" / "radtrace") if word == ".venv/bin/radtrace" else word for word in words]


def test_from_make_run_to_an_opened_draft_in_under_two_minutes(
    make_run: tuple[subprocess.Popen[str], Output, dict[str, str]],
) -> None:
    started = time.monotonic()
    process, output, env = make_run
    send_readme, status_readme, list_readme, show_readme = (shlex.split(line) for line in quick_start()[1])

    deadline = started + BUDGET_S - SETTLE_NOT_WAITED_S
    while (printed := output.find("Send a test study: ")) is None:
        assert process.poll() is None, f"make run stopped (exit {process.returncode}):\n{output.tail()}"
        assert time.monotonic() < deadline, f"no 'what next' after {BUDGET_S:.0f} s:\n{output.tail()}"
        time.sleep(0.2)
    callers = output.find("Callers allowed")
    assert callers is not None
    assert "RADTRACE-SEND from 127.0.0.1" in callers
    drafts = output.find("Drafts (SR, HL7, FHIR) are kept in ")
    assert drafts is not None
    assert env["RADTRACE_DATA_DIR"] in drafts

    # the send command make run prints is the README's, with this run's port and data directory
    words = shlex.split(printed.removeprefix("Send a test study: "))
    assignments = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
    command = [word for word in words if not re.match(r"^[A-Z_]+=", word)]
    assert assignments == {"RADTRACE_DATA_DIR": env["RADTRACE_DATA_DIR"]}
    port = command[command.index("--port") + 1]
    assert port == env["RADTRACE_LISTENER__PORT"]
    assert [w for w in command[1:] if w != port] == [w for w in send_readme[1:] if w != "11112"]
    sent = _run([str(VENV / "bin" / "radtrace"), *command[1:]], env)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    status = _run(_program(status_readme), env)
    assert status.returncode == 0, status.stderr
    study_uid = show_readme[-1]
    while study_uid not in (listed := _run(_program(list_readme), env)).stdout:
        assert listed.returncode == 0, listed.stderr
        assert process.poll() is None, f"make run stopped:\n{output.tail()}"
        assert time.monotonic() < deadline, f"no draft after {BUDGET_S:.0f} s:\n{output.tail()}"
        time.sleep(1)

    shown = _run(_program(show_readme), env)
    elapsed = time.monotonic() - started + SETTLE_NOT_WAITED_S  # the newcomer's, with the default settle
    assert shown.returncode == 0, shown.stderr
    for expected in (f"Draft report: study {study_uid}", "Findings", "Impression", "Reasoning", DEMO_MARK):
        assert expected in shown.stdout, shown.stdout
    assert "UNVERIFIED" in shown.stdout
    print(f"\nnewcomer run: make run DEMO=1 → opened draft in {elapsed:.1f} s (budget {BUDGET_S:.0f} s; the default "
          f"settle's {SETTLE_NOT_WAITED_S:.0f} s counted, not waited)")  # fmt: skip
    assert elapsed < BUDGET_S
    # and nothing on the way that would send a newcomer looking for a fault that is not there
    for alarming in ("Traceback", "superuser privileges", "Connection to broker lost", "ERROR"):
        assert alarming not in output.text(), alarming

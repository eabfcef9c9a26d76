"""Helpers for tests of ``radtrace serve`` (not fixtures): run it in a subprocess, find and reap its children."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from radtrace.dicom_listener.dcmtk import echoscu

__all__ = [
    "RunningServe",
    "alive",
    "descendants",
    "kill_tree",
    "killed_at_end",
    "running_serve",
    "tiny_service_env",
    "wait_until",
]


#: A process (``subprocess.Popen``), text or bytes.
P = TypeVar("P", bound="subprocess.Popen[bytes] | subprocess.Popen[str]")


def tiny_service_env(
    data_dir: Path, *, listener_port: int, model_dir: Path, api_port: int, callers: Sequence[str] = ("PACS",)
) -> dict[str, str]:
    """``RADTRACE_*`` variables every whole-service test sets: its data directory, a listener on 127.0.0.1 that
    admits ``callers`` and settles a study in 1 s, the QA API's port, and the tiny model on the CPU."""
    return {
        "RADTRACE_DATA_DIR": str(data_dir),
        "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(listener_port),
        "RADTRACE_LISTENER__SETTLE_SECONDS": "1",
        "RADTRACE_LISTENER__ALLOWED_CALLERS": json.dumps([{"ae_title": title} for title in callers]),
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_API__PORT": str(api_port),
        "RADTRACE_MODEL__PATH": str(model_dir),
        "RADTRACE_MODEL__DEVICE": "cpu",
        "RADTRACE_MODEL__MAX_NEW_TOKENS": "48",
    }


def wait_until(condition: Callable[[], bool], timeout: float, what: str, log_file: Path | None = None) -> None:
    """Poll ``condition`` until true; fail with the service's log after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            log = log_file.read_text(errors="replace")[-6000:] if log_file and log_file.exists() else ""
            raise AssertionError(f"{what}: not within {timeout} s; radtrace serve log:\n{log}")
        time.sleep(0.2)


def _parent_pids() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])  # the field after state
    return parents


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    parents = _parent_pids()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_tree(pid: int) -> set[int]:
    """kill -9 ``pid`` and every process below it, at once; returns them. The tree is frozen (SIGSTOP) first, so
    that no child started meanwhile escapes (an orphan is no longer below ``pid``), then killed."""
    frozen: set[int] = set()
    while fresh := ({pid} | descendants(pid)) - frozen:
        for each in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGSTOP)
        frozen |= fresh
    for each in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    return frozen


@contextlib.contextmanager
def killed_at_end(running: AbstractContextManager[P]) -> Iterator[P]:
    """``running`` (a context manager of a process, e.g. ``worker_support.running_worker``), its process killed with
    what it started (:func:`kill_tree`) once the block has passed, before its own stop: for a test that asserts
    nothing about stopping. A graceful stop (a Celery worker's warm shutdown) took seconds of each test. A failing
    block gets ``running``'s own stop."""
    with running as process:
        yield process
        kill_tree(process.pid)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@dataclass
class RunningServe:
    """A ``radtrace serve`` subprocess and every process it was seen to start."""

    process: subprocess.Popen[bytes]
    log_file: Path
    seen: set[int] = field(default_factory=set)

    def note_children(self) -> set[int]:
        """Record (and return) the processes below serve now."""
        now = descendants(self.process.pid)
        self.seen |= now
        return now

    def stop(self, timeout: float) -> int:
        """SIGTERM serve and wait up to ``timeout`` s for it; returns its exit status."""
        self.note_children()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """kill -9 serve and every process below it, at once (:func:`kill_tree`)."""
        self.seen |= kill_tree(self.process.pid) - {self.process.pid}
        self.process.wait(timeout=10)


@contextlib.contextmanager
def running_serve(
    env: dict[str, str],
    log_file: Path,
    *,
    listener_port: int,
    config: Path | None = None,
    ready_timeout: float = 60,
    graceful_stop: bool = True,
) -> Iterator[RunningServe]:
    """``radtrace [--config CONFIG] serve`` with ``env`` (added to ours, without our RADTRACE_* variables), its
    listener answering C-ECHO within ``ready_timeout`` s; afterwards it and every process it started are stopped,
    killed if need be (even when the test failed).

    ``graceful_stop=False``: the end of the block kills them at once (:meth:`RunningServe.kill`) instead of SIGTERM
    and waiting, for a test that asserts nothing about stopping: the Celery workers' warm shutdown took 8 to 14 s of
    each such test on a loaded machine. A test that does (``test_serve_end_to_end``) calls ``serve.stop`` itself."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    environment.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} | env)
    root_args = ["--config", str(config)] if config is not None else []
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "radtrace", *root_args, "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        serve = RunningServe(process, log_file)
        try:
            wait_until(
                lambda: process.poll() is None and echoscu(listener_port, timeout=10).returncode == 0,
                ready_timeout,
                "the listener answering C-ECHO",
                log_file,
            )
            serve.note_children()
            yield serve
        finally:
            if process.poll() is None and not graceful_stop:
                serve.kill()
            if process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    serve.stop(timeout=30)
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            for pid in serve.seen | descendants(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)

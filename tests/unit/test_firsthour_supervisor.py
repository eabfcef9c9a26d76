"""After Ctrl-C, radtrace serve says which component it is still waiting for (found by the first-hour exploration:
5 to 20 silent seconds between 'stopping every component' and 'radtrace serve stopped' looked like a hang)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.supervisor import Component, Supervisor, _Child

pytestmark = pytest.mark.unit

SLOW_TO_STOP = """
import pathlib, signal, sys, time
def stop(*_):
    time.sleep(float(sys.argv[2]))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
pathlib.Path(sys.argv[1]).touch()
time.sleep(120)
"""


class _Scripted(Supervisor):
    """Children that are small scripts taking a given time to stop on SIGTERM, instead of radtrace commands."""

    def __init__(self, tmp_path: Path, stop_seconds: dict[str, float]) -> None:
        super().__init__(load_settings(data_dir=tmp_path), [Component(name, (name,)) for name in stop_seconds])
        self.tmp_path, self.stop_seconds = tmp_path, stop_seconds

    def _argv(self, component: Component) -> list[str]:
        ready = self.tmp_path / f"{component.name}.ready"
        return [sys.executable, "-c", SLOW_TO_STOP, str(ready), str(self.stop_seconds[component.name])]


def test_serve_names_the_component_it_is_still_waiting_for(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    supervisor = _Scripted(tmp_path, {"listener": 0.0, "worker": 4.5})
    children: list[_Child] = supervisor.children
    for child in children:
        supervisor._start(child, time.monotonic())
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"{child.component.name}.ready").exists() for child in children):
        assert time.monotonic() < deadline, "the scripted children did not start"
        time.sleep(0.05)
    processes = [child.process for child in children]
    with caplog.at_level(logging.INFO, logger="radtrace.supervisor"):
        supervisor._stop_children()
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for")]
    assert len(waiting) == 1, caplog.text
    assert waiting[0].startswith("waiting for the worker to stop (a worker finishes the study in hand")
    assert "listener" not in waiting[0]
    assert [process.returncode for process in processes if process is not None] == [0, 0]  # stopped, not killed
    assert "killing" not in caplog.text


class _SigintHandlerAtBanner(logging.Handler):
    """Notes which SIGINT handler was installed when serve's banner was logged."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[object] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("radtrace serve (pid"):
            self.handlers.append(signal.getsignal(signal.SIGINT))


def test_serve_names_its_ports_only_once_ctrl_c_stops_the_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in CI: Ctrl-C 0.7 s into serve printed the banner ("DICOM listener ... on 0.0.0.0:...") and then
    "interrupted (Ctrl-C) while starting; nothing was started": the banner was logged before the supervisor had
    Ctrl-C (while serve imported the database's node watch). Now it is logged under the supervisor's handler, so
    Ctrl-C after it stops the supervisor (status 0, "radtrace serve stopped")."""
    import radtrace.store.node_watch
    import radtrace.supervisor as supervisor_module

    class _NoWatch:
        on_incompatible: object = None

        def __init__(self, *_args: object, **_kwargs: object) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    monkeypatch.setattr(radtrace.store.node_watch, "NodeWatch", _NoWatch)
    monkeypatch.setattr(supervisor_module, "serve_components", list)  # no children: run() stops at once
    seen = _SigintHandlerAtBanner()
    logger = logging.getLogger("radtrace.supervisor")
    logger.addHandler(seen)
    monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        code = supervisor_module.run_serve(
            load_settings(data_dir=tmp_path), on_started=lambda: os.kill(os.getpid(), signal.SIGINT)
        )
    finally:
        logger.removeHandler(seen)
    assert code == 0
    assert len(seen.handlers) == 1, seen.handlers
    handler = seen.handlers[0]
    assert getattr(handler, "__func__", None) is Supervisor.request_stop, handler

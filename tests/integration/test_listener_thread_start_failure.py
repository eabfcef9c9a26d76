"""A connection whose thread cannot start (``RuntimeError: can't start new thread``: the process's or the cgroup's
thread limit reached under a flood) gives its half-open place back at once and leaves no admission record behind.

Before, socketserver said it (radtrace's one-line handle_error) and closed the socket, but the admission record that
verify_request had made stayed: its half-open place until the negotiation deadline (``listener.max_half_open`` such
failures refused every connection until then), and the entry keyed by the socket's ``id()`` for good; the last
connection's unstarted thread made the stop raise (``cannot join thread before it is started``).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest

from dicom_peer_support import RawPeer
from listener_support import listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

MAX_HALF_OPEN = 2
FAILED_STARTS = MAX_HALF_OPEN + 1


def test_a_connection_whose_thread_cannot_start_frees_its_half_open_place_at_once(
    tmp_path: Path, sqlite_store: Store, listener_port: int, captured_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = listener_settings(tmp_path, listener_port, max_half_open=MAX_HALF_OPEN, negotiation_timeout_s=60)
    start = threading.Thread.start
    refused: list[str] = []

    def no_thread(thread: threading.Thread, *args: Any) -> None:
        target = getattr(thread, "_target", None)
        if getattr(target, "__name__", "") == "process_request_thread" and len(refused) < FAILED_STARTS:
            refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        start(thread, *args)

    with running(settings, sqlite_store) as listener:
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        for _ in range(FAILED_STARTS):
            with RawPeer(listener_port) as peer:
                assert peer.wait_closed(5)  # closed by socketserver once the thread did not start
        monkeypatch.setattr(threading.Thread, "start", start)
        assert len(refused) == FAILED_STARTS
        server: Any = listener._servers[0]
        assert server._pending == {}  # before: one record per failed start
        done = echoscu(listener_port, timeout=20)  # before: refused, the half-open places all held until 60 s
        assert done.returncode == 0, done.stdout[-300:] + done.stderr[-300:]
        refused.clear()
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        with RawPeer(listener_port) as peer:  # the last connection before the stop: its thread does not start either
            assert peer.wait_closed(5)
        monkeypatch.setattr(threading.Thread, "start", start)
        assert len(refused) == 1
    # the stop joined the connections' threads (before: RuntimeError, cannot join thread before it is started)
    output = captured_log.getvalue()
    assert output.count("failed: RuntimeError: can't start new thread") == FAILED_STARTS + 1, output
    assert "Traceback" not in output

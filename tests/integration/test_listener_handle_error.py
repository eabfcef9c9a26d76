"""An exception a connection's thread does not catch is one line of radtrace's log, never a traceback on stderr.

pynetdicom's ``process_request_thread`` hands such an exception to socketserver's ``handle_error``, which printed
``Exception occurred during processing of request from …`` and the whole traceback straight to stderr: past the
log's format, its JSON and its filters, with the exception's text unescaped.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from listener_support import listener_settings, running
from radtrace.dicom_listener import transport
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def test_an_exception_no_one_caught_in_a_connections_thread_is_one_log_line(
    tmp_path: Path,
    sqlite_store: Store,
    listener_port: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    create = transport._RequestHandler._create_association
    failing = {"on": True}

    def broken(self: transport._RequestHandler) -> object:
        if failing["on"]:
            raise RuntimeError("a bug of ours\nERROR forged second line")
        return create(self)

    monkeypatch.setattr(transport._RequestHandler, "_create_association", broken)
    with running(listener_settings(tmp_path, listener_port), sqlite_store):
        with socket.create_connection(("127.0.0.1", listener_port), timeout=10) as sock:
            port = sock.getsockname()[1]
            sock.settimeout(10)
            assert sock.recv(1) == b""  # the connection was closed
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if r.name == "radtrace.dicom_listener.accept_loop"]:
            assert time.monotonic() < deadline, "nothing was logged"
            time.sleep(0.05)
        failing["on"] = False
        assert echoscu(listener_port).returncode == 0  # the listener serves on
    [record] = [r for r in caplog.records if r.name == "radtrace.dicom_listener.accept_loop"]
    message = record.getMessage()
    assert record.levelname == "ERROR"
    assert message.startswith(f"serving the connection from 127.0.0.1:{port} failed: RuntimeError: a bug of ours\\x0a")
    assert "\n" not in message, message
    assert "(raised at test_listener_handle_error.py:" in message, message
    assert record.exc_info is None
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert "Exception occurred" not in err, err

"""A listener answers no peer before its application_started event is in the audit log.

test_listener_two_ports' kill -9 case failed under load (2 of 6 rounds of two xdist workers at load 6-16, both on
PostgreSQL): it kills ``radtrace listen`` as soon as a C-ECHO is answered, and found one application_started where
two listeners had started. The servers began accepting before the event was recorded, so on a slow store a listener
answered (and could have received a study: instance_received before application_started in the chain) with its start
not yet said, and a kill -9 then lost it. Here the store is made slow for that one event, deterministically.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from listener_support import audit_types, listener_settings
from radtrace.audit.events import EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.dicom_listener.ae import Listener
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("echoscu") is None, reason="dcmtk is not installed"),
]

SLOW_S = 2.0


def test_the_first_answer_comes_after_application_started_is_recorded(
    tmp_path: Path, store: Store, listener_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = AuditRecorder.record

    def slow_start(self: AuditRecorder, event: object, *args: object, **kwargs: object) -> object:
        if getattr(event, "type", None) is EventType.APPLICATION_STARTED:
            time.sleep(SLOW_S)  # a loaded PostgreSQL, a busy SQLite writer
        return record(self, event, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AuditRecorder, "record", slow_start)
    listener = Listener(listener_settings(tmp_path, listener_port), store)
    starting = threading.Thread(target=listener.start)
    starting.start()
    try:
        deadline = time.monotonic() + 30
        while echoscu(listener_port, timeout=10).returncode != 0:
            assert time.monotonic() < deadline, "the listener never answered"
            time.sleep(0.05)
        recorded_at_first_answer = audit_types(store)
    finally:
        starting.join(timeout=30)
        listener.stop()
    assert "application_started" in recorded_at_first_answer, recorded_at_first_answer

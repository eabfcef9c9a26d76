"""A doorbell the broker did not take is logged naming the study by its key, never its Study Instance UID."""

from __future__ import annotations

from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.logging import study_key
from radtrace.testing.services import free_port
from radtrace.worker.doorbell import ring_dispatch, ring_process

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.8.498.77001234567890"


def test_a_ring_to_a_broker_that_is_down_names_the_study_by_its_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: ``doorbell radtrace.process ['1.2.826…', 1] not rung``, the raw UID in the log (patient data)."""
    settings = load_settings(data_dir=tmp_path, broker={"url": f"redis://127.0.0.1:{free_port()}/0"})  # nobody there
    caplog.set_level("WARNING", logger="radtrace.worker.doorbell")
    assert ring_process(settings, STUDY_UID, 3) is False
    assert ring_dispatch(settings, 42) is False
    lines = [record.getMessage() for record in caplog.records if record.name == "radtrace.worker.doorbell"]
    assert len(lines) == 2, lines
    assert f"for study {study_key(STUDY_UID)} revision 3 not rung" in lines[0]
    assert "for outbox row 42 not rung" in lines[1]
    assert all(STUDY_UID not in line and "498.77001" not in line for line in lines), lines

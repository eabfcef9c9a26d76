"""When a study is complete: the pure due-time rules behind the completion timer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from radtrace.dicom_listener.completion import OpenRevision, due_revisions, next_due_at

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_due_only_after_settle_seconds_without_a_new_instance() -> None:
    revisions = [
        OpenRevision(1, T0, T0),
        OpenRevision(2, T0 + timedelta(seconds=8), T0),
        OpenRevision(3, None, T0 - timedelta(seconds=30)),  # opened, nothing recorded: uses opened_at
    ]
    assert due_revisions(revisions, T0 + timedelta(seconds=9.9), 10) == [3]
    assert due_revisions(revisions, T0 + timedelta(seconds=10), 10) == [1, 3]
    assert due_revisions(revisions, T0 + timedelta(seconds=18), 10) == [1, 2, 3]


def test_next_due_time_is_the_earliest_and_none_without_open_revisions() -> None:
    assert next_due_at([], 10) is None
    revisions = [OpenRevision(1, T0 + timedelta(seconds=5), T0), OpenRevision(2, T0, T0)]
    assert next_due_at(revisions, 10) == T0 + timedelta(seconds=10)


def test_the_listener_imports_neither_torch_nor_the_model() -> None:
    import subprocess
    import sys

    code = (
        "import sys, radtrace.dicom_listener.service, radtrace.worker.doorbell\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers'}"
        " or m.startswith('radtrace.model'))\n"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"

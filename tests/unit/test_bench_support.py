"""The serve benchmarks' shared pieces (bench/_support.py) and first_draft.py's trace of a study's imports."""

from __future__ import annotations

import importlib
import socket
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.unit


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("_support", "first_draft"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module("_support"), importlib.import_module("first_draft")


def test_both_serve_benchmarks_use_the_one_support_module(bench: tuple[ModuleType, ModuleType]) -> None:
    support, first_draft = bench
    serve_startup = importlib.import_module("serve_startup")
    for script in (first_draft, serve_startup):
        assert script.serving is support.serving  # one serve-and-wait skeleton, not a copy each
        assert not hasattr(script, "free_port") or script.free_port is support.free_port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", support.free_port()))  # free: it binds


def test_the_trace_sums_the_outermost_imports_each_study_held(bench: tuple[ModuleType, ModuleType]) -> None:
    _, first_draft = bench
    lines = [
        "import time:       900 |        900 | radtrace.config\n",  # at start: no study's
        "2026-12-06 19:00:00,000 INFO radtrace.dicom_listener: study aaa revision 1 queued (2 instances)\n",
        "import time:      1000 |       1000 |     pydicom.encoders\n",
        "import time:      2000 |       3000 |   highdicom.sr\n",
        "import time:       500 |     250000 |   radtrace.reporting.hl7\n",
        "2026-12-06 19:00:01,500 INFO radtrace.worker.attempts: study aaa revision 1 reported (attempt 1)\n",
        "2026-12-06 19:00:05,000 INFO radtrace.dicom_listener: study bbb revision 1 queued (1 instances)\n",
        "2026-12-06 19:00:06,000 INFO radtrace.worker.attempts: study bbb revision 1 reported (attempt 1)\n",
    ]

    order, seconds, imports = first_draft.read_lines(lines)

    assert order == ["aaa", "bbb"]
    assert seconds == {"aaa": 1.5, "bbb": 1.0}
    assert imports == {"aaa": [(0.003, "highdicom.sr"), (0.25, "radtrace.reporting.hl7")]}  # nested one not twice


def test_the_table_gives_each_source_its_median_and_range(
    bench: tuple[ModuleType, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    support, _ = bench
    results = {"/a/src": [{"first": 1.0}, {"first": 3.0}, {"first": 2.0}], "/b/src": [{"first": 0.5}]}

    support.print_medians("title", "study", results, ["first", "second"], digits=2)

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "title"
    assert lines[1].split() == ["study", "a/src", "b/src"]
    assert lines[2].split() == ["first", "2.00", "(1.00-3.00)", "0.50", "(0.50-0.50)"]
    assert lines[3].split() == ["second", "-", "-"]

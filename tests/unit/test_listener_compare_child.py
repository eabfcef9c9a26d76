"""The re-send comparison runs in a child process (compare_child.compare_in_child): the same verdict as in process,
and a child that crashes, runs out of memory or time, or cannot get the slot gives 'not compared', never an
exception in the listener."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from radtrace.dicom_listener import compare_child
from radtrace.dicom_listener.compare_child import compare_in_child, memory_limit
from radtrace.dicom_listener.resend import Likeness, compare_files
from resend_support import held_film, resent

pytestmark = pytest.mark.unit

PIXELS = 50_000_000


@pytest.fixture(scope="module")
def nih(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("nih")
    held = held_film("nih", folder)
    return held, resent(held, "jpeg-ls-lossless", folder), resent(held, "patient-name-corrected", folder)


def test_the_child_gives_the_verdict_the_process_would(nih: tuple[Path, Path, Path]) -> None:
    held, transcoded, corrected = nih
    for again in (transcoded, corrected):
        in_child = compare_in_child(held, again, max_pixels=PIXELS)
        here = compare_files(held, again)
        assert (in_child.likeness, in_child.changed_attributes, in_child.reason(), in_child.pixels_equal) == (
            here.likeness,
            here.changed_attributes,
            here.reason(),
            here.pixels_equal,
        )
    assert compare_in_child(held, transcoded, max_pixels=PIXELS).likeness is Likeness.SAME
    assert compare_in_child(held, corrected, max_pixels=PIXELS).changed_attributes == ("(0010,0010)",)


def test_a_child_that_crashes_is_not_compared(
    nih: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crashing))  # as a codec that segfaults would end the child
    held, transcoded, _ = nih
    comparison = compare_in_child(held, transcoded, max_pixels=PIXELS)
    assert comparison.likeness is Likeness.NOT_COMPARED
    assert not comparison.duplicate
    assert comparison.problem == "the comparing process ended with signal 11"


def test_a_child_out_of_memory_is_not_compared(nih: tuple[Path, Path, Path]) -> None:
    held, transcoded, _ = nih
    comparison = compare_in_child(held, transcoded, max_pixels=PIXELS, memory=20 << 20)
    assert comparison.likeness is Likeness.NOT_COMPARED
    assert "MemoryError" in (comparison.problem or "")
    assert memory_limit(PIXELS) == (768 << 20) + 16 * PIXELS


def test_a_child_past_its_deadline_is_killed_and_not_compared(nih: tuple[Path, Path, Path]) -> None:
    held, transcoded, _ = nih
    started = time.monotonic()
    comparison = compare_in_child(held, transcoded, max_pixels=PIXELS, timeout_s=0.05)
    assert comparison.likeness is Likeness.NOT_COMPARED
    assert comparison.problem == "took longer than 0.05 s"
    assert time.monotonic() - started < 5


def test_one_comparison_at_a_time(nih: tuple[Path, Path, Path]) -> None:
    held, transcoded, _ = nih
    assert compare_child._slot.acquire(timeout=5)
    try:
        comparison = compare_in_child(held, transcoded, max_pixels=PIXELS, timeout_s=0.2)
    finally:
        compare_child._slot.release()
    assert comparison.likeness is Likeness.NOT_COMPARED
    assert comparison.problem == "another comparison held the slot for 0.2 s"
    assert compare_in_child(held, transcoded, max_pixels=PIXELS).likeness is Likeness.SAME

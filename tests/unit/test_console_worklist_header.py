"""The worklist reads each shown study's spooled image header as the worker reads it (radtrace.dicom_deflated.
read_bounded): pydicom's dcmread(stop_before_pixels=True) held a large private value in a sequence item whole, and a
deflated data set inflated whole: the NIH film with 250 MiB of private zeros in its View Code item (within the
listener's bounds, so stored) cost the console +262 MB per row rendered, +525 MB deflated."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from radtrace.console.worklist_header import patient_header as _header
from radtrace.testing.deflate_abuse import shape_film

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("syntax", ["explicit", "implicit", "deflated"])
def test_a_spooled_film_with_a_large_private_value_in_an_item_shows_its_header_without_holding_it(
    tmp_path: Path, syntax: str
) -> None:
    plain = shape_film("huge-in-item-undefined", 2, tmp_path / "plain.dcm", syntax=syntax)
    huge = shape_film("huge-in-item-undefined", 48 << 20, tmp_path / "huge.dcm", syntax=syntax)
    peaks, headers = [], []
    for film in (plain, huge):
        tracemalloc.start()
        try:
            headers.append(_header(tmp_path, film.name, "ISO_IR 100"))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert headers[0] == headers[1]
    assert headers[1]["PatientID"] == "1"
    assert peaks[1] < peaks[0] + (4 << 20), [p >> 20 for p in peaks]


def test_a_spooled_file_that_cannot_be_read_shows_no_header(tmp_path: Path) -> None:
    """A sequence bomb (refused by the listener; here as if it had been stored before) leaves the row's header
    empty, the worklist still shown."""
    bomb = shape_film("items-undefined", 10_001, tmp_path / "bomb.dcm", syntax="explicit")
    assert set(_header(tmp_path, bomb.name, "ISO_IR 100").values()) == {None}

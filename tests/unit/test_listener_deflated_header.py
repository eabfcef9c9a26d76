"""The listener reads a deflated instance's header as it inflates it: the 1.0 MB NIH film with 250 MiB of
private zeros (under the listener's inflate limit, so accepted) cost the listener +528 MB of RSS per receive
(read_header and pixel_budget.check_file each inflated it whole with pydicom; fresh process, getrusage). Here
64 MiB of zeros: what the header says is the same as for the film without them, at the same cost within 8 MiB."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pydicom
import pytest

from radtrace.dicom_listener.headers import read_header
from radtrace.dicom_listener.pixel_budget import ImageTooLargeError, check_file
from radtrace.testing.decode_abuse import NIH, REAL_FILMS, deflated_with_private_zeros

pytestmark = pytest.mark.unit


def _received(path: Path) -> tuple[object, int]:
    tracemalloc.start()
    try:
        header = read_header(path)
        check_file(path, 50_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return header, peak


def test_a_deflated_film_with_large_private_zeros_is_read_at_the_cost_of_the_film_without_them(
    tmp_path: Path,
) -> None:
    plain, plain_peak = _received(deflated_with_private_zeros(pydicom.dcmread(REAL_FILMS / NIH), tmp_path / "a", 0))
    zeros = deflated_with_private_zeros(pydicom.dcmread(REAL_FILMS / NIH), tmp_path / "b", 64 << 20)
    header, peak = _received(zeros)
    assert peak < plain_peak + (8 << 20), (peak >> 20, plain_peak >> 20)
    assert header == plain
    with pytest.raises(ImageTooLargeError, match=r"^\(0028,0010\) Rows: 1024x1024x1x1 pixels exceeds"):
        check_file(zeros, 1024 * 1024 - 1)  # the pixel budget still sees the image (the zeros inflate within)
    with pytest.raises(ImageTooLargeError, match=r"^\(0002,0010\) Transfer Syntax UID: deflated data set inflates"):
        check_file(zeros, 1000)  # beyond instance_byte_limit(1000): not inflated further


def test_a_deflated_film_with_pixel_data_cut_short_is_still_refused(tmp_path: Path) -> None:
    from radtrace.errors import DicomInputError

    ds = pydicom.dcmread(REAL_FILMS / NIH)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    path = deflated_with_private_zeros(ds, tmp_path / "short", 2 << 20)
    with pytest.raises(DicomInputError, match=r"\(7FE0,0010\) Pixel Data: too short"):
        read_header(path)

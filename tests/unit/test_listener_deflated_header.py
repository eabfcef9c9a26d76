"""The listener reads a deflated instance's header as it inflates it: the 1.0 MB NIH film with 250 MiB of
private zeros (under the listener's inflate limit, so accepted) cost the listener +528 MB of RSS per receive
(read_header and pixel_budget.check_file each inflated it whole with pydicom; fresh process, getrusage). Here
64 MiB of zeros: what the header says is the same as for the film without them, at the same cost within 8 MiB."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pydicom
import pytest

from radtrace.dicom_deflated import MAX_DEPTH, MAX_ELEMENTS, MAX_ITEMS
from radtrace.dicom_listener.headers import read_header
from radtrace.dicom_listener.pixel_budget import ImageTooLargeError, check_file
from radtrace.testing.decode_abuse import NIH, REAL_FILMS, deflated_with_private_zeros
from radtrace.testing.deflate_abuse import shape_film

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


@pytest.mark.parametrize("lengths", ["undefined", "defined"])
def test_a_huge_private_value_in_a_sequence_item_is_read_at_the_cost_of_the_film_without_it(
    tmp_path: Path, lengths: str
) -> None:
    """A View Code Sequence item carrying 250 MiB of private zeros (under the inflate limit, so accepted): of undefined
    length, pydicom read the item's values whole (+788 MB per receive, bench/deflate_nested.py); of defined length
    the sequence stayed deferred and the attribute table's read of it failed with AttributeError (answered 0x0110
    'internal error'). Here 64 MiB: the same header as without the zeros, at its cost within 8 MiB."""
    shape = f"huge-in-item-{lengths}"
    plain, plain_peak = _received(shape_film(shape, 0, tmp_path / "plain.dcm"))
    header, peak = _received(shape_film(shape, 64 << 20, tmp_path / "zeros.dcm"))
    assert peak < plain_peak + (8 << 20), (peak >> 20, plain_peak >> 20)
    assert header == plain


@pytest.mark.parametrize(
    ("shape", "size", "reason"),
    [
        ("deep", MAX_DEPTH + 1, f"sequences nested more than {MAX_DEPTH} deep"),
        ("items-undefined", MAX_ITEMS + 1, f"more than {MAX_ITEMS} sequence items"),
        ("elements-in-item", MAX_ELEMENTS, f"more than {MAX_ELEMENTS} elements"),
        ("cut-in-item", 0, "the data set ends inside a sequence item"),
    ],
)
def test_a_nesting_bomb_is_refused_at_receive_naming_the_sequence(
    tmp_path: Path, shape: str, size: int, reason: str
) -> None:
    """Before, the listener read 200,000 empty items (+140 MB, 7.7 s per receive) and 64 nested sequences, and
    refused the others as 'dataset cannot be parsed (RecursionError)' or '(OSError)'. Now each is refused naming the
    sequence first (the C-STORE status comment keeps 64 characters)."""
    from radtrace.errors import DicomInputError

    path = shape_film(shape, size, tmp_path / f"{shape}.dcm")
    with pytest.raises(DicomInputError, match=rf"^\(0009,1012\) private: {reason}") as refused:
        read_header(path)
    assert refused.value.reason[:64].startswith("(0009,1012) private: ")

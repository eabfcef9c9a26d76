"""A compressed frame split over several fragments at any byte (PS3.5 A.4) is accepted and read as one.

Before (found by the real-input exploration, notes/report-realinput.md): the listener read the codestream's size
from the first fragment alone, so a film whose first fragment held only the start of its frame (the SOI marker, a
few bytes) was refused '(7FE0,0010) Pixel Data: compressed pixel data: JPEG frame header is missing or
truncated', although pydicom, dcmtk and every viewer decode it. The size check still reads no more than its
first 64 KiB, across fragments, so a frame header declaring a bomb in the second fragment is still refused.
"""

from __future__ import annotations

import itertools
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, itemize_fragment
from pydicom.uid import JPEG2000Lossless

from radtrace.dicom_listener.headers import read_header
from radtrace.dicom_listener.pixel_budget import ImageTooLargeError, check_file
from radtrace.model.image import display_values
from radtrace.model.study import study_image
from tests_support import as_part10

pytestmark = pytest.mark.unit

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"
ENCODERS = {
    "jpeg-ls-lossless": ["dcmcjpls", "+el"],
    "jpeg-lossless-sv1": ["dcmcjpeg", "+e1"],
    "jpeg-2000-lossless": [],  # pydicom's encoder
}


def _compressed(tmp_path: Path, syntax: str) -> Dataset:
    ds = study_image(FUJI.read_bytes()).dataset
    ds.PixelData = ds.pixel_array.tobytes()
    as_part10(ds)
    if not ENCODERS[syntax]:
        ds.compress(JPEG2000Lossless)
        return ds
    source, target = tmp_path / "native.dcm", tmp_path / "compressed.dcm"
    ds.save_as(source, enforce_file_format=True)
    subprocess.run([*ENCODERS[syntax], str(source), str(target)], check=True, capture_output=True)
    return dcmread(target)


def _split(ds: Dataset, cuts: list[int]) -> Dataset:
    """The one frame re-encapsulated as fragments cut at ``cuts`` (even: only the last fragment may be padded),
    with an empty offset table."""
    [frame] = list(generate_frames(ds.PixelData, number_of_frames=1))
    bounds = [0, *cuts, len(frame)]
    fragments = [frame[a:b] for a, b in itertools.pairwise(bounds)]
    fragments[-1] += b"\x00" * (len(fragments[-1]) % 2)
    items = b"".join(itemize_fragment(f) for f in fragments)
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + items
    return ds


@pytest.mark.parametrize("syntax", sorted(ENCODERS))
@pytest.mark.parametrize("cuts", [[2], [10, 12, 400], [64 * 1024 + 8]], ids=["soi-alone", "tiny-first", "past-64k"])
def test_a_frame_split_over_fragments_is_accepted_and_read_as_the_whole_frame(
    tmp_path: Path, syntax: str, cuts: list[int]
) -> None:
    whole = _compressed(tmp_path, syntax)
    expected, _ = display_values(whole)
    path = tmp_path / "split.dcm"
    _split(whole, cuts).save_as(path, enforce_file_format=True)
    read_header(path)
    check_file(path, 50_000_000)  # before: refused, 'JPEG frame header is missing or truncated'
    shown, _ = display_values(dcmread(path))
    assert np.array_equal(shown, expected)


def test_a_bomb_declared_in_the_second_fragment_is_still_refused(tmp_path: Path) -> None:
    ds = _compressed(tmp_path, "jpeg-ls-lossless")
    [frame] = list(generate_frames(ds.PixelData, number_of_frames=1))
    sof = frame.index(b"\xff\xf7")
    bomb = bytearray(frame)
    struct.pack_into(">HH", bomb, sof + 5, 30000, 30000)  # Y lines, X samples per line
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"".join(
        itemize_fragment(part) for part in (bytes(bomb[:2]), bytes(bomb[2:]) + b"\x00" * (len(bomb) % 2))
    )
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageTooLargeError, match=r"^\(7FE0,0010\) Pixel Data: codestream 30000x30000"):
        check_file(path, 50_000_000)

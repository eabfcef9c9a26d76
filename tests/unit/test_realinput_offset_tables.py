"""Offset tables that do not point at their fragments are not trusted: the first frame is found without them.

Before (found by the real-input exploration, notes/report-realinput.md): a compressed film whose Basic Offset
Table pointed elsewhere (an offset counted from the wrong item, a table left from another encoding) or whose
Extended Offset Table did was accepted by the listener, then failed in the worker ('cannot decode the pixel
data'): pydicom trusts the tables. dcmtk reads such files; now radtrace does too, and records which table it
ignored. Tables that fit are still used.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames

from radtrace.model.image import display_values
from radtrace.model.study import study_image
from tests_support import as_part10

pytestmark = pytest.mark.unit

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"


def _jpeg_ls(tmp_path: Path, frames: int) -> tuple[Dataset, list[bytes]]:
    """The Fuji film as JPEG-LS lossless (dcmcjpls), ``frames`` times over, and its frames' codestreams."""
    ds = study_image(FUJI.read_bytes()).dataset
    ds.PixelData = np.concatenate([ds.pixel_array] * frames).tobytes()
    ds.NumberOfFrames = frames
    as_part10(ds)
    source, target = tmp_path / "native.dcm", tmp_path / "jls.dcm"
    ds.save_as(source, enforce_file_format=True)
    subprocess.run(["dcmcjpls", "+el", str(source), str(target)], check=True, capture_output=True)
    compressed = dcmread(target)
    return compressed, list(generate_frames(compressed.PixelData, number_of_frames=frames))


def _with_basic_table(frames: list[bytes], offsets: list[int]) -> bytes:
    fragments = encapsulate(frames, has_bot=False)[8:]
    table = struct.pack(f"<{len(offsets)}L", *offsets)
    return b"\xfe\xff\x00\xe0" + struct.pack("<L", len(table)) + table + fragments


def _saved_and_read(ds: Dataset, tmp_path: Path) -> Dataset:
    path = tmp_path / "variant.dcm"
    ds.save_as(path, enforce_file_format=True)
    return dcmread(path)


@pytest.mark.parametrize(
    ("frames", "offsets"),
    [
        (1, [999]),  # points into the middle of the frame
        (1, [8]),  # counted from the offset table's own item
        (2, [0, 1234]),  # the second frame's offset is wrong
        (2, [0]),  # one offset for two frames
    ],
)
def test_a_basic_offset_table_that_points_elsewhere_is_ignored(tmp_path: Path, frames: int, offsets: list[int]) -> None:
    ds, codestreams = _jpeg_ls(tmp_path, frames)
    expected, _ = display_values(ds)
    ds.PixelData = _with_basic_table(codestreams, offsets)
    shown, steps = display_values(_saved_and_read(ds, tmp_path))  # before: DicomInputError, cannot decode
    assert np.array_equal(shown, expected)
    assert steps[0]["offset_tables_ignored"] == ["basic"]


def test_an_extended_offset_table_that_points_elsewhere_is_ignored(tmp_path: Path) -> None:
    ds, codestreams = _jpeg_ls(tmp_path, 2)
    expected, _ = display_values(ds)
    ds.PixelData, _, lengths = encapsulate_extended(codestreams)
    ds.ExtendedOffsetTable = struct.pack("<2Q", 16, 4096)
    ds.ExtendedOffsetTableLengths = lengths
    shown, steps = display_values(_saved_and_read(ds, tmp_path))  # before: DicomInputError, cannot decode
    assert np.array_equal(shown, expected)
    assert steps[0]["offset_tables_ignored"] == ["extended"]


def test_offset_tables_that_fit_are_used_as_they_are(tmp_path: Path) -> None:
    ds, codestreams = _jpeg_ls(tmp_path, 2)
    expected, _ = display_values(ds)
    ds.PixelData = encapsulate(codestreams, has_bot=True)
    shown, steps = display_values(_saved_and_read(ds, tmp_path))
    assert np.array_equal(shown, expected)
    assert "offset_tables_ignored" not in steps[0]
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(codestreams)
    shown, steps = display_values(_saved_and_read(ds, tmp_path))
    assert np.array_equal(shown, expected)
    assert "offset_tables_ignored" not in steps[0]

"""Bits above Bits Stored are no pixel values, in compressed pixel data too.

Old CR keeps overlays or garbage in bits 12-15 of 12-bit pixels. pydicom clears them from native pixel data, but
a JPEG-LS codestream of such pixels (dcmcjpls writes precision 16 for 12 bits stored) decodes with them. Before
(found by the real-input exploration, notes/report-realinput.md) the model was shown those bits: noise, the film
correlating 0.03 with itself. Now they are cleared (signed values sign-extended from Bits Stored), and the picture
equals the one made from dcmtk's own decode of the same file (dcmdjpls).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from radtrace.model.image import display_values
from radtrace.model.study import study_image
from tests_support import as_part10

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FILMS = {
    "nih-8bit": REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",
    "fuji-10bit": REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",
}


def _twelve_bits_with_garbage(film: str, *, signed: bool) -> Dataset:
    ds = study_image(FILMS[film].read_bytes()).dataset
    shift = 12 - int(ds.BitsStored)
    values = ds.pixel_array.astype(np.int64) << shift
    if "WindowCenter" in ds:
        ds.WindowCenter, ds.WindowWidth = float(ds.WindowCenter) * 2**shift, float(ds.WindowWidth) * 2**shift
    if signed:
        values -= 2048
        if "WindowCenter" in ds:
            ds.WindowCenter = float(ds.WindowCenter) - 2048
    garbage = np.random.default_rng(12).integers(0, 2**16, values.shape) & 0xF000
    words = (values & 0x0FFF) | garbage
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, int(signed)
    ds.PixelData = words.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    as_part10(ds)
    return ds


@pytest.mark.parametrize("film", sorted(FILMS))
@pytest.mark.parametrize(("encode", "signed"), [("+el", False), ("+el", True)])
def test_high_bits_in_a_jpeg_ls_film_are_cleared_as_dcmtk_clears_them(
    tmp_path: Path, film: str, encode: str, signed: bool
) -> None:
    native, compressed, decoded = (tmp_path / f"{name}.dcm" for name in ("native", "jls", "dcmtk"))
    _twelve_bits_with_garbage(film, signed=signed).save_as(native, enforce_file_format=True)
    subprocess.run(["dcmcjpls", encode, str(native), str(compressed)], check=True, capture_output=True)
    subprocess.run(["dcmdjpls", str(compressed), str(decoded)], check=True, capture_output=True)
    shown, steps = display_values(dcmread(compressed))
    reference, _ = display_values(dcmread(decoded))  # dcmtk's decode, native: pydicom clears the high bits
    assert np.abs(shown - reference).max() <= 1 / 255  # before: up to 0.94 apart, correlation 0.03
    assert steps[0]["masked_to_bits_stored"] > 0.9  # recorded: nearly every pixel had bits above 12
    assert np.corrcoef(shown.ravel(), display_values(dcmread(native))[0].ravel())[0, 1] > 0.999


def _left_aligned(film: str, *, signed: bool) -> tuple[Dataset, Dataset]:
    """The film at 12 bits as DICOM expects it (High Bit 11), and its twin with the values in bits 4-15 (High Bit
    15, as some archives store them) and noise in bits 0-3."""
    right = _twelve_bits_with_garbage(film, signed=signed)
    words = np.frombuffer(right.PixelData, dtype="<u2").astype(np.int64) & 0x0FFF
    right.PixelData = words.astype("<u2").tobytes()
    left = Dataset(dict(right.items()))
    left.file_meta = right.file_meta
    noise = np.random.default_rng(4).integers(0, 16, words.shape)
    left.PixelData = ((words << 4) | noise).astype("<u2").tobytes()
    left.HighBit = 15
    return right, left


@pytest.mark.parametrize("film", sorted(FILMS))
@pytest.mark.parametrize("signed", [False, True])
def test_values_aligned_at_a_high_bit_above_bits_stored_are_brought_down(film: str, signed: bool) -> None:
    right, left = _left_aligned(film, signed=signed)
    expected, _ = display_values(right)
    shown, steps = display_values(left)
    assert np.array_equal(shown, expected)  # before: the low bits of the words, noise (correlation 0.0)
    assert steps[0]["high_bit"] == 15


def test_a_left_aligned_film_is_shown_as_dcmtk_shows_it(tmp_path: Path) -> None:
    _, left = _left_aligned("fuji-10bit", signed=False)
    path = tmp_path / "left.dcm"
    left.save_as(path, enforce_file_format=True)
    subprocess.run(["dcm2pnm", "+Wi", "1", str(path), str(tmp_path / "ref.pgm")], check=True, capture_output=True)
    reference = np.asarray(Image.open(tmp_path / "ref.pgm"), dtype=np.float64)
    shown, _ = display_values(dcmread(path))
    assert np.abs(shown * 255.0 - reference).max() <= 1.5

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
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from radtrace.model.image import display_values
from radtrace.model.study import study_image

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
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for tag in [element.tag for element in ds if element.tag.element == 0]:  # legacy group lengths
        del ds[tag]
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

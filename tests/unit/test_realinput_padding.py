"""Collimation and padding must not decide the contrast of a film shown without a window.

Before (found by the real-input exploration, notes/report-realinput.md): a film without a window whose border
held Pixel Padding Value (or one extreme value the header did not declare) was shown over the full range of its
pixels, border included: the lungs came out as 5 to 15 grays, nearly flat. Now declared padding (Pixel Padding
Value, with or without Pixel Padding Range Limit, PS3.3 C.7.5.1.1.2) is left out of the range and shown black,
and a border of one extreme value the header does not declare is left out as dcmtk's min-max window ignoring
extreme values (``dcm2pnm +Wn``) leaves it out.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from radtrace.errors import DicomInputError
from radtrace.model.image import display_values
from radtrace.model.study import study_image
from tests_support import as_part10

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FILMS = {
    "nih-8bit": REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",
    "fuji-10bit": REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",
}


def _bordered(
    film: str, border: int, *, bits: int = 16, scale: int = 4, offset: int = 1000
) -> tuple[Dataset, np.ndarray]:
    """The film at ``bits`` bits (values x ``scale`` + ``offset``, no window), its top quarter and left fifth
    holding ``border``; and the mask of the film's own pixels."""
    ds = study_image(FILMS[film].read_bytes()).dataset
    values = ds.pixel_array.astype(np.int64) * scale + offset
    inside = np.ones(values.shape, dtype=bool)
    inside[: values.shape[0] // 4] = False
    inside[:, : values.shape[1] // 5] = False
    values[~inside] = border
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = values.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    as_part10(ds)
    return ds, inside


def _gray_levels(display: np.ndarray) -> int:
    return int(np.unique(np.rint(display * 255.0)).size)


PADDED = {
    "value-above-the-data": ({"PixelPaddingValue": 65535}, 65535, 16),
    "value-zero-below-the-data": ({"PixelPaddingValue": 0}, 0, 12),
    "range-limit": ({"PixelPaddingValue": 0, "PixelPaddingRangeLimit": 40}, 17, 12),
}


@pytest.mark.parametrize("film", sorted(FILMS))
@pytest.mark.parametrize("case", sorted(PADDED))
def test_declared_padding_is_left_out_of_the_range_and_shown_black(film: str, case: str) -> None:
    attributes, border, bits = PADDED[case]
    ds, inside = _bordered(film, border, bits=bits, scale=2 if bits == 12 else 4)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    shown, steps = display_values(ds)
    assert _gray_levels(shown[inside]) >= 200  # before: 5 (nih) and 15 (fuji) with a border of 65535
    assert np.all(shown[~inside] == 0.0)
    [padding] = [s for s in steps if s["step"] == "padding"]
    assert padding["share"] == pytest.approx(float((~inside).mean()), abs=1e-3)


def test_an_image_that_is_all_padding_is_refused_naming_the_element() -> None:
    ds, _ = _bordered("nih-8bit", 0)
    ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = 0, 65535
    with pytest.raises(DicomInputError, match=r"^\(0028,0120\) Pixel Padding Value: every pixel is padding"):
        display_values(ds)


@pytest.mark.parametrize("film", sorted(FILMS))
def test_an_undeclared_border_at_one_extreme_is_left_out_as_dcmtk_leaves_extremes_out(
    film: str, tmp_path: Path
) -> None:
    ds, inside = _bordered(film, 65535)
    path = tmp_path / "bordered.dcm"
    ds.save_as(path, enforce_file_format=True)
    shown, steps = display_values(dcmread(path))
    assert _gray_levels(shown[inside]) >= 200  # before: 5 (nih) and 15 (fuji)
    dcm2pnm = shutil.which("dcm2pnm")
    assert dcm2pnm is not None, "dcm2pnm (dcmtk) not found on PATH"
    subprocess.run([dcm2pnm, "+Wn", "--write-8-bit-pnm", str(path), str(tmp_path / "ref.pgm")], check=True)
    reference = np.asarray(Image.open(tmp_path / "ref.pgm"), dtype=np.float64)
    assert np.abs(shown * 255.0 - reference).max() <= 1.5
    assert [s["kind"] for s in steps if s["step"] == "voi"] == ["range_without_extremes"]

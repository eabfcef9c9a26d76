"""A film whose pixels are Double Float Pixel Data (7FE0,0009), which no X-ray IOD has, fails naming the element,
as one with Float Pixel Data (7FE0,0008) does; it was skipped as 'no frontal chest image' (its pixels unseen).

Input: the NIH real film with its Pixel Data replaced by 64-bit floats, spooled as the listener spools it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radtrace.errors import DicomInputError
from radtrace.model.study import prepare_study, spooled_image
from radtrace.testing.decode_abuse import NIH, REAL_FILMS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("keyword", "dtype", "bits"), [("DoubleFloatPixelData", np.float64, 64),
                                                        ("FloatPixelData", np.float32, 32)])  # fmt: skip
def test_a_film_with_float_pixel_data_fails_naming_the_element(
    tmp_path: Path, keyword: str, dtype: type, bits: int
) -> None:
    ds = pydicom.dcmread(REAL_FILMS / NIH)
    values = ds.pixel_array.astype(dtype)
    for gone in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, gone)
    ds.BitsAllocated = bits
    setattr(ds, keyword, values.tobytes())
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    path = tmp_path / "film.dcm"
    ds.save_as(path, enforce_file_format=True)
    image = spooled_image(path, hashlib.sha256(path.read_bytes()).hexdigest())
    tag = "(7FE0,0009) Double Float Pixel Data" if bits == 64 else "(7FE0,0008) Float Pixel Data"
    with pytest.raises(DicomInputError, match=rf"^{re.escape(tag)}: not a radiograph's pixel data"):
        prepare_study([image], min_pixels=128 * 128, max_pixels=476 * 476, accept_unknown_view=True)

"""The listener's header rule on real films whose pixel description contradicts itself (dicom_listener/attributes.py).

A Photometric Interpretation that disagrees with Samples per Pixel cannot be shown as its sender meant: before, a
MONOCHROME1 film labelled RGB was accepted and reached the model as a negative (found by the real-input
exploration, notes/report-realinput.md). It is refused, the status comment naming the element.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from film_variants_support import VARIANTS, film
from radtrace.dicom_listener.attributes import normalised
from radtrace.dicom_listener.headers import read_header
from radtrace.errors import DicomInputError
from radtrace.model.modality_lut import modality_lut
from radtrace.model.study import study_image
from tests_support import as_part10

pytestmark = pytest.mark.unit

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"


def _written(ds: Dataset, path: Path) -> Path:
    as_part10(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_a_gray_film_labelled_colour_is_refused_naming_photometric_interpretation(
    tmp_path: Path, photometric: str
) -> None:
    ds = study_image(FUJI.read_bytes()).dataset
    ds.PhotometricInterpretation = photometric
    with pytest.raises(DicomInputError) as refused:
        read_header(_written(ds, tmp_path / "labelled.dcm"))
    # the whole reason fits the status comment (one LO, 64 characters): it was cut to '... needs 3 samples per pixe'
    assert refused.value.reason == "(0028,0004) Photometric Interpretation: needs 3 samples, has 1"


def test_a_monochrome_film_with_three_samples_per_pixel_is_refused(tmp_path: Path) -> None:
    ds = study_image(FUJI.read_bytes()).dataset
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PixelData = bytes(ds.PixelData) * 3
    with pytest.raises(DicomInputError) as refused:
        read_header(_written(ds, tmp_path / "three.dcm"))
    assert refused.value.reason == "(0028,0004) Photometric Interpretation: needs 1 sample, has 3"


def test_the_film_as_it_is_is_accepted(tmp_path: Path) -> None:
    header = read_header(_written(study_image(FUJI.read_bytes()).dataset, tmp_path / "film.dcm"))
    assert header.photometric == "MONOCHROME1"


def _slope(value: str, *, lut: bool = False, sop_class: str | None = None) -> tuple[Dataset, NDArray[np.int64]]:
    ds, stored = film("fuji")
    if lut:
        ds = VARIANTS["modality_lut_sequence"](ds, stored).dataset
    ds.RescaleIntercept, ds.RescaleType = 0, "US"
    text = value.encode() + b" " * (len(value) % 2)  # as a sender wrote it, written as is (pydicom checks nothing)
    ds[0x00281053] = RawDataElement(Tag(0x00281053), "DS", len(text), text, 0, True, True)
    if sop_class is not None:
        ds.SOPClassUID = sop_class
    return ds, stored


@pytest.mark.parametrize(
    ("value", "options", "refused"),
    [
        ("0", {}, True),
        ("-0.0", {}, True),
        ("1e-400", {}, True),  # a valid DS the worker reads as 0
        ("0.0E5", {}, True),
        ("+0", {}, True),
        (" 0", {}, True),  # padded in front
        ("", {}, False),  # empty: read as 1 by both
        ("0.5", {}, False),
        ("zero", {}, False),  # not a DS: a deviation, dropped from the worker's copy (read as 1)
        ("0", {"lut": True}, False),  # the Modality LUT Sequence is read, not the slope
        ("0", {"sop_class": "1.2.840.10008.5.1.4.1.1.2"}, False),  # CT: a class the model does not read
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # pydicom's, on writing and reading 'zero'
def test_rescale_slope_zero_is_refused_where_the_worker_would_refuse_it(
    tmp_path: Path, value: str, options: dict[str, Any], refused: bool
) -> None:
    """The listener refuses exactly what the worker's modality LUT step refuses for Rescale Slope (0028,1053), on
    the worker's normalised copy of the header (radtrace.model.modality_lut; a CT the worker skips unread)."""
    ds, stored = _slope(value, **options)
    path = _written(ds, tmp_path / "slope.dcm")
    if refused:
        with pytest.raises(DicomInputError) as said:
            read_header(path)
        assert said.value.reason == "(0028,1053) Rescale Slope: 0, every pixel would be the intercept"
    else:
        read_header(path)
    if "sop_class" not in options:
        working, _ = normalised(dcmread(path))
        if refused:
            with pytest.raises(DicomInputError, match=r"\(0028,1053\) Rescale Slope is 0"):
                modality_lut(stored, working)
        else:
            modality_lut(stored, working)

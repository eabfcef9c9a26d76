"""The listener's header rule on real films whose pixel description contradicts itself (dicom_listener/attributes.py).

A Photometric Interpretation that disagrees with Samples per Pixel cannot be shown as its sender meant: before, a
MONOCHROME1 film labelled RGB was accepted and reached the model as a negative (found by the real-input
exploration, notes/report-realinput.md). It is refused, the status comment naming the element.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from radtrace.dicom_listener.headers import read_header
from radtrace.errors import DicomInputError
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

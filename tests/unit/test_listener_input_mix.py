"""The input-mix facts the listener keeps per image: manufacturer, model, photometric interpretation, pixel spacing."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from radtrace.dicom_listener.headers import read_header
from radtrace.testing.studies import ImageSpec, StudySpec, make_image

pytestmark = pytest.mark.unit


def _header(tmp_path: Path, change: dict[str, object]) -> tuple[Dataset, float | None]:
    ds = make_image(StudySpec(seed=3), ImageSpec(view="PA", rows=64, columns=64))
    path = tmp_path / "image.dcm"
    with warnings.catch_warnings():  # a peer may send an over-long value; pydicom warns when one is set
        warnings.simplefilter("ignore")
        for keyword, value in change.items():
            if value is None:
                delattr(ds, keyword) if keyword in ds else None
            elif isinstance(value, bytes):  # as a peer sent it, not a value pydicom would accept
                tag = Tag(keyword_dict[keyword])
                ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, True, True)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
    return ds, read_header(path).pixel_spacing_mm


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ImagerPixelSpacing": ["0.139", "0.139"]}, 0.139),
        ({"ImagerPixelSpacing": None, "PixelSpacing": ["0.2", "0.2"]}, 0.2),  # no detector spacing: the image's
        ({"ImagerPixelSpacing": None, "PixelSpacing": None}, None),
        ({"ImagerPixelSpacing": ["0", "0"], "PixelSpacing": None}, None),  # not a spacing
        ({"ImagerPixelSpacing": ["250", "250"], "PixelSpacing": None}, None),  # 25 cm a pixel: not plausible
        ({"ImagerPixelSpacing": b"abc\\abc", "PixelSpacing": ["0.2", "0.2"]}, 0.2),  # unreadable: the next one
    ],
)
def test_the_row_spacing_is_the_detectors_else_the_images_and_only_when_plausible(
    tmp_path: Path, change: dict[str, object], expected: float | None
) -> None:
    _, spacing = _header(tmp_path, change)
    assert spacing == expected


def test_manufacturer_model_and_photometric_are_kept_as_sent_and_cut_to_their_columns(tmp_path: Path) -> None:
    ds, _ = _header(tmp_path, {"Manufacturer": "V" * 70, "ManufacturerModelName": " DR-500 "})
    header = read_header(tmp_path / "image.dcm")
    assert (header.manufacturer, header.manufacturer_model) == ("V" * 64, "DR-500")
    assert header.photometric == ds.PhotometricInterpretation

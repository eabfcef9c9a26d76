"""Pixels that are not square are shown at their true proportions, as a viewer shows them.

Before (found by the real-input exploration, notes/report-realinput.md): a film whose Pixel Spacing, Imager Pixel
Spacing or Pixel Aspect Ratio said its pixels were twice as tall as wide was shown to the model with square
pixels, the chest squashed to half its height (a heart that looks twice as wide as it is). Now the picture has
the film's proportions, a box on it still maps back to source pixels, and spacings that differ only in their
last digit, or a ratio no detector has, leave the pixels square.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from radtrace.model.image import prepare_picture, to_source_pixels
from radtrace.model.study import study_image

pytestmark = pytest.mark.unit

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"
BUDGET = {"min_pixels": 128 * 128, "max_pixels": 476 * 476}


def _fuji(**attributes: object) -> Dataset:
    ds = study_image(FUJI.read_bytes()).dataset  # 440 x 440, no spacing of its own
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio"):
        if keyword in ds:
            delattr(ds, keyword)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("attributes", "height_over_width"),
    [
        ({"ImagerPixelSpacing": [0.2, 0.1]}, 2.0),
        ({"PixelSpacing": [0.1, 0.15]}, 2 / 3),
        ({"PixelAspectRatio": [1, 2]}, 0.5),
        ({"PixelAspectRatio": [3, 2]}, 1.5),
        ({"PixelSpacing": [0.2, 0.1], "PixelAspectRatio": [1, 1]}, 2.0),  # the spacing says more
    ],
)
def test_pixels_that_are_not_square_are_shown_at_their_proportions(
    attributes: dict[str, object], height_over_width: float
) -> None:
    picture = prepare_picture(_fuji(**attributes), **BUDGET)
    assert picture.rows / picture.columns == pytest.approx(height_over_width, rel=0.1)  # before: 1.0
    assert (picture.source_rows, picture.source_columns) == (440, 440)
    resize = next(step for step in picture.steps if step["step"] == "resize")
    assert resize["aspect_applied"] is True


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"ImagerPixelSpacing": [0.139, 0.14]},  # the same spacing, written to three digits
        {"PixelAspectRatio": [1, 1]},
        {"PixelSpacing": [10.0, 0.1]},  # a ratio of 100: the header is wrong, not the detector
        {"PixelSpacing": [0.0, 0.1]},
    ],
)
def test_square_or_implausible_proportions_leave_the_pixels_square(attributes: dict[str, object]) -> None:
    picture = prepare_picture(_fuji(**attributes), **BUDGET)
    assert picture.rows == picture.columns


def test_a_box_on_a_stretched_picture_maps_back_to_the_source_pixels() -> None:
    picture = prepare_picture(_fuji(ImagerPixelSpacing=[0.2, 0.1]), **BUDGET)
    lower_right = (picture.columns / 2, picture.rows / 2, float(picture.columns), float(picture.rows))
    box = to_source_pixels(
        lower_right,
        model_size=(picture.rows, picture.columns),
        source_size=(picture.source_rows, picture.source_columns),
    )
    assert box == pytest.approx((220.0, 220.0, 440.0, 440.0))

"""A DX For Processing image beside the For Presentation one is never the one the model reads.

Some modalities send both the processed image and the raw detector image (DX For Processing: linear or log
detector values, not meant to be looked at), the raw one often the larger. Before (found by the real-input
exploration, notes/report-realinput.md) the larger image of a projection won, so the model read the raw image.
Now a For Presentation image wins whatever its size or projection; a For Processing image alone is still read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from radtrace.model.study import study_image
from radtrace.model.views import choose_views

pytestmark = pytest.mark.unit

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"


def _dx(sop_class: str, *, view: str = "PA", margin: int = 0) -> Dataset:
    ds = study_image(FUJI.read_bytes()).dataset
    ds.SOPClassUID, ds.Modality, ds.ViewPosition, ds.BodyPartExamined = sop_class, "DX", view, "CHEST"
    if margin:  # the raw detector image: the whole detector, larger than the collimated presentation image
        pixels = np.pad(ds.pixel_array, margin)
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()
    return ds


@pytest.mark.parametrize("processing_first", [True, False])
def test_the_for_presentation_image_is_read_not_the_larger_raw_one(processing_first: bool) -> None:
    pair = [_dx(DX_FOR_PROCESSING, margin=40), _dx(DX_FOR_PRESENTATION)]
    datasets = pair if processing_first else pair[::-1]
    choice = choose_views(datasets)
    assert choice.frontal is not None
    assert datasets[choice.frontal].SOPClassUID == DX_FOR_PRESENTATION  # before: the raw one, 520 x 520


def test_a_for_presentation_ap_is_read_before_a_raw_pa() -> None:
    datasets = [_dx(DX_FOR_PROCESSING, view="PA"), _dx(DX_FOR_PRESENTATION, view="AP")]
    choice = choose_views(datasets)
    assert choice.frontal == 1
    assert "ap" in choice.flags


def test_a_for_processing_image_alone_is_still_read() -> None:
    assert choose_views([_dx(DX_FOR_PROCESSING)]).frontal == 0

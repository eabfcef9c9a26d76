"""Modality and VOI LUT Sequences that cannot be applied, or do not describe the image, are passed over.

Before (found by the real-input exploration, notes/report-realinput.md): display_values, which the console also
calls on the spooled instance as it is (without the worker's normalised header), raised IndexError on an empty
Modality LUT Sequence, KeyError on an item without LUT Data, and refused a VOI LUT item without its descriptor
instead of using the window; and a Modality LUT of 16 entries on a 10-bit film clamped nearly every pixel to its
last entry: the model was shown a white picture. Now each is passed over (recorded) for the rescale or the
window, and a LUT that fits the image is still applied.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from radtrace.model.image import display_values
from radtrace.model.study import study_image

pytestmark = pytest.mark.unit

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"
LUT_DATA = 0x00283006  # (0028,3006) LUT Data, US or OW


def _lut_item(entries: int, scale: int = 1, *, data: bool = True, descriptor: bool = True) -> Dataset:
    item = Dataset()
    if descriptor:
        item.LUTDescriptor = [entries, 0, 16]
    if data:
        item.add_new(LUT_DATA, "OW", (np.arange(entries, dtype="<u2") * scale).tobytes())
    return item


def _empty_modality_lut(ds: Dataset) -> None:
    ds.ModalityLUTSequence = []


def _modality_lut_without_data(ds: Dataset) -> None:
    ds.ModalityLUTSequence = [_lut_item(1024, data=False)]


def _modality_lut_of_16_entries(ds: Dataset) -> None:
    ds.ModalityLUTSequence = [_lut_item(16, 4)]


def _voi_lut_without_descriptor(ds: Dataset) -> None:
    ds.VOILUTSequence = [_lut_item(1024, descriptor=False)]


CASES: dict[str, tuple[Callable[[Dataset], None], str]] = {
    "empty-modality-lut-sequence": (_empty_modality_lut, "modality_lut"),
    "modality-lut-without-data": (_modality_lut_without_data, "modality_lut"),
    "modality-lut-of-16-entries-on-10-bits": (_modality_lut_of_16_entries, "modality_lut"),
    "voi-lut-without-descriptor": (_voi_lut_without_descriptor, "voi"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_lut_that_cannot_be_applied_or_fits_no_pixel_is_passed_over(case: str) -> None:
    change, step_name = CASES[case]
    plain = study_image(FUJI.read_bytes()).dataset
    expected, _ = display_values(plain)
    ds = study_image(FUJI.read_bytes()).dataset
    change(ds)
    shown, steps = display_values(ds)  # the header as received: not normalised
    assert np.array_equal(shown, expected)
    [step] = [s for s in steps if s["step"] == step_name]
    assert step["rejected"], step


def test_a_modality_lut_that_fits_the_image_is_applied() -> None:
    ds = study_image(FUJI.read_bytes()).dataset
    expected, _ = display_values(ds)
    ds.ModalityLUTSequence = [_lut_item(1024, 4)]
    ds.WindowCenter, ds.WindowWidth = float(ds.WindowCenter) * 4, float(ds.WindowWidth) * 4
    shown, steps = display_values(ds)
    assert np.abs(shown - expected).max() < 0.01
    assert [s["kind"] for s in steps if s["step"] == "modality_lut"] == ["lut"]

"""Modality and VOI LUT Sequences that cannot be applied, or do not describe the image, are passed over.

Before (found by the real-input exploration, notes/report-realinput.md): display_values, which the console also
calls on the spooled instance as it is (without the worker's normalised header), raised IndexError on an empty
Modality LUT Sequence, KeyError on an item without LUT Data, and refused a VOI LUT item without its descriptor
instead of using the window; and a Modality LUT of 16 entries on a 10-bit film clamped nearly every pixel to its
last entry: the model was shown a white picture. Now each is passed over (recorded) for the rescale or the
window, and a LUT that fits the image is still applied. A Modality LUT passed over takes the header's window
with it (written for the LUT's output, on the rescaled values it clipped the variants' films to 40-46 gray levels,
film_variants_support.modality_lut_unusable): the range is shown, recorded as ``header_voi_not_applied``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from radtrace.model.image import display_values
from radtrace.model.study import StudyInput, prepare_study, study_image

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
    [step] = [s for s in steps if s["step"] == step_name]
    assert step["rejected"], step
    if step_name == "voi":
        assert np.array_equal(shown, expected)
        return
    # The window is written for the Modality LUT's output: with the LUT dropped it is not applied to the rescaled
    # values (it could clip the film without leaving it blank), the range is, and the draft says so.
    [voi] = [s for s in steps if s["step"] == "voi"]
    assert voi["kind"] == "full_range"
    assert voi["header_voi_not_applied"]
    assert float(np.corrcoef(shown.ravel(), expected.ravel())[0, 1]) >= 0.99


def test_a_modality_lut_the_workers_header_drops_leaves_the_window_unapplied() -> None:
    """The worker's normalised header drops a Modality LUT Sequence with no LUT Data before the chain sees it; the
    window, written for that LUT's output, is not applied either (the same case unnormalised: above)."""
    raw = FUJI.read_bytes()
    image = study_image(raw)
    _modality_lut_without_data(image.dataset)
    prepared = prepare_study([image], min_pixels=128 * 128, max_pixels=476 * 476)
    assert isinstance(prepared, StudyInput)
    [source] = prepared.sources
    [header] = [s for s in source.preparation if s["step"] == "header"]
    assert any(str(n).startswith("ModalityLUTSequence: dropped") for n in header["normalised"])
    [voi] = [s for s in source.preparation if s["step"] == "voi"]
    assert (voi["kind"], voi["header_voi_not_applied"]) == (
        "full_range",
        "written for the Modality LUT's output, which was not applied",
    )


def test_a_modality_lut_that_fits_the_image_is_applied() -> None:
    ds = study_image(FUJI.read_bytes()).dataset
    expected, _ = display_values(ds)
    ds.ModalityLUTSequence = [_lut_item(1024, 4)]
    ds.WindowCenter, ds.WindowWidth = float(ds.WindowCenter) * 4, float(ds.WindowWidth) * 4
    shown, steps = display_values(ds)
    assert np.abs(shown - expected).max() < 0.01
    assert [s["kind"] for s in steps if s["step"] == "modality_lut"] == ["lut"]

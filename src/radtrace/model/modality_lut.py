"""Step 2 of the grayscale pipeline (PS3.3 C.11.1): stored values to modality values, by the Modality LUT Sequence or
Rescale Slope and Intercept, for :func:`radtrace.model.image.display_values`."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from radtrace.errors import DicomInputError

__all__ = ["MIN_LUT_COVERAGE", "modality_lut"]

#: A Modality LUT whose input range holds fewer of the stored values than this is not this image's (the rest would
#: all be clamped to its first or last entry): the rescale is used instead.
MIN_LUT_COVERAGE: Final = 0.5

FloatImage = NDArray[np.float64]
Step = dict[str, Any]


def modality_lut(stored: NDArray[Any], ds: Dataset) -> tuple[FloatImage, Step]:
    """The Modality LUT Sequence's first item, else Rescale Slope and Intercept. A sequence that cannot be applied
    (no item, no descriptor or LUT data: the worker's normalised header drops it, a raw one may hold it) is passed
    over, recorded, for the rescale."""
    rejected = None
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels.processing import apply_modality_lut

        try:
            item = ds.ModalityLUTSequence[0]
            descriptor = [int(v) for v in item.LUTDescriptor]
            mapped = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        except Exception as exc:  # an empty sequence, missing elements, data pydicom cannot index
            rejected = f"Modality LUT Sequence unusable ({type(exc).__name__})"
        else:
            first, last = descriptor[1], descriptor[1] + (descriptor[0] or 65536) - 1
            covered = float(np.mean((stored >= first) & (stored <= last)))
            if covered < MIN_LUT_COVERAGE:  # the rest would be clamped to one end: a flat picture
                rejected = f"Modality LUT Sequence maps {covered:.0%} of the pixels (under {MIN_LUT_COVERAGE:.0%})"
        if rejected is None:
            return mapped, {
                "step": "modality_lut",
                "kind": "lut",
                "descriptor": descriptor,
                "type": str(item.get("ModalityLUTType", "")),
            }
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    values = stored.astype(np.float64)
    if (slope, intercept) != (1.0, 0.0):
        with np.errstate(over="ignore", invalid="ignore"):
            values = values * slope + intercept
        if not np.isfinite(values).all():
            # 1e308 x 2 overflows: the range, the levels and the window of infinities are NaN (and bincount failed)
            raise DicomInputError(
                f"(0028,1053) Rescale Slope {slope:g} and (0028,1052) Rescale Intercept {intercept:g} take the "
                "pixel values beyond any number"
            )
    step: Step = {"step": "modality_lut", "kind": "rescale", "slope": slope, "intercept": intercept}
    if rejected:
        step["rejected"] = rejected
    return values, step

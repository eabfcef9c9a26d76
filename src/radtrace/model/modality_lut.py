"""Step 2 of the grayscale pipeline (PS3.3 C.11.1): stored values to modality values, by the Modality LUT Sequence or
Rescale Slope and Intercept, for :func:`radtrace.model.image.display_values`."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from radtrace.errors import DicomInputError

__all__ = ["MIN_LUT_COVERAGE", "first_mapped", "modality_lut"]

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
            first = first_mapped(descriptor[1], descriptor[0] or 65536, stored)
            # pydicom maps from the descriptor as written: a first value read as signed is given to it as the
            # same shift of the stored values (index = value - first either way)
            shifted = stored if first == descriptor[1] else stored.astype(np.int64) + (descriptor[1] - first)
            mapped = np.asarray(apply_modality_lut(shifted, ds), dtype=np.float64)
        except Exception as exc:  # an empty sequence, missing elements, data pydicom cannot index
            rejected = f"Modality LUT Sequence unusable ({type(exc).__name__})"
        else:
            last = first + (descriptor[0] or 65536) - 1
            covered = float(np.mean((stored >= first) & (stored <= last)))
            if covered < MIN_LUT_COVERAGE:  # the rest would be clamped to one end: a flat picture
                rejected = f"Modality LUT Sequence maps {covered:.0%} of the pixels (under {MIN_LUT_COVERAGE:.0%})"
        if rejected is None:
            return mapped, {
                "step": "modality_lut",
                "kind": "lut",
                "descriptor": descriptor,
                "type": str(item.get("ModalityLUTType", "")),
                **({"first_mapped_as_signed": first} if first != descriptor[1] else {}),
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


def first_mapped(written: int, entries: int, values: NDArray[Any]) -> int:
    """A LUT Descriptor's first value mapped as the LUT means it (Modality LUT PS3.3 C.11.1.1, VOI LUT C.11.2.1.1).

    Its VR is US or SS by the sign of the LUT's input, and a negative first value written as US (its two's
    complement: 64512 for -1024) is common; pydicom keeps an explicit US as it is, and the LUT then maps none of
    a signed image's values (every pixel clamped to its first entry). A value of 32768 or above is read as
    signed (``written`` - 65536) where that covers more of ``values`` with the LUT's ``entries``.
    """
    if written < 32768:
        return written
    signed = written - 65536

    def covered(first: int) -> int:
        return int(np.count_nonzero((values >= first) & (values <= first + entries - 1)))

    return signed if covered(signed) > covered(written) else written

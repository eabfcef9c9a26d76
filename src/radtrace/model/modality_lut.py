"""Step 2 of the grayscale pipeline (PS3.3 C.11.1): stored values to modality values, by the Modality LUT Sequence or
Rescale Slope and Intercept, for :func:`radtrace.model.image.display_values`."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian

from radtrace.dicom_listener.attributes import rescale_slope
from radtrace.errors import DicomInputError

__all__ = ["MIN_LUT_COVERAGE", "big_endian", "first_mapped", "lut_entries", "modality_lut"]

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
        try:
            item = ds.ModalityLUTSequence[0]
            descriptor = [int(v) for v in item.LUTDescriptor]
            entries = descriptor[0] or 65536
            table = np.asarray(lut_entries(item, big_endian=big_endian(ds)), dtype=np.float64)[:entries]
            if table.size == 0:
                raise ValueError("no LUT Data")
        except Exception as exc:  # an empty sequence, missing elements, data that are no numbers
            rejected = f"Modality LUT Sequence unusable ({type(exc).__name__})"
        else:
            first = first_mapped(descriptor[1], table.size, stored)
            covered = float(np.mean((stored >= first) & (stored <= first + table.size - 1)))
            if covered < MIN_LUT_COVERAGE:  # the rest would be clamped to one end: a flat picture
                rejected = f"Modality LUT Sequence maps {covered:.0%} of the pixels (under {MIN_LUT_COVERAGE:.0%})"
        if rejected is None:
            # below the first mapped value the first entry, above the last the last (PS3.3 C.11.1.1)
            index = np.subtract(stored, first, dtype=np.int64)
            np.clip(index, 0, table.size - 1, out=index)
            step: Step = {
                "step": "modality_lut",
                "kind": "lut",
                "descriptor": descriptor,
                "type": str(item.get("ModalityLUTType", "")),
            }
            if first != descriptor[1]:
                step["first_mapped_as_signed"] = first
            return table[index], step
    slope = rescale_slope(ds)
    if slope == 0.0:
        # Not read as 1: a slope of 0 makes every modality value the intercept (PS3.3 C.11.1.1.2), and what the
        # sender meant by it (unset? a slope lost on the way?) is not known; the windows are in units it decides.
        raise DicomInputError(
            "(0028,1053) Rescale Slope is 0: every pixel's value would be the Rescale Intercept, the image shows "
            "nothing to read (the sender's header is wrong)"
        )
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    values = stored.astype(np.float64)
    if (slope, intercept) != (1.0, 0.0):
        with np.errstate(over="ignore", invalid="ignore"):  # in place: a 15-megapixel film is 120 MB a copy
            values *= slope
            values += intercept
        if not np.isfinite(values).all():
            # 1e308 x 2 overflows: the range, the levels and the window of infinities are NaN (and bincount failed)
            raise DicomInputError(
                f"(0028,1053) Rescale Slope {slope:g} and (0028,1052) Rescale Intercept {intercept:g} take the "
                "pixel values beyond any number"
            )
    step = {"step": "modality_lut", "kind": "rescale", "slope": slope, "intercept": intercept}
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


def lut_entries(item: Dataset, *, big_endian: bool) -> NDArray[np.int64]:
    """A Modality or VOI LUT item's LUT Data entries, as many as its LUT Descriptor says where it says.

    Given as OW, or as UN (a US value too long for its 16-bit length, as pydicom writes 32,768 entries or more),
    the data are the words as the file holds them: big endian in an Explicit VR Big Endian file (dcmtk's dcmconv
    +tb writes it so). The data's length says how the entries are laid out, never their values (PS3.3 C.11.2.1.1,
    C.7.6.3.1.6: 8-bit entries are stored "8 bits allocated", 16-bit ones "16 bits allocated"; some writers pad
    8-bit entries to a word each): entries of 8 bits or fewer whose data is exactly the descriptor's count in
    bytes (rounded up to a whole word) are unpacked one a byte, first in the low byte, as dcmtk does; any other
    length is one entry a word. Data shorter than the descriptor's count either way (one entry short, as an
    off-by-one writer sends it) are its entries one a word: before, any 8-bit table shorter than its count was
    unpacked as bytes, and a film's VOI LUT one entry short became noise (mean difference 0.18-0.48).

    Raises:
        ValueError: LUT Data that are no 16-bit words (an odd number of bytes) or no numbers.
    """
    data = item.get("LUTData")
    if data is None:
        return np.zeros(0, dtype=np.int64)
    value = data if not hasattr(data, "value") else data.value
    if isinstance(value, bytes):
        words = np.frombuffer(value, dtype=">u2" if big_endian else "<u2").astype(np.int64)
    else:
        words = np.asarray([value] if isinstance(value, int | float) else list(value), dtype=np.int64).reshape(-1)
    try:
        entries, _, bits = (int(v) for v in item.LUTDescriptor)
    except (AttributeError, TypeError, ValueError):
        return words
    entries = entries or 65536
    if bits <= 8 and entries > 1 and words.size == (entries + 1) // 2:  # two 8-bit entries a word, low byte first
        return np.frombuffer(words.astype("<u2").tobytes(), dtype=np.uint8)[:entries].astype(np.int64)
    return words


def big_endian(ds: Dataset) -> bool:
    """Whether ``ds`` was read in Explicit VR Big Endian (its OW values' words are big endian)."""
    return bool(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) == ExplicitVRBigEndian)

"""DICOM pixels to the picture a vision-language model is shown, with every step recorded.

The chain follows the DICOM grayscale pipeline (PS3.4 Annex N, PS3.3 C.11); steps 2 and 3 are
:mod:`radtrace.model.modality_lut` and :mod:`radtrace.model.voi`, the header's polarity and the check of the
picture's :mod:`radtrace.model.polarity`:

1. decode the stored pixels of the first frame (:mod:`radtrace.model.stored_pixels`: any transfer syntax,
   offset tables that do not fit ignored, bits past Bits Stored cleared), and find the padding pixels (Pixel
   Padding Value and Range Limit), which no VOI measures and which are shown black; a PALETTE COLOR image goes
   through its palette to luminance instead of steps 2-4;
2. Modality LUT: Modality LUT Sequence, else Rescale Slope/Intercept (PS3.3 C.11.1);
3. VOI: an explicit VOI LUT Sequence (indexed by integers, so the modality output is rounded first), else the
   first window with its VOI LUT Function, LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.2-3), else the
   range of the modality output; a VOI its function refuses (a LINEAR width below 1) or that leaves the
   picture nearly blank is passed over, recorded, for the next one (an image of one value is refused); a range
   held by one extreme value filling part of the image (a border) leaves that value out, one held by a few
   outliers is replaced by the 1-99 percentile range;
4. inversion for MONOCHROME1, so that air is dark: the Photometric Interpretation decides, an image's own
   Presentation LUT Shape only restates it (one inversion for MONOCHROME1 with INVERSE), and a shape that
   contradicts it is recorded and not followed (:func:`radtrace.model.polarity.header_polarity`); a picture
   whose pixels look like a negative (:func:`radtrace.model.polarity.polarity_plausibility`: a Photometric
   Interpretation that is wrong) is recorded, not flipped;
5. 8 bits, then gray to RGB;
6. resize keeping the aspect ratio (of the pixels too, where they are not square) to a pixel budget, in multiples
   of the model's merged patch (28 px for Qwen2.5-VL), so that the processor's own resize is the identity and a
   model coordinate maps back to the source image by one scale factor per axis.

Each step appends a plain-data dict (JSON-ready) to :attr:`PreparedPicture.steps`; these go into
:class:`radtrace.model.reading.SourceImage.preparation` and so into the audit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from radtrace.dicom_listener.attributes import pixel_aspect_ratio
from radtrace.errors import DicomInputError
from radtrace.model.image_marks import source_step
from radtrace.model.modality_lut import modality_lut
from radtrace.model.polarity import PROBABLY_INVERTED, header_polarity, polarity_plausibility
from radtrace.model.stored_pixels import MAX_SOURCE_PIXELS, decode_first_frame, padding_mask, palette_luminance
from radtrace.model.voi import apply_window, choose_voi

__all__ = [
    "MAX_SOURCE_PIXELS",
    "MERGED_PATCH",
    "PreparedPicture",
    "apply_window",
    "budget_size",
    "display_values",
    "prepare_picture",
    "to_source_pixels",
]

#: Qwen2.5-VL: 14 px patches merged 2 x 2 into one visual token.
MERGED_PATCH: Final = 28
_MAX_ASPECT: Final = 200  # Qwen's processor refuses more extreme shapes
#: A pixel's height over width further from 1 than this is shown at its proportions (spacings written to a few
#: digits differ by less).
ASPECT_TOLERANCE: Final = 0.01
#: ... up to this ratio either way; beyond, the header is taken to be wrong and the pixels are shown square.
MAX_PIXEL_ASPECT: Final = 4.0
#: A multi-frame image whose first frame holds one value is read from the first of its next frames that does not,
#: among this many frames.
MAX_FRAMES_TRIED: Final = 4
FloatImage = NDArray[np.float64]
Step = dict[str, Any]


@dataclass(frozen=True)
class PreparedPicture:
    """An 8-bit RGB picture ready for the processor, and how it was made from the source pixels."""

    pixels: NDArray[np.uint8]  # (rows, columns, 3)
    source_rows: int
    source_columns: int
    steps: tuple[Step, ...]

    @property
    def rows(self) -> int:
        """Height of the picture given to the model."""
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        """Width of the picture given to the model."""
        return int(self.pixels.shape[1])

    def image(self) -> Any:
        """The picture as a PIL image (RGB)."""
        from PIL import Image

        return Image.fromarray(self.pixels)


def prepare_picture(
    ds: Dataset,
    *,
    min_pixels: int,
    max_pixels: int,
    factor: int = MERGED_PATCH,
    max_source_pixels: int = MAX_SOURCE_PIXELS,
    modality_lut_dropped: bool = False,
) -> PreparedPicture:
    """Turn a DICOM image into an RGB picture within ``min_pixels``..``max_pixels`` (see the module doc).

    Raises:
        DicomInputError: no pixel data, a transfer syntax no installed decoder handles, corrupt pixel data,
            or a shape the model cannot take; an image over ``max_source_pixels`` (header or codestream),
            checked before decoding.
    """
    gray, steps = display_values(ds, max_source_pixels=max_source_pixels, modality_lut_dropped=modality_lut_dropped)
    gray *= 255.0  # in place: a 50-megapixel image is 400 MB a float copy
    np.rint(gray, out=gray)
    eight_bit = gray.astype(np.uint8)
    del gray
    steps.append({"step": "to_8bit", "scale": 255, "rounding": "nearest"})
    rows, columns = eight_bit.shape
    aspect = pixel_aspect_ratio(ds)
    # Pixels taller or wider than square are shown at their true proportions (as a viewer shows them), or the
    # chest is squashed; a box still maps back by one scale factor per axis (to_source_pixels).
    stretched = (
        aspect is not None
        and abs(aspect - 1.0) > ASPECT_TOLERANCE
        and 1 / MAX_PIXEL_ASPECT <= aspect <= MAX_PIXEL_ASPECT
    )
    shown_rows = max(1, round(rows * aspect)) if stretched and aspect is not None else rows
    target_rows, target_columns = budget_size(
        shown_rows, columns, min_pixels=min_pixels, max_pixels=max_pixels, factor=factor
    )
    if (target_rows, target_columns) != (rows, columns):
        from PIL import Image

        resized = Image.fromarray(eight_bit).resize((target_columns, target_rows), Image.Resampling.BICUBIC)
        eight_bit = np.asarray(resized, dtype=np.uint8)
    steps.append(
        {
            "step": "resize",
            "from": [rows, columns],
            "to": [target_rows, target_columns],
            "resample": "bicubic",
            "min_pixels": min_pixels,
            "max_pixels": max_pixels,
            "multiple_of": factor,
            "pixel_aspect_ratio": round(aspect, 4) if aspect is not None else None,
            "aspect_applied": stretched,
        }
    )
    rgb = np.repeat(eight_bit[:, :, np.newaxis], 3, axis=2)
    steps.append({"step": "rgb", "from": "gray", "channels": 3})
    return PreparedPicture(pixels=rgb, source_rows=rows, source_columns=columns, steps=tuple(steps))


def display_values(
    ds: Dataset, *, max_source_pixels: int = MAX_SOURCE_PIXELS, modality_lut_dropped: bool = False
) -> tuple[FloatImage, list[Step]]:
    """Stored pixels to display values in [0, 1] (0 = black, air), with the steps taken.

    ``modality_lut_dropped``: ``ds`` is a working copy whose unusable Modality LUT Sequence was dropped (the
    worker's normalised header). Where a Modality LUT is dropped here or there, the header's VOI (windows, VOI
    LUT), written for the LUT's output, is not applied to the rescaled values: the range VOI shows the image,
    recorded as ``header_voi_not_applied``.

    Raises:
        DicomInputError: as for :func:`prepare_picture`.
    """
    stored, steps = decode_first_frame(ds, max_source_pixels)
    frames = int(steps[0]["frames"])
    if frames > 1 and _one_value(stored):  # a dark or offset frame first: the next frames that show something
        for frame in range(1, min(frames, MAX_FRAMES_TRIED)):
            try:
                candidate, candidate_steps = decode_first_frame(ds, max_source_pixels, frame=frame)
            except DicomInputError:
                break  # a frame the data does not hold: the first one stands, refused below
            if not _one_value(candidate):
                stored, steps = candidate, candidate_steps
                steps[0]["frames_passed_over"] = frame
                break
    if (source := source_step(ds)) is not None:  # lossy, text burned in: the draft says so
        steps.append(source)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if stored.ndim == 2 and photometric == "PALETTE COLOR":
        gray, palette_step = palette_luminance(stored, ds)
        steps.append(palette_step)
        steps.append(_checked_polarity(gray, None, ds, photometric))
        return gray, steps
    if stored.ndim == 3:  # colour (secondary capture): pydicom already gives RGB; show its luminance
        gray = stored[..., 0] * 0.299 + stored[..., 1] * 0.587 + stored[..., 2] * 0.114
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        steps.append({"step": "luminance", "weights": [0.299, 0.587, 0.114], "scale": top})
        gray = np.clip(gray / top, 0.0, 1.0)
        steps.append(_checked_polarity(gray, None, ds, photometric))
        return gray, steps

    padding, padding_step = padding_mask(stored, ds)
    if padding_step is not None:
        steps.append(padding_step)
    values, modality_step = modality_lut(stored, ds)
    del stored  # 2 to 8 bytes a pixel no longer needed while the VOI holds two float images
    steps.append(modality_step)
    lut_dropped = modality_lut_dropped or "rejected" in modality_step
    display, voi_step = choose_voi(values, ds, None if padding is None else ~padding, header_voi=not lut_dropped)
    steps.append(voi_step)
    steps.append(_checked_polarity(display, padding, ds, photometric))
    if padding is not None:
        display[padding] = 0.0  # not image: black, as a viewer shows the background
    return display, steps


def _checked_polarity(display: FloatImage, padding: NDArray[np.bool_] | None, ds: Dataset, photometric: str) -> Step:
    """The inversion step: ``display`` inverted (in place) where the header says (MONOCHROME1), then checked for
    a negative. A colour or palette picture is never inverted, and is checked as its luminance: a colour
    secondary capture of a negative film is flagged as a grayscale one is."""
    invert, inversion_step = header_polarity(ds, photometric)
    if invert:
        np.subtract(1.0, display, out=display)  # the VOI's own array
    check = polarity_plausibility(display, padding)
    inversion_step["polarity_check"] = check
    if check["verdict"] == PROBABLY_INVERTED:
        # Recorded, not followed, as a contradicting Presentation LUT Shape: a wrong flip would hide a right header.
        inversion_step["suspected_inversion"] = (
            f"the picture looks like a negative (score {check['score']:+.2f}): the Photometric Interpretation "
            f"{photometric} may be wrong; shown as the header says"
        )
    return inversion_step


def _one_value(stored: NDArray[Any]) -> bool:
    return bool(stored.size) and bool(np.all(stored == stored.flat[0]))


def budget_size(
    rows: int, columns: int, *, min_pixels: int, max_pixels: int, factor: int = MERGED_PATCH
) -> tuple[int, int]:
    """The (rows, columns) to resize to: aspect kept, each a multiple of ``factor``, area within the budget.

    The rule is Qwen2-VL's ``smart_resize``, so the processor leaves a picture of this size as it is.

    Raises:
        DicomInputError: an aspect ratio above 200 or an image smaller than one patch.
    """
    if min(rows, columns) < 1 or max(rows, columns) / min(rows, columns) > _MAX_ASPECT:
        raise DicomInputError(f"image of {rows} x {columns} pixels has an aspect ratio the model cannot take")
    if min_pixels > max_pixels or max_pixels < factor * factor:
        raise ValueError(f"pixel budget {min_pixels}..{max_pixels} is impossible with {factor} px patches")
    height = max(factor, round(rows / factor) * factor)
    width = max(factor, round(columns / factor) * factor)
    if height * width > max_pixels:
        beta = math.sqrt(rows * columns / max_pixels)
        height = max(factor, math.floor(rows / beta / factor) * factor)
        width = max(factor, math.floor(columns / beta / factor) * factor)
    elif height * width < min_pixels:
        beta = math.sqrt(min_pixels / (rows * columns))
        height = math.ceil(rows * beta / factor) * factor
        width = math.ceil(columns * beta / factor) * factor
    return height, width


def to_source_pixels(
    box: tuple[float, float, float, float], *, model_size: tuple[int, int], source_size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Map ``(x_min, y_min, x_max, y_max)`` on the model's picture back to source pixels, ordered and clipped.

    ``model_size`` and ``source_size`` are ``(rows, columns)``.
    """
    model_rows, model_columns = model_size
    rows, columns = source_size
    sx, sy = columns / model_columns, rows / model_rows
    x0, x1 = sorted((box[0] * sx, box[2] * sx))
    y0, y1 = sorted((box[1] * sy, box[3] * sy))
    return (
        min(max(x0, 0.0), float(columns)),
        min(max(y0, 0.0), float(rows)),
        min(max(x1, 0.0), float(columns)),
        min(max(y1, 0.0), float(rows)),
    )

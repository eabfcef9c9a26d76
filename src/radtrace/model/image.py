"""DICOM pixels to the picture a vision-language model is shown, with every step recorded.

The chain follows the DICOM grayscale pipeline (PS3.4 Annex N, PS3.3 C.11):

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
   contradicts it is recorded and not followed (see ``_polarity``); a picture whose pixels look like a negative
   (:mod:`radtrace.model.polarity`: a Photometric Interpretation that is wrong) is recorded, not flipped;
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
from radtrace.model.polarity import PROBABLY_INVERTED, polarity_plausibility
from radtrace.model.stored_pixels import MAX_SOURCE_PIXELS, decode_first_frame, padding_mask, palette_luminance

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
#: A VOI (window or LUT) that leaves fewer pixels than this between black and white shows the model a blank
#: picture: the next one is used (the films' own windows leave more than half; an absurd one almost none).
MIN_VISIBLE: Final = 0.10
#: A Modality LUT whose input range holds fewer of the stored values than this is not this image's (the rest would
#: all be clamped to its first or last entry): the rescale is used instead.
MIN_LUT_COVERAGE: Final = 0.5
#: ... or fewer gray levels than this (the films' own windows give well over a hundred).
MIN_GRAY_LEVELS: Final = 16
#: With no usable VOI, a full range that gives fewer than :data:`MIN_GRAY_LEVELS` levels (a burned-in marker at full
#: scale, a few hot pixels) is replaced by the range between these percentiles of the modality output.
ROBUST_PERCENTILES: Final = (1.0, 99.0)
#: With no usable VOI, a lowest or highest value held by more than this share of the image's pixels is left out of
#: its range (see ``_range_voi``).
EXTREME_SHARE: Final = 0.01
#: ... where the other pixels span less than this share of the full range (a border far from the image's values;
#: a detector saturated next to them changes the range little and is left in).
BORDER_SPAN: Final = 0.5

FloatImage = NDArray[np.float64]
Step = dict[str, Any]
_LEVELS_CHUNK: Final = 1 << 20


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
) -> PreparedPicture:
    """Turn a DICOM image into an RGB picture within ``min_pixels``..``max_pixels`` (see the module doc).

    Raises:
        DicomInputError: no pixel data, a transfer syntax no installed decoder handles, corrupt pixel data,
            or a shape the model cannot take; an image over ``max_source_pixels`` (header or codestream),
            checked before decoding.
    """
    gray, steps = display_values(ds, max_source_pixels=max_source_pixels)
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


def display_values(ds: Dataset, *, max_source_pixels: int = MAX_SOURCE_PIXELS) -> tuple[FloatImage, list[Step]]:
    """Stored pixels to display values in [0, 1] (0 = black, air), with the steps taken.

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
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if stored.ndim == 2 and photometric == "PALETTE COLOR":
        gray, palette_step = palette_luminance(stored, ds)
        steps.append(palette_step)
        return gray, steps
    if stored.ndim == 3:  # colour (secondary capture): pydicom already gives RGB; show its luminance
        gray = stored[..., 0] * 0.299 + stored[..., 1] * 0.587 + stored[..., 2] * 0.114
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        steps.append({"step": "luminance", "weights": [0.299, 0.587, 0.114], "scale": top})
        return np.clip(gray / top, 0.0, 1.0), steps

    padding, padding_step = padding_mask(stored, ds)
    if padding_step is not None:
        steps.append(padding_step)
    values, modality_step = _modality_lut(stored, ds)
    steps.append(modality_step)
    display, voi_step = _voi(values, ds, None if padding is None else ~padding)
    steps.append(voi_step)
    invert, inversion_step = _polarity(ds, photometric)
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
    steps.append(inversion_step)
    if padding is not None:
        display[padding] = 0.0  # not image: black, as a viewer shows the background
    return display, steps


def _polarity(ds: Dataset, photometric: str) -> tuple[bool, Step]:
    """Whether the VOI output is inverted (MONOCHROME1: the lowest value white, PS3.3 C.7.6.3.1.2), and the step.

    An image's own Presentation LUT Shape (General Image and DX Image modules, PS3.3 C.7.6.1 and C.8.11.7)
    restates the Photometric Interpretation: INVERSE "shall be used" with MONOCHROME1, IDENTITY with MONOCHROME2.
    Only a presentation state's pipeline overrides the Photometric Interpretation (PS3.4 N.2.1.4, note 1).
    Where the two disagree the object is wrong, and the Photometric Interpretation decides: it is the element
    every decoder and transcoder keeps true to the pixels (a MONOCHROME1 film converted to MONOCHROME2 has its
    pixels inverted and its interpretation rewritten, while a stale INVERSE can stay), and the shape is the one
    found wrong in the field (Fuji films written MONOCHROME1 with IDENTITY: dcm4che's dcm2jpg --noshape and the
    archive's "Wado Ignore Presentation LUT Shape", dcm4che issues 944 and 3155). dcmtk's dcm2pnm follows the
    shape and shows such a film as a negative; ClearCanvas's Presentation LUT inverts for MONOCHROME1. A
    Presentation LUT Sequence is no image IOD's (a presentation state's or a print's): as in dcm2pnm, it is not
    applied, and is recorded.
    """
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    invert = photometric == "MONOCHROME1"
    step: Step = {
        "step": "inversion",
        "applied": invert,
        "photometric": photometric,
        "presentation_lut_shape": shape or None,
    }
    restated = "INVERSE" if invert else "IDENTITY"
    if shape in ("IDENTITY", "INVERSE") and shape != restated:
        step["contradiction"] = f"Presentation LUT Shape {shape} with {photometric}: the shape is not followed"
    if "PresentationLUTSequence" in ds:
        step["presentation_lut_sequence"] = "not applied (no image IOD defines it)"
    return invert, step


def _one_value(stored: NDArray[Any]) -> bool:
    return bool(stored.size) and bool(np.all(stored == stored.flat[0]))


def apply_window(values: FloatImage, center: float, width: float, function: str = "LINEAR") -> FloatImage:
    """A VOI window per PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID), onto [0, 1].

    Raises:
        DicomInputError: a width the function does not allow (LINEAR needs >= 1, the others > 0) or an
            unknown function.
    """
    function = function.strip().upper() or "LINEAR"
    # A width of 2e-311 overflows to infinities that the thresholds and the clip below turn into 0 or 1.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        # One output array, computed in place: an image at the pixel limit (50 megapixels) is 400 MB a copy, and
        # the chain of temporaries held 35 bytes a pixel at once.
        if function == "LINEAR":
            if width < 1:
                raise DicomInputError(f"window width {width} is below 1 for LINEAR")
            low = center - 0.5 - (width - 1) / 2
            high = center - 0.5 + (width - 1) / 2
            if width > 1:
                out = np.subtract(values, center - 0.5, dtype=np.float64)
                out /= width - 1
                out += 0.5
            else:
                out = np.zeros_like(values, dtype=np.float64)
        elif function == "LINEAR_EXACT":
            if width <= 0:
                raise DicomInputError(f"window width {width} is not positive for LINEAR_EXACT")
            low, high = center - width / 2, center + width / 2
            out = np.subtract(values, center, dtype=np.float64)
            out /= width
            out += 0.5
        elif function == "SIGMOID":
            if width <= 0:
                raise DicomInputError(f"window width {width} is not positive for SIGMOID")
            out = np.subtract(values, center, dtype=np.float64)
            out *= -4.0
            out /= width
            np.clip(out, -700.0, 700.0, out=out)
            np.exp(out, out=out)
            out += 1.0
            np.reciprocal(out, out=out)
            return np.clip(out, 0.0, 1.0, out=out)
        else:
            raise DicomInputError(f"unknown VOI LUT Function {function!r}")
        out[values > high] = 1.0
        out[values <= low] = 0.0  # below the window wins, as the first test of C.11.2.1.2
    return np.clip(out, 0.0, 1.0, out=out)


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


def _modality_lut(stored: NDArray[Any], ds: Dataset) -> tuple[FloatImage, Step]:
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


def _voi(values: FloatImage, ds: Dataset, image: NDArray[np.bool_] | None = None) -> tuple[FloatImage, Step]:
    """The first usable VOI of the header (LUT, then each window in order), else the full range.

    ``image``: the pixels that are the image (padding excluded), which alone are measured.

    A VOI is unusable when its function refuses its width, or when it leaves fewer than
    :data:`MIN_VISIBLE` of the pixels between black and white or fewer than :data:`MIN_GRAY_LEVELS` gray levels
    (a window far outside the data or far too wide, a LUT that covers none of it): a viewer's user would pick
    another window; the model cannot, so it is given the next one. What was passed over is recorded under
    ``rejected``.
    """
    rejected: list[Step] = []
    inside = values if image is None else values[image]

    def seen(display: FloatImage) -> FloatImage:
        return display if image is None else display[image]

    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        try:
            display, lut_step = _explicit_voi_lut(values, ds.VOILUTSequence[0])
        except DicomInputError as exc:  # malformed: as an unusable window, passed over for the next VOI
            rejected.append({"kind": "lut", "why": exc.reason})
        else:
            blank = _blankness(seen(display), inside, most_levels=int(lut_step["entries"]))
            if blank is None:
                return display, lut_step
            rejected.append({"kind": "lut", "why": blank})
    centers, widths = _window_values(ds)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    explanations = ds.get("WindowCenterWidthExplanation")
    if explanations is not None and isinstance(explanations, str):
        explanations = [explanations]
    for index, (center, width) in enumerate(zip(centers, widths, strict=False)):
        try:
            display = apply_window(values, center, width, function)
        except DicomInputError as exc:
            rejected.append({"kind": "window", "center": center, "width": width, "why": exc.reason})
            continue
        blank = _blankness(seen(display), inside)
        if blank is not None:
            rejected.append({"kind": "window", "center": center, "width": width, "why": blank})
            continue
        explanation = explanations[index] if explanations is not None and index < len(explanations) else None
        step: Step = {
            "step": "voi",
            "kind": "window",
            "function": function,
            "center": center,
            "width": width,
            "explanation": str(explanation) if explanation else None,
            "windows_available": len(centers),
        }
        if index:
            step["window_index"] = index
        if rejected:
            step["rejected"] = rejected
        return display, step
    display, step = _range_voi(values, inside)
    if rejected:
        step["rejected"] = rejected
    return display, step


def _range_voi(values: FloatImage, inside: FloatImage) -> tuple[FloatImage, Step]:
    """With no usable VOI: the range of the image's pixels (``inside``: padding left out).

    Where the lowest or highest value fills more than :data:`EXTREME_SHARE` of the image and lies far from the
    others (collimation or padding the header does not declare: they span under :data:`BORDER_SPAN` of the full
    range), the range of the other pixels, as dcmtk's min-max window ignoring extreme values (``dcm2pnm +Wn``):
    else the border decides the contrast and the film is a few grays. Else the full range, unless a few outliers
    hold it (a marker burned in at full scale: fewer than :data:`MIN_GRAY_LEVELS` levels), then the range between
    :data:`ROBUST_PERCENTILES`.
    """
    low, high = float(inside.min()), float(inside.max())
    if high <= low:
        raise DicomInputError("every pixel holds the same value: the image shows nothing to read")
    best: Step = {"step": "voi", "kind": "full_range", "low": low, "high": high}
    levels = int(np.count_nonzero(_levels(_scaled(inside, low, high))))
    candidates: list[tuple[str, float, float]] = []
    extremes = float(max(np.mean(inside == low), np.mean(inside == high)))
    interior = inside[(inside > low) & (inside < high)]
    if extremes > EXTREME_SHARE and interior.size >= MIN_VISIBLE * inside.size:
        interior_low, interior_high = float(interior.min()), float(interior.max())
        if interior_high - interior_low < BORDER_SPAN * (high - low):  # the extreme lies far from the image
            candidates.append(("range_without_extremes", interior_low, interior_high))
    if levels < MIN_GRAY_LEVELS:
        percentile_low, percentile_high = (float(v) for v in np.percentile(inside, ROBUST_PERCENTILES))
        candidates.append(("percentile_range", percentile_low, percentile_high))
    for kind, robust_low, robust_high in candidates:
        if robust_high <= robust_low:
            continue
        found = int(np.count_nonzero(_levels(_scaled(inside, robust_low, robust_high))))
        if found > levels:
            best = {"step": "voi", "kind": kind, "low": robust_low, "high": robust_high, "full_range": [low, high]}
            if kind == "percentile_range":
                best["percentiles"] = list(ROBUST_PERCENTILES)
            else:
                best["extreme_share"] = round(extremes, 4)
            break
    return _scaled(values, best["low"], best["high"]), best


def _scaled(values: FloatImage, low: float, high: float) -> FloatImage:
    """``values`` from ``low`` to ``high`` onto [0, 1], clipped: one new array, the rest in place (a 50-megapixel
    image is 400 MB a copy)."""
    out = np.subtract(values, low)
    out /= high - low
    return np.clip(out, 0.0, 1.0, out=out)


def _levels(display: FloatImage) -> NDArray[np.int64]:
    """How many pixels hold each of the 256 gray levels once ``display`` (in [0, 1]) is in 8 bits.

    Counted a million pixels at a time: whole, the scaled copy and its integers added 16 bytes a pixel to the
    images already held, the worker's peak on a 49-megapixel film."""
    counts = np.zeros(256, dtype=np.int64)
    flat = display.reshape(-1)
    for start in range(0, flat.size, _LEVELS_CHUNK):
        scaled = np.rint(flat[start : start + _LEVELS_CHUNK] * 255.0)
        counts += np.bincount(scaled.astype(np.int64), minlength=256)[:256]
    return counts


def _blankness(display: FloatImage, values: FloatImage, most_levels: int | None = None) -> str | None:
    """Why ``display`` (a VOI of ``values``) is a nearly blank picture once in 8 bits, or None: too few pixels
    between black and white, or fewer gray levels than the full range of ``values`` gives (up to
    :data:`MIN_GRAY_LEVELS`; ``most_levels``: a LUT's entries), e.g. a window so wide that all is one gray."""
    counts = _levels(display)
    visible = float(counts[1:255].sum() / max(display.size, 1))
    if visible < MIN_VISIBLE:
        return f"leaves {visible:.1%} of the pixels between black and white (under {MIN_VISIBLE:.0%})"
    levels = int(np.count_nonzero(counts))
    if levels >= MIN_GRAY_LEVELS:
        return None
    low, high = float(values.min()), float(values.max())
    span = high - low
    possible = int(np.count_nonzero(_levels((values - low) / span))) if span > 0 else 1
    needed = min(MIN_GRAY_LEVELS, possible, most_levels or MIN_GRAY_LEVELS)
    return f"leaves {levels} gray levels (under {needed})" if levels < needed else None


def _explicit_voi_lut(values: FloatImage, item: Dataset) -> tuple[FloatImage, Step]:
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        table = np.asarray(_lut_data(item), dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomInputError(f"malformed VOI LUT Sequence: {exc}") from exc
    entries = entries or 65536
    if table.size == 0:
        raise DicomInputError("VOI LUT Sequence has no LUT Data")
    table = table[:entries]
    # The LUT is indexed by integer input values (PS3.3 C.11.2.1.1): round the modality output first,
    # then clamp below the first mapped value to the first entry and above the last to the last.
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, table.size - 1)
    top = float(2**bits - 1) if 8 <= bits <= 16 else float(table.max() or 1.0)
    if table.max() > top:  # descriptors that understate the output depth exist; trust the data
        top = float(2 ** math.ceil(math.log2(table.max() + 1)) - 1)
    return np.clip(table[index] / top, 0.0, 1.0), {
        "step": "voi",
        "kind": "lut",
        "entries": int(table.size),
        "first_mapped": first,
        "bits": bits,
        "explanation": str(item.get("LUTExplanation", "")) or None,
        "input_rounding": "nearest",
    }


def _lut_data(item: Dataset) -> Any:
    data = item.get("LUTData")
    if data is None:
        return []
    value = data if not hasattr(data, "value") else data.value
    if isinstance(value, bytes):
        return np.frombuffer(value, dtype="<u2")
    if isinstance(value, int | float):
        return [value]
    return list(value)


def _window_values(ds: Dataset) -> tuple[list[float], list[float]]:
    def listed(keyword: str) -> list[float]:
        value = ds.get(keyword)
        if value is None or value == "":
            return []
        items = list(value) if not isinstance(value, str | int | float) and hasattr(value, "__iter__") else [value]
        return [float(v) for v in items]

    try:
        return listed("WindowCenter"), listed("WindowWidth")
    except (TypeError, ValueError) as exc:
        raise DicomInputError(f"malformed window values: {exc}") from exc

"""Step 3 of the grayscale pipeline (PS3.3 C.11.2): modality values to display values in [0, 1], for
:func:`radtrace.model.image.display_values`.

An explicit VOI LUT Sequence (indexed by integers, so the modality output is rounded first), else the windows in
order with their VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID), else the range of the modality output. A VOI
its function refuses, or that leaves the picture nearly blank, is passed over, recorded, for the next one; with
none usable, a range held by an extreme border or a few outliers is narrowed (see ``_range_voi``).
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from radtrace.errors import DicomInputError
from radtrace.model.modality_lut import big_endian, first_mapped, lut_entries

__all__ = [
    "BORDER_SPAN",
    "EXTREME_SHARE",
    "MIN_GRAY_LEVELS",
    "MIN_VISIBLE",
    "ROBUST_PERCENTILES",
    "apply_window",
    "choose_voi",
]

#: A VOI (window or LUT) that leaves fewer pixels than this between black and white shows the model a blank
#: picture: the next one is used (the films' own windows leave more than half; an absurd one almost none).
MIN_VISIBLE: Final = 0.10
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


def choose_voi(
    values: FloatImage, ds: Dataset, image: NDArray[np.bool_] | None = None, *, header_voi: bool = True
) -> tuple[FloatImage, Step]:
    """The first usable VOI of the header (LUT, then each window in order), else the full range.

    ``image``: the pixels that are the image (padding excluded), which alone are measured. ``header_voi`` False:
    the header's VOI LUT and windows are not applied (they are written for a Modality LUT's output, and that LUT
    was not applied: on the rescaled values a window can clip the film without leaving it blank); the range is
    used and, where the header had a VOI, ``header_voi_not_applied`` recorded.

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

    if not header_voi:
        display, range_step = _range_voi(values, inside)
        if ("VOILUTSequence" in ds and len(ds.VOILUTSequence)) or any(_window_values(ds)):
            range_step["header_voi_not_applied"] = "written for the Modality LUT's output, which was not applied"
        return display, range_step
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        try:
            display, lut_step = _explicit_voi_lut(values, ds.VOILUTSequence[0], big_endian=big_endian(ds))
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
    levels = int(np.count_nonzero(_levels(inside, (low, high))))
    candidates: list[tuple[str, float, float]] = []
    extremes = float(max(np.mean(inside == low), np.mean(inside == high)))
    between = (inside > low) & (inside < high)  # measured in place: a copy of them is 8 bytes a pixel
    if extremes > EXTREME_SHARE and np.count_nonzero(between) >= MIN_VISIBLE * inside.size:
        interior_low = float(np.min(inside, where=between, initial=high))
        interior_high = float(np.max(inside, where=between, initial=low))
        if interior_high - interior_low < BORDER_SPAN * (high - low):  # the extreme lies far from the image
            candidates.append(("range_without_extremes", interior_low, interior_high))
    if levels < MIN_GRAY_LEVELS:
        percentile_low, percentile_high = (float(v) for v in np.percentile(inside, ROBUST_PERCENTILES))
        candidates.append(("percentile_range", percentile_low, percentile_high))
    for kind, robust_low, robust_high in candidates:
        if robust_high <= robust_low:
            continue
        found = int(np.count_nonzero(_levels(inside, (robust_low, robust_high))))
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


def _levels(display: FloatImage, scale: tuple[float, float] | None = None) -> NDArray[np.int64]:
    """How many pixels hold each of the 256 gray levels once ``display`` (in [0, 1]) is in 8 bits; ``scale``:
    ``display`` is modality values, taken from ``low`` to ``high`` onto [0, 1] first (as :func:`_scaled` does).

    Counted a million pixels at a time, each chunk scaled in its own buffer: whole, the scaled copy and its
    integers added 16 to 24 bytes a pixel to the images already held, the worker's peak on a 49-megapixel film."""
    counts = np.zeros(256, dtype=np.int64)
    flat = display.reshape(-1)
    for start in range(0, flat.size, _LEVELS_CHUNK):
        chunk = flat[start : start + _LEVELS_CHUNK]
        if scale is None:
            scaled = np.multiply(chunk, 255.0)
        else:
            scaled = _scaled(chunk, *scale)
            scaled *= 255.0
        np.rint(scaled, out=scaled)  # in place, then 1 byte a pixel
        counts += np.bincount(scaled.astype(np.uint8), minlength=256)[:256]
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
    possible = int(np.count_nonzero(_levels(values, (low, high)))) if span > 0 else 1
    needed = min(MIN_GRAY_LEVELS, possible, most_levels or MIN_GRAY_LEVELS)
    return f"leaves {levels} gray levels (under {needed})" if levels < needed else None


def _explicit_voi_lut(values: FloatImage, item: Dataset, *, big_endian: bool) -> tuple[FloatImage, Step]:
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        table = np.asarray(lut_entries(item, big_endian=big_endian), dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomInputError(f"malformed VOI LUT Sequence: {exc}") from exc
    entries = entries or 65536
    if table.size == 0:
        raise DicomInputError("VOI LUT Sequence has no LUT Data")
    table = table[:entries]
    written, first = first, first_mapped(first, table.size, values)
    # The LUT is indexed by integer input values (PS3.3 C.11.2.1.1): round the modality output first,
    # then clamp below the first mapped value to the first entry and above the last to the last.
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, table.size - 1)
    top = float(2**bits - 1) if 8 <= bits <= 16 else float(table.max() or 1.0)
    peak = float(table.max())
    # Descriptors that understate the output depth exist, and ones that overstate it (16 bits over 12-bit data,
    # the film then shown in its darkest sixteenth): where the data need 4 bits fewer or any more, their depth
    # is the LUT's, as Cornerstone derives it from the data (dcmtk: dcm2pnm --ignore-vlut-depth)
    data_bits = math.ceil(math.log2(peak + 1)) if peak > 0 else 0
    overstated = peak > 0 and (peak + 1) * 16 <= top + 1
    if peak > top or overstated:
        top = float(2**data_bits - 1)
    step: Step = {
        "step": "voi",
        "kind": "lut",
        "entries": int(table.size),
        "first_mapped": first,
        "bits": bits,
        "explanation": str(item.get("LUTExplanation", "")) or None,
        "input_rounding": "nearest",
    }
    if first != written:
        step["first_mapped_written"] = written  # as US, read as signed
    if table.size < entries:  # the data hold fewer entries than the descriptor counts: inputs above clamp to the last
        step["entries_written"] = entries
    if overstated:
        step["bits_of_data"] = data_bits
    return np.clip(table[index] / top, 0.0, 1.0), step


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

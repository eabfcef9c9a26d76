"""Whether a chest radiograph's picture looks like a negative: a plausibility check on its pixels.

The Photometric Interpretation decides which end of the gray scale is white (:func:`header_polarity`).
Some CR and DX systems write MONOCHROME1 over pixels that are MONOCHROME2 (or the reverse); the picture is then a
negative, and nothing in the header says so. This check measures two things every chest radiograph shows the
right way round, on the picture after the VOI and the inversion (0 = black):

* ``mediastinum_over_lungs``: the central vertical band (spine and mediastinum, 42-58 % of the width) is brighter
  than the lung fields on either side (18-35 % and 65-82 %), over the middle rows (20-70 % of the height), each
  column taken at its median; positive on a frontal film, small on a lateral one;
* ``centre_over_border``: the image's centre (the middle half each way) is brighter than its border (the outer
  3 %), each at its median: the air around the body and the direct exposure are black. A collimated CR film's
  unexposed border is white, which the first measure outweighs on the films measured.

Their sum is the ``score``; both measures change sign exactly when the picture is inverted (medians of ``1 - v``),
so the score of a film's negative is minus its own. Above :data:`SCORE_MARGIN` the picture is ``normal``, below
minus it ``probably inverted``, between ``undecided``. Measured on the real films in tests/data/real-cxr (four
human frontal films, three images, and a canine lateral): scores +0.18 to +0.55 as stored, the negated values
inverted (tests/unit/test_realinput_polarity_check.py prints them). The picture is never flipped on the strength
of this: a wrong flip would hide a right header, so the suspicion is recorded for the radiologist and the audit.

Padding pixels (shown black, not image) are left out of every measure, and a padded frame around the image
is cut off first (its border is the image's). The picture is measured on a grid of
block means at most :data:`GRID` cells on its long side: 8 ms for a 2,000 px film (19 ms with padding).

:func:`polarity_records` reads back what an image's inversion step recorded against its polarity (this check's
``suspected_inversion``, and ``contradiction``, a Presentation LUT Shape that contradicts the Photometric
Interpretation): the one reader for ``radtrace model read``, the drafts and the console.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

__all__ = [
    "GRID",
    "NORMAL",
    "POLARITY_CONTRADICTION",
    "PROBABLY_INVERTED",
    "SCORE_MARGIN",
    "SUSPECTED_NEGATIVE",
    "UNDECIDED",
    "PolarityRecord",
    "header_polarity",
    "polarity_plausibility",
    "polarity_records",
]

#: The picture is measured on block means, at most this many on its long side.
GRID: Final = 128
#: A score further from 0 than this decides; nearer, the verdict is ``undecided``. The real films' smallest
#: score is 0.18 (see the module doc).
SCORE_MARGIN: Final = 0.05
#: Fewer cells than this on the short side (a picture under ~16 px): too small to say.
_MIN_CELLS: Final = 16
_ROWS: Final = (0.20, 0.70)
_CENTRE: Final = (0.42, 0.58)
_LUNGS: Final = ((0.18, 0.35), (0.65, 0.82))
_BORDER: Final = 0.03

NORMAL: Final = "normal"
PROBABLY_INVERTED: Final = "probably inverted"
UNDECIDED: Final = "undecided"

#: What the outputs and the worklist call an image whose pixels look like a negative (this check) ...
SUSPECTED_NEGATIVE: Final = "suspected-negative"
#: ... and one whose Presentation LUT Shape contradicts its Photometric Interpretation (:func:`header_polarity`).
POLARITY_CONTRADICTION: Final = "polarity-contradiction"
Step = dict[str, Any]
_CODE_STRING: Final = re.compile(r"[A-Z0-9 _]{1,16}")  # a DICOM CS value: safe in every output as it is


def header_polarity(ds: Dataset, photometric: str) -> tuple[bool, Step]:
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


def polarity_plausibility(display: NDArray[np.float64], padding: NDArray[np.bool_] | None = None) -> dict[str, Any]:
    """How plausible ``display`` (values in [0, 1], 0 = black) is as a chest radiograph the right way round.

    Returns ``{"verdict": "normal" | "probably inverted" | "undecided", "score", "mediastinum_over_lungs",
    "centre_over_border"}`` (scores rounded to 3 decimals), or a verdict ``undecided`` with ``why`` where the
    picture is too small or mostly padding to measure.
    """
    grid = _block_means(display, padding)
    found = np.isfinite(grid)
    if found.any():  # padding around the image (a frame, a mask): the image's own box is measured
        kept_rows, kept_columns = np.flatnonzero(found.any(axis=1)), np.flatnonzero(found.any(axis=0))
        grid = grid[kept_rows[0] : kept_rows[-1] + 1, kept_columns[0] : kept_columns[-1] + 1]
    rows, columns = grid.shape
    if min(rows, columns) < _MIN_CELLS or np.count_nonzero(np.isfinite(grid)) < grid.size // 2:
        return {"verdict": UNDECIDED, "why": "too small or mostly padding to measure"}
    with warnings.catch_warnings():  # an all-padding column or band is NaN, and left out
        warnings.simplefilter("ignore", RuntimeWarning)
        middle = grid[_span(rows, _ROWS)]
        profile = np.nanmedian(middle, axis=0)
        centre = float(np.nanmean(profile[_span(columns, _CENTRE)]))
        lungs = float(np.nanmean(np.concatenate([profile[_span(columns, band)] for band in _LUNGS])))
        edge = max(1, round(_BORDER * min(rows, columns)))
        border = np.concatenate(
            [grid[:edge].ravel(), grid[-edge:].ravel(), grid[:, :edge].ravel(), grid[:, -edge:].ravel()]
        )
        inner = float(np.nanmedian(grid[rows // 4 : rows - rows // 4, columns // 4 : columns - columns // 4]))
        outer = float(np.nanmedian(border))
    mediastinum, contrast = centre - lungs, inner - outer
    if not (math.isfinite(mediastinum) and math.isfinite(contrast)):
        return {"verdict": UNDECIDED, "why": "the regions measured are padding"}
    score = mediastinum + contrast
    verdict = NORMAL if score > SCORE_MARGIN else PROBABLY_INVERTED if score < -SCORE_MARGIN else UNDECIDED
    return {
        "verdict": verdict,
        "score": round(score, 3),
        "mediastinum_over_lungs": round(mediastinum, 3),
        "centre_over_border": round(contrast, 3),
    }


def _span(length: int, fractions: tuple[float, float]) -> slice:
    start = int(fractions[0] * length)
    return slice(start, max(start + 1, int(fractions[1] * length)))


def _block_means(display: NDArray[np.float64], padding: NDArray[np.bool_] | None) -> NDArray[np.float64]:
    """Means of ``display`` over square blocks, at most :data:`GRID` on the long side; NaN where a block is all
    padding (the last partial row and column of blocks are dropped)."""
    rows, columns = display.shape
    size = max(1, math.ceil(max(rows, columns) / GRID))
    cut_rows, cut_columns = rows // size * size, columns // size * size
    if cut_rows == 0 or cut_columns == 0:
        return np.empty((0, 0))
    shape = (cut_rows // size, size, cut_columns // size, size)
    values = display[:cut_rows, :cut_columns]
    if padding is None:
        return np.asarray(values.reshape(shape).mean(axis=(1, 3)), dtype=np.float64)
    image = ~padding[:cut_rows, :cut_columns]
    counts = image.reshape(shape).sum(axis=(1, 3))
    sums = np.where(image, values, 0.0).reshape(shape).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True)
class PolarityRecord:
    """One thing an image's inversion step recorded against its picture's polarity, as read back.

    ``kind`` is :data:`SUSPECTED_NEGATIVE` (``suspected_inversion``, or the check's verdict ``probably inverted``)
    or :data:`POLARITY_CONTRADICTION` (``contradiction``); ``recorded`` the step's own sentence for it where that
    is text. The header values are kept only when they are DICOM code strings and the measures only when they are
    finite numbers (None otherwise): a reading's JSON may have been edited in the database, and what is read here
    goes into drafts and pages. The measures are the check's, on a suspected negative only.
    """

    kind: str
    recorded: str | None
    photometric: str | None
    presentation_lut_shape: str | None
    score: float | None = None
    mediastinum_over_lungs: float | None = None
    centre_over_border: float | None = None


def polarity_records(preparation: Iterable[object]) -> tuple[PolarityRecord, ...]:
    """What an image's preparation (``SourceImage.preparation``, or its JSON in ``inference_completed`` and the
    console's reading) recorded against its polarity, in step order, a suspected negative before a contradiction
    of the same step. Anything but an inversion step that is a mapping is passed over."""
    records: list[PolarityRecord] = []
    for step in preparation:
        if not isinstance(step, Mapping) or step.get("step") != "inversion":
            continue
        photometric = _code_string(step.get("photometric"))
        shape = _code_string(step.get("presentation_lut_shape"))
        check = step.get("polarity_check")
        check = check if isinstance(check, Mapping) else {}
        if "suspected_inversion" in step or check.get("verdict") == PROBABLY_INVERTED:
            records.append(
                PolarityRecord(
                    SUSPECTED_NEGATIVE,
                    _text(step.get("suspected_inversion")),
                    photometric,
                    shape,
                    score=_finite(check.get("score")),
                    mediastinum_over_lungs=_finite(check.get("mediastinum_over_lungs")),
                    centre_over_border=_finite(check.get("centre_over_border")),
                )
            )
        if "contradiction" in step:
            records.append(PolarityRecord(POLARITY_CONTRADICTION, _text(step.get("contradiction")), photometric, shape))
    return tuple(records)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _code_string(value: object) -> str | None:
    """A header value the inversion step recorded, when it is a DICOM code string (else None: not shown)."""
    return value if isinstance(value, str) and _CODE_STRING.fullmatch(value) else None


def _finite(value: object) -> float | None:
    """A measure the check recorded, when it is a finite number (JSON keeps NaN; an edited row may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)

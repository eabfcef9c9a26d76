"""Which images of a study the model is shown: one frontal chest image, and a lateral where a profile takes one.

A view is read from, in order of trust: the View Code Sequence (0054,0220, CID 4010 codes or meanings), View
Position (0018,5101), then free-text descriptions (series, protocol, acquisition processing, image comments).
PA is preferred over AP; an AP (or portable/supine) image is used when it is the only frontal one and flagged,
because heart size and mediastinal width are overstated on AP films. Images of another body part are never used.
With no frontal image the outcome is the skip reason :data:`NO_FRONTAL`.

Body Part Examined names the chest when one of its words (split at spaces and underscores) is a chest word:
CHEST, THORAX, LUNG, RIBS (the routing's defaults), TORSO, and the Spanish and Portuguese TORAX and PECHO that
Iberian and Latin American archives send (e.g. ``CHEST PA``, ``CHEST_TO_PELVIS``, ``TORAX``). An image smaller
than :data:`MIN_READABLE_SIDE` on a side (an icon, a thumbnail, a cropped scout) is never chosen: upscaled to the
model's picture it would read as a film; a study with nothing larger is skipped with :data:`TOO_SMALL`.
A site's own chest words (``listener.routing.chest_body_parts``, given as ``chest_body_parts``) count too, whole or
as a word, as routing counts them: a study routing sends to the model is never skipped here for its body part.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from radtrace.dicom_listener.attributes import names_body_part

__all__ = [
    "DX_FOR_PROCESSING",
    "MIN_READABLE_SIDE",
    "NO_FRONTAL",
    "TOO_SMALL",
    "ViewChoice",
    "ViewReading",
    "choose_views",
    "names_chest",
    "read_view",
]

NO_FRONTAL: Final = "no frontal chest image"
#: The skip reason of a study whose only frontal chest images are smaller than :data:`MIN_READABLE_SIDE`.
TOO_SMALL: Final = "no frontal chest image large enough to read"
#: Fewest pixels on an image's shorter side for it to be read (the model's smallest picture is 56 px a side).
MIN_READABLE_SIDE: Final = 32
#: Digital X-Ray Image Storage - For Processing (PS3.4 B.5).
DX_FOR_PROCESSING: Final = "1.2.840.10008.5.1.4.1.1.1.1.1"

Projection = Literal["PA", "AP", "LL", "RL", "LATERAL"]
Role = Literal["frontal", "lateral"]

# CID 4010 "DX View" (SNOMED CT, and the retired SRT codes older modalities still send).
_VIEW_CODES: Final[dict[str, Projection]] = {
    "272479007": "PA",
    "R-10214": "PA",
    "399348003": "AP",
    "R-10206": "AP",
    "399173006": "LL",
    "R-10236": "LL",
    "399198007": "RL",
    "R-10232": "RL",
    "399067008": "LATERAL",
    "R-10230": "LATERAL",
}
_VIEW_POSITIONS: Final[dict[str, Projection]] = {
    "PA": "PA",
    "AP": "AP",
    "LL": "LL",
    "RL": "RL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
    "LATERAL LEFT": "LL",
    "LATERAL RIGHT": "RL",
}
_TEXT_PATTERNS: Final[tuple[tuple[re.Pattern[str], Projection], ...]] = (
    (re.compile(r"\bPOSTERO[- ]?ANTERIOR\b|\bPA\b"), "PA"),
    (re.compile(r"\bANTERO[- ]?POSTERIOR\b|\bAP\b|\bPORTABLE\b|\bSUPINE\b|\bBEDSIDE\b"), "AP"),
    (re.compile(r"\bLEFT LAT(ERAL)?\b|\bLAT(ERAL)? LEFT\b|\bLL\b"), "LL"),
    (re.compile(r"\bRIGHT LAT(ERAL)?\b|\bLAT(ERAL)? RIGHT\b|\bRL\b"), "RL"),
    (re.compile(r"\bLAT(ERAL)?\b"), "LATERAL"),
)
_TEXT_KEYWORDS: Final = ("SeriesDescription", "ProtocolName", "AcquisitionDeviceProcessingDescription", "ImageComments")
_PORTABLE: Final = re.compile(r"\bPORTABLE\b|\bSUPINE\b|\bBEDSIDE\b|\bMOBILE\b")
_CHEST_WORDS: Final = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "RIBS", "TORSO", "TORAX", "PECHO"})


@dataclass(frozen=True)
class ViewReading:
    """What one image's header says about its view."""

    projection: Projection | None
    source: Literal["view_code", "view_position", "description"] | None
    chest: bool
    portable: bool

    @property
    def role(self) -> Role | None:
        """Frontal (PA, AP), lateral (LL, RL, lateral) or unknown."""
        if self.projection in ("PA", "AP"):
            return "frontal"
        return None if self.projection is None else "lateral"


@dataclass(frozen=True)
class ViewChoice:
    """The images chosen from a study (indexes into the sequence given) and why."""

    frontal: int | None
    lateral: int | None
    views: tuple[ViewReading, ...]
    flags: tuple[str, ...]
    """``ap`` (frontal is AP), ``portable``, ``view-from-description`` (no coded or positional view),
    ``view-unknown`` (no view recorded anywhere; read because ``accept_unknown_view`` was set)."""
    too_small: bool = False
    """No frontal image was chosen, but there was one (or, read as unknown, a chest image) too small to read."""

    @property
    def skip_reason(self) -> str | None:
        """:data:`NO_FRONTAL` (or :data:`TOO_SMALL`) when there is nothing to read, else ``None``."""
        if self.frontal is not None:
            return None
        return TOO_SMALL if self.too_small else NO_FRONTAL


def read_view(ds: Dataset, chest_body_parts: Collection[str] = ()) -> ViewReading:
    """Classify one image's view from its header (see the module doc for the order).

    ``chest_body_parts``: the site's chest words (``listener.routing.chest_body_parts``), besides the built-in ones.
    """
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    chest = not body_part or names_chest(body_part, chest_body_parts)
    texts = " ".join(str(ds.get(keyword, "") or "") for keyword in _TEXT_KEYWORDS).upper()
    portable = bool(_PORTABLE.search(texts))
    coded = _from_view_code(ds)
    if coded is not None:
        return ViewReading(coded, "view_code", chest, portable)
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    if position in _VIEW_POSITIONS:
        return ViewReading(_VIEW_POSITIONS[position], "view_position", chest, portable)
    for pattern, projection in _TEXT_PATTERNS:
        if pattern.search(texts):
            return ViewReading(projection, "description", chest, portable)
    return ViewReading(None, None, chest, portable)


def names_chest(body_part: str, chest_body_parts: Collection[str] = ()) -> bool:
    """Whether a Body Part Examined value names the chest: it is one of ``chest_body_parts`` (the routing's), or
    one of its words (split at spaces and underscores) is one of those or a built-in chest word."""
    site = {part.strip().upper() for part in chest_body_parts}
    return names_body_part(body_part.strip().upper(), _CHEST_WORDS | site)


def choose_views(
    datasets: Sequence[Dataset],
    *,
    want_lateral: bool = False,
    accept_unknown_view: bool = False,
    chest_body_parts: Collection[str] = (),
) -> ViewChoice:
    """Choose the frontal image (PA before AP) and, if ``want_lateral``, a lateral one.

    A For Presentation image wins over a DX For Processing one (raw detector values, not meant to be looked at;
    some modalities send both, the raw one often the larger), whatever their projections; among images of the
    same projection the larger image wins (a thumbnail is smaller), then the earlier instance. A For Processing
    image alone is still read.
    With ``accept_unknown_view``, a study with no
    recognised frontal image but a chest image whose view is recorded nowhere reads that image, flagged
    ``view-unknown``: many archives strip the view, and the model itself refuses a non-frontal picture. Among
    several such images, one whose Patient Orientation reads as lateral (rows toward A or P) comes last.
    ``chest_body_parts`` are the routing's chest words (``listener.routing.chest_body_parts``), accepted besides
    the built-in ones.
    """
    views = tuple(read_view(ds, chest_body_parts) for ds in datasets)

    def readable(i: int) -> bool:
        return _has_pixels(datasets[i]) and _shorter_side(datasets[i]) >= MIN_READABLE_SIDE

    def best(projections: tuple[Projection, ...]) -> int | None:
        candidates = [
            i for i, view in enumerate(views) if view.chest and view.projection in projections and readable(i)
        ]
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda i: (
                _for_processing(datasets[i]),
                projections.index(views[i].projection or "PA"),
                -_area(datasets[i]),
                i,
            ),
        )

    frontal = best(("PA", "AP"))
    flags: list[str] = []
    if frontal is None and accept_unknown_view:
        unknown = [i for i, view in enumerate(views) if view.chest and view.projection is None and readable(i)]
        if unknown:
            frontal = min(
                unknown,
                key=lambda i: (_oriented_laterally(datasets[i]), _for_processing(datasets[i]), -_area(datasets[i]), i),
            )
            flags.append("view-unknown")
    lateral = best(("LL", "RL", "LATERAL")) if want_lateral and frontal is not None else None
    if frontal is not None:
        chosen = views[frontal]
        if chosen.projection == "AP":
            flags.append("ap")
        if chosen.portable:
            flags.append("portable")
        if chosen.source == "description":
            flags.append("view-from-description")
    too_small = frontal is None and any(
        view.chest
        and (view.role == "frontal" or (accept_unknown_view and view.projection is None))
        and _has_pixels(datasets[i])
        and not readable(i)
        for i, view in enumerate(views)
    )
    return ViewChoice(frontal=frontal, lateral=lateral, views=views, flags=tuple(flags), too_small=too_small)


def _from_view_code(ds: Dataset) -> Projection | None:
    sequence = ds.get("ViewCodeSequence")
    if not sequence:
        return None
    item = sequence[0]
    value = str(item.get("CodeValue", "") or "").strip()
    if value in _VIEW_CODES:
        return _VIEW_CODES[value]
    meaning = str(item.get("CodeMeaning", "") or "").strip().upper()
    for pattern, projection in _TEXT_PATTERNS:
        if pattern.search(meaning):
            return projection
    return None


def _for_processing(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")).strip() == DX_FOR_PROCESSING


def _has_pixels(ds: Dataset) -> bool:
    return "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds


def _oriented_laterally(ds: Dataset) -> bool:
    """Whether Patient Orientation's row direction is anterior or posterior, as on a lateral film (PS3.3
    C.7.6.1.1.1); a frontal film's is left or right. Only a preference: real headers get it wrong."""
    value = ds.get("PatientOrientation")
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return str(values[0] or "").strip().upper()[:1] in ("A", "P") if values else False


def _shorter_side(ds: Dataset) -> int:
    try:
        return min(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    except (TypeError, ValueError):
        return 0


def _area(ds: Dataset) -> int:
    return int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)

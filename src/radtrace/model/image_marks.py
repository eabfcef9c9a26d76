"""What the picture the model read carries besides the film: lossy compression, text burned into the pixels.

A radiologist reading a draft must know when the model read a lossy image (compression artefacts can hide or
mimic a fine finding; PS3.3 C.7.6.1.1.5) or one with annotations burned in (text and markers the model may read
as anatomy, or as a finding). :func:`source_step` records both in the preparation, from the header and the
transfer syntax:

- Lossy Image Compression (0028,2110) ``01``, with its ratio (0028,2112) and method (0028,2114), as written;
- else a transfer syntax that is lossy whatever its codestream holds (JPEG Baseline and Extended, the video
  syntaxes, JPEG XL's JPEG recompression), or one that may be and whose codestream says it is: JPEG-LS with a
  NEAR above 0 (ITU-T T.87 C.2.3), JPEG 2000 or HTJ2K with the irreversible 9-7 wavelet (ITU-T T.800 A.6.1),
  or with the reversible 5-3 wavelet and coding passes left out (a rate-limited coding, read from the packet
  headers by :mod:`radtrace.model.j2k_passes`), or a codestream cut short (packets or tile-parts missing: quality
  layers dropped), or the 9-7 wavelet in a tile's or a component's own coding; under a "Lossless Only" JPEG 2000
  syntax too, which a sender may put on a lossy codestream (HTJ2K's code-blocks read as well: quality layers dropped
  under .201 are flagged). Where the codestream cannot say (JPEG XL, an HT code-block past its first HT set, a 5-3
  codestream the reader leaves unread), a syntax that allows lossy coding is flagged as the
  image having maybe been lossy compressed; under a "Lossless Only" one the label is taken, and
  ``lossless_not_verified`` recorded;
- Burned In Annotation (0028,0301) ``YES``.

:func:`image_marks` reads them back (and what :func:`radtrace.model.voi.choose_voi` recorded when it left the
header's windows for a Modality LUT it could not apply) as flags and sentences, the one reader for the drafts'
flags and image lines (:func:`radtrace.reporting.draft_notes.output_flags`,
:func:`radtrace.reporting.draft_notes.image_notes`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.uid import UID

from radtrace.dicom_listener.codestream import SizeError, first_fragment
from radtrace.model.j2k_passes import PASSES_LEFT_OUT, verdict

__all__ = [
    "BURNED_IN_ANNOTATION",
    "LOSSY_COMPRESSION",
    "WINDOW_NOT_APPLIED",
    "ImageMark",
    "image_marks",
    "source_step",
]

#: The flags the outputs list for them.
LOSSY_COMPRESSION: Final = "lossy-compression"
BURNED_IN_ANNOTATION: Final = "burned-in-annotation"
WINDOW_NOT_APPLIED: Final = "window-not-applied"

#: Lossy whatever the codestream: JPEG Baseline, Extended (and the retired DCT syntaxes), MPEG-2/4, HEVC, and JPEG
#: XL's recompression of a JPEG (lossless of a lossy image).
_LOSSY_SYNTAXES: Final = frozenset(
    {
        *(f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 52, 53, 54, 55, 56, 59, 60, 61, 62, 63, 64, 111)),
        *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
    }
)
_JPEG_LS_NEAR_LOSSLESS: Final = "1.2.840.10008.1.2.4.81"
_WAVELET_SYNTAXES: Final = frozenset({"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203"})
#: JPEG 2000 (Part 1 and 2) and HTJ2K "Lossless Only": a codestream under them that is lossy (the 9-7 wavelet,
#: coding passes left out) is a sender's mislabel, flagged as the codestream says.
_LOSSLESS_WAVELET_SYNTAXES: Final = frozenset(
    {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"}
)
#: The basis said where the transfer syntax allows lossy compression and the codestream could not tell: the
#: draft says the image may have been (not that it was).
_UNVERIFIED: Final = "transfer syntax allows lossy compression"
_MAYBE_LOSSY: Final = frozenset({"1.2.840.10008.1.2.4.112"})  # JPEG XL: lossy or not, not read here
Step = dict[str, Any]


def source_step(ds: Dataset) -> Step | None:
    """The ``source`` step: what the header and the transfer syntax say of the image's compression and burned-in
    text, or None when there is nothing to say (the image was never lossy compressed, no text is burned in)."""
    step: Step = {}
    lossy = str(ds.get("LossyImageCompression", "") or "").strip()
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    unjudged: list[str] = []
    if lossy == "01":
        step["lossy"] = {"basis": "(0028,2110) Lossy Image Compression 01"}
        ratios, methods = (_listed(ds.get(k)) for k in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"))
        if ratios:
            step["lossy"]["ratio"] = ratios
        if methods:
            step["lossy"]["method"] = methods
    elif (basis := _lossy_syntax(syntax, ds.get("PixelData"), unjudged)) is not None:
        step["lossy"] = {"basis": basis, "transfer_syntax": syntax}
    elif unjudged:  # a "Lossless Only" label taken as said: recorded that the codestream did not confirm it
        step["lossless_not_verified"] = {"basis": unjudged[0], "transfer_syntax": syntax}
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        step["burned_in_annotation"] = True
    return {"step": "source", **step} if step else None


def _listed(value: object) -> list[str]:
    if value is None or value == "":
        return []
    values = list(value) if isinstance(value, Iterable) and not isinstance(value, str | bytes) else [value]
    return [str(v).strip() for v in values if str(v).strip()][:4]


def _lossy_syntax(syntax: str, data: object, unjudged: list[str]) -> str | None:
    """Why the transfer syntax makes the image lossy, or None (with, in ``unjudged``, why a "Lossless Only"
    JPEG 2000 codestream's coding passes were not read, where they were not)."""
    if syntax in _LOSSY_SYNTAXES:
        return f"{UID(syntax).name}: a lossy transfer syntax"
    if syntax in _MAYBE_LOSSY:
        return f"{_UNVERIFIED} (codestream not inspected)"
    lossless_only = syntax in _LOSSLESS_WAVELET_SYNTAXES
    if syntax not in _WAVELET_SYNTAXES and syntax != _JPEG_LS_NEAR_LOSSLESS and not lossless_only:
        return None
    try:
        # the first frame whole for JPEG 2000, whose packet headers are read; JPEG-LS's scan header comes first
        limit = len(data) if isinstance(data, bytes) and syntax != _JPEG_LS_NEAR_LOSSLESS else 64 * 1024
        head = first_fragment(data, limit=limit) if isinstance(data, bytes) else b""
    except SizeError:
        head = b""
    if syntax == _JPEG_LS_NEAR_LOSSLESS:
        near = _jpeg_ls_near(head)
        if near is None:
            return f"{_UNVERIFIED} (codestream not read)"
        return f"JPEG-LS NEAR {near}: each value within {near} of the original" if near else None
    mislabel = f" under {UID(syntax).name}" if lossless_only else ""
    if not head:
        return None if lossless_only else f"{_UNVERIFIED} (codestream not read)"
    irreversible = _irreversible_wavelet(head)  # None: no COD in the main header (a tile-part's may rule)
    if irreversible:
        return f"JPEG 2000 irreversible 9-7 wavelet{mislabel}"
    complete, why = verdict(head)
    if complete is False:  # passes left out, the codestream cut short, or 9-7 in a tile's or component's coding
        return f"JPEG 2000 {'reversible 5-3 wavelet with ' if why == PASSES_LEFT_OUT else ''}{why}{mislabel}"
    wavelet = "reversible 5-3 wavelet, coding passes" if irreversible is False else "codestream"
    if complete is None and not lossless_only:  # HT sets past the first, an ROI, past the bounds: not judged
        return f"{_UNVERIFIED} ({wavelet} not read)"
    if complete is None:
        unjudged.append(f"{wavelet} not read ({why})")  # the reader's words, no data
    return None


def _jpeg_ls_near(head: bytes) -> int | None:
    """The NEAR parameter of a JPEG-LS codestream's first scan header (FFDA: Ls, Ns, Ns x (Ci, Tmi), NEAR)."""
    offset = 2
    while offset + 4 <= len(head) and head[offset] == 0xFF:
        marker = head[offset + 1]
        (length,) = struct.unpack_from(">H", head, offset + 2)
        if marker == 0xDA:
            count = head[offset + 4] if offset + 4 < len(head) else 0
            at = offset + 5 + 2 * count
            return head[at] if at < len(head) else None
        offset += 2 + length
    return None


def _irreversible_wavelet(head: bytes) -> bool | None:
    """Whether a JPEG 2000 codestream's COD segment (FF52, in the main header) names the 9-7 irreversible
    wavelet: its last SPcod byte, 0 (9-7) or 1 (5-3, reversible); None where the main header holds none (a
    tile-part header's COD is read by :func:`radtrace.model.j2k_passes.verdict`)."""
    if not head.startswith(b"\xff\x4f"):
        start = head.find(b"\xff\x4f\xff\x51")  # a JP2 file: its codestream box
        if start < 0:
            return None
        head = head[start:]
    offset = 2
    while offset + 4 <= len(head) and head[offset] == 0xFF:
        marker = head[offset + 1]
        if marker == 0x90:  # SOT: the main header has ended without a COD
            return None
        (length,) = struct.unpack_from(">H", head, offset + 2)
        if marker == 0x52:
            at = offset + 13
            return head[at] == 0 if at < len(head) else None
        offset += 2 + length
    return None


@dataclass(frozen=True)
class ImageMark:
    """One thing an image's preparation recorded that the draft must say: ``flag`` for the flag lists, ``text``
    one clause for the image's line."""

    flag: str
    text: str


def image_marks(preparation: Iterable[object]) -> tuple[ImageMark, ...]:
    """What an image's preparation (``SourceImage.preparation``, or its JSON in ``inference_completed``) recorded
    of lossy compression, burned-in text and a window not applied, as flags and sentences. A reading's JSON may
    have been edited: only finite numbers and short code-like texts are said."""
    marks: list[ImageMark] = []
    for step in preparation:
        if not isinstance(step, Mapping):
            continue
        if step.get("step") == "source":
            lossy = step.get("lossy")
            if isinstance(lossy, Mapping):
                ratio = [r for r in (_number(v) for v in _sequence(lossy.get("ratio"))) if r is not None]
                method = [m for m in (_code(v) for v in _sequence(lossy.get("method"))) if m is not None]
                said = f", ratio {' and '.join(f'{r:g}:1' for r in ratio)}" if ratio else ""
                said += f", {' and '.join(method)}" if method else ""
                basis = lossy.get("basis")
                was = "may have been" if isinstance(basis, str) and basis.startswith(_UNVERIFIED) else "was"
                marks.append(
                    ImageMark(
                        LOSSY_COMPRESSION,
                        f"the image {was} lossy compressed{said}: artefacts may hide or mimic a fine finding",
                    )
                )
            if step.get("burned_in_annotation") is True:
                marks.append(
                    ImageMark(
                        BURNED_IN_ANNOTATION,
                        "text or markers are burned into the pixels the model read (Burned In Annotation YES)",
                    )
                )
        elif step.get("step") == "voi" and step.get("header_voi_not_applied"):
            marks.append(
                ImageMark(
                    WINDOW_NOT_APPLIED,
                    "the Modality LUT could not be applied, so the header's window was not: shown over the image's "
                    "range, contrast may differ from the PACS",
                )
            )
    return tuple(marks)


def _sequence(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else [value] if value is not None else []


def _number(value: object) -> float | None:
    try:
        number = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _code(value: object) -> str | None:
    text = value if isinstance(value, str) else ""
    return text if 0 < len(text) <= 16 and all(c.isalnum() or c in "_ ." for c in text) else None

"""The DICOM attributes radtrace reads, and what it does when one is unusable (the table itself is in
:mod:`radtrace.dicom_listener.attribute_table`; its names are re-exported here).

Every attribute of the Patient, General Study, General Series, General Equipment, CR/DX/SC image and pixel
modules (and the VOI LUT, Modality LUT, Presentation LUT and Palette Color Lookup Table attributes of those IODs)
that the listener, the model or the reporting code reads, by keyword or by tag number, is a row of
:data:`ATTRIBUTES`; ``tests/unit/test_attribute_table.py`` scans those packages (this module's readers too).
Its tag, VR and VM come from pydicom's copy of the PS3.6 data dictionary, so the table cannot disagree with the
standard on them. Each row says:

- ``key``: the instance is refused (a DICOM failure status whose comment names the element) when the value is
  missing or unusable. Only identifiers a stored instance cannot exist without and the pixel description a
  decoder needs are key.
- otherwise the instance is accepted, the problem is recorded as a *deviation* on the instance row and in its
  audit event, and the worker makes its own working copy of the header usable for the model (:func:`normalised`:
  a value invalid for its VR is dropped, or emptied for a Type 2 attribute; extra values of a single-valued
  attribute are dropped; over-long text is cut to the VR's length; control characters the VR does not allow are
  removed; a code string is upper-cased). Patient and study attributes are made safe by the reporting code, for
  each output. The spooled file is never changed.

The ablation suite (``tests/integration/test_ablation.py``) derives its variants from this table, and the
conformance statement's input section is checked against it (``tests/unit/test_attribute_table.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from radtrace.dicom_listener.attribute_table import (
    ATTRIBUTES,
    IMAGE_SOP_CLASSES,
    SECONDARY_CAPTURE_SOP_CLASSES,
    Attribute,
    Reader,
    by_keyword,
    conformance_table,
    format_tag,
)

__all__ = [
    "ATTRIBUTES",
    "IMAGE_SOP_CLASSES",
    "MAX_DEVIATIONS",
    "PALETTE_COLOURS",
    "SECONDARY_CAPTURE_SOP_CLASSES",
    "Attribute",
    "Deviation",
    "by_keyword",
    "conformance_table",
    "deviations",
    "format_tag",
    "names_body_part",
    "normalised",
    "palette_descriptor",
    "palette_problem",
    "pixel_aspect_ratio",
    "pixel_padding_range",
    "problem_of",
    "rescale_slope",
    "value_length",
    "vr_problem",
]

#: At most this many deviations are kept per instance (a hostile header cannot grow the row without bound).
MAX_DEVIATIONS: Final = 32

# PS3.5 6.2: the longest value each VR allows, in characters (None: no limit that matters here).
_MAX_CHARS: Final[dict[str, int]] = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240, "PN": 64,
    "SH": 16, "ST": 1024, "TM": 14, "UI": 64,
}  # fmt: skip
_BULK_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_TEXT_VRS: Final = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_MULTILINE_VRS: Final = frozenset({"LT", "ST", "UT"})  # may hold CR, LF, FF and TAB (PS3.5 6.1.3)
_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "AS": re.compile(r"\d{3}[DWMY]"),
    "CS": re.compile(r"[A-Z0-9 _]*"),
    "DA": re.compile(r"\d{8}"),
    "DS": re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"),
    "IS": re.compile(r"[+-]?\d+"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "UI": re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*"),
}
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # ESC (0x1b) switches ISO 2022 sets
_SHORT_CONTROL: Final = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")


_NONZERO: Final = frozenset({"Rows", "Columns", "BitsStored", "BitsAllocated", "SamplesPerPixel"})
_PIXEL_KEYS: Final = frozenset(a.keyword for a in ATTRIBUTES if a.key and a.module == "Image Pixel")


@dataclass(frozen=True)
class Deviation:
    """One attribute that is missing or not valid for its VR, as recorded with the instance (no value in it)."""

    tag: str
    keyword: str
    problem: str

    def as_json(self) -> dict[str, str]:
        """The plain-data form kept on the instance row and in the audit event."""
        return {"tag": self.tag, "keyword": self.keyword, "problem": self.problem}

    def comment(self) -> str:
        """``(0020,000D) Study Instance UID: not a valid UID``: the status comment of a refusal."""
        name = dictionary_description(Tag(int(self.tag[1:5], 16), int(self.tag[6:10], 16))) or self.keyword
        return f"{self.tag} {name}: {self.problem}"


def _values(value: Any) -> list[Any]:
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [] if value is None or value == "" else [value]


def _vm_allows(vm: str, count: int) -> bool:
    if count <= 1:
        return True
    if "-" not in vm:
        return count == int(vm)
    low, high = vm.split("-")
    if high.endswith("n"):
        step = int(high[:-1] or 1)
        return count >= int(low) and (count - int(low)) % step == 0 if step > 1 else count >= int(low)
    return int(low) <= count <= int(high)


def vr_problem(vr: str, value: Any, vm: str = "1") -> str | None:
    """Why ``value`` is not a valid ``vr`` value with multiplicity ``vm``, or None. Never quotes the value."""
    values = _values(value)
    if not _vm_allows(vm, len(values)):
        return f"{len(values)} values where {vm} allowed"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD"):
        if any(not isinstance(v, int | float) for v in values):
            return f"not a valid {vr} value"
        return None
    for item in values:
        if isinstance(item, bytes):
            return f"not a valid {vr} value"
        text = str(item)
        stripped = text.rstrip(" \x00") if vr != "UI" else text.rstrip("\x00")
        limit = _MAX_CHARS.get(vr)
        pattern = _PATTERNS.get(vr)
        if vr in ("DA", "TM", "AS") and pattern is not None and not pattern.fullmatch(stripped):
            return f"not a valid {vr} value"  # a wrong format says more than its length
        if vr == "PN":
            if any(len(group) > 64 for group in stripped.split("=")):
                return "longer than 64 characters (VR PN)"
            if any(group.count("^") > 4 for group in stripped.split("=")):
                return "more than 5 name components (VR PN)"
        elif limit is not None and len(stripped) > limit:
            return f"longer than {limit} characters (VR {vr})"
        if pattern is not None and not pattern.fullmatch(stripped.strip() if vr in ("DS", "IS", "CS") else stripped):
            return "not a valid UID" if vr == "UI" else f"not a valid {vr} value"
        if vr in _TEXT_VRS:
            control = _CONTROL if vr in _MULTILINE_VRS else _SHORT_CONTROL
            if control.search(stripped):
                return f"control characters not allowed in VR {vr}"
    return None


def value_length(ds: Dataset, tag: int) -> int:
    """The length in bytes of an element's value, without loading a deferred one (0xFFFFFFFF: undefined)."""
    element = ds.get_item(tag, keep_deferred=True)
    if isinstance(element, RawDataElement):
        return int(element.length)
    if element is not None and element.is_undefined_length:
        return 0xFFFFFFFF
    value = element.value if element is not None else None
    return len(value) if isinstance(value, bytes | str | list | Sequence) else (0 if value is None else 1)


def problem_of(ds: Dataset, attribute: Attribute) -> str | None:
    """What is wrong with ``attribute`` in ``ds`` (``missing``, ``empty``, a VR or VM problem), or None.

    ``missing`` and ``empty`` are problems only where they matter: for a Type 1 attribute, or for the pixel
    description of an instance that has pixel data.
    """
    if attribute.keyword == "TransferSyntaxUID":
        present = "TransferSyntaxUID" in getattr(ds, "file_meta", Dataset())
        value = ds.file_meta.get("TransferSyntaxUID") if present else None
    elif attribute.keyword == "PixelData":  # never loaded here: the listener reads headers only
        if attribute.tag not in ds:
            return "missing" if str(ds.get("SOPClassUID", "")) in IMAGE_SOP_CLASSES else None
        return "empty" if value_length(ds, attribute.tag) == 0 else None
    elif attribute.vr in _BULK_VRS:  # palette data, offset tables: bytes, read by length only (never loaded here)
        if attribute.tag not in ds:
            return None
        return "empty" if value_length(ds, attribute.tag) == 0 and attribute.type in ("1", "1C") else None
    else:
        present = attribute.tag in ds
        value = ds[attribute.tag].value if present else None
    if attribute.keyword in _PIXEL_KEYS and attribute.keyword != "PixelData" and "PixelData" not in ds:
        return None  # no pixels, nothing to decode (a misrouted SR, a KO): the study is skipped, not refused
    if attribute.keyword == "NumberOfFrames" and not present:
        return None
    if not present:
        return "missing" if attribute.type == "1" else None
    if value is None or value == "" or (isinstance(value, Sequence | bytes) and len(value) == 0):
        return "empty" if attribute.type in ("1", "1C") else None
    if attribute.vr == "SQ":
        return None
    problem = vr_problem(attribute.vr, value, attribute.vm)
    if problem is not None:
        return problem
    values = [str(v).strip() for v in _values(value)]
    if attribute.allowed and any(v.upper() not in attribute.allowed for v in values):
        return "not one of the defined values"
    if attribute.keyword in _NONZERO and any(int(v) == 0 for v in values):
        return "zero"
    if attribute.keyword == "NumberOfFrames" and any(int(float(v)) < 1 for v in values):
        return "below 1"
    if attribute.keyword == "BitsStored" and int(values[0]) > int(ds.get("BitsAllocated", 0) or 0):
        return "more than Bits Allocated"
    if attribute.keyword == "PhotometricInterpretation":
        problem = _samples_problem(values[0].upper(), ds.get("SamplesPerPixel"))
        if problem is None and values[0].upper() == "PALETTE COLOR":
            problem = palette_problem(ds)
        return problem
    return None


def _samples_problem(photometric: str, samples: Any) -> str | None:
    """Whether Samples per Pixel contradicts ``photometric`` (PS3.3 C.7.6.3.1.2): one sample for monochrome and
    palette images, three for colour. An unusable Samples per Pixel is that attribute's own problem."""
    try:
        count = int(samples)
    except (TypeError, ValueError):
        return None
    needed = 1 if photometric in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR") else 3
    if count == needed:
        return None
    # at most 24 characters: the whole refusal comment, (0028,0004) and its name first, fits one LO (64)
    return f"needs {needed} sample{'s' if needed > 1 else ''}, has {count}"


PALETTE_COLOURS: Final = ("Red", "Green", "Blue")


def palette_descriptor(ds: Dataset) -> tuple[int, int, int] | None:
    """The Palette Color LUT Descriptor shared by the three colours: (entries, first mapped value, bits per entry),
    0 entries read as 65536 (PS3.3 C.7.6.3.1.5); None when a colour has none, or one unlike the others."""
    found = set()
    for colour in PALETTE_COLOURS:
        value = ds.get(f"{colour}PaletteColorLookupTableDescriptor")
        try:
            entries, first, bits = (int(v) for v in _values(value))
        except (TypeError, ValueError):
            return None
        found.add((entries or 65536, first, bits))
    return found.pop() if len(found) == 1 else None


def pixel_padding_range(ds: Dataset) -> tuple[int, int] | None:
    """The stored values that are padding, not image (PS3.3 C.7.5.1.1.2): Pixel Padding Value alone, or the
    inclusive range between it and Pixel Padding Range Limit; None where neither is a usable number."""
    try:
        value = int(ds.get("PixelPaddingValue"))
        limit = ds.get("PixelPaddingRangeLimit")
        low, high = sorted((value, int(limit) if limit is not None else value))
    except (TypeError, ValueError):
        return None  # none, or not a number (recorded as a deviation where the listener saw it)
    return low, high


def pixel_aspect_ratio(ds: Dataset) -> float | None:
    """Height over width of one pixel: Pixel Spacing, else Imager Pixel Spacing (row spacing, column spacing;
    PS3.3 10.7.1.3), else Pixel Aspect Ratio (vertical, horizontal; C.7.6.3.1.7). None where none of them holds
    two positive numbers."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio"):
        try:
            vertical, horizontal = (float(v) for v in _values(ds.get(keyword)))
        except (TypeError, ValueError):
            continue
        if vertical > 0 and horizontal > 0 and math.isfinite(vertical / horizontal):
            return vertical / horizontal
    return None


def rescale_slope(ds: Dataset) -> float:
    """Rescale Slope (0028,1053) as the rescale applies it (PS3.3 C.11.1.1.2): 1 where absent or empty, else its value.

    The one reading of the slope for the worker's rescale (:func:`radtrace.model.modality_lut.modality_lut`) and the
    listener's refusal of a slope of 0 (:mod:`radtrace.dicom_listener.headers`), so the listener refuses exactly
    what the worker would: "0", "-0", "0.0E5", "1e-400" are all 0. A value that is no number raises ValueError or
    TypeError (several values: TypeError); the worker's :func:`normalised` copy holds none such."""
    written = ds.get("RescaleSlope")
    return 1.0 if written is None or written == "" else float(written)


def palette_problem(ds: Dataset) -> str | None:
    """Why the palette of a PALETTE COLOR image cannot be applied (PS3.3 C.7.6.3.1.5-6, C.7.9), in at most 24
    characters (the refusal comment names (0028,0004) first), or None. Read from lengths only: the LUT data of a
    header read with deferred values is not loaded."""
    for colour in PALETTE_COLOURS:
        if f"{colour}PaletteColorLookupTableDescriptor" not in ds:
            return f"no {colour} LUT descriptor"
    descriptor = palette_descriptor(ds)
    if descriptor is None:
        return "palette LUTs disagree"
    entries, _, bits = descriptor
    if bits not in (8, 16):
        return f"palette LUT of {bits} bits"
    for colour in PALETTE_COLOURS:
        plain = tag_for_keyword(f"{colour}PaletteColorLookupTableData")
        segmented = tag_for_keyword(f"Segmented{colour}PaletteColorLookupTableData")
        if plain is not None and plain in ds:
            # 16-bit words (PS3.3 C.7.6.3.1.6); 8-bit entries are also seen packed one per byte
            if value_length(ds, plain) < entries * (1 if bits == 8 else 2):
                return f"short {colour} palette data"
        elif segmented is None or segmented not in ds or value_length(ds, segmented) == 0:
            return f"no {colour} palette data"
    return None


def deviations(ds: Dataset, problems: Iterable[tuple[int, str]] = ()) -> Iterator[Deviation]:
    """Every table attribute with a problem, then each extra ``(tag, problem)``."""
    for attribute in ATTRIBUTES:
        problem = problem_of(ds, attribute)
        if problem is not None:
            yield Deviation(format_tag(attribute.tag), attribute.keyword, problem)
    for tag, problem in problems:
        yield Deviation(format_tag(tag), _keyword(tag), problem)


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or ("private" if Tag(tag).is_private else "unknown")


def _clean_text(vr: str, text: str) -> str:
    control = _CONTROL if vr in _MULTILINE_VRS else _SHORT_CONTROL
    text = control.sub("", text)
    limit = _MAX_CHARS.get(vr)
    if vr == "PN":
        groups = [g[:64] for g in text.split("=")]
        groups = ["^".join(g.split("^")[:5]) for g in groups]
        return "=".join(groups)
    return text[:limit] if limit is not None else text


def normalised(ds: Dataset, reader: Reader = "model") -> tuple[Dataset, list[str]]:
    """A working copy of ``ds`` whose optional attributes read by ``reader`` are usable, and what was done.

    See the module docstring for the rules. ``ds`` itself is not changed (its elements are shared, never
    modified: a changed one is replaced in the copy). Key attributes are left alone: an instance whose key
    attribute is unusable never got past the listener.
    """
    working = Dataset()
    meta = getattr(ds, "file_meta", None)
    working.file_meta = meta if meta is not None else FileMetaDataset()
    for element in ds:
        working.add(element)
    done: list[str] = []
    for attribute in ATTRIBUTES:
        if attribute.key or reader not in attribute.read_by or attribute.tag not in working:
            continue
        tag, element = attribute.tag, working[attribute.tag]
        if attribute.vr == "SQ":
            if not element.value or not _usable_items(attribute.keyword, element.value):
                del working[tag]
                done.append(f"{attribute.keyword}: dropped (empty or unusable items)")
            continue
        problem = problem_of(working, attribute)
        if problem is None:
            continue
        values = _values(element.value)
        if attribute.vr in _TEXT_VRS or attribute.vr == "CS":
            if not _vm_allows(attribute.vm, len(values)):
                values = values[:1]
            if attribute.vr == "CS":
                values = [str(v).strip().upper() for v in values]
            else:
                values = [_clean_text(attribute.vr, str(v)) for v in values]
            working[tag] = DataElement(tag, element.VR, values[0] if len(values) == 1 else values)
            if problem_of(working, attribute) is None:
                done.append(f"{attribute.keyword}: {problem}; cleaned")
                continue
        if attribute.type == "2":
            working[tag] = DataElement(tag, element.VR, None)
            done.append(f"{attribute.keyword}: {problem}; emptied")
        else:
            del working[tag]
            done.append(f"{attribute.keyword}: {problem}; dropped")
    return working, done


def _usable_items(keyword: str, items: Sequence) -> bool:
    """Whether a LUT or code sequence's first item holds what its reader needs."""
    item = items[0]
    if keyword in ("VOILUTSequence", "ModalityLUTSequence"):
        descriptor = item.get("LUTDescriptor")
        return descriptor is not None and len(_values(descriptor)) == 3 and item.get("LUTData") is not None
    if keyword == "ViewCodeSequence":
        return bool(item.get("CodeValue") or item.get("CodeMeaning"))
    return True


if __name__ == "__main__":  # python -m radtrace.dicom_listener.attributes: the table for docs/conformance.md
    print(conformance_table())


_BODY_PART_WORD_BREAK: Final = re.compile(r"[\s_]+")


def names_body_part(body_part: str, parts: Collection[str]) -> bool:
    """Whether a Body Part Examined value (stripped, upper-cased) is one of ``parts`` (upper-cased) or has one of
    them as a word, split at spaces and underscores (``CHEST PA``, ``CHEST_PA``): the routing's rule and the
    worker's choice of views match body parts alike."""
    return body_part in parts or not set(_BODY_PART_WORD_BREAK.split(body_part)).isdisjoint(parts)

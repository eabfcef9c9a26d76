"""An instance re-sent under a SOP Instance UID already held, in other bytes: the same content, or a change?

A PACS re-sends an instance transcoded (JPEG-LS or JPEG 2000 lossless first, Explicit VR Little Endian after a
routing rule changed), or the same data set with or without group lengths, another file meta group, its private
blocks at other element numbers. The file's hash differs; what the instance says does not. :func:`compare_files`
tells them apart by what the data set holds, not how it is written:

- the attributes, each as its value bytes (string values without trailing padding), sequences item by item
  (defined or undefined lengths alike), private elements named by their block's creator rather than the block
  number; left out: the file meta group, group lengths, Data Set Trailing Padding, the offset tables, Planar
  Configuration and Derivation Description (how a codec wrote the pixels: dcmcjpeg's lossless JPEG adds one);
- the pixels, decoded, every frame, values past Bits Stored cleared (a codec may keep them, PS3.5 8.1.1).

Equal attributes and equal pixels: :attr:`Likeness.SAME`. Pixels re-encoded lossily under the same UID (the new
copy in a lossy transfer syntax, or with lossy-compression attributes the held copy lacks; every other attribute
equal; PSNR at least :data:`LOSSY_COPY_MIN_PSNR_DB`): :attr:`Likeness.LOSSY_COPY`. DICOM requires a new SOP
Instance UID for an image compressed lossily (PS3.3 C.7.6.1.1.5): such a copy is not a new image of the patient,
only a worse one of the image held. Anything else (a corrected patient name, other pixels): :attr:`Likeness.CHANGED`,
naming the attributes that differ by tag, never by value. A file that cannot be read or decoded is
:attr:`Likeness.NOT_COMPARED`: treated as changed, as before this module.

Decoding is the costly part (about half a second for a 1955 x 1841 JPEG-LS film on one core): the listener
compares only when the UID was held before and the bytes differ, and in a child process
(:mod:`radtrace.dicom_listener.compare_child`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    JPEG2000,
    UID,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from radtrace.decoders import decoding_plugin

__all__ = ["LOSSY_COPY_MIN_PSNR_DB", "Comparison", "Content", "Likeness", "compare", "compare_files", "read_content"]

#: The lowest PSNR at which pixels re-encoded lossily are taken for a copy of the held image (a JPEG baseline at
#: IJG quality 75 of a radiograph is above 35 dB; another image, even of the same patient, far below 30).
LOSSY_COPY_MIN_PSNR_DB: Final = 30.0

_MAX_LISTED: Final = 16
_PIXEL_DATA: Final = 0x7FE00010
_PHOTOMETRIC: Final = 0x00280004
#: Written by how the pixels were encoded, not by what they show.
_ENCODING_ONLY: Final = frozenset(
    {
        0x00080001,  # Length to End (retired)
        0x00082111,  # Derivation Description: dcmcjpeg's lossless JPEG writes one
        0x00280006,  # Planar Configuration: the decoded frames are interleaved either way
        0x7FE00001,  # Extended Offset Table
        0x7FE00002,  # Extended Offset Table Lengths
        0x7FE00010,  # Pixel Data: compared decoded
        0xFFFCFFFC,  # Data Set Trailing Padding
    }
)
#: What a lossy re-encoding changes besides the pixels (PS3.3 C.7.6.1.1.5, C.12.1.1.3; dcmtk writes all of them).
_LOSSY_MARKS: Final = frozenset(
    {
        0x00080008,  # Image Type: DERIVED
        0x00082112,  # Source Image Sequence
        0x00089215,  # Derivation Code Sequence: (113040, DCM, "Lossy Compression")
        0x00282110,  # Lossy Image Compression: 01 (the key (0x0028, "", 0x2110) below)
        0x00282112,  # Lossy Image Compression Ratio
        0x00282114,  # Lossy Image Compression Method
    }
)
_LOSSY_SYNTAXES: Final = frozenset(str(uid) for uid in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless))
#: The colour transforms of a JPEG 2000 codestream: the decoder gives RGB (PS3.5 8.2.4).
_CODESTREAM_COLOUR: Final = {b"YBR_RCT": b"RGB", b"YBR_ICT": b"RGB"}
_STRING_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_PSNR_ROWS: Final = 256

Key = tuple[int, str, int]


class Likeness(enum.StrEnum):
    """What a re-sent instance is to the copy held under its SOP Instance UID."""

    SAME = "same content"
    LOSSY_COPY = "lossy copy"
    CHANGED = "changed"
    NOT_COMPARED = "not compared"


@dataclasses.dataclass(frozen=True)
class Content:
    """A file's attributes (digest per attribute) and decoded pixels; ``problem`` where it could not be read."""

    transfer_syntax_uid: str
    attributes: dict[Key, bytes] = dataclasses.field(default_factory=dict)
    pixels: NDArray[Any] | None = None
    bits_stored: int = 0
    problem: str | None = None

    @property
    def lossy_syntax(self) -> bool:
        """Whether the file's transfer syntax compresses lossily (JPEG 2000 counts: it may be either)."""
        return self.transfer_syntax_uid in _LOSSY_SYNTAXES or self.transfer_syntax_uid == str(JPEG2000)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The outcome of comparing a re-sent instance with the copy held."""

    likeness: Likeness
    held_transfer_syntax_uid: str
    transfer_syntax_uid: str
    changed_attributes: tuple[str, ...] = ()
    pixels_equal: bool | None = None
    psnr_db: float | None = None
    problem: str | None = None
    seconds: float = 0.0

    @property
    def duplicate(self) -> bool:
        """Whether the re-sent instance is acknowledged as a duplicate (the held copy kept, no new version)."""
        return self.likeness in (Likeness.SAME, Likeness.LOSSY_COPY)

    def reason(self) -> str:
        """The audit event's sentence: what was decided and why, naming transfer syntaxes and tags only."""
        sent_as = syntax_name(self.transfer_syntax_uid)
        if self.likeness is Likeness.SAME:
            return f"same content, re-sent as {sent_as}"
        if self.likeness is Likeness.LOSSY_COPY:
            return (
                f"lossy re-encoding of the held instance under the same SOP Instance UID, re-sent as {sent_as} "
                f"(PSNR {self.psnr_db:.1f} dB): the held copy is kept (a lossy copy needs a new UID, PS3.3 C.7.6.1.1.5)"
            )
        if self.likeness is Likeness.NOT_COMPARED:
            return f"content not compared ({self.problem}): taken as a new version"
        what = list(self.changed_attributes)
        if self.pixels_equal is False:
            what.append("pixel values")
        return "changed: " + ", ".join(what)

    def payload(self) -> dict[str, Any]:
        """The audit payload's fields for this comparison."""
        body: dict[str, Any] = {
            "content": self.likeness.value,
            "content_reason": self.reason(),
            "compare_ms": round(self.seconds * 1000, 1),
        }
        if self.held_transfer_syntax_uid:  # unknown where the comparing process did not answer
            body["held_transfer_syntax_uid"] = self.held_transfer_syntax_uid
        if self.changed_attributes:
            body["changed_attributes"] = list(self.changed_attributes)
        if self.pixels_equal is not None:
            body["pixels_equal"] = self.pixels_equal
        if self.psnr_db is not None:
            body["psnr_db"] = round(self.psnr_db, 1) if math.isfinite(self.psnr_db) else None
        return body


def syntax_name(uid: str) -> str:
    """A transfer syntax's name as pydicom knows it, else its UID."""
    name = UID(uid).name
    return name if name and name != uid else uid


def compare_files(held: Path, resent: Path) -> Comparison:
    """Compare the file held under a SOP Instance UID with one re-sent under it (see the module docstring)."""
    started = time.perf_counter()
    result = compare(read_content(held), read_content(resent))
    return dataclasses.replace(result, seconds=time.perf_counter() - started)


def compare(held: Content, resent: Content) -> Comparison:
    """The pure rule over two files' contents."""
    verdict = functools.partial(
        Comparison, held_transfer_syntax_uid=held.transfer_syntax_uid, transfer_syntax_uid=resent.transfer_syntax_uid
    )
    problem = f"held copy: {held.problem}" if held.problem is not None else resent.problem
    if problem is not None:
        return verdict(Likeness.NOT_COMPARED, problem=problem)
    changed = sorted(
        k
        for k in held.attributes.keys() | resent.attributes.keys()
        if held.attributes.get(k) != resent.attributes.get(k)
    )
    marks = [k for k in changed if k[1] == "" and (k[0] << 16 | k[2]) in _LOSSY_MARKS]
    others = [k for k in changed if k not in marks]
    if held.pixels is None or resent.pixels is None:
        if not changed and held.pixels is None and resent.pixels is None:
            return verdict(Likeness.SAME)
        return verdict(Likeness.CHANGED, changed_attributes=_listed(changed), pixels_equal=False)
    same_geometry = held.pixels.shape == resent.pixels.shape and held.pixels.dtype.kind == resent.pixels.dtype.kind
    equal = same_geometry and bool(np.array_equal(held.pixels, resent.pixels))
    if not changed and equal:
        return verdict(Likeness.SAME, pixels_equal=True)
    flagged_lossy = resent.attributes.get((0x0028, "", 0x2110)) == _digest(b"01")
    if not others and same_geometry and not equal and (resent.lossy_syntax or (marks and flagged_lossy)):
        psnr = _psnr(held.pixels, resent.pixels, max(held.bits_stored, 1))
        likeness = Likeness.LOSSY_COPY if psnr >= LOSSY_COPY_MIN_PSNR_DB else Likeness.CHANGED
        return verdict(likeness, changed_attributes=_listed(changed), pixels_equal=False, psnr_db=psnr)
    return verdict(Likeness.CHANGED, changed_attributes=_listed(changed), pixels_equal=equal)


def _listed(changed: list[Key]) -> tuple[str, ...]:
    return tuple(_tag_text(k) for k in changed[:_MAX_LISTED])


def read_content(path: Path) -> Content:
    """A file's :class:`Content`; never raises (``problem`` says what went wrong)."""
    syntax = ""
    try:
        with warnings.catch_warnings():  # pydicom's warnings quote values
            warnings.simplefilter("ignore")
            ds = dcmread(path, force=True)
            syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
            attributes = dict(_attributes(ds))
            pixels: NDArray[Any] | None = None
            bits = int(ds.get("BitsStored", 0) or 0)
            if _PIXEL_DATA in ds:
                plugin = decoding_plugin(syntax, bits)
                pixels = _to_bits_stored(pixel_array(ds, decoding_plugin=plugin), bits)
    except Exception as exc:  # a held or re-sent file the decoders refuse: not comparable, never a crash
        return Content(syntax, problem=f"{type(exc).__name__}: {str(exc)[:120]}")
    return Content(syntax, attributes, pixels, bits)


def _attributes(ds: Dataset) -> Iterator[tuple[Key, bytes]]:
    """Each attribute's key (group, private creator or "", element) and the digest of its value as written."""
    # Taken before anything is converted: converting a sequence makes pydicom convert Pixel Representation too.
    elements = list(ds.elements())
    creators: dict[tuple[int, int], str] = {}
    for element in elements:
        tag = int(element.tag)
        group, number = tag >> 16, tag & 0xFFFF
        if group & 1 and 0x0010 <= number <= 0x00FF:
            creators[(group, number)] = _text(_value_bytes(element, "LO"))
    for element in elements:
        tag = int(element.tag)
        group, number = tag >> 16, tag & 0xFFFF
        if number == 0 or group == 0x0002 or tag in _ENCODING_ONLY or (group & 1 and number <= 0x00FF):
            continue
        key: Key = (group, "", number)
        if group & 1:
            key = (group, creators.get((group, number >> 8), f"?{number >> 8:02x}"), number & 0xFF)
        # Public attributes by the dictionary (an implicit VR file names no VR); private ones as written.
        vr = element.VR if group & 1 else _dictionary_vr(tag) or element.VR
        if vr == "SQ":
            items = ds[tag].value
            digest = hashlib.sha256(b"SQ%d" % len(items))
            for item in items:
                digest.update(b"item")
                for sub_key, sub_digest in sorted(_attributes(item)):
                    digest.update(repr(sub_key).encode() + sub_digest)
            yield key, digest.digest()
            continue
        value = _value_bytes(element, vr)
        if tag == _PHOTOMETRIC:
            value = _CODESTREAM_COLOUR.get(value, value)
        yield key, _digest(value)


def _value_bytes(element: DataElement | RawDataElement, vr: str | None) -> bytes:
    """An element's value as written (converted elements as their text), string padding removed."""
    value = element.value
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif value is None:
        data = b""
    elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        data = "\\".join(str(v) for v in value).encode("utf-8", "surrogateescape")
    else:
        data = str(value).encode("utf-8", "surrogateescape")
    return data.rstrip(b"\x00 ") if vr in _STRING_VRS else data


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _text(value: bytes) -> str:
    return value.decode("latin-1").strip()


def _tag_text(key: Key) -> str:
    group, creator, number = key
    return f"({group:04X},{number:04X})" if not creator else f"({group:04X},xx{number:02X})"


def _to_bits_stored(pixels: NDArray[Any], bits: int) -> NDArray[Any]:
    """Values past Bits Stored cleared (unsigned) or sign-extended (signed), as a decoder may leave them."""
    if not 0 < bits < 8 * pixels.dtype.itemsize or pixels.dtype.kind not in "iu":
        return pixels
    if pixels.dtype.kind == "u":
        cleared: NDArray[Any] = np.bitwise_and(pixels, np.asarray(2**bits - 1, dtype=pixels.dtype))
        return cleared
    shift = 8 * pixels.dtype.itemsize - bits
    extended: NDArray[Any] = (pixels << shift) >> shift
    return extended


def _psnr(held: NDArray[Any], resent: NDArray[Any], bits: int) -> float:
    """Peak signal-to-noise ratio of ``resent`` against ``held`` (peak: the Bits Stored range), row block by block."""
    squares = 0.0
    flat_held = held.reshape(held.shape[0], -1)
    flat_resent = resent.reshape(resent.shape[0], -1)
    for start in range(0, flat_held.shape[0], _PSNR_ROWS):
        difference = flat_held[start : start + _PSNR_ROWS].astype(np.float64) - flat_resent[start : start + _PSNR_ROWS]
        squares += float(np.square(difference).sum())
    mse = squares / max(held.size, 1)
    if mse == 0:
        return math.inf
    peak = float(2**bits - 1) if held.dtype.kind in "iu" else float(np.max(np.abs(held))) or 1.0
    return 10 * math.log10(peak * peak / mse)

"""Hostile deflated films whose harm is inside sequences, for tests and benches.

Each is the NIH real film saved Deflated Explicit VR Little Endian (PS3.5 A.5) with one shape written into its data
set as it is deflated (a large value is never held while writing):

- a View Code Sequence item carrying a private OB of zeros (sequence and item of undefined or defined length): the
  item's code must survive, the zeros must not be held;
- sequences nested ``depth`` deep (private sequences, each in the last one's item);
- one private sequence of ``items`` empty items (an item count bomb: 16 inflated bytes an item, a pydicom Dataset
  each);
- one item holding ``elements`` empty private elements (an element count bomb);
- a data set whose deflate stream ends inside a sequence item.

:data:`SHAPES` names the shapes used by the tests, the bench (``bench/deflate_nested.py``) and the hostile-film corpus.
:func:`shape_film` writes them into a film that is not deflated too (``syntax``: Explicit or Implicit VR Little
Endian; in implicit VR the bombs' sequence is Referenced Image Sequence (0008,1140), whose VR the dictionary gives).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

__all__ = ["SHAPES", "VIEW_CODE", "deflated_with", "plain_with", "shape_film"]

_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQUENCE_END: Final = 0xFFFEE0DD
_PRIVATE_SEQUENCE: Final = 0x00091012
_PUBLIC_SEQUENCE: Final = 0x00081140
_VIEW_CODE_SEQUENCE: Final = 0x00540220
#: The View Code Sequence item the shapes carry (postero-anterior, SNOMED-RT as PS3.16 CID 4010 has it).
VIEW_CODE: Final = ("R-10214", "SRT", "postero-anterior")


def _tag(tag: int) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def _element(tag: int, vr: str, value: bytes, implicit: bool = False) -> bytes:
    if len(value) % 2:
        value += b" "
    if implicit:
        return _tag(tag) + struct.pack("<L", len(value)) + value
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return _tag(tag) + vr.encode() + b"\0\0" + struct.pack("<L", len(value)) + value
    return _tag(tag) + vr.encode() + struct.pack("<H", len(value)) + value


def _delimiter(tag: int) -> bytes:
    return _tag(tag) + b"\0\0\0\0"


def _sequence_head(tag: int, length: int = _UNDEFINED, implicit: bool = False) -> bytes:
    return _tag(tag) + (b"" if implicit else b"SQ\0\0") + struct.pack("<L", length)


def _sequence(implicit: bool) -> int:
    """The bombs' sequence: private (0009,1012); implicit VR, Referenced Image Sequence (0008,1140), whose VR the
    dictionary gives (a private one of defined length would read as an opaque value)."""
    return _PUBLIC_SEQUENCE if implicit else _PRIVATE_SEQUENCE


def _item_head(length: int = _UNDEFINED) -> bytes:
    return _tag(_ITEM) + struct.pack("<L", length)


def _view_code(implicit: bool = False) -> bytes:
    value, scheme, meaning = VIEW_CODE
    return (
        _element(0x00080100, "SH", value.encode(), implicit)
        + _element(0x00080102, "SH", scheme.encode(), implicit)
        + _element(0x00080104, "LO", meaning.encode(), implicit)
    )


def _zeros(count: int) -> Iterator[bytes]:
    chunk = bytes(1 << 20)
    for start in range(0, count, len(chunk)):
        yield chunk[: count - start]


def _huge_in_item(zero_bytes: int, *, defined: bool, implicit: bool = False) -> Iterator[bytes]:
    """View Code Sequence (0054,0220), one item: its code, then private (0009,1011) OB of ``zero_bytes``."""
    creator = _element(0x00090010, "LO", b"RADTRACE TEST", implicit)
    code = _view_code(implicit)
    blob_head = _tag(0x00091011) + (b"" if implicit else b"OB\0\0") + struct.pack("<L", zero_bytes)
    item_length = len(code) + len(creator) + len(blob_head) + zero_bytes
    if defined:
        yield _sequence_head(_VIEW_CODE_SEQUENCE, 8 + item_length, implicit) + _item_head(item_length)
    else:
        yield _sequence_head(_VIEW_CODE_SEQUENCE, implicit=implicit) + _item_head()
    yield code + creator + blob_head
    yield from _zeros(zero_bytes)
    if not defined:
        yield _delimiter(_ITEM_END) + _delimiter(_SEQUENCE_END)


def _deep(depth: int, implicit: bool = False) -> Iterator[bytes]:
    """``depth`` private sequences (0009,1012), each of undefined length, each in the previous one's only item."""
    yield b"" if implicit else _element(0x00090010, "LO", b"RADTRACE TEST")
    yield (_sequence_head(_sequence(implicit), implicit=implicit) + _item_head()) * depth
    yield (_delimiter(_ITEM_END) + _delimiter(_SEQUENCE_END)) * depth


def _many_items(items: int, *, defined: bool, implicit: bool = False) -> Iterator[bytes]:
    """One private sequence (0009,1012) of ``items`` empty items (undefined lengths, or all lengths defined)."""
    yield b"" if implicit else _element(0x00090010, "LO", b"RADTRACE TEST")
    one = _item_head(0) if defined else _item_head() + _delimiter(_ITEM_END)
    yield _sequence_head(_sequence(implicit), len(one) * items if defined else _UNDEFINED, implicit)
    batch = 1 << 16
    for start in range(0, items, batch):
        yield one * min(batch, items - start)
    if not defined:
        yield _delimiter(_SEQUENCE_END)


def _many_elements(elements: int, implicit: bool = False) -> Iterator[bytes]:
    """One private sequence item holding ``elements`` empty private LO elements (distinct tags, groups 0x0011 on)."""
    yield (
        (b"" if implicit else _element(0x00090010, "LO", b"RADTRACE TEST"))
        + _sequence_head(_sequence(implicit), implicit=implicit)
        + _item_head()
    )
    batch = bytearray()
    for index in range(elements):
        group, element = 0x0011 + 2 * (index // 0xF000), 0x1000 + index % 0xF000
        batch += _tag(group << 16 | element) + (b"\0\0\0\0" if implicit else b"LO\0\0")
        if len(batch) >= 1 << 20:
            yield bytes(batch)
            batch.clear()
    yield bytes(batch) + _delimiter(_ITEM_END) + _delimiter(_SEQUENCE_END)


def _cut_in_item(implicit: bool = False) -> Iterator[bytes]:
    """A private sequence whose only item never ends: the deflate stream ends inside it (the rest is not written)."""
    yield (
        (b"" if implicit else _element(0x00090010, "LO", b"RADTRACE TEST"))
        + _sequence_head(_sequence(implicit), implicit=implicit)
        + _item_head()
    )
    yield _element(0x00091001, "LO", b"the data set ends here", implicit)


def deflated_with(ds: Any, path: Path, at: int, shape: Iterator[bytes], *, rest: bool = True) -> Path:
    """``ds`` saved deflated with ``shape``'s bytes written where tag ``at`` belongs (its own elements from ``at`` on
    after them, unless ``rest`` is False: the data set then ends with the shape)."""
    from pydicom import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    before, after = Dataset(), Dataset()
    for element in ds:
        (before if element.tag < at else after).add(element)

    def explicit_le(part: Any) -> bytes:
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_dataset(buffer, part)
        return buffer.getvalue()

    deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as out:
        meta = DicomBytesIO()
        meta.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
        out.write(meta.getvalue())
        out.write(deflater.compress(explicit_le(before)))
        for chunk in shape:
            out.write(deflater.compress(chunk))
        if rest:
            out.write(deflater.compress(explicit_le(after)))
        out.write(deflater.flush())
    return path


#: name -> (where the shape goes, its bytes, whether the data set goes on after it); the second argument: implicit VR
SHAPES: Final[dict[str, Callable[[int, bool], tuple[int, Iterator[bytes], bool]]]] = {
    "huge-in-item-undefined": lambda n, i: (
        _VIEW_CODE_SEQUENCE,
        _huge_in_item(n, defined=False, implicit=i),
        True,
    ),
    "huge-in-item-defined": lambda n, i: (_VIEW_CODE_SEQUENCE, _huge_in_item(n, defined=True, implicit=i), True),
    "deep": lambda n, i: (_bomb_at(i), _deep(n, i), True),
    "items-undefined": lambda n, i: (_bomb_at(i), _many_items(n, defined=False, implicit=i), True),
    "items-defined": lambda n, i: (_bomb_at(i), _many_items(n, defined=True, implicit=i), True),
    "elements-in-item": lambda n, i: (_bomb_at(i), _many_elements(n, i), True),
    "cut-in-item": lambda n, i: (_bomb_at(i), _cut_in_item(i), False),
}


def _bomb_at(implicit: bool) -> int:
    return _PUBLIC_SEQUENCE if implicit else 0x00090010


def plain_with(ds: Any, path: Path, at: int, shape: Iterator[bytes], *, rest: bool = True, implicit: bool) -> Path:
    """``ds`` saved Explicit (or ``implicit``, Implicit) VR Little Endian, not deflated, with ``shape``'s bytes
    written where tag ``at`` belongs, as :func:`deflated_with` writes them."""
    from pydicom import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    before, after = Dataset(), Dataset()
    for element in ds:
        (before if element.tag < at else after).add(element)

    def encoded(part: Any) -> bytes:
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
        write_dataset(buffer, part)
        return buffer.getvalue()

    with path.open("wb") as out:
        meta = DicomBytesIO()
        meta.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
        out.write(meta.getvalue())
        out.write(encoded(before))
        for chunk in shape:
            out.write(chunk)
        if rest:
            out.write(encoded(after))
    return path


def shape_film(
    name: str,
    size: int,
    path: Path,
    *,
    view_code: bool = True,
    fresh_uids: bool = False,
    syntax: str = "deflated",
) -> Path:
    """The NIH film deflated with shape ``name`` of ``size`` (bytes, depth, items or elements, as the shape takes),
    and (``view_code``, for shapes that are not themselves in it) a View Code Sequence saying postero-anterior;
    ``fresh_uids``: under new Study, Series and SOP Instance UIDs. ``syntax``: ``deflated``, or not deflated,
    ``explicit`` or ``implicit`` (VR Little Endian)."""
    from pydicom import Dataset, dcmread
    from pydicom.uid import generate_uid

    from radtrace.testing.decode_abuse import NIH, REAL_FILMS

    ds = dcmread(REAL_FILMS / NIH)
    if fresh_uids:
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (generate_uid() for _ in range(3))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    at, shape, rest = SHAPES[name](size, syntax == "implicit")
    if view_code and at != _VIEW_CODE_SEQUENCE:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = VIEW_CODE
        ds.ViewCodeSequence = [item]
    if syntax == "deflated":
        return deflated_with(ds, path, at, shape, rest=rest)
    return plain_with(ds, path, at, shape, rest=rest, implicit=syntax == "implicit")

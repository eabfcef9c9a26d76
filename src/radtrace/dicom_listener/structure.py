"""A received data set walked element by element to its end before it is answered success.

The listener reads a data set's header at receive (:mod:`.headers`) and its pixel budget (:mod:`.pixel_budget`), not
the rest: a P-DATA-TF a sender (or a proxy) sent twice made a data set whose Pixel Data held 16 KB twice and whose
last elements were pixel bytes read as element headers; it was stored as sent and acknowledged, and the worker would
have read the image shifted. :func:`check_structure` walks the spooled file (never held in memory; a deflated data
set is inflated as it is walked, within a bound): every element header is read and its value skipped; a sequence or
item of undefined length is walked to its delimiter; encapsulated Pixel Data is items of defined length up to its
sequence delimiter; a value must end inside what holds it, and the last element exactly where the data set ends; no
element follows Pixel Data unless its tag is greater, and none is of a group below 0008 (pixel bytes read as elements
are one or the other, or run past the end); native Pixel Data is as long as Rows x Columns x Samples per Pixel x
Bits Allocated x Number of Frames says (padded to even). Only the data set's own elements after Pixel Data are held to
ascending order: a sender's header out of order is read as it is elsewhere, not refused here. A data set
that fails is refused with :class:`MalformedDataSetError`, whose reason names the element and its offset in the data
set (after the file meta), never a value.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Final

from pydicom.datadict import dictionary_description
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from radtrace.errors import DicomInputError

__all__ = ["MAX_DEPTH", "MalformedDataSetError", "check_structure"]

#: Sequences nested deeper than this are refused (as :mod:`radtrace.dicom_deflated` does).
MAX_DEPTH: Final = 32

_NATIVE: Final = frozenset(
    {str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian), str(DeflatedExplicitVRLittleEndian)}
)
_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQUENCE_END: Final = 0xFFFEE0DD
_PIXEL_DATA: Final = 0x7FE00010
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS: Final = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
#: The image attributes Pixel Data's length is checked against, by tag: (keyword, whether a US value).
_IMAGE: Final = {
    0x00280002: ("samples", True),
    0x00280004: ("photometric", False),
    0x00280008: ("frames", False),
    0x00280010: ("rows", True),
    0x00280011: ("columns", True),
    0x00280100: ("bits", True),
}
_TAG: Final = struct.Struct("<HHL")
_EXPLICIT: Final = struct.Struct("<HH2sH")
_LONG: Final = struct.Struct("<L")
#: Inflated bytes taken from zlib at a time (what a deflated data set holds in memory).
_CHUNK: Final = 1 << 16


class MalformedDataSetError(DicomInputError):
    """The data set does not walk as DICOM to its end: its reason names the element and the offset."""


def _tag(tag: int) -> str:
    name = dictionary_description(tag) if _known(tag) else ""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})" + (f" {name}" if name else "")


def _known(tag: int) -> bool:
    try:
        return bool(dictionary_description(tag))
    except KeyError:
        return False


class _Plain:
    """The data set's bytes in the file, from ``start`` to the file's end; offsets from ``start``."""

    def __init__(self, handle: BinaryIO, start: int, size: int) -> None:
        self._handle = handle
        self._start = start
        self.end: int | None = size - start
        self.at = 0
        handle.seek(start)

    def read(self, size: int) -> bytes:
        data = self._handle.read(size)
        self.at += len(data)
        return data

    def skip(self, size: int) -> None:
        self.at += size
        self._handle.seek(self._start + self.at)

    def finished(self) -> bool:
        return self.at == self.end


class _Inflated:
    """A deflated data set's bytes, inflated as they are read (at most ``limit`` of them); offsets as inflated."""

    def __init__(self, handle: BinaryIO, start: int, limit: int) -> None:
        handle.seek(start)
        self._handle = handle
        self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = b""
        self._limit = limit
        self._inflated = 0
        self.end: int | None = None  # known once the stream has ended
        self.at = 0

    def _more(self) -> bool:
        """Inflate some more into the buffer; False once the deflated stream has ended."""
        while True:
            if self._zlib.eof:
                self._trailer()
                return False
            pending = self._zlib.unconsumed_tail or self._handle.read(_CHUNK)
            if not pending:
                raise MalformedDataSetError(f"deflated data set cut off at offset {self._inflated}")
            try:
                out = self._zlib.decompress(pending, _CHUNK)
            except zlib.error as exc:
                raise MalformedDataSetError(f"deflated data set undecodable at offset {self._inflated}") from exc
            self._inflated += len(out)
            if self._inflated > self._limit:
                raise MalformedDataSetError(f"deflated data set inflates past {self._limit} bytes")
            if out:
                self._buffer += out
                return True

    def _trailer(self) -> None:
        """After the stream's end: one NUL byte of padding at most (pydicom pads an odd stream so)."""
        self.end = self._inflated
        rest = self._zlib.unused_data + self._handle.read(2)
        if rest not in (b"", b"\x00"):
            raise MalformedDataSetError(f"bytes after the deflated data set's end (offset {self._inflated})")

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and self._more():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        self.at += len(data)
        return data

    def skip(self, size: int) -> None:
        while size:
            if not self._buffer and not self._more():
                self.at += size  # past the end, now known: the walk says which element ran past it
                return
            taken = min(size, len(self._buffer))
            self._buffer = self._buffer[taken:]
            self.at += taken
            size -= taken

    def finished(self) -> bool:
        return not self._buffer and not self._more()


_Source = _Plain | _Inflated


class _Walk:
    def __init__(self, source: _Source, *, native: bool) -> None:
        self.source = source
        self.native = native
        self.image: dict[str, int | str] = {}

    def header(self, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """``(tag, VR or None, value length, offset)`` of the next element (or item, or delimiter)."""
        at = self.source.at
        head = self.source.read(8)
        if len(head) < 8:
            raise MalformedDataSetError(f"data set ends inside an element header at offset {at}")
        group, element, length = _TAG.unpack(head)
        tag = group << 16 | element
        if group == 0xFFFE or implicit:
            return tag, None, length, at
        _, _, vr, short = _EXPLICIT.unpack(head)
        if vr in _SHORT_VRS:
            return tag, vr, short, at
        if vr not in _LONG_VRS:
            raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: no VR (bytes {vr.hex()})")
        more = self.source.read(4)
        if len(more) < 4:
            raise MalformedDataSetError(f"data set ends inside an element header at offset {at}")
        return tag, vr, _LONG.unpack(more)[0], at

    def skip(self, tag: int, at: int, length: int) -> None:
        """Skip a value of ``length`` bytes, which must end by the data set's end."""
        end = self.source.end
        if end is not None and self.source.at + length > end:
            raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: {length} bytes run past the end ({end})")
        self.source.skip(length)
        end = self.source.end  # a deflated data set's end is known once it is reached
        if end is not None and self.source.at > end:
            raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: {length} bytes run past the end ({end})")

    def data_set(self, implicit: bool, depth: int) -> None:
        """The elements of the data set (``depth`` 0: to its end) or of an item of undefined length (to the item's
        delimiter)."""
        top = depth == 0
        previous: int | None = None
        while not (top and self.source.finished()):
            tag, vr, length, at = self.header(implicit)
            if tag == _ITEM_END and not top:
                return
            if tag >> 16 == 0xFFFE:
                raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: a delimiter where an element was due")
            if top:
                if tag >> 16 < 0x0008:  # command and file meta groups (and the odd ones below them) are not data
                    raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: not a data set element")
                if previous is not None and previous >= _PIXEL_DATA and tag <= previous:  # pixel bytes read as tags
                    raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: out of order after {_tag(previous)}")
                previous = tag
            if length == _UNDEFINED:
                if vr in (b"OB", b"OW") or (vr is None and tag == _PIXEL_DATA):
                    if top and tag == _PIXEL_DATA and self.native:
                        raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: encapsulated in a native syntax")
                    self.fragments(tag, at)
                elif vr in (None, b"SQ", b"UN"):  # UN of undefined length: Implicit VR inside (PS3.5 6.2.2)
                    self.sequence(tag, at, implicit or vr == b"UN", depth + 1)
                else:
                    raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: undefined length in {vr!r}")
                continue
            if top and tag in _IMAGE and length <= 16:
                self.keep(tag, at, length)
                continue
            if top and tag == _PIXEL_DATA:
                self.pixel_length(at, length)
            self.skip(tag, at, length)

    def keep(self, tag: int, at: int, length: int) -> None:
        """Read one of the image attributes Pixel Data's length depends on."""
        value = self.source.read(length)
        if len(value) < length:
            raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: {length} bytes run past the end")
        name, unsigned = _IMAGE[tag]
        if unsigned:
            if length == 2:
                self.image[name] = int.from_bytes(value, "little")
            return
        text = value.decode("ascii", "replace").strip(" \x00")
        if name != "frames":
            self.image[name] = text
            return
        try:
            self.image[name] = int(text)
        except ValueError:
            return

    def pixel_length(self, at: int, length: int) -> None:
        """Native Pixel Data as long as its image (padded to even), where the header says how big that is."""
        if not self.native:
            raise MalformedDataSetError(f"{_tag(_PIXEL_DATA)} at offset {at}: defined length, encapsulated syntax")
        sizes = [self.image.get(k, d) for k, d in (("rows", 0), ("columns", 0), ("bits", 0), ("samples", 1))]
        sizes.append(self.image.get("frames", 1))
        if not all(isinstance(n, int) and n > 0 for n in sizes):
            return  # not said (or not a number): the header's own checks speak to that
        rows, columns, bits, samples, frames = (int(n) for n in sizes)
        needed = (rows * columns * samples * frames * bits + 7) // 8
        if self.image.get("photometric") == "YBR_FULL_422":  # two pixels share one pair of chroma samples
            needed = needed // 3 * 2
        if length not in (needed, needed + (needed & 1)):
            raise MalformedDataSetError(
                f"{_tag(_PIXEL_DATA)}: {length} bytes where the image needs {needed} "
                f"(Rows x Columns {rows}x{columns}, {samples} samples, {frames} frames, {bits} bits)"
            )

    def sequence(self, tag: int, at: int, implicit: bool, depth: int) -> None:
        """Items to the sequence delimiter; an item of undefined length walked to its own delimiter."""
        if depth > MAX_DEPTH:
            raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: sequences nested over {MAX_DEPTH} deep")
        while True:
            item, _, length, item_at = self.header(True)
            if item == _SEQUENCE_END:
                return
            if item != _ITEM:
                raise MalformedDataSetError(f"{_tag(tag)}: {_tag(item)} at offset {item_at} where an item was due")
            if length == _UNDEFINED:
                self.data_set(implicit, depth)
            else:
                self.skip(item, item_at, length)

    def fragments(self, tag: int, at: int) -> None:
        """Encapsulated pixel data: the offset table and fragments, each an item of defined length, then the
        sequence delimiter."""
        items = 0
        while True:
            item, _, length, item_at = self.header(True)
            if item == _SEQUENCE_END:
                if not items:
                    raise MalformedDataSetError(f"{_tag(tag)} at offset {at}: no offset table item")
                return
            if item != _ITEM or length == _UNDEFINED:
                raise MalformedDataSetError(f"{_tag(tag)}: fragment {items} at offset {item_at} is not an item")
            self.skip(item, item_at, length)
            items += 1


def _file_meta(handle: BinaryIO) -> tuple[int, str] | None:
    """``(where the data set starts, its transfer syntax)`` of a Part 10 file, or ``None`` where it is not one."""
    handle.seek(128)
    if handle.read(4) != b"DICM":
        return None
    syntax = ""
    while True:
        at = handle.tell()
        head = handle.read(8)
        if len(head) < 8:
            return None
        group, element, vr, short = _EXPLICIT.unpack(head)
        if group != 0x0002:
            return at, syntax
        length = short
        if vr in _LONG_VRS:
            more = handle.read(4)
            if len(more) < 4:
                return None
            (length,) = _LONG.unpack(more)
        if length == _UNDEFINED:
            return None
        value = handle.read(length)
        if element == 0x0010 and not syntax:  # the file meta pynetdicom wrote (a sender's own may follow it)
            syntax = value.decode("ascii", "replace").strip(" \x00")


def check_structure(path: Path, *, max_inflated_bytes: int) -> None:
    """Walk the received Part 10 file's data set to its end (see the module docstring); raise
    :class:`MalformedDataSetError`, or return. A file without file meta, or of a syntax other than Little
    Endian, is left to the header reader."""
    with path.open("rb", buffering=io.DEFAULT_BUFFER_SIZE) as handle:
        meta = _file_meta(handle)
        if meta is None:
            return
        start, syntax = meta
        size = path.stat().st_size
        if syntax == str(DeflatedExplicitVRLittleEndian):
            source: _Source = _Inflated(handle, start, max_inflated_bytes)
        elif syntax == "1.2.840.10008.1.2.2":  # Explicit VR Big Endian: not negotiated here
            return
        else:
            source = _Plain(handle, start, size)
        walk = _Walk(source, native=syntax in _NATIVE)
        walk.data_set(syntax == str(ImplicitVRLittleEndian), 0)

"""Read a Deflated Explicit VR Little Endian instance (PS3.5 A.5) without holding it inflated; read any instance's
sequences item by item, within bounds.

pydicom inflates a deflated data set whole, in memory, before it parses a byte of it: a 1 MB file holding a
250 MiB private OB of zeros (which the listener accepts: it inflates under ``instance_byte_limit``) cost the
worker 565 MB of RSS for its header alone, and as much again for its pixel data. Here the data set is inflated as
it is parsed (:class:`_Inflating`, a forward reader that pydicom parses through): a value over
``defer_bytes`` that is not the pixel or overlay data is inflated and dropped, never held, and inflating stops
with a reason naming (0002,0010) once the data set runs past ``max_inflated_bytes``.

Sequences are parsed here too, item by item (:class:`_Parser`), not by pydicom, which reads a sequence of undefined
length with every nested value whole: a View Code Sequence item carrying a 250 MiB private OB cost the worker
+1,050 MB and the listener +788 MB. In an item, a value over ``defer_bytes`` is inflated and dropped like a top-level
one; the items themselves (a View Code Sequence, Procedure and Referenced sequences: what the worker and the SR
read) are kept. A data set nesting sequences more than :data:`MAX_DEPTH` deep, or holding more than
:data:`MAX_ITEMS` items or :data:`MAX_ELEMENTS` elements, or ending inside a sequence, is refused
(:class:`NestingLimitError`, :class:`DicomInputError`) naming the sequence and its tag path: 200,000 empty items in
a 0.8 MB film cost the listener +140 MB and 7.7 s and the worker +311 MB and 9.5 s.

The same parser reads a data set that is not deflated (:func:`read_bounded`: Explicit or Implicit VR Little Endian,
Explicit VR Big Endian, the encapsulated syntaxes, a legacy file without File Meta), from the file in place: pydicom's
``dcmread(defer_size=...)`` holds its sequences of undefined length with every item and nested value too (200,000
empty items in a plain 4.2 MB film cost the listener +138 MB and 17 s, the worker +314 MB and 19 s).
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import MutableSequence
from typing import BinaryIO, Final

from pydicom.charset import default_encoding
from pydicom.datadict import _dictionary_vr_fast, dictionary_description
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import (
    _read_command_set_elements,
    _read_file_meta_info,
    data_element_generator,
    read_dataset,
    read_preamble,
)
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.values import converters

from radtrace.errors import DicomInputError
from radtrace.logging import InstanceRead, warnings_once_per_instance

__all__ = [
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_ITEMS",
    "InflateLimitError",
    "NestingLimitError",
    "is_deflated",
    "read_bounded",
    "read_deflated",
    "starts_deflated",
]

logger = logging.getLogger(__name__)

_READ: Final = 1 << 16
_INFLATE: Final = 1 << 20
#: Inflated bytes kept behind the read position, for pydicom's short rewinds (an element's tag and length).
_WINDOW: Final = 1 << 16
#: A rewind further back starts inflating again from the start; at most this many times per data set.
_MAX_PASSES: Final = 3
#: Sequences within sequences: deeper, the data set is refused naming the sequence and its tag path.
MAX_DEPTH: Final = 32
#: Sequence items in the whole data set (a pydicom Dataset each, about 1.5 KB): more are refused.
MAX_ITEMS: Final = 10_000
#: Elements in the whole data set, items' included (about 0.4-0.8 KB each): more are refused.
MAX_ELEMENTS: Final = 50_000
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_SEQUENCE_END: Final = 0xFFFEE0DD
_ITEM_TAG: Final = b"\xfe\xff\x00\xe0"
_ITEM_END_TAG: Final = b"\xfe\xff\x0d\xe0"
_SEQUENCE_DELIMITER: Final = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_ITEM_TAG_BE: Final = b"\xff\xfe\xe0\x00"
_ITEM_END_TAG_BE: Final = b"\xff\xfe\xe0\x0d"
_SEQUENCE_DELIMITER_BE: Final = b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"


class InflateLimitError(DicomInputError):
    """The deflated data set inflates beyond the bound it is read under."""


class NestingLimitError(DicomInputError):
    """The deflated data set nests sequences deeper than :data:`MAX_DEPTH`, or holds more than :data:`MAX_ITEMS`
    items or :data:`MAX_ELEMENTS` elements; the reason names the element and its tag path."""


def is_deflated(meta: FileMetaDataset | None) -> bool:
    """Whether a File Meta Information declares the deflated transfer syntax."""
    return meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian


class _Inflating:
    """The inflated bytes of a raw deflate stream as a forward, seekable file: ``read``, ``tell``, ``seek``.

    A forward seek inflates and drops; a seek back within :data:`_WINDOW` is served from what was kept, further
    back the stream is inflated again from its start. Raises :class:`DicomInputError` past ``limit`` inflated
    bytes, or on a stream that is not deflate or ends before its end."""

    def __init__(self, source: BinaryIO, limit: int) -> None:
        self._source = source
        self._start = source.tell()
        self._limit = limit
        self._passes = 0
        self._restart()

    def _restart(self) -> None:
        self._passes += 1
        if self._passes > _MAX_PASSES:
            raise DicomInputError("(0002,0010) Transfer Syntax UID: the deflated data set cannot be read in order")
        self._source.seek(self._start)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._kept = bytearray()  # inflated bytes from offset _kept_at
        self._kept_at = 0
        self._position = 0
        self._done = False

    def _inflate_to(self, end: int) -> None:
        """Inflate until the kept bytes reach ``end`` or the stream ends, dropping what lies behind the window."""
        while self._kept_at + len(self._kept) < end and not self._done:
            data = self._inflater.unconsumed_tail or self._source.read(_READ)
            if not data:  # the file ends before the deflate stream does
                raise DicomInputError("(0002,0010) Transfer Syntax UID: the deflated data set is cut short")
            try:
                self._kept += self._inflater.decompress(data, _INFLATE)
            except zlib.error as exc:
                raise DicomInputError(f"(0002,0010) Transfer Syntax UID: the data set is not deflate: {exc}") from exc
            if self._inflater.eof:
                self._done = True
            if self._kept_at + len(self._kept) > self._limit:
                raise InflateLimitError(
                    f"(0002,0010) Transfer Syntax UID: deflated data set inflates beyond {self._limit} bytes "
                    "(more than an image within the pixel limit needs)"
                )
            drop = min(len(self._kept), max(0, self._position - _WINDOW) - self._kept_at)
            if drop > 0:
                del self._kept[:drop]
                self._kept_at += drop

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._limit
        self._inflate_to(self._position + size)
        begin = self._position - self._kept_at
        data = bytes(self._kept[begin : begin + size])
        self._position += len(data)
        drop = min(len(self._kept), max(0, self._position - _WINDOW) - self._kept_at)
        if drop > 0:  # a large value is held once, by the caller
            del self._kept[:drop]
            self._kept_at += drop
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset + (self._position if whence == io.SEEK_CUR else 0)
        if whence == io.SEEK_END:
            raise io.UnsupportedOperation("an inflating reader has no known end")
        if target < self._kept_at:
            self._restart()
        self._position = target
        self._inflate_to(target)
        self._position = min(target, self._kept_at + len(self._kept))
        return self._position


def _is_bulk(tag: int) -> bool:
    return bool(tag >> 16 == 0x7FE0 or (0x6000 <= tag >> 16 <= 0x601E and tag & 0xFFFF == 0x3000))


def _name(tag: int) -> str:
    """``(gggg,eeee) Name`` as the dictionary names it (``private`` for a private tag, nothing for an unknown one)."""
    try:
        name = "private" if (tag >> 16) % 2 else dictionary_description(tag)
    except KeyError:
        name = ""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})" + (f" {name}" if name else "")


def _path(path: tuple[int, ...]) -> str:
    """A tag path as ``(0040,0275)>(0008,1110)``, its middle elided past four tags."""
    tags = [f"({tag >> 16:04X},{tag & 0xFFFF:04X})" for tag in path]
    return ">".join(tags if len(tags) <= 4 else [*tags[:2], "...", *tags[-2:]])


def _is_sequence(tag: int, vr: str | None) -> bool:
    """A sequence by its VR, or (VR UN, or implicit VR in an item) by the dictionary's."""
    if vr == "SQ":
        return True
    if vr not in (None, "UN"):
        return False
    try:
        return bool(_dictionary_vr_fast(tag) == "SQ")
    except KeyError:
        return False


class _Parser:
    """Parses the inflated data set level by level: pydicom's :func:`read_dataset` reads each run of plain elements
    (a value over ``defer_bytes`` skipped, i.e. inflated and dropped) and stops at a sequence, an element of
    undefined length, or (top level) the pixel or overlay data, which are read here. Sequences are parsed the same
    way, item by item, within :data:`MAX_DEPTH`, :data:`MAX_ITEMS` and :data:`MAX_ELEMENTS`; in an item, a value left
    uninflated is dropped."""

    def __init__(
        self,
        stream: _Inflating | BinaryIO,
        *,
        keep_bulk: bool,
        defer_bytes: int,
        keep_deferred: bool,
        little_endian: bool = True,
    ) -> None:
        self._stream = stream
        self._little = little_endian
        self._order = "<" if little_endian else ">"
        self._item_tag = _ITEM_TAG if little_endian else _ITEM_TAG_BE
        self._item_end_tag = _ITEM_END_TAG if little_endian else _ITEM_END_TAG_BE
        self._sequence_delimiter = _SEQUENCE_DELIMITER if little_endian else _SEQUENCE_DELIMITER_BE
        self._keep_bulk = keep_bulk
        self._defer_bytes = defer_bytes
        self._keep_deferred = keep_deferred
        self._items = 0
        self._elements = 0
        self._top = True
        self._path: tuple[int, ...] = ()
        self._stop: tuple[int, str | None, int, int] | None = None  # tag, VR, length, where its header starts
        self._ended_item = False
        #: the top-level elements read so far (a refusal's caller may still read the identifiers among them)
        self.read_top: dict[BaseTag, RawDataElement | DataElement] = {}

    def _stop_when(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        """pydicom's stop_when: counts each element; stops before a sequence, an undefined length, the bulk data."""
        self._elements += 1
        if self._elements > MAX_ELEMENTS:
            inner = self._path[-1] if self._path else int(tag)  # the sequence they are in, else the element itself
            raise NestingLimitError(
                f"{_name(inner)}: more than {MAX_ELEMENTS} elements in the data set"
                + (f", in {_path(self._path)}" if self._path else "")
            )
        if not ((self._top and _is_bulk(int(tag))) or length == _UNDEFINED_LENGTH or _is_sequence(int(tag), vr)):
            return False
        header = 12 if vr is not None and vr in EXPLICIT_VR_LENGTH_32 else 8
        self._stop = (int(tag), vr, length, self._stream.tell() - header)
        return True

    def dataset(self, length: int | None, encoding: str | MutableSequence[str], implicit: bool) -> Dataset:
        """The data set (or item) from the read position: to its end, ``length`` bytes or its item delimiter."""
        stream = self._stream
        start = stream.tell()
        parent = encoding
        elements: dict[BaseTag, RawDataElement | DataElement] = {}
        if not self._path:
            self.read_top = elements
        original: tuple[bool, bool] | None = None
        only: Dataset | None = None  # the one part read, when it is the whole data set as read (most items)
        parts = 0
        while length is None or stream.tell() - start < length:
            self._stop = None
            remaining = None if length is None else length - (stream.tell() - start)
            part = read_dataset(
                stream,  # type: ignore[arg-type]
                implicit,
                self._little,
                bytelength=remaining,
                stop_when=self._stop_when,
                defer_size=self._defer_bytes,
                parent_encoding=encoding,
                at_top_level=self._top,
            )
            parts += 1
            only = part if parts == 1 else None
            implicit = bool(part.original_encoding[0])
            if original is None:
                original = (implicit, True)
            encoding = part.original_character_set
            for tag in list(part.keys()):
                raw = part.get_item(tag, keep_deferred=True)
                uninflated = isinstance(raw, RawDataElement) and raw.value is None and raw.length > 0
                if uninflated and not (self._top and self._keep_deferred):  # nothing can read it
                    logger.debug("leaving element %s (%d bytes) out", tag, getattr(raw, "length", 0))
                    only = None
                    continue
                elements[tag] = raw
            stop = self._stop
            if stop is None or stream.tell() != stop[3]:  # the end of the data set, or of an item of undefined
                self._ended_item = self._after_item_end()  # length (its delimiter read)
                break
            only = None
            tag, vr, value_length, _ = stop
            if self._top and _is_bulk(tag):  # read it whole, or skip its value
                found = data_element_generator(
                    stream,
                    implicit,
                    self._little,
                    defer_size=None if self._keep_bulk else 0,
                )
                element = next(found, None)
                if element is None:
                    break
                elements[element.tag] = element  # without keep_bulk, deferred: its length and no value
                continue
            stream.read(12 if vr is not None and vr in EXPLICIT_VR_LENGTH_32 else 8)  # its header
            value_tell = stream.tell()
            if _is_sequence(tag, vr) or (value_length == _UNDEFINED_LENGTH and self._items_follow()):
                sequence = self._sequence(tag, value_length, encoding, implicit or vr in (None, "UN"))
                elements[BaseTag(tag)] = DataElement(
                    tag, "SQ", sequence, value_tell, is_undefined_length=value_length == _UNDEFINED_LENGTH
                )
            else:
                self._skip_to_sequence_end(tag)
        if only is not None:
            return only
        dataset = Dataset(elements, parent_encoding=parent)
        implicit_vr, little_endian = original or (implicit, True)
        dataset.set_original_encoding(implicit_vr, little_endian, encoding)
        return dataset

    def _after_item_end(self) -> bool:
        """Whether the last 8 bytes read were an item delimitation item (else the data set ended)."""
        if self._stream.tell() < 8:
            return False
        self._stream.seek(-8, io.SEEK_CUR)
        return self._stream.read(8)[:4] == self._item_end_tag

    def _items_follow(self) -> bool:
        head = self._stream.read(4)
        self._stream.seek(-len(head), io.SEEK_CUR)
        return head == self._item_tag

    def _sequence(self, tag: int, length: int, encoding: str | MutableSequence[str], implicit: bool) -> Sequence:
        stream = self._stream
        outer = (self._top, self._path)
        self._top, self._path = False, (*self._path, tag)
        if len(self._path) > MAX_DEPTH:
            raise NestingLimitError(
                f"{_name(tag)}: sequences nested more than {MAX_DEPTH} deep, in {_path(self._path)}"
            )
        items: list[Dataset] = []
        start = stream.tell()
        while length == _UNDEFINED_LENGTH or stream.tell() - start < length:
            head = stream.read(8)
            if len(head) < 8:
                raise DicomInputError(f"{_name(tag)}: the data set ends inside the sequence, in {_path(self._path)}")
            group, element, item_length = struct.unpack(self._order + "HHL", head)
            item_tag = group << 16 | element
            if item_tag == _SEQUENCE_END:
                break
            if item_tag != _ITEM:
                raise DicomInputError(
                    f"{_name(tag)}: ({group:04X},{element:04X}) where a sequence item belongs, in {_path(self._path)}"
                )
            self._items += 1
            if self._items > MAX_ITEMS:
                raise NestingLimitError(
                    f"{_name(tag)}: more than {MAX_ITEMS} sequence items in the data set, in {_path(self._path)}"
                )
            undefined = item_length == _UNDEFINED_LENGTH
            item = self.dataset(None if undefined else item_length, encoding, implicit)
            if undefined and not self._ended_item:
                raise DicomInputError(f"{_name(tag)}: the data set ends inside a sequence item, in {_path(self._path)}")
            item.is_undefined_length_sequence_item = undefined
            items.append(item)
        self._top, self._path = outer
        sequence = Sequence(items)
        sequence.is_undefined_length = length == _UNDEFINED_LENGTH
        return sequence

    def _skip_to_sequence_end(self, tag: int) -> None:
        """Skip a value of undefined length that is not a sequence (only pixel data may have one), to its delimiter."""
        stream = self._stream
        carry = b""
        while True:
            chunk = stream.read(_READ)
            if not chunk:
                raise DicomInputError(f"{_name(tag)}: the data set ends inside a value of undefined length")
            data = carry + chunk
            found = data.find(self._sequence_delimiter)
            if found >= 0:
                stream.seek(found + len(self._sequence_delimiter) - len(data), io.SEEK_CUR)
                logger.debug("leaving element %s (undefined length) out", BaseTag(tag))
                return
            carry = data[-(len(self._sequence_delimiter) - 1) :]


def starts_deflated(fileobj: BinaryIO) -> bool:
    """Whether ``fileobj`` is a Part 10 file whose File Meta Information declares the deflated transfer syntax
    (read from its start; it is left there)."""
    try:
        read_preamble(fileobj, False)
        return is_deflated(_read_file_meta_info(fileobj))
    except Exception:  # not Part 10, or a broken File Meta: the ordinary reader says what is wrong
        return False
    finally:
        fileobj.seek(0)


def read_deflated(
    fileobj: BinaryIO, *, keep_bulk: bool, defer_bytes: int, max_inflated_bytes: int, keep_deferred: bool = False
) -> Dataset:
    """A deflated Part 10 file's data set, parsed as it is inflated; see the module doc.

    ``keep_bulk``: the pixel and overlay data are read whole (for decoding); else each stands as a deferred
    :class:`RawDataElement` (its length, no value; its ``value_tell`` is an offset in the inflated data set,
    and reading it fails). Any other value over ``defer_bytes`` at the top level is left out, or with
    ``keep_deferred`` kept deferred likewise; in a sequence item it is always left out. Sequences are parsed
    whatever their length.

    Raises:
        DicomInputError: not a deflated Part 10 file, not deflate, cut short (inside a sequence too), or inflating
            beyond ``max_inflated_bytes`` (:class:`InflateLimitError`); nesting beyond the bounds
            (:class:`NestingLimitError`).
    """
    with warnings_once_per_instance() as read:
        read_preamble(fileobj, False)
        meta = _read_file_meta_info(fileobj)
        if not is_deflated(meta):
            raise DicomInputError("(0002,0010) Transfer Syntax UID: not deflated")
        stream = _Inflating(fileobj, max_inflated_bytes)
        parser = _Parser(stream, keep_bulk=keep_bulk, defer_bytes=defer_bytes, keep_deferred=keep_deferred)
        dataset = parser.dataset(None, default_encoding, False)
        dataset.file_meta = meta
        _identify(read, dataset)
    return dataset


def _uid(dataset: Dataset, tag: int) -> str:
    """A UID as read, not converted (a text value converted before its character set is decided keeps the
    wrong one); '' when absent."""
    element = dataset.get_item(BaseTag(tag), keep_deferred=True) if tag in dataset else None
    value = getattr(element, "value", None)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value or "")


def _identify(read: InstanceRead, dataset: Dataset) -> None:
    """Names the instance read, for pydicom's warnings about it (:func:`radtrace.logging.warnings_once_per_instance`:
    said once per instance in a process, however many times it is read)."""
    read.identify(_uid(dataset, 0x00080018), _uid(dataset, 0x0020000D))


def _plain_encoding(fileobj: BinaryIO, syntax: str | None) -> tuple[bool, bool]:
    """(implicit VR, little endian) of a data set that is not deflated, as pydicom's own reader decides them: by the
    Transfer Syntax UID, or without one by the first element (a valid VR: explicit; its group read little endian
    1024 or more: big endian); an empty data set reads as implicit VR little endian."""
    if syntax is None:
        head = fileobj.read(6)
        fileobj.seek(-len(head), io.SEEK_CUR)
        if len(head) < 6:
            return True, True
        group, _, vr = struct.unpack("<HH2s", head)
        if vr.decode(default_encoding, "replace") in converters:
            return False, group < 1024
        return True, True
    if syntax in PrivateTransferSyntaxes:
        private = PrivateTransferSyntaxes[PrivateTransferSyntaxes.index(syntax)]
        return bool(private.is_implicit_VR), bool(private.is_little_endian)
    if syntax == ImplicitVRLittleEndian:
        return True, True
    return False, syntax != ExplicitVRBigEndian  # every other syntax is explicit VR little endian (PS3.5 A.4)


def read_bounded(
    fileobj: BinaryIO,
    *,
    keep_bulk: bool,
    defer_bytes: int,
    max_inflated_bytes: int,
    keep_deferred: bool = False,
    force: bool = False,
    partial: list[Dataset] | None = None,
) -> Dataset:
    """A Part 10 file's data set (with ``force``, a bare one without preamble or File Meta too), in any transfer
    syntax, its sequences parsed item by item within :data:`MAX_DEPTH`, :data:`MAX_ITEMS` and :data:`MAX_ELEMENTS`,
    and a value over ``defer_bytes`` in a sequence item dropped: pydicom's ``dcmread(defer_size=...)`` holds a
    sequence of undefined length with its every item and nested value (200,000 empty items in a plain 4.2 MB film
    cost the listener +138 MB and 17 s, the worker +314 MB and 19 s).

    A deflated data set is read as :func:`read_deflated` reads it. Any other is read from ``fileobj`` in place, as
    pydicom reads it (a :class:`FileDataset`; the transfer syntax, or without one the encoding found, decides how):
    ``keep_bulk``, the pixel and overlay data are read whole, else each stays deferred (its ``value_tell`` a file
    offset, read on access); another top-level value over ``defer_bytes`` is left out, or with ``keep_deferred``
    stays deferred likewise.

    Raises:
        DicomInputError: nesting beyond the bounds (:class:`NestingLimitError`), or a data set ending inside a
            sequence or item, naming the sequence and its tag path; deflated: as :func:`read_deflated`. The top-level
            elements read before it are then appended to ``partial`` (a :class:`Dataset`), where one is given.
        InvalidDicomError: not Part 10 and not ``force``.

    pydicom's warnings while reading (an unknown Specific Character Set) are logged once per instance in this process
    (:func:`radtrace.logging.warnings_once_per_instance`), however many times it is read.
    """
    with warnings_once_per_instance() as read:
        dataset = _read_bounded(fileobj, keep_bulk, defer_bytes, max_inflated_bytes, keep_deferred, force, partial)
        _identify(read, dataset)
    return dataset


def _read_bounded(
    fileobj: BinaryIO,
    keep_bulk: bool,
    defer_bytes: int,
    max_inflated_bytes: int,
    keep_deferred: bool,
    force: bool,
    partial: list[Dataset] | None,
) -> Dataset:
    preamble = read_preamble(fileobj, force)
    meta = _read_file_meta_info(fileobj)
    deflated = is_deflated(meta)
    command_set = None if deflated else _read_command_set_elements(fileobj)
    stream: _Inflating | BinaryIO = fileobj
    if deflated:
        stream, (implicit, little) = _Inflating(fileobj, max_inflated_bytes), (False, True)
    else:
        implicit, little = _plain_encoding(fileobj, meta.get("TransferSyntaxUID"))
    parser = _Parser(
        stream, keep_bulk=keep_bulk, defer_bytes=defer_bytes, keep_deferred=keep_deferred, little_endian=little
    )
    try:
        dataset = parser.dataset(None, default_encoding, implicit)
    except DicomInputError:
        if partial is not None and parser.read_top:
            partial.append(Dataset(parser.read_top))
        raise
    if deflated:  # as read_deflated gives it: positions are offsets in the inflated data set, not in the file
        dataset.file_meta = meta
        return dataset
    if command_set:
        dataset.update(command_set)
    read = FileDataset(fileobj, dataset, preamble, meta, implicit, little)
    read.set_original_encoding(implicit, little, dataset.original_character_set)
    return read

"""Read a Deflated Explicit VR Little Endian instance (PS3.5 A.5) without holding it inflated.

pydicom inflates a deflated data set whole, in memory, before it parses a byte of it: a 1 MB file holding a
250 MiB private OB of zeros (which the listener accepts: it inflates under ``instance_byte_limit``) cost the
worker 565 MB of RSS for its header alone, and as much again for its pixel data. Here the data set is inflated as
it is parsed (:class:`_Inflating`, a forward reader that pydicom parses through): a value over
``defer_bytes`` that is not the pixel or overlay data is inflated and dropped, never held, and inflating stops
with a reason naming (0002,0010) once the data set runs past ``max_inflated_bytes``.
"""

from __future__ import annotations

import io
import logging
import zlib
from typing import BinaryIO, Final

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_dataset, read_preamble
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from radtrace.errors import DicomInputError

__all__ = ["InflateLimitError", "is_deflated", "read_deflated", "starts_deflated"]

logger = logging.getLogger(__name__)

_READ: Final = 1 << 16
_INFLATE: Final = 1 << 20
#: Inflated bytes kept behind the read position, for pydicom's short rewinds (an element's tag and length).
_WINDOW: Final = 1 << 16
#: A rewind further back starts inflating again from the start; at most this many times per data set.
_MAX_PASSES: Final = 3


class InflateLimitError(DicomInputError):
    """The deflated data set inflates beyond the bound it is read under."""


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


def _is_bulk(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return bool(tag.group == 0x7FE0 or (0x6000 <= tag.group <= 0x601E and tag.element == 0x3000))


def _drop_deferred(dataset: Dataset) -> None:
    """Remove the values left uninflated (over the deferral size), in nested items too: nothing can read them."""
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            logger.debug("leaving element %s (%d bytes) out", tag, raw.length)
            del dataset[tag]
        elif raw is not None and isinstance(raw.value, Sequence):
            for item in raw.value:
                _drop_deferred(item)


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
    ``keep_deferred`` kept deferred likewise.

    Raises:
        DicomInputError: not a deflated Part 10 file, not deflate, or inflating beyond ``max_inflated_bytes``.
    """
    read_preamble(fileobj, False)
    meta = _read_file_meta_info(fileobj)
    if not is_deflated(meta):
        raise DicomInputError("(0002,0010) Transfer Syntax UID: not deflated")
    stream = _Inflating(fileobj, max_inflated_bytes)
    dataset: Dataset | None = None
    while True:
        part = read_dataset(stream, False, True, stop_when=_is_bulk, defer_size=defer_bytes)  # type: ignore[arg-type]
        if not keep_deferred:
            _drop_deferred(part)  # before they are moved: pydicom converts a private element that is set
        if dataset is None:
            dataset = part
        else:
            for tag in list(part.keys()):
                dataset[tag] = part.get_item(tag, keep_deferred=True)
        head = stream.read(1)
        if not head:
            break
        stream.seek(-1, io.SEEK_CUR)
        # at a pixel or overlay element: read it whole, or skip its value
        elements = data_element_generator(stream, False, True, defer_size=None if keep_bulk else 0)  # type: ignore[arg-type]
        element = next(elements, None)
        if element is None:
            break
        dataset[element.tag] = element  # without keep_bulk, deferred: its length and no value
    assert dataset is not None  # read_dataset returned at least once
    dataset.file_meta = meta
    return dataset

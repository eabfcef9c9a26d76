"""Image sizes as a compressed codestream declares them, read before anything decodes it.

A decoder believes its codestream: a 33 KB JPEG 2000 that declares 12000 x 12000 is decoded into
gigabytes of zeros. These pure functions read only the size fields, from the first bytes of the
first fragment of encapsulated Pixel Data (PS3.5 A.4):

- JPEG 2000 (ITU-T T.800 A.5.1): the SIZ marker segment (``FF51``) after SOC (``FF4F``): image
  width ``Xsiz - XOsiz``, height ``Ysiz - YOsiz``, ``Csiz`` components; or, for a JP2 file, its
  ``ihdr`` box;
- JPEG (ITU-T T.81 B.2.2) and JPEG-LS (ITU-T T.87 C.2.2): the first start-of-frame marker
  (``FFC0``-``FFCF`` but DHT ``C4``, JPG ``C8`` and DAC ``CC``; ``FFF7`` for JPEG-LS): ``Y`` lines,
  ``X`` samples per line, ``Nf`` components, and ``P``, the sample precision in bits.

RLE (PS3.5 G) declares no size: the header's Rows and Columns are all there is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ITEM_TAG",
    "CodestreamSize",
    "SizeError",
    "codestream_size",
    "first_fragment",
]

#: (FFFE,E000) Item, little endian.
ITEM_TAG: Final = b"\xfe\xff\x00\xe0"
_SOC_SIZ: Final = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_SOF_MARKERS: Final = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


class SizeError(ValueError):
    """The bytes do not declare a size that can be trusted (malformed, truncated or absent)."""


@dataclass(frozen=True)
class CodestreamSize:
    """What a codestream says it will decode to."""

    rows: int
    columns: int
    components: int
    precision: int | None = field(default=None, compare=False)
    """Bits per sample of a JPEG or JPEG-LS frame header (``P``); None for JPEG 2000."""

    @property
    def samples(self) -> int:
        """Rows x columns x components."""
        return self.rows * self.columns * self.components


def first_fragment(pixel_data: bytes, *, limit: int = 64 * 1024) -> bytes:
    """The first ``limit`` bytes of the first frame's codestream: the fragments after the Basic Offset Table,
    joined. A frame may be split over several fragments at any byte (PS3.5 A.4), the first holding only its SOI:
    the frame header is read across them. Fragments past the first frame only follow its header, never precede it.

    ``pixel_data``: the value of (7FE0,0010) from its start, or at least its first items (the last may be cut).
    """
    if pixel_data[:4] != ITEM_TAG or len(pixel_data) < 8:
        raise SizeError("encapsulated pixel data does not start with items")
    (length,) = struct.unpack_from("<L", pixel_data, 4)
    offset = 8 + length  # past the Basic Offset Table
    parts: list[bytes] = []
    taken = 0
    while taken < limit and pixel_data[offset : offset + 4] == ITEM_TAG and len(pixel_data) >= offset + 8:
        (length,) = struct.unpack_from("<L", pixel_data, offset + 4)
        part = bytes(pixel_data[offset + 8 : offset + 8 + min(length, limit - taken)])
        parts.append(part)
        taken += len(part)
        offset += 8 + length
    if not parts:
        raise SizeError("encapsulated pixel data does not start with items")
    return b"".join(parts)


def codestream_size(data: bytes) -> CodestreamSize:
    """The size a JPEG, JPEG-LS or JPEG 2000 codestream declares; :class:`SizeError` when it declares none."""
    if data.startswith(_SOC_SIZ):
        return _siz(data, 4)
    if data.startswith(_JP2_SIGNATURE):
        return _jp2(data)
    if data.startswith(b"\xff\xd8"):
        return _sof(data)
    raise SizeError("not a JPEG, JPEG-LS or JPEG 2000 codestream")


def _siz(data: bytes, at: int) -> CodestreamSize:
    """The SIZ segment whose length field is at ``at``."""
    if len(data) < at + 38:
        raise SizeError("JPEG 2000 SIZ marker segment is truncated")
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">LLLL", data, at + 4)
    (csiz,) = struct.unpack_from(">H", data, at + 36)
    if xsiz <= xosiz or ysiz <= yosiz or csiz == 0:
        raise SizeError("JPEG 2000 SIZ declares an empty image")
    return CodestreamSize(rows=ysiz - yosiz, columns=xsiz - xosiz, components=csiz)


def _jp2(data: bytes) -> CodestreamSize:
    """The ``ihdr`` box of a JP2 file (ISO/IEC 15444-1 I.5.3.1), else the SIZ of its codestream."""
    ihdr = data.find(b"ihdr")
    if ihdr >= 4 and len(data) >= ihdr + 14:
        height, width, components = struct.unpack_from(">LLH", data, ihdr + 4)
        if height and width and components:
            return CodestreamSize(rows=height, columns=width, components=components)
    soc = data.find(_SOC_SIZ)
    if soc < 0:
        raise SizeError("JP2 file without an image header or codestream")
    return _siz(data, soc + 4)


def _sof(data: bytes) -> CodestreamSize:
    """Walk JPEG marker segments from SOI to the first start-of-frame."""
    offset = 2
    end = len(data)
    while offset < end:
        if data[offset] != 0xFF:
            raise SizeError("JPEG marker expected")
        while offset < end and data[offset] == 0xFF:  # fill bytes
            offset += 1
        if offset >= end:
            break
        marker = data[offset]
        offset += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            raise SizeError("JPEG codestream has no frame header before its scan")
        if offset + 2 > end:
            break
        (length,) = struct.unpack_from(">H", data, offset)
        if length < 2:
            raise SizeError("JPEG marker segment with an impossible length")
        if marker in _SOF_MARKERS:
            if offset + 8 > end:
                break
            precision, lines, samples, components = struct.unpack_from(">BHHB", data, offset + 2)
            if lines == 0:  # the line count comes later in a DNL marker: nothing to check it against now
                raise SizeError("JPEG frame header defers its number of lines (DNL)")
            if samples == 0 or components == 0:
                raise SizeError("JPEG frame header declares an empty image")
            return CodestreamSize(rows=lines, columns=samples, components=components, precision=precision)
        offset += length
    raise SizeError("JPEG frame header is missing or truncated")

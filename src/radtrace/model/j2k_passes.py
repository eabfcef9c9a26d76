"""Whether a JPEG 2000 codestream holds every coding pass of every code-block it codes (ITU-T T.800 B.10, E.1).

With the reversible 5-3 wavelet a coding is lossless only so: a rate-allocated one (OpenJPEG's ``-r``, Pillow's
``quality_layers``, Kakadu's ``-rate`` with ``Creversible=yes``), or quality layers cut off, leaves passes out and
the image is lossy whatever its wavelet; the transfer syntax 1.2.840.10008.1.2.4.91 allows either, and a sender
may label either .90. The packet headers say how many passes each code-block got; its zero bit-planes and the
subband's exponent (QCD) how many it has. Read for codestreams with one precinct a resolution and one coding and
quantisation for every component (the encoders' defaults); anything else is left unread (None), for
:mod:`radtrace.model.image_marks` to say so.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["passes_complete"]


#: Bounds on what is read: no subband has more bit-planes (Mb <= 7 guard bits + 31 + 1, T.800 E.1), and a frame
#: in more tiles than this is left to the decoder (the encoders' default is one).
_MOST_PLANES: Final = 40
_MOST_TILES: Final = 4096


class _UnreadError(Exception):
    """A codestream this reader does not follow (a marker or coding style it leaves to the decoder)."""


#: Main and tile-part header markers that change what the packets hold per component, tile or region (COC, QCC,
#: RGN, POC, PPM, PPT): a codestream with them is not read here.
_UNREAD_MARKERS: Final = frozenset({0x53, 0x5D, 0x5E, 0x5F, 0x60, 0x61})


class _Bits:
    """A packet header's bits (ITU-T T.800 B.10.1): most significant first, a byte after 0xFF holding 7."""

    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset, self.byte, self.left = data, offset, 0, 0

    def bit(self) -> int:
        if not self.left:
            if self.offset >= len(self.data):
                raise _UnreadError("packet header past the tile's data")
            self.left = 7 if self.byte == 0xFF else 8
            self.byte = self.data[self.offset]
            self.offset += 1
        self.left -= 1
        return (self.byte >> self.left) & 1

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = value << 1 | self.bit()
        return value

    def end(self) -> int:
        """Where the packet's body starts: past the header's last byte (and the 0 stuffed after a final 0xFF)."""
        return self.offset + (self.byte == 0xFF)


class _TagTree:
    """A tag tree over ``columns`` x ``rows`` leaves (T.800 B.10.2), decoded as OpenJPEG does."""

    def __init__(self, columns: int, rows: int) -> None:
        self.shapes = [(columns, rows)]
        while columns * rows > 1:
            columns, rows = (columns + 1) // 2, (rows + 1) // 2
            self.shapes.append((columns, rows))
        self.value = [[1 << 30] * (c * r) for c, r in self.shapes]
        self.low = [[0] * (c * r) for c, r in self.shapes]

    def below(self, bits: _Bits, leaf: int, threshold: int) -> bool:
        """Whether the leaf's value is below ``threshold``, reading what bits that takes."""
        columns = self.shapes[0][0]
        x, y = leaf % columns, leaf // columns
        path = []
        for level, (width, _) in enumerate(self.shapes):
            path.append((level, y * width + x))
            x, y = x // 2, y // 2
        low = 0
        for level, index in reversed(path):
            low = max(low, self.low[level][index])
            while low < threshold and low < self.value[level][index]:
                if bits.bit():
                    self.value[level][index] = low
                else:
                    low += 1
            self.low[level][index] = low
        return self.value[0][leaf] < threshold


def _ceil_div(value: int, divisor: int) -> int:
    return -(-value // divisor)


def passes_complete(stream: bytes) -> bool | None:
    """Whether every code-block a JPEG 2000 codestream includes holds all its coding passes, down
    to the last bit-plane (T.800 B.10, E.1: 3 (Mb - P) - 2 passes, Mb = G + exponent - 1 from QCD, P its zero
    bit-planes): with the reversible 5-3 wavelet, what a lossless coding is. A rate-allocated coding (OpenJPEG's
    and Kakadu's rates, quality layers cut) leaves passes out, or whole tiles: False. None where the codestream
    is not followed here (several precincts a resolution, COC/QCC/RGN/POC/PPM/PPT, selective bypass, HT
    code-blocks, a malformed header)."""
    try:
        return _read_passes(stream)
    except (_UnreadError, IndexError, struct.error, ValueError, ArithmeticError):  # a malformed header
        return None


def _read_passes(stream: bytes) -> bool:
    if not stream.startswith(b"\xff\x4f"):
        start = stream.find(b"\xff\x4f\xff\x51")  # a JP2 file: its codestream box
        if start < 0:
            raise _UnreadError("no codestream")
        stream = stream[start:]
    offset, siz, cod, qcd = 2, b"", b"", b""
    while stream[offset] == 0xFF and stream[offset + 1] != 0x90:  # the main header, up to the first SOT
        marker = stream[offset + 1]
        (length,) = struct.unpack_from(">H", stream, offset + 2)
        segment = stream[offset + 4 : offset + 2 + length]
        if marker in _UNREAD_MARKERS:
            raise _UnreadError("COC, QCC, RGN, POC or PPM")
        siz, cod, qcd = (segment if marker == m else old for m, old in ((0x51, siz), (0x52, cod), (0x5C, qcd)))
        offset += 2 + length
    if stream[offset] != 0xFF or not (siz and cod and qcd):
        raise _UnreadError("no SIZ, COD or QCD")
    rsiz, width, height, x0, y0, tile_width, tile_height, tile_x0, tile_y0, components = struct.unpack_from(
        ">HIIIIIIIIH", siz
    )
    steps = [(siz[37 + 3 * c], siz[38 + 3 * c]) for c in range(components)]
    if not (tile_width and tile_height and components and all(a and b for a, b in steps)):
        raise _UnreadError("no tile or sample grid")
    if not (x0 < width and y0 < height):
        raise _UnreadError("no image area")
    scod, order, layers, _, levels, xcb, ycb, style = struct.unpack_from(">BBHBBBBB", cod)
    if rsiz & 0x4000 or style & 0x41:  # HTJ2K, selective bypass
        raise _UnreadError("HT or bypass")
    precincts = list(cod[10 : 10 + levels + 1]) if scod & 1 else [0xFF] * (levels + 1)
    guard, exponents = qcd[0] >> 5, [b >> 3 for b in qcd[1:]]
    if qcd[0] & 0x1F or len(exponents) < 3 * levels + 1:
        raise _UnreadError("quantised")
    tiles: dict[int, list[bytes]] = {}
    while stream[offset : offset + 2] == b"\xff\x90":  # each tile-part
        index, size = struct.unpack_from(">HI", stream, offset + 4)
        end = offset + size if size else len(stream) - 2 * stream.endswith(b"\xff\xd9")
        at = offset + 12
        while stream[at + 1] != 0x93:  # its header, up to SOD
            if stream[at + 1] in _UNREAD_MARKERS or stream[at + 1] in (0x52, 0x5C):
                raise _UnreadError("tile-part coding or quantisation")
            at += 2 + struct.unpack_from(">H", stream, at + 2)[0]
        tiles.setdefault(index, []).append(stream[at + 2 : end])
        offset = end
    across, down = _ceil_div(width - tile_x0, tile_width), _ceil_div(height - tile_y0, tile_height)
    if across * down > _MOST_TILES:
        raise _UnreadError("tiles past the reader's bound")
    if len(tiles) < across * down:
        return False  # whole tiles left out
    for index, parts in tiles.items():
        p, q = index % across, index // across
        tx0, ty0 = max(tile_x0 + p * tile_width, x0), max(tile_y0 + q * tile_height, y0)
        tx1, ty1 = min(tile_x0 + (p + 1) * tile_width, width), min(tile_y0 + (q + 1) * tile_height, height)
        most_planes = [guard + exponent - 1 for exponent in exponents]  # every component's: no QCC
        bands = [
            _tile_bands(
                (_ceil_div(tx0, sx), _ceil_div(ty0, sy), _ceil_div(tx1, sx), _ceil_div(ty1, sy)),
                levels,
                (xcb + 2, ycb + 2),
                precincts,
                most_planes,
            )
            for sx, sy in steps
        ]
        if not _tile_complete(b"".join(parts), bands, scod, order, layers, bool(style & 0x04)):
            return False
    return True


@dataclass
class _Band:
    """One subband's code-blocks in a tile's one precinct: their tag trees and what the packets gave each."""

    columns: int
    rows: int
    most_planes: int  # Mb (T.800 E.1)

    def __post_init__(self) -> None:
        count = self.columns * self.rows
        self.inclusion, self.zeros = _TagTree(self.columns, self.rows), _TagTree(self.columns, self.rows)
        self.passes: list[int | None] = [None] * count
        self.zero_planes, self.lblock = [0] * count, [3] * count


def _tile_bands(
    box: tuple[int, int, int, int], levels: int, blocks: tuple[int, int], precincts: list[int], most_planes: list[int]
) -> list[list[_Band] | None]:
    """Each resolution's subbands (None: a resolution with no samples), one precinct each (T.800 B.5-B.7)."""
    resolutions: list[list[_Band] | None] = []
    for r in range(levels + 1):
        rx0, ry0, rx1, ry1 = (_ceil_div(v, 1 << (levels - r)) for v in box)
        if rx1 <= rx0 or ry1 <= ry0:
            resolutions.append(None)
            continue
        ppx, ppy = precincts[r] & 0xF, precincts[r] >> 4
        if (_ceil_div(rx1, 1 << ppx) - (rx0 >> ppx)) * (_ceil_div(ry1, 1 << ppy) - (ry0 >> ppy)) != 1:
            raise _UnreadError("several precincts")
        xcb, ycb = min(blocks[0], ppx - (r > 0)), min(blocks[1], ppy - (r > 0))
        level = levels if r == 0 else levels - r + 1
        bands = []
        for band, (xo, yo) in enumerate([(0, 0)] if r == 0 else [(1, 0), (0, 1), (1, 1)]):
            dx, dy = (xo << level >> 1), (yo << level >> 1)
            bx0, by0 = _ceil_div(box[0] - dx, 1 << level), _ceil_div(box[1] - dy, 1 << level)
            bx1, by1 = _ceil_div(box[2] - dx, 1 << level), _ceil_div(box[3] - dy, 1 << level)
            columns = _ceil_div(bx1, 1 << xcb) - (bx0 >> xcb) if bx1 > bx0 else 0
            rows = _ceil_div(by1, 1 << ycb) - (by0 >> ycb) if by1 > by0 else 0
            bands.append(_Band(columns, rows, most_planes[0 if r == 0 else 1 + 3 * (r - 1) + band]))
        resolutions.append(bands)
    return resolutions


def _pass_count(bits: _Bits) -> int:
    """A code-block's number of new coding passes (T.800 Table B.4)."""
    if not bits.bit():
        return 1
    if not bits.bit():
        return 2
    if (count := bits.bits(2)) != 3:
        return 3 + count
    if (count := bits.bits(5)) != 31:
        return 6 + count
    return 37 + bits.bits(7)


def _packet_order(order: int, layers: int, resolutions: int, components: int) -> Iterator[tuple[int, int, int]]:
    """(component, resolution, layer) in the progression ``order`` (T.800 B.12.1), one precinct each: every
    precinct starts at the tile's origin, so the position-led orders reduce to resolution or component first.
    Generated: 65,535 layers of 33 resolutions would be two million triples, for packets that run out first."""
    span = range(layers)
    if order == 0:  # LRCP
        return ((c, r, layer) for layer in span for r in range(resolutions) for c in range(components))
    if order == 1:  # RLCP
        return ((c, r, layer) for r in range(resolutions) for layer in span for c in range(components))
    if order == 2:  # RPCL
        return ((c, r, layer) for r in range(resolutions) for c in range(components) for layer in span)
    if order in (3, 4):  # PCRL, CPRL
        return ((c, r, layer) for c in range(components) for r in range(resolutions) for layer in span)
    raise _UnreadError("unknown progression order")


def _tile_complete(
    data: bytes, bands: list[list[list[_Band] | None]], scod: int, order: int, layers: int, terminated: bool
) -> bool:
    """Whether a tile's packets (``bands``: each component's resolutions) give each code-block they include all
    its passes (T.800 B.10, B.12)."""
    at = 0
    for component, r, layer in _packet_order(order, layers, len(bands[0]), len(bands)):
        if bands[component][r] is None:
            continue  # a resolution with no samples has no precinct, no packet
        if scod & 2 and data[at : at + 2] == b"\xff\x91":  # SOP
            at += 6
        bits, body = _Bits(data, at), 0
        if bits.bit():  # not an empty packet
            for band in bands[component][r] or []:
                for block in range(band.columns * band.rows):
                    first = band.passes[block] is None
                    if not (band.inclusion.below(bits, block, layer + 1) if first else bits.bit()):
                        continue
                    if first:
                        zero = 1
                        while not band.zeros.below(bits, block, zero):
                            zero += 1
                            if zero > _MOST_PLANES:
                                raise _UnreadError("zero bit-planes past any subband's")
                        band.zero_planes[block], band.passes[block] = zero - 1, 0
                    passes = _pass_count(bits)
                    while bits.bit():
                        band.lblock[block] += 1
                    if terminated:  # each pass its own segment
                        body += sum(bits.bits(band.lblock[block]) for _ in range(passes))
                    else:
                        body += bits.bits(band.lblock[block] + passes.bit_length() - 1)
                    band.passes[block] = (band.passes[block] or 0) + passes
        at = bits.end()
        if scod & 4 and data[at : at + 2] == b"\xff\x92":  # EPH
            at += 2
        at += body
        if at > len(data):
            return False  # the tile's data cut short
    for resolution in (resolution for component in bands for resolution in component):
        for band in resolution or []:
            for got, zero in zip(band.passes, band.zero_planes, strict=True):
                if got is None:
                    continue  # never included: all its coefficients 0, or left out (not told apart)
                if band.most_planes - zero < 1:
                    raise _UnreadError("more zero bit-planes than the subband has")
                if got < 3 * (band.most_planes - zero) - 2:
                    return False
    return True

"""Whether a JPEG 2000 codestream holds every coding pass of every code-block it codes (ITU-T T.800 B.10, E.1).

With the reversible 5-3 wavelet a coding is lossless only so: a rate-allocated one (OpenJPEG's ``-r``, Pillow's
``quality_layers``, Kakadu's ``-rate`` with ``Creversible=yes``), or quality layers cut off, leaves passes out and
the image is lossy whatever its wavelet; the transfer syntax 1.2.840.10008.1.2.4.91 allows either, and a sender
may label either .90. The packet headers say how many passes each code-block got; its zero bit-planes and the
subband's exponent (QCD) how many it has. Read for codestreams with one coding and quantisation for every
component, and precincts of any size in the orders LRCP and RLCP (one a resolution in the others); anything
else is left unread (None), for :mod:`radtrace.model.image_marks` to say so.
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
#: ... and one whose precincts, over a tile's resolutions, are more than this (precincts of 32 on a 4,096-pixel-square
#: film at its finest resolution are 16,384; a damaged header's 1-pixel ones, one per sample, cost seconds)
_MOST_PRECINCTS: Final = 16384
#: ... and one of more code-blocks than this in all (a 4,280 x 3,520 film in the encoders' 64 x 64 blocks has 3,700,
#: in 32 x 32 ones 14,800), or whose packets would have the reader look at code-blocks more often than
#: :data:`_MOST_VISITS` times: read in Python at about 60 us a block, a film coded in 4 x 4 blocks (a sender may) took
#: 22 s at 2,048 pixels square and would take minutes at a CR film's size, on the worker, for every image.
_MOST_BLOCKS: Final = 32768
_MOST_VISITS: Final = 2_000_000


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
    """A tag tree over ``columns`` x ``rows`` leaves (T.800 B.10.2), decoded as OpenJPEG does. Its nodes are made
    on first use: most of a damaged header's precincts are never reached, and making them all cost seconds."""

    def __init__(self, columns: int, rows: int) -> None:
        self.shapes = [(columns, rows)]
        self.value: list[list[int]] = []
        self.low: list[list[int]] = []

    def below(self, bits: _Bits, leaf: int, threshold: int) -> bool:
        """Whether the leaf's value is below ``threshold``, reading what bits that takes."""
        if not self.value:
            columns, rows = self.shapes[0]
            while columns * rows > 1:
                columns, rows = (columns + 1) // 2, (rows + 1) // 2
                self.shapes.append((columns, rows))
            self.value = [[1 << 30] * (c * r) for c, r in self.shapes]
            self.low = [[0] * (c * r) for c, r in self.shapes]
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
    is not followed here (several precincts in a position-led order, COC/QCC/RGN/POC/PPM/PPT, selective bypass, HT
    code-blocks, a malformed header, more code-blocks or packets than :class:`_Budget` allows)."""
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
    budget = _Budget()
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
                budget,
            )
            for sx, sy in steps
        ]
        if not _tile_complete(b"".join(parts), bands, scod, order, layers, bool(style & 0x04), budget):
            return False
    return True


class _Budget:
    """What one codestream's reading may cost: code-blocks made (:data:`_MOST_BLOCKS`) and looked at
    (:data:`_MOST_VISITS`); past either it is left unread."""

    def __init__(self) -> None:
        self._blocks = self._visits = 0

    def blocks(self, count: int) -> None:
        self._blocks += count
        if self._blocks > _MOST_BLOCKS:
            raise _UnreadError("code-blocks past the reader's bound")

    def visits(self, count: int) -> None:
        self._visits += count
        if self._visits > _MOST_VISITS:
            raise _UnreadError("packets past the reader's bound")


@dataclass
class _Band:
    """One subband's code-blocks in one precinct of a tile: their tag trees and what the packets gave each."""

    columns: int
    rows: int
    most_planes: int  # Mb (T.800 E.1)

    def __post_init__(self) -> None:
        count = self.columns * self.rows
        self.inclusion, self.zeros = _TagTree(self.columns, self.rows), _TagTree(self.columns, self.rows)
        self.passes: list[int | None] = [None] * count
        self.zero_planes, self.lblock = [0] * count, [3] * count


def _tile_bands(
    box: tuple[int, int, int, int],
    levels: int,
    blocks: tuple[int, int],
    precincts: list[int],
    most_planes: list[int],
    budget: _Budget,
) -> list[list[list[_Band]]]:
    """Each resolution's precincts (none: a resolution with no samples), each its subbands' code-blocks, as
    OpenJPEG lays them out (T.800 B.5-B.7: precincts partition the resolution from 0 in steps of 2^PPx, halved
    in the subbands of a resolution above the lowest; code-blocks partition each precinct's part of a subband)."""
    resolutions: list[list[list[_Band]]] = []
    counted = 0
    for r in range(levels + 1):
        rx0, ry0, rx1, ry1 = (_ceil_div(v, 1 << (levels - r)) for v in box)
        if rx1 <= rx0 or ry1 <= ry0:
            resolutions.append([])
            continue
        ppx, ppy = precincts[r] & 0xF, precincts[r] >> 4
        across = _ceil_div(rx1, 1 << ppx) - (rx0 >> ppx)
        down = _ceil_div(ry1, 1 << ppy) - (ry0 >> ppy)
        counted += across * down
        if counted > _MOST_PRECINCTS:
            raise _UnreadError("precincts past the reader's bound")
        cpx, cpy = ppx - (r > 0), ppy - (r > 0)  # a precinct's size in its subbands
        xcb, ycb = min(blocks[0], cpx), min(blocks[1], cpy)
        level = levels if r == 0 else levels - r + 1
        geometry = []
        for band, (xo, yo) in enumerate([(0, 0)] if r == 0 else [(1, 0), (0, 1), (1, 1)]):
            dx, dy = (xo << level >> 1), (yo << level >> 1)
            geometry.append(
                (
                    _ceil_div(box[0] - dx, 1 << level),
                    _ceil_div(box[1] - dy, 1 << level),
                    _ceil_div(box[2] - dx, 1 << level),
                    _ceil_div(box[3] - dy, 1 << level),
                    most_planes[0 if r == 0 else 1 + 3 * (r - 1) + band],
                )
            )
        start_x, start_y = (rx0 >> ppx) << ppx, (ry0 >> ppy) << ppy
        if r:
            start_x, start_y = _ceil_div(start_x, 2), _ceil_div(start_y, 2)
        cells = []
        for k in range(across * down):
            gx0, gy0 = start_x + (k % across << cpx), start_y + (k // across << cpy)
            bands = []
            for bx0, by0, bx1, by1, planes in geometry:
                x0, x1 = max(gx0, bx0), min(gx0 + (1 << cpx), bx1)
                y0, y1 = max(gy0, by0), min(gy0 + (1 << cpy), by1)
                columns = _ceil_div(x1, 1 << xcb) - (x0 >> xcb) if x1 > x0 else 0
                rows = _ceil_div(y1, 1 << ycb) - (y0 >> ycb) if y1 > y0 else 0
                budget.blocks(columns * rows if columns and rows else 0)
                bands.append(_Band(columns if rows else 0, rows if columns else 0, planes))
            cells.append(bands)
        resolutions.append(cells)
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


def _packet_order(order: int, layers: int, counts: list[list[int]]) -> Iterator[tuple[int, int, int, int]]:
    """(component, resolution, layer, precinct) in the progression ``order`` (T.800 B.12.1); ``counts``: each
    component's precincts a resolution. With one precinct each, every precinct starts at the tile's origin and
    the position-led orders reduce to resolution or component first; with more, only LRCP and RLCP are followed.
    Generated: 65,535 layers of 33 resolutions would be two million entries, for packets that run out first."""
    span, components, resolutions = range(layers), range(len(counts)), range(len(counts[0]))
    if order not in (0, 1) and any(n > 1 for row in counts for n in row):
        raise _UnreadError("several precincts in a position-led order")
    if order == 0:  # LRCP
        return ((c, r, la, p) for la in span for r in resolutions for c in components for p in range(counts[c][r]))
    if order == 1:  # RLCP
        return ((c, r, la, p) for r in resolutions for la in span for c in components for p in range(counts[c][r]))
    if order == 2:  # RPCL
        return ((c, r, la, p) for r in resolutions for c in components for la in span for p in range(counts[c][r]))
    if order in (3, 4):  # PCRL, CPRL
        return ((c, r, la, p) for c in components for r in resolutions for la in span for p in range(counts[c][r]))
    raise _UnreadError("unknown progression order")


def _tile_complete(
    data: bytes,
    bands: list[list[list[list[_Band]]]],
    scod: int,
    order: int,
    layers: int,
    terminated: bool,
    budget: _Budget,
) -> bool:
    """Whether a tile's packets (``bands``: each component's resolutions) give each code-block they include all
    its passes (T.800 B.10, B.12)."""
    at = 0
    counts = [[len(resolution) for resolution in component] for component in bands]
    for component, r, layer, precinct in _packet_order(order, layers, counts):
        if scod & 2 and data[at : at + 2] == b"\xff\x91":  # SOP
            at += 6
        bits, body = _Bits(data, at), 0
        if bits.bit():  # not an empty packet
            for band in bands[component][r][precinct]:
                budget.visits(band.columns * band.rows)
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
    for cell in (cell for component in bands for resolution in component for cell in resolution):
        for band in cell:
            for got, zero in zip(band.passes, band.zero_planes, strict=True):
                if got is None:
                    continue  # never included: all its coefficients 0, or left out (not told apart)
                if band.most_planes - zero < 1:
                    raise _UnreadError("more zero bit-planes than the subband has")
                if got < 3 * (band.most_planes - zero) - 2:
                    return False
    return True

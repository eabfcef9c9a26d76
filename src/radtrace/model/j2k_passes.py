"""Whether a JPEG 2000 codestream holds every coding pass of every code-block it codes (ITU-T T.800 B.10, E.1).

With the reversible 5-3 wavelet a coding is lossless only so: a rate-allocated one (OpenJPEG's ``-r``, Pillow's
``quality_layers``, Kakadu's ``-rate`` with ``Creversible=yes``), or quality layers cut off, leaves passes out and
the image is lossy whatever its wavelet; the transfer syntax 1.2.840.10008.1.2.4.91 allows either, and a sender
may label either .90. The packet headers say how many passes each code-block got; its zero bit-planes and the
subband's exponent (QCD, QCC: unquantised, or scalar derived or expounded, whose steps a 5-3 decoding takes as
1) how many it has. Read in every progression order (position-led ones with any precincts too) and its changes
(POC), with tiles and tile-parts, each component's own coding (COC, QCC), packet
headers moved to the main or a tile-part header (PPM, PPT), each pass terminated or selective arithmetic coding
bypass (their codeword segments, T.800 D.4-D.6), a region of interest (RGN: its own bit-planes), and HT
code-blocks (HTJ2K, ITU-T T.814: the same packet headers, an HT set a cleanup segment of one pass and a refinement
segment of SigProp and MagRef; lossless where the cleanup reaches bit-plane 0, or bit-plane 1 with both refinement
passes: :func:`_ht_complete`; quality layers dropped are packets missing, as in Part 1). The headers
are read by :mod:`radtrace.model.j2k_header`. Lossy as the codestream is, passes aside (False): a codestream cut
short (a packet past the tile's data, a tile-part past the end, tile-parts or tiles missing: quality layers
dropped, a transfer stopped), the 9-7 wavelet in any COD or COC. Left unread (None), for
:mod:`radtrace.model.image_marks` to say so: an HT code-block past its first HT set (placeholder passes: a layered
HT coding's later sets; cut short is still seen), HT and Part 1 code-blocks mixed, a quantisation style or a wavelet
of Part 2, a malformed header, more than the bounds below, and:

- a region of interest whose only left-out bit-planes are those below the region's shift: with Maxshift (T.800
  H.1) they hold the background alone, and a codestream with no background (OpenJPEG's ``-ROI`` scales the whole
  component: lossless, every code-block stops exactly 3 x shift passes short) is pass for pass the one whose
  background was dropped. The region's shape is not in the codestream.

Not told apart, and not decoded (``bench/j2k_verdicts.py``: ``-r 1.5``, ``-r 1.05``, flagged lossy on the safe
side): a pass left out that would have changed nothing. OpenJPEG asked for a rate above the lossless size leaves
out a code-block's last pass, the cleanup of bit-plane 0, where it would find no new coefficient (no distortion
gained): 9 of the canine film's 25 code-blocks and 41 of the Fuji film's 70, values decoded equal. The pass's bits
are not in the codestream, so what it would have found cannot be read from it: decoding the passes that are there
(MQ decoding and the context modelling of T.800 C, D) says only which coefficients the missing cleanup would visit
(still insignificant, not reached by the SigProp pass of bit-plane 0), never whether one of them was 1; it could
clear only a code-block where it would visit none, and a film's flat areas leave such coefficients in most. The
same one-pass gap is in truly lossy codings too (-r 20: 2 of canine's code-blocks, 3 of Fuji's, beside others far
shorter), so it is no sign of its own. And the decoding is not cheap: it is a sequential arithmetic decoder, a
step for every coefficient in every pass (some 24 passes for a 10-bit film's code-block), in Python at least tens
of seconds for a CR film, where these headers take a fraction of a second; bounded, it would leave most films
unread. The Lossy Image Compression attribute (0028,2110), where the sender sets it, is what can say otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from radtrace.model.j2k_header import Tile, UnreadError, read_header

__all__ = ["CUT_SHORT", "IRREVERSIBLE", "PASSES_LEFT_OUT", "passes_complete", "verdict"]

#: Why a codestream is lossy, as :func:`verdict` says it.
PASSES_LEFT_OUT: Final = "coding passes left out (a rate-limited coding)"
CUT_SHORT: Final = "codestream cut short (packets or tile-parts missing)"
IRREVERSIBLE: Final = "irreversible 9-7 wavelet in a tile's or a component's coding (COD, COC)"


#: Bounds on what is read: no subband has more bit-planes (Mb <= 7 guard bits + 31 + 1 + an RGN shift of up to
#: 37, T.800 E.1, A.6.3) ...
_MOST_PLANES: Final = 80
#: ... and one whose precincts, over a tile's resolutions, are more than this (precincts of 32 on a 4,096-pixel-square
#: film at its finest resolution are 16,384; the encoders halve them a resolution down to 1 pixel: the RG1 CR film,
#: 1,955 x 1,841 in precincts of 32, has 21,576 over its 6 resolutions; a damaged header's 1-pixel ones at every
#: resolution, one per sample, would cost seconds) ...
_MOST_PRECINCTS: Final = 32768
#: ... and one of more code-blocks than this in all (a 4,280 x 3,520 film in the encoders' 64 x 64 blocks has 3,700,
#: in 32 x 32 ones 14,800; the RG1 film in precincts of 32, one block a subband of each, 57,536), or whose packets
#: would have the reader look at code-blocks more often than :data:`_MOST_VISITS` times: read in Python at about
#: 30 us a block (RG1's 57,536: 1.4-1.8 s on a loaded 2-core machine), a film coded in 4 x 4 blocks (a sender may)
#: took 22 s at 2,048 pixels square and would take minutes at a CR film's size, on the worker, for every image.
_MOST_BLOCKS: Final = 65536
_MOST_VISITS: Final = 2_000_000
#: ... and no codeword segment's length in more bits than this (OpenJPEG's bound: a length of 32 bits is 4 GB)
_MOST_LENGTH_BITS: Final = 32
#: The code-block style's HT bit (T.814 A.2: SPcod/SPcoc bit 6); bit 7 with it, HT and Part 1 code-blocks mixed.
_HT: Final = 0x40


class _PastTheEndError(UnreadError):
    """A packet header runs past the bytes that hold it: in a tile's data, the codestream was cut short."""


class _Bits:
    """A packet header's bits (ITU-T T.800 B.10.1): most significant first, a byte after 0xFF holding 7."""

    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset, self.byte, self.left = data, offset, 0, 0

    def bit(self) -> int:
        if not self.left:
            if self.offset >= len(self.data):
                raise _PastTheEndError("packet header past the tile's data")
            self.left = 7 if self.byte == 0xFF else 8
            self.byte = self.data[self.offset]
            self.offset += 1
        self.left -= 1
        return (self.byte >> self.left) & 1

    def bits(self, count: int) -> int:
        value = 0
        while count:
            if not self.left:
                if self.offset >= len(self.data):
                    raise _PastTheEndError("packet header past the tile's data")
                self.left = 7 if self.byte == 0xFF else 8
                self.byte = self.data[self.offset]
                self.offset += 1
            taken = count if count < self.left else self.left
            self.left -= taken
            value = value << taken | (self.byte >> self.left) & ((1 << taken) - 1)
            count -= taken
        return value

    def end(self) -> int:
        """Where the packet's body starts: past the header's last byte (and the 0 stuffed after a final 0xFF)."""
        return self.offset + (self.byte == 0xFF)


class _TagTree:
    """A tag tree over ``columns`` x ``rows`` leaves (T.800 B.10.2), decoded as OpenJPEG does. Made when a packet
    first reaches its subband (:meth:`_Band.open`): most of a damaged header's precincts are never reached."""

    __slots__ = ("low", "value", "widths")

    def __init__(self, columns: int, rows: int) -> None:
        if columns * rows == 1:  # a precinct's subband of one code-block: most of them, in small precincts
            self.widths, self.value, self.low = [1], [[1 << 30]], [[0]]
            return
        shapes = [(columns, rows)]
        while columns * rows > 1:
            columns, rows = (columns + 1) // 2, (rows + 1) // 2
            shapes.append((columns, rows))
        self.widths = [c for c, _ in shapes]
        self.value = [[1 << 30] * (c * r) for c, r in shapes]
        self.low = [[0] * (c * r) for c, r in shapes]

    def below(self, bits: _Bits, leaf: int, threshold: int) -> bool:
        """Whether the leaf's value is below ``threshold``, reading what bits that takes."""
        x, y = leaf % self.widths[0], leaf // self.widths[0]
        path = []
        for width in self.widths:
            path.append(y * width + x)
            x, y = x >> 1, y >> 1
        low = 0
        for level in range(len(path) - 1, -1, -1):
            index, values, lows = path[level], self.value[level], self.low[level]
            low = lows[index] if lows[index] > low else low
            value = values[index]
            while low < threshold and low < value:
                if bits.bit():
                    values[index] = value = low
                else:
                    low += 1
            lows[index] = low
        return self.value[0][leaf] < threshold


def _ceil_div(value: int, divisor: int) -> int:
    return -(-value // divisor)


def passes_complete(stream: bytes) -> bool | None:
    """Whether every code-block a JPEG 2000 codestream includes holds all its coding passes, down
    to the last bit-plane (T.800 B.10, E.1: 3 (Mb - P) - 2 passes, Mb = G + exponent - 1 from QCD or QCC, plus
    an RGN shift, P its zero bit-planes): with the reversible 5-3 wavelet, what a lossless coding is. A
    rate-allocated coding (OpenJPEG's and Kakadu's rates, quality layers cut) leaves passes out, or whole tiles:
    False; so does a codestream cut short or one coding a tile or component with the 9-7 wavelet. None where the
    codestream is not followed here (HT code-blocks past their first HT set, a Part 2 wavelet, a malformed header, more
    code-blocks or packets than :class:`_Budget` allows). :func:`verdict` says why as well."""
    return verdict(stream)[0]


def verdict(stream: bytes) -> tuple[bool | None, str]:
    """:func:`passes_complete`'s answer and why: "" for True, one of :data:`PASSES_LEFT_OUT`, :data:`CUT_SHORT`,
    :data:`IRREVERSIBLE` for False, and for None what was not followed."""
    try:
        _read_passes(stream)
    except _LossyError as lossy:
        return False, str(lossy)
    except (UnreadError, IndexError, struct.error, ValueError, ArithmeticError) as error:  # a malformed header
        return None, str(error) if isinstance(error, UnreadError) else f"malformed header ({type(error).__name__})"
    return True, ""


class _LossyError(Exception):
    """What the codestream shows lossy (its text, one of :data:`PASSES_LEFT_OUT`, :data:`CUT_SHORT`,
    :data:`IRREVERSIBLE`)."""


def _read_passes(stream: bytes) -> None:
    header = read_header(stream)
    if any(component.irreversible for tile in header.tiles for component in tile.components):
        raise _LossyError(IRREVERSIBLE)
    if header.cut_short:  # a tile-part past the end, tile-parts or whole tiles missing: whatever the coding
        raise _LossyError(CUT_SHORT)
    x0, y0, x1, y1 = header.size
    tile_width, tile_height, tile_x0, tile_y0 = header.tile_grid
    across = _ceil_div(x1 - tile_x0, tile_width)
    budget = _Budget()
    for tile in header.tiles:
        if any(component.style & 0x80 for component in tile.components):  # HT and Part 1 code-blocks mixed
            raise UnreadError("HT code-blocks mixed with others")
        p, q = tile.index % across, tile.index // across
        tx0, ty0 = max(tile_x0 + p * tile_width, x0), max(tile_y0 + q * tile_height, y0)
        tx1, ty1 = min(tile_x0 + (p + 1) * tile_width, x1), min(tile_y0 + (q + 1) * tile_height, y1)
        bands = [
            _tile_bands(
                (_ceil_div(tx0, sx), _ceil_div(ty0, sy), _ceil_div(tx1, sx), _ceil_div(ty1, sy)),
                component.levels,
                component.blocks,
                list(component.precincts),
                list(component.most_planes),
                component.shift,
                budget,
            )
            for component, (sx, sy) in zip(tile.components, header.steps, strict=True)
        ]
        if any(v.order > 1 for v in tile.progression) and any(s & (s - 1) for step in header.steps for s in step):
            raise UnreadError("a position-led order over sampling steps not a power of 2")  # OpenJPEG's own reading
        places = _precinct_places(tile, header.steps, (tx0, ty0, tx1), bands)
        if not _tile_complete(tile, bands, places, budget):
            raise _LossyError(PASSES_LEFT_OUT)


class _Budget:
    """What one codestream's reading may cost: code-blocks made (:data:`_MOST_BLOCKS`) and looked at
    (:data:`_MOST_VISITS`); past either it is left unread."""

    def __init__(self) -> None:
        self._blocks = self._visits = 0

    def blocks(self, count: int) -> None:
        self._blocks += count
        if self._blocks > _MOST_BLOCKS:
            raise UnreadError("code-blocks past the reader's bound")

    def visits(self, count: int) -> None:
        self._visits += count
        if self._visits > _MOST_VISITS:
            raise UnreadError("packets past the reader's bound")


class _Band:
    """One subband's code-blocks in one precinct of a tile: their tag trees and what the packets gave each, made
    when a packet first reaches them (:meth:`open`: a film in 1-pixel precincts has some 60,000 such bands, and
    making each whole up front was most of its reading)."""

    __slots__ = (
        "columns",
        "inclusion",
        "lblock",
        "most_planes",
        "passes",
        "rows",
        "segments",
        "shift",
        "zero_planes",
        "zeros",
    )

    def __init__(self, columns: int, rows: int, most_planes: int, shift: int) -> None:
        self.columns, self.rows = columns, rows
        self.most_planes = most_planes  # Mb (T.800 E.1), with the RGN shift
        self.shift = shift  # RGN's: the bit-planes below it hold only the coefficients outside the region
        self.passes: list[int | None] = []  # none yet: no packet has reached the subband

    def open(self) -> None:
        count = self.columns * self.rows
        self.inclusion, self.zeros = _TagTree(self.columns, self.rows), _TagTree(self.columns, self.rows)
        self.passes = [None] * count
        self.zero_planes, self.lblock = [0] * count, [3] * count
        self.segments = [(0, 0)] * count  # the passes the last codeword segment holds, and has


def _tile_bands(
    box: tuple[int, int, int, int],
    levels: int,
    blocks: tuple[int, int],
    precincts: list[int],
    most_planes: list[int],
    shift: int,
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
            raise UnreadError("precincts past the reader's bound")
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
                budget.blocks(max(columns * rows, 1))  # an empty band costs its making too
                bands.append(_Band(columns if rows else 0, rows if columns else 0, planes, shift))
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


def _precinct_places(
    tile: Tile, steps: list[tuple[int, int]], box: tuple[int, int, int], bands: list[list[list[list[_Band]]]]
) -> list[list[list[tuple[int, int]]]]:
    """Where each component's precincts a resolution start on the reference grid, as the position-led orders
    meet them (T.800 B.12.1.3-B.12.1.5: a precinct's packets come at the first point of the tile, in raster order,
    that its resolution's precinct grid puts a precinct's corner on, or the tile's corner for the first)."""
    tx0, ty0, tx1 = box
    places = []
    for component, (sx, sy), resolutions in zip(tile.components, steps, bands, strict=True):
        rows = []
        for r, cells in enumerate(resolutions):
            level = component.levels - r
            ppx, ppy = component.precincts[r] & 0xF, component.precincts[r] >> 4
            rx0, ry0 = _ceil_div(_ceil_div(tx0, sx), 1 << level), _ceil_div(_ceil_div(ty0, sy), 1 << level)
            rx1 = _ceil_div(_ceil_div(tx1, sx), 1 << level)
            across = _ceil_div(rx1, 1 << ppx) - (rx0 >> ppx) if cells else 1
            rows.append(
                [
                    (
                        max(tx0, sx * (((rx0 >> ppx) + k % across) << (ppx + level))),
                        max(ty0, sy * (((ry0 >> ppy) + k // across) << (ppy + level))),
                    )
                    for k in range(len(cells))
                ]
            )
        places.append(rows)
    return places


def _packet_order(
    tile: Tile, counts: list[list[int]], places: list[list[list[tuple[int, int]]]], budget: _Budget
) -> Iterator[tuple[int, int, int, int]]:
    """(component, resolution, layer, precinct) in the tile's progression (T.800 B.12): each progression volume
    (the order of COD, or those of POC) in turn, a packet met again in a later volume not sent twice."""
    done = [[[0] * n for n in component] for component in counts]
    for volume in tile.progression:
        first, end = volume.resolutions
        components = range(volume.components[0], min(volume.components[1], len(counts)))
        if volume.order in (0, 1):
            budget.visits(volume.layers * max(end - first, 1) * max(len(components), 1))  # before, not as it goes
            spans = (
                ((la, r) for la in range(volume.layers) for r in range(first, end))
                if volume.order == 0
                else ((la, r) for r in range(first, end) for la in range(volume.layers))
            )
            for layer, r in spans:
                for c in components:
                    for p in range(counts[c][r] if r < len(counts[c]) else 0):
                        if done[c][r][p] == layer:
                            done[c][r][p] += 1
                            yield c, r, layer, p
                        elif done[c][r][p] < layer:
                            raise UnreadError("a layer left out of a progression")
            continue
        precincts = [
            (c, r, p) for c in components for r in range(first, min(end, len(counts[c]))) for p in range(counts[c][r])
        ]
        budget.visits(max(len(precincts), 1))
        for c, r, p in sorted(precincts, key=lambda cell: _position_key(volume.order, cell, places)):
            for layer in range(done[c][r][p], volume.layers):
                yield c, r, layer, p
            done[c][r][p] = max(done[c][r][p], volume.layers)


def _position_key(
    order: int, cell: tuple[int, int, int], places: list[list[list[tuple[int, int]]]]
) -> tuple[int, int, int, int]:
    """Where a precinct's packets come in a position-led order: RPCL, PCRL or CPRL (T.800 B.12.1.3-B.12.1.5)."""
    c, r, p = cell
    x, y = places[c][r][p]
    return (r, y, x, c) if order == 2 else (y, x, c, r) if order == 3 else (c, y, x, r)


def _packet(bits: _Bits, bands: list[_Band], layer: int, style: int, budget: _Budget) -> int:
    """Read one packet's header (T.800 B.10): what each of its code-blocks gets, into ``bands``; its body's
    length. A code-block's new passes are signalled as codeword segments, one length each (B.10.7.2): one segment
    in all (109 passes), or one a pass where each is terminated (``style`` 0x04), or under selective bypass (0x01)
    the first 10 passes, then two raw passes and one arithmetic-coded cleanup pass in turn (D.6), as OpenJPEG
    reads them."""
    if not bits.bit():  # an empty packet
        return 0
    body = 0
    for band in bands:
        budget.visits(band.columns * band.rows)
        if band.columns and not band.passes:
            band.open()
        for block in range(band.columns * band.rows):
            first = band.passes[block] is None
            if not (band.inclusion.below(bits, block, layer + 1) if first else bits.bit()):
                continue
            if first:  # its zero bit-planes: the leaf's value, read whole (the same bits as one threshold a time)
                if not band.zeros.below(bits, block, _MOST_PLANES):
                    raise UnreadError("zero bit-planes past any subband's")
                band.zero_planes[block], band.passes[block] = band.zeros.value[0][block], 0
                band.segments[block] = (_segment_size(style, 0), 0)
            passes = _pass_count(bits)
            while bits.bit():  # Lblock's increase, a comma code: ones as long as the data (0.3 s a 256 KB)
                band.lblock[block] += 1
                if band.lblock[block] > _MOST_LENGTH_BITS:
                    raise UnreadError("a codeword segment's length past 32 bits")
            size, used = band.segments[block]
            left = passes
            while left:
                if used == size and style & _HT and size == 2:
                    raise UnreadError("HT code-block past its first HT set")
                if used == size:
                    size, used = _segment_size(style, size), 0
                taken = min(size - used, left)
                body += bits.bits(band.lblock[block] + taken.bit_length() - 1)
                used, left = used + taken, left - taken
            band.segments[block] = (size, used)
            band.passes[block] = (band.passes[block] or 0) + passes
            if style & _HT and (band.passes[block] or 0) > 3:  # placeholder passes, or a second HT set
                raise UnreadError("HT code-block past its first HT set")
    return body


def _segment_size(style: int, before: int) -> int:
    """How many passes a code-block's next codeword segment holds (T.800 D.4.1, D.6; OpenJPEG's opj_t2_init_seg),
    after one of ``before`` passes (0: the first)."""
    if style & _HT:  # an HT set: the cleanup pass, then SigProp and MagRef in one refinement segment (T.814)
        return 1 if not before else 2
    if style & 0x04:  # each pass terminated
        return 1
    if style & 0x01:  # selective bypass: 10, then 2 raw and 1 arithmetic-coded in turn
        return 10 if not before else 2 if before in (1, 10) else 1
    return 109


def _tile_complete(
    tile: Tile, bands: list[list[list[list[_Band]]]], places: list[list[list[tuple[int, int]]]], budget: _Budget
) -> bool:
    """Whether a tile's packets (``bands``: each component's resolutions) give each code-block they include all
    its passes (T.800 B.10, B.12). Packet headers are read from the tile's data, or from PPM or PPT where the
    codestream moved them there (T.800 A.7.4, A.7.5: SOP stays with the data, EPH with the headers)."""
    data, headers = tile.data, tile.headers
    source = data if headers is None else headers
    at = read = 0  # in the data; in the packet headers, where they are apart
    counts = [[len(resolution) for resolution in component] for component in bands]
    for component, r, layer, precinct in _packet_order(tile, counts, places, budget):
        if tile.sop_eph & 2 and data[at : at + 2] == b"\xff\x91":  # SOP
            at += 6
        bits, body = _Bits(source, at if headers is None else read), 0
        style = tile.components[component].style
        try:
            body = _packet(bits, bands[component][r][precinct], layer, style, budget)
        except _PastTheEndError:
            if headers is None:  # the tile's data ends before its packets do
                raise _LossyError(CUT_SHORT) from None
            raise
        end = bits.end()
        if tile.sop_eph & 4 and source[end : end + 2] == b"\xff\x92":  # EPH
            end += 2
        if headers is None:
            at = end + body
        else:
            read, at = end, at + body
        if at > len(data):
            raise _LossyError(CUT_SHORT)  # a packet's body past the tile's data
    background = False
    for coding, levels in zip(tile.components, bands, strict=True):
        if coding.style & _HT:
            if not all(_ht_complete(band) for resolution in levels for cell in resolution for band in cell):
                return False
            continue
        for band in (band for resolution in levels for cell in resolution for band in cell if band.passes):
            for got, zero in zip(band.passes, band.zero_planes, strict=True):
                if got is None:
                    continue  # never included: all its coefficients 0, or left out (not told apart)
                if band.most_planes - zero < 1:
                    raise UnreadError("more zero bit-planes than the subband has")
                if got >= 3 * (band.most_planes - zero) - 2:
                    continue
                if got < 3 * (band.most_planes - zero - band.shift) - 2:
                    return False  # the region's own bit-planes cut
                background = True
    if background:  # OpenJPEG's -ROI scales a whole component: nothing is outside, and its lossless coding so
        raise UnreadError("an ROI's background bit-planes left out: not told from no background")
    return True


def _ht_complete(band: _Band) -> bool:
    """Whether a subband's HT code-blocks (T.814) are coded to bit-plane 0. An HT set's cleanup pass codes every
    bit-plane from the most significant down to Mb - 1 - P (P the packet header's zero bit-planes, "missing MSBs"),
    its SigProp and MagRef passes the one below: lossless, one pass with P = Mb - 1 (OpenJPH's reversible coding), or
    all three with P = Mb - 2. Fewer (a layer's refinement dropped) or a cleanup above those: False. Refinement
    below bit-plane 0, or an RGN shift: left unread."""
    if band.shift:
        raise UnreadError("a region of interest in HT code-blocks")
    for got, zero in zip(band.passes, band.zero_planes if band.passes else (), strict=True):
        if got is None:
            continue  # never included: all its coefficients 0, or left out (not told apart)
        cleanup = band.most_planes - 1 - zero  # the cleanup pass's lowest bit-plane
        if cleanup < 0 or (got > 1 and cleanup < 1):
            raise UnreadError("an HT code-block coded below bit-plane 0")
        if cleanup > (got == 3):
            return False
    return True

"""A JPEG 2000 codestream's main and tile-part headers, as :mod:`radtrace.model.j2k_passes` needs them to read
the packet headers (ITU-T T.800 A.5-A.7): the image and tile grid (SIZ), each component's coding (COD, COC)
and quantisation (QCD, QCC) with a tile's own overriding the main header's (T.800 A.6: tile COC, tile COD, main
COC, main COD), region-of-interest shifts (RGN), progression order changes (POC), packet headers moved to the
main header (PPM) or a tile-part header (PPT), and each tile's data.

Anything it does not follow raises :class:`UnreadError`; a malformed header may raise ``IndexError``,
``struct.error`` or ``ValueError`` besides, which the caller takes as "left unread". What the headers alone show
lossy is kept for the caller: a component coded with the irreversible 9-7 wavelet in any COD or COC (the main
header's or a tile's: :attr:`Component.irreversible`), and a codestream cut short (:attr:`Header.cut_short`: a
tile-part running past the end, fewer tile-parts than a tile's TNsot, or tiles missing).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Component", "Header", "Progression", "Tile", "UnreadError", "read_header"]

#: Bounds on what is read: a frame in more tiles than this is left to the decoder (the encoders' default is one),
#: and no component is read past this many (a colour film has 3; Csiz allows 16,384).
MOST_TILES: Final = 4096
_MOST_COMPONENTS: Final = 64
#: ... and no tile past this many progression volumes (POC; an encoder writes a few, a marker holds 9,000)
_MOST_VOLUMES: Final = 256
#: ... and no codestream past this many tile-parts (at most 255 a tile; OpenJPEG's -TP R writes one a resolution:
#: 952 tiles of 128 on a 4,280 x 3,520 film in 6 resolutions are 5,712). 10 MB of 14-byte tile-parts are 750,000.
_MOST_TILE_PARTS: Final = 16384

_SIZ, _COD, _COC, _QCD, _QCC, _RGN, _POC, _PPM, _PPT = 0x51, 0x52, 0x53, 0x5C, 0x5D, 0x5E, 0x5F, 0x60, 0x61
_SOT, _SOD = 0x90, 0x93


class UnreadError(Exception):
    """A codestream this reader does not follow (a marker or coding style it leaves to the decoder)."""


@dataclass(frozen=True)
class Component:
    """One component's coding in one tile: decomposition levels, code-block size exponents (xcb, ycb, each
    + 2), code-block style, precinct size exponents a resolution (PPx | PPy << 4), and each subband's Mb
    (T.800 E.1: guard bits + exponent - 1, plus the RGN shift)."""

    levels: int
    blocks: tuple[int, int]
    style: int
    precincts: tuple[int, ...]
    most_planes: tuple[int, ...]
    shift: int  # RGN's (T.800 A.6.3, H.1): a region's coefficients scaled up past the others' bit-planes
    irreversible: bool = False  # the 9-7 wavelet (SPcod/SPcoc transform 0): lossy, its passes are not read


@dataclass(frozen=True)
class Progression:
    """One progression volume (T.800 A.6.6): resolutions [first, end), components [first, end), layers
    [0, layers), in ``order`` (0 LRCP, 1 RLCP, 2 RPCL, 3 PCRL, 4 CPRL)."""

    order: int
    resolutions: tuple[int, int]
    components: tuple[int, int]
    layers: int


@dataclass
class Tile:
    """A tile's index, its components' coding, its progression, whether SOP/EPH may be present, and its data
    (the packets' bodies, and their headers too unless ``headers`` holds them: PPM or PPT)."""

    index: int
    components: list[Component] = field(default_factory=list)
    progression: list[Progression] = field(default_factory=list)
    sop_eph: int = 0
    data: bytes = b""
    headers: bytes | None = None


@dataclass
class Header:
    """The image and tile grid (SIZ) and each tile read."""

    size: tuple[int, int, int, int]  # image area x0, y0, x1, y1 on the reference grid
    tile_grid: tuple[int, int, int, int]  # tile width, height, origin x, y
    steps: list[tuple[int, int]]  # each component's sampling (XRsiz, YRsiz)
    ht: bool  # Rsiz says HTJ2K (T.814): its code-blocks are read by j2k_passes (their first HT set)
    tiles: list[Tile]
    cut_short: bool = False  # a tile-part past the codestream's end, or fewer tile-parts than a tile's TNsot


@dataclass
class _Markers:
    """One header's segments that the coding is made from (the main header's, or a tile's first tile-part's)."""

    cod: bytes | None = None
    coc: dict[int, bytes] = field(default_factory=dict)
    qcd: bytes | None = None
    qcc: dict[int, bytes] = field(default_factory=dict)
    rgn: dict[int, int] = field(default_factory=dict)
    poc: list[Progression] = field(default_factory=list)


def _segments(stream: bytes, offset: int, stop: int) -> tuple[list[tuple[int, bytes]], int]:
    """The marker segments from ``offset`` up to the marker ``stop`` (SOT or SOD): (marker, segment body), and
    where ``stop`` is."""
    found = []
    while stream[offset] == 0xFF and stream[offset + 1] != stop:
        marker = stream[offset + 1]
        (length,) = struct.unpack_from(">H", stream, offset + 2)
        if length < 2 or offset + 2 + length > len(stream):
            raise UnreadError("marker segment past the codestream")
        found.append((marker, stream[offset + 4 : offset + 2 + length]))
        offset += 2 + length
    if stream[offset] != 0xFF:
        raise UnreadError("no marker where one belongs")
    return found, offset


def _component_index(segment: bytes, components: int) -> tuple[int, int]:
    """A COC/QCC/RGN/POC component number (one byte, two where Csiz > 256) and where the rest starts."""
    if components > 256:
        return struct.unpack_from(">H", segment)[0], 2
    return segment[0], 1


def _collect(segments: list[tuple[int, bytes]], components: int, markers: _Markers) -> None:
    for marker, segment in segments:
        if marker == _COD:
            markers.cod = segment
        elif marker == _QCD:
            markers.qcd = segment
        elif marker in (_COC, _QCC, _RGN):
            index, at = _component_index(segment, components)
            if index >= components:
                raise UnreadError("COC, QCC or RGN of no component")
            if marker == _COC:
                markers.coc[index] = segment[at:]
            elif marker == _QCC:
                markers.qcc[index] = segment[at:]
            elif segment[at] != 0:  # Srgn: only the implicit (maximum shift) style is defined
                raise UnreadError("RGN style")
            else:
                markers.rgn[index] = segment[at + 1]
        elif marker == _POC:
            markers.poc.extend(_progressions(segment, components))


def _progressions(segment: bytes, components: int) -> list[Progression]:
    """A POC segment's progression volumes (T.800 A.6.6)."""
    wide = 2 if components > 256 else 1
    size = 5 + 2 * wide
    if not segment or len(segment) % size or len(segment) // size > _MOST_VOLUMES:
        raise UnreadError("POC length")
    volumes = []
    for at in range(0, len(segment), size):
        first = segment[at]
        component = int.from_bytes(segment[at + 1 : at + 1 + wide], "big")
        (layers,) = struct.unpack_from(">H", segment, at + 1 + wide)
        end = segment[at + 3 + wide]
        component_end = int.from_bytes(segment[at + 4 + wide : at + 4 + 2 * wide], "big") or 256 * wide**2
        order = segment[at + 4 + 2 * wide]
        if order > 4:
            raise UnreadError("unknown progression order")
        volumes.append(Progression(order, (first, end), (component, min(component_end, components)), layers))
    return volumes


def _coding(main: _Markers, tile: _Markers, components: int) -> tuple[list[Component], bytes]:
    """Each component's coding in a tile, the tile's own segments overriding the main header's (T.800 A.6:
    tile COC > tile COD > main COC > main COD; the same for QCC and QCD), and the COD that rules the tile."""
    cod = tile.cod or main.cod
    qcd_default = tile.qcd or main.qcd
    if cod is None or qcd_default is None:
        raise UnreadError("no COD or QCD")
    coded = []
    for c in range(components):
        if c in tile.coc:
            spcod, precinct_defined = tile.coc[c][1:], tile.coc[c][0] & 1
        elif tile.cod is not None:
            spcod, precinct_defined = tile.cod[5:], tile.cod[0] & 1
        elif c in main.coc:
            spcod, precinct_defined = main.coc[c][1:], main.coc[c][0] & 1
        else:
            spcod, precinct_defined = cod[5:], cod[0] & 1
        qcd = tile.qcc.get(c) if c in tile.qcc else (tile.qcd if tile.qcd is not None else main.qcc.get(c, main.qcd))
        qcd = qcd if qcd is not None else qcd_default
        levels, xcb, ycb, style, transform = spcod[:5]
        if levels > 32 or xcb > 8 or ycb > 8 or xcb + ycb > 8:
            raise UnreadError("code-block or decomposition bounds")
        if transform == 0:  # 9-7: quantised, lossy whatever its passes; nothing more is read of it
            coded.append(Component(levels, (xcb + 2, ycb + 2), style, (), (), 0, irreversible=True))
            continue
        if transform != 1:
            raise UnreadError("a wavelet of Part 2 (ATK)")
        precincts = tuple(spcod[5 : 5 + levels + 1]) if precinct_defined else (0xFF,) * (levels + 1)
        if len(precincts) < levels + 1 or any(r and not (p & 0xF and p >> 4) for r, p in enumerate(precincts)):
            raise UnreadError("precinct sizes")
        guard, shift = qcd[0] >> 5, main.rgn.get(c, 0) if c not in tile.rgn else tile.rgn[c]
        most = tuple(guard + exponent - 1 + shift for exponent in _exponents(qcd, levels))
        coded.append(Component(levels, (xcb + 2, ycb + 2), style, precincts, most, shift))
    return coded, cod


def _exponents(qcd: bytes, levels: int) -> list[int]:
    """Each subband's exponent (T.800 A.6.4, E.1), LL first: one byte each with no quantisation (SPqcd >> 3), or
    two bytes each as scalar expounded (>> 11). With the 5-3 wavelet a step is 1 whatever the mantissa (OpenJPEG
    decodes such a codestream to the values of the unquantised one): the exponent is what counts, the
    coefficients' bit-planes. Scalar derived (the LL's exponent alone, the others made smaller a resolution: E-5)
    does not fit 5-3's exponents, which grow with the subbands' gain: left unread."""
    style, count = qcd[0] & 0x1F, 3 * levels + 1
    if style == 0 and len(qcd) >= 1 + count:
        return [b >> 3 for b in qcd[1 : 1 + count]]
    if style == 2 and len(qcd) >= 1 + 2 * count:
        return [v >> 11 for v in struct.unpack_from(f">{count}H", qcd, 1)]
    raise UnreadError("quantisation style or QCD length")


def read_header(stream: bytes) -> Header:
    """The headers and tiles of a codestream (or of the codestream box of a JP2 file)."""
    if not stream.startswith(b"\xff\x4f"):
        start = stream.find(b"\xff\x4f\xff\x51")  # a JP2 file: its codestream box
        if start < 0:
            raise UnreadError("no codestream")
        stream = stream[start:]
    segments, offset = _segments(stream, 2, _SOT)
    siz = next((s for m, s in segments if m == _SIZ), b"")
    if not siz:
        raise UnreadError("no SIZ")
    rsiz, x1, y1, x0, y0, tile_width, tile_height, tile_x0, tile_y0, components = struct.unpack_from(">HIIIIIIIIH", siz)
    if not 0 < components <= _MOST_COMPONENTS:
        raise UnreadError("components")
    steps = [(siz[37 + 3 * c], siz[38 + 3 * c]) for c in range(components)]
    if not (tile_width and tile_height and all(a and b for a, b in steps)):
        raise UnreadError("no tile or sample grid")
    if not (x0 < x1 and y0 < y1) or tile_x0 > x0 or tile_y0 > y0:
        raise UnreadError("no image area")
    main = _Markers()
    _collect(segments, components, main)
    ppm = b"".join(s[1:] for _, s in sorted(((s[0], s) for m, s in segments if m == _PPM), key=lambda z: z[0]))
    chunks = _ppm_chunks(ppm) if any(m == _PPM for m, _ in segments) else None
    across, down = -(-(x1 - tile_x0) // tile_width), -(-(y1 - tile_y0) // tile_height)
    if across * down > MOST_TILES:
        raise UnreadError("tiles past the reader's bound")
    parts: dict[int, list[tuple[bytes, list[tuple[int, bytes]]]]] = {}
    declared: dict[int, int] = {}  # each tile's TNsot, where a tile-part says it
    count, cut_short = 0, False
    while stream[offset : offset + 2] == b"\xff\x90":  # each tile-part
        index, size, _, total = struct.unpack_from(">HIBB", stream, offset + 4)
        if index >= across * down:
            raise UnreadError("tile index past the grid")
        if count >= _MOST_TILE_PARTS:
            raise UnreadError("tile-parts past the reader's bound")
        if total:
            declared[index] = total
        end = offset + size if size else len(stream) - 2 * stream.endswith(b"\xff\xd9")
        if end > len(stream) or end < offset + 14:
            cut_short = cut_short or end > len(stream)
            end = len(stream)  # cut short: what there is is read, and found short
        tile_segments, at = _segments(stream, offset + 12, _SOD)
        body = stream[at + 2 : end]
        if chunks is not None:
            if count >= len(chunks):
                raise UnreadError("PPM holds no headers for a tile-part")
            tile_segments.append((-1, chunks[count]))
        parts.setdefault(index, []).append((body, tile_segments))
        count += 1
        offset = end
    cut_short = cut_short or any(len(parts.get(index, ())) < total for index, total in declared.items())
    cut_short = cut_short or len(parts) < across * down
    tiles = []
    for index, tile_parts in sorted(parts.items()):
        markers = _Markers()
        _collect(tile_parts[0][1], components, markers)
        if any(m in (_COD, _COC, _QCD, _QCC, _RGN) for _, segs in tile_parts[1:] for m, _ in segs):
            raise UnreadError("coding in a later tile-part")
        for _, segs in tile_parts[1:]:
            markers.poc.extend(v for m, s in segs if m == _POC for v in _progressions(s, components))
        coded, cod = _coding(main, markers, components)
        order, layers = cod[1], struct.unpack_from(">H", cod, 2)[0]
        if order > 4:
            raise UnreadError("unknown progression order")
        if any(component.irreversible for component in coded):
            tiles.append(Tile(index, coded))  # lossy as it is: its packets are not read
            continue
        most_levels = max(component.levels for component in coded)
        if len(markers.poc or main.poc) > _MOST_VOLUMES:
            raise UnreadError("progression order changes past the reader's bound")
        progression = markers.poc or main.poc or [Progression(order, (0, most_levels + 1), (0, components), layers)]
        ppt = [(s[0], s[1:]) for _, segs in tile_parts for m, s in segs if m == _PPT]
        headers = None
        if chunks is not None:
            headers = b"".join(s for _, segs in tile_parts for m, s in segs if m == -1)
        elif ppt:
            headers = b"".join(s for _, s in sorted(ppt, key=lambda z: z[0]))
        data = b"".join(body for body, _ in tile_parts)
        tiles.append(Tile(index, coded, progression, cod[0] & 6, data, headers))
    grid = (tile_width, tile_height, tile_x0, tile_y0)
    return Header((x0, y0, x1, y1), grid, steps, bool(rsiz & 0x4000), tiles, cut_short)


def _ppm_chunks(data: bytes) -> list[bytes]:
    """The packed packet headers of each tile-part, in the order the tile-parts come (T.800 A.7.4: Nppm, then
    Nppm bytes, for each)."""
    chunks, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        chunks.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return chunks

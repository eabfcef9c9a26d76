"""HTJ2K under "Lossless Only" (.201): a codestream whose quality layers were dropped cleanly is flagged lossy.

HT code-blocks (ITU-T T.814) are read now: their packet headers as Part 1's (T.800 B.10), each HT set a cleanup
segment of one pass and a refinement segment of SigProp and MagRef. The codestream is the canine film coded by
OpenJPH's ojph_compress 0.9.0 (tests/data/j2k-ht, README there: CI lacks the tool), reversible, LRCP, one layer; the
tests rewrite its packet headers into two quality layers (its three coarsest resolutions' code-blocks in the first,
the others in the second), as a layered HT encoder writes them, and drop the second as a PACS that drops layers
would (Psot rewritten, EOC): OpenJPEG decodes the two-layer one to the film, the one cut to the film's coarse half.
Before (07a1b18), every HT codestream was left unread: under .201 only recorded (``lossless_not_verified``).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from film_support import film
from j2k_support import decoded, encapsulated
from radtrace.model import j2k_passes
from radtrace.model.image_marks import LOSSY_COMPRESSION, image_marks, source_step
from radtrace.model.j2k_header import read_header

pytestmark = pytest.mark.unit

HT = Path(__file__).resolve().parents[1] / "data" / "j2k-ht" / "canine-ht-lrcp.j2c"
HT_LOSSLESS = "1.2.840.10008.1.2.4.201"


class _Writer:
    """Packet header bits (T.800 B.10.1): a byte after 0xFF holds 7."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.left = 0

    def bit(self, value: int) -> None:
        if not self.left:
            self.left = 7 if self.out and self.out[-1] == 0xFF else 8
            self.out.append(0)
        self.left -= 1
        self.out[-1] |= value << self.left

    def bits(self, value: int, count: int) -> None:
        for shift in range(count - 1, -1, -1):
            self.bit(value >> shift & 1)

    def done(self) -> bytes:
        return bytes(self.out) + (b"\x00" if self.out and self.out[-1] == 0xFF else b"")


class _TagTreeWriter:
    """A tag tree's encoder (T.800 B.10.2), over ``columns`` x ``rows`` leaves holding ``values``."""

    def __init__(self, columns: int, rows: int, values: list[int]) -> None:
        self.widths, self.value = [columns], [list(values)]
        while columns * rows > 1:
            below, width = self.value[-1], columns
            columns, rows = (columns + 1) // 2, (rows + 1) // 2
            self.widths.append(columns)
            self.value.append(
                [
                    min(
                        below[y * width + x]
                        for y in (2 * j, 2 * j + 1)
                        for x in (2 * i, 2 * i + 1)
                        if x < width and y * width + x < len(below)
                    )
                    for j in range(rows)
                    for i in range(columns)
                ]
            )
        self.low = [[0] * len(level) for level in self.value]
        self.known = [[False] * len(level) for level in self.value]

    def encode(self, writer: _Writer, leaf: int, threshold: int) -> None:
        x, y = leaf % self.widths[0], leaf // self.widths[0]
        path = []
        for width in self.widths:
            path.append(y * width + x)
            x, y = x >> 1, y >> 1
        low = 0
        for level in range(len(path) - 1, -1, -1):
            index = path[level]
            low = max(low, self.low[level][index])
            while low < threshold:
                if low >= self.value[level][index]:
                    if not self.known[level][index]:
                        writer.bit(1)
                        self.known[level][index] = True
                    break
                writer.bit(0)
                low += 1
            self.low[level][index] = low


def _band_shapes(codestream: bytes) -> list[list[tuple[int, int]]]:
    """Each resolution's subbands' code-blocks, columns x rows, as the reader lays them out."""
    header = read_header(codestream)
    component = header.tiles[0].components[0]
    x0, y0, x1, y1 = header.size
    bands = j2k_passes._tile_bands(
        (x0, y0, x1, y1),
        component.levels,
        component.blocks,
        list(component.precincts),
        list(component.most_planes),
        0,
        j2k_passes._Budget(),
    )
    return [[(band.columns, band.rows) for band in resolution[0]] for resolution in bands]


def _blocks(codestream: bytes) -> tuple[bytes, list[list[list[tuple[int, int, bytes] | None]]], int]:
    """The single-layer codestream's main header (up to SOT), and each resolution's subbands' code-blocks:
    (zero bit-planes, cleanup length, its bytes), None where not included; and where its tile-part header ends."""
    shapes = _band_shapes(codestream)
    sot = codestream.index(b"\xff\x90")
    sod = codestream.index(b"\xff\x93", sot)
    at = sod + 2
    resolutions = []
    for shape in shapes:
        bits = j2k_passes._Bits(codestream, at)
        found: list[list[tuple[int, int] | None]] = []
        assert bits.bit() == 1  # OpenJPH writes no empty packet here
        for columns, rows in shape:
            inclusion = j2k_passes._TagTree(columns, rows)
            zeros = j2k_passes._TagTree(columns, rows)
            band: list[tuple[int, int] | None] = []
            for block in range(columns * rows):
                if not inclusion.below(bits, block, 1):
                    band.append(None)
                    continue
                assert zeros.below(bits, block, 80)
                assert bits.bit() == 0  # one pass: a cleanup segment alone
                lblock = 3
                while bits.bit():
                    lblock += 1
                band.append((zeros.value[0][block], bits.bits(lblock)))
            found.append(band)
        at = bits.end()
        resolution = []
        for band in found:
            blocks: list[tuple[int, int, bytes] | None] = []
            for entry in band:
                if entry is None:
                    blocks.append(None)
                    continue
                blocks.append((entry[0], entry[1], codestream[at : at + entry[1]]))
                at += entry[1]
            resolution.append(blocks)
        resolutions.append(resolution)
    assert codestream[at:] == b"\xff\xd9"
    return codestream[:sot], resolutions, sod + 2 - sot


def _packet(shape: list[tuple[int, int]], blocks: list[list[Any]], layer: int) -> bytes:
    """A packet of ``layer`` including each of ``blocks`` first (T.800 B.10): header, then the blocks' bytes."""
    writer = _Writer()
    writer.bit(1)
    body = b""
    for (columns, rows), band in zip(shape, blocks, strict=True):
        first = [layer if entry is not None else layer + 1 for entry in band]
        inclusion = _TagTreeWriter(columns, rows, first)
        zeros = _TagTreeWriter(columns, rows, [entry[0] if entry else 0 for entry in band])
        for block, entry in enumerate(band):
            inclusion.encode(writer, block, layer + 1)
            if entry is None:
                continue
            zero, length, data = entry
            zeros.encode(writer, block, zero + 1)
            writer.bit(0)  # one coding pass
            lblock = max(3, length.bit_length())
            writer.bits((1 << (lblock - 3 + 1)) - 2, lblock - 3 + 1)  # Lblock's increase: ones, then a 0
            writer.bits(length, lblock)
            body += data
    return writer.done() + body


def two_layers(original: bytes) -> tuple[bytes, int]:
    """A one-layer LRCP HT codestream of one tile-part, a precinct a resolution, in two layers: the three coarsest
    resolutions' code-blocks in the first, the others in the second (LRCP: the first layer's packets, then the
    second's; an empty packet is one 0 byte); and where the second starts (bench/j2k_verdicts.py uses it too)."""
    main, resolutions, tile_header = _blocks(original)
    shapes = _band_shapes(original)
    cod = main.index(b"\xff\x52")
    main = main[: cod + 6] + struct.pack(">H", 2) + main[cod + 8 :]  # SGcod layers: 2
    sot = original.index(b"\xff\x90")
    packets = [[b"\x00"] * len(shapes) for _ in range(2)]
    for r, (shape, blocks) in enumerate(zip(shapes, resolutions, strict=True)):
        layer = 0 if r < 3 else 1
        packets[layer][r] = _packet(shape, blocks, layer)
    first, second = b"".join(packets[0]), b"".join(packets[1])
    head = original[sot : sot + tile_header]
    psot = len(head) + len(first) + len(second)
    part = head[:6] + struct.pack(">I", psot) + head[10:]
    return main + part + first + second + b"\xff\xd9", len(main) + len(part) + len(first)


def dropped(codestream: bytes, at: int) -> bytes:
    """The second layer dropped as a PACS would: Psot rewritten, EOC after the first."""
    sot = codestream.index(b"\xff\x90")
    return codestream[: sot + 6] + struct.pack(">I", at - sot) + codestream[sot + 10 : at] + b"\xff\xd9"


def test_an_openjph_reversible_codestream_is_read_lossless() -> None:
    """One layer, every code-block's cleanup pass down to bit-plane 0: OpenJPEG decodes the film; the verdict
    True, nothing flagged nor recorded under .201. Before: None ("HT code-blocks"), recorded not verified."""
    codestream = HT.read_bytes()
    assert np.array_equal(decoded(codestream), film("canine")[1])
    assert j2k_passes.verdict(codestream) == (True, "")
    assert source_step(encapsulated(codestream, HT_LOSSLESS)) is None


def test_htj2k_quality_layers_dropped_cleanly_under_htj2k_lossless_are_flagged_lossy() -> None:
    """Two layers whole: the film, True. The second dropped (Psot rewritten, EOC: nothing runs past the end, the
    tile-part count is right): values off by up to tens, its packets missing from the tile's data: flagged "was
    lossy compressed", codestream cut short. Before: None, under .201 only recorded."""
    stored = film("canine")[1]
    layered, second = two_layers(HT.read_bytes())
    assert np.array_equal(decoded(layered), stored)
    assert j2k_passes.verdict(layered) == (True, "")
    assert source_step(encapsulated(layered, HT_LOSSLESS)) is None
    cut = dropped(layered, second)
    assert int(np.abs(decoded(cut) - stored).max()) > 10
    assert j2k_passes.verdict(cut) == (False, j2k_passes.CUT_SHORT)
    step = source_step(encapsulated(cut, HT_LOSSLESS))
    assert step is not None
    assert "lossless_not_verified" not in step
    assert step["lossy"]["basis"].startswith("JPEG 2000 codestream cut short")
    assert step["lossy"]["basis"].endswith("(Lossless Only)")
    [mark] = image_marks([step])
    assert mark.flag == LOSSY_COMPRESSION
    assert mark.text.startswith("the image was lossy compressed")


def test_damaged_htj2k_codestreams_are_read_or_left_unread_never_an_error() -> None:
    """Bytes changed or cut in the one- and two-layer HT codestreams (the headers' first 300 bytes, or anywhere):
    True, False or None, never an exception out of the reader, now that HT packet headers are read."""
    original = HT.read_bytes()
    layered, _ = two_layers(original)
    rng = np.random.default_rng(5)
    answers = set()
    for codestream in (original, layered):
        for attempt in range(150):
            changed = bytearray(codestream)
            for _ in range(int(rng.integers(1, 6))):
                changed[int(rng.integers(0, 300 if attempt % 2 else len(changed)))] = int(rng.integers(0, 256))
            if attempt % 5 == 0:
                changed = changed[: int(rng.integers(2, len(changed)))]
            answers.add(j2k_passes.verdict(bytes(changed))[0])
    assert answers <= {True, False, None}
    assert len(answers) >= 2  # damage read as something and as nothing: the cases reach the reader

"""A peer's JPEG 2000 codestream costs the worker's lossy verdict a bounded time, whatever it holds.

:mod:`radtrace.model.j2k_passes` reads packet headers in Python, on the worker, for every image: each loop that a
codestream's bytes can stretch is bounded before it runs long (the code-blocks, packets, precincts and progression
volumes already were: tests/unit/test_image_j2k_lossy.py, test_image_j2k_orders.py). Here the two that were not. Each
test counts the steps the reader takes (tile-parts split, packet-header bits read), not seconds: a timed bound
failed in CI when a full garbage collection of the test process landed inside it (2.2 s of CPU for 0.03 s of work).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from radtrace.model import j2k_header, j2k_passes
from radtrace.model.j2k_passes import passes_complete

pytestmark = pytest.mark.unit

OPJ = Path(__file__).resolve().parents[1] / "data" / "j2k-opj"


def _counted(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Wraps ``owner.name`` so that each call adds one to the returned counter."""
    calls = [0]
    original = getattr(owner, name)

    def counting(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


def test_a_codestream_of_endless_tile_parts_is_left_unread_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """200,000 empty tile-parts (14 bytes each, 2.8 MB) of one tile: before, each was split into its segments
    (0.96 s here; a 10 MB one 3-4 s, on the worker, for every image). Past 16,384 tile-parts the codestream is left
    unread, before they are listed: 0.03 s. Counted: the segment splits (one for the main header, one a tile-part)."""
    codestream = (OPJ / "canine-sop-eph.j2k").read_bytes()
    main = codestream[: codestream.index(b"\xff\x90")]
    parts = b"".join(b"\xff\x90" + struct.pack(">HHIBB", 10, 0, 14, i % 255, 0) + b"\xff\x93" for i in range(200_000))
    splits = _counted(monkeypatch, j2k_header, "_segments")
    assert passes_complete(main + parts + b"\xff\xd9") is None
    assert splits[0] <= 1 + j2k_header._MOST_TILE_PARTS  # 200,001 before
    assert j2k_passes.verdict(main + parts + b"\xff\xd9") == (None, "tile-parts past the reader's bound")


def test_a_packet_header_of_endless_length_bits_is_left_unread_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tile whose data is 4 MB of bits set (FF 7F: a byte after FF holds 7): the first code-block's Lblock
    increase, a comma code, read one bit a time to the end of the data: 5.3 s before (a 20 MB film's tile some
    25 s). A codeword segment's length in more than 32 bits (OpenJPEG's bound) is left unread: at once. Counted: the
    single bits read (the bound's 33 ones and the header's own before them; 31 million before)."""
    codestream = (OPJ / "canine-sop-eph.j2k").read_bytes()
    sot = codestream.index(b"\xff\x90")
    sod = codestream.index(b"\xff\x93", sot)
    head, data = codestream[sot : sod + 2], b"\xff\x7f" * (2 * 1024 * 1024)
    part = head[:6] + struct.pack(">I", len(head) + len(data)) + head[10:]
    bits = _counted(monkeypatch, j2k_passes._Bits, "bit")
    assert passes_complete(codestream[:sot] + part + data + b"\xff\xd9") is None
    assert bits[0] < 1_000
    monkeypatch.undo()
    assert passes_complete(codestream) is True  # a real one's lengths are far inside the bound

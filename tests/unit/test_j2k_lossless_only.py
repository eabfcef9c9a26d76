"""A JPEG 2000 codestream labelled "Lossless Only" that is lossy is flagged lossy, as the lossy syntaxes are.

A PACS that re-encodes lossy, or drops quality layers to save space, and keeps the label 1.2.840.10008.1.2.4.90
(or HTJ2K's .201) hands the model a lossy image that the draft must call lossy. Each case is the canine film coded
by OpenJPEG's opj_compress 2.5.0 (tests/data/j2k-opj, README there: CI lacks the tool) and changed as such a
sender would; its truth is OpenJPEG's decoding against the film's values. Before (977afda) these were left unread
and, under a "Lossless Only" label, only recorded (``lossless_not_verified``), never flagged: a codestream cut at a
quality layer (values off by up to 21), the 9-7 wavelet in a component's (COC) or a tile's (tile-part COD) coding
under a main COD saying 5-3, an HTJ2K codestream cut short. Selective arithmetic coding bypass (``-M 1``) was left
unread too; its codeword segments are read now.
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
from radtrace.model.j2k_passes import passes_complete

pytestmark = pytest.mark.unit

OPJ = Path(__file__).resolve().parents[1] / "data" / "j2k-opj"
LOSSLESS_ONLY = "1.2.840.10008.1.2.4.90"
HT_LOSSLESS = "1.2.840.10008.1.2.4.201"


def _stored() -> np.ndarray[Any, Any]:
    return film("canine")[1]


def _assert_flagged_lossy(codestream: bytes, syntax: str, why: str) -> None:
    step = source_step(encapsulated(codestream, syntax))
    assert step is not None
    assert "lossless_not_verified" not in step
    assert why in step["lossy"]["basis"]
    assert step["lossy"]["basis"].endswith("(Lossless Only)")  # the mislabel said
    [mark] = image_marks([step])
    assert mark.flag == LOSSY_COMPRESSION
    assert mark.text.startswith("the image was lossy compressed")


def _cut_at_layer(codestream: bytes, layer: int, clean: bool) -> bytes:
    """The one-tile LRCP codestream with SOP markers cut before ``layer``'s first packet: ``clean`` as a PACS that
    drops layers would (Psot rewritten, EOC), else only cut (a transfer stopped short)."""
    cod = codestream.index(b"\xff\x52")
    packets_a_layer = codestream[cod + 9] + 1  # one component, one precinct a resolution
    sot = codestream.index(b"\xff\x90")
    cut = codestream.index(b"\xff\x91" + struct.pack(">HH", 4, layer * packets_a_layer), sot)
    if not clean:
        return codestream[:cut]
    return codestream[: sot + 6] + struct.pack(">I", cut - sot) + codestream[sot + 10 : cut] + b"\xff\xd9"


@pytest.mark.parametrize("clean", [True, False], ids=["layer-dropped", "transfer-cut"])
def test_a_codestream_cut_at_a_quality_layer_under_lossless_only_is_flagged_lossy(clean: bool) -> None:
    """Three layers 40:1, 10:1, lossless (-r 40,10,1 -SOP): whole, the film exactly and nothing flagged; its last
    layer dropped, values off by up to 21. Before: None (a packet header past the tile's data), under .90 only
    recorded."""
    stored = _stored()
    whole = (OPJ / "canine-layers-40-10-1-sop.j2k").read_bytes()
    assert np.array_equal(decoded(whole), stored)
    assert passes_complete(whole) is True
    assert source_step(encapsulated(whole, LOSSLESS_ONLY)) is None
    cut = _cut_at_layer(whole, 2, clean)
    if clean:
        assert int(np.abs(decoded(cut) - stored).max()) > 10
    _assert_flagged_lossy(cut, LOSSLESS_ONLY, "codestream cut short")
    assert j2k_passes.verdict(cut) == (False, j2k_passes.CUT_SHORT)


def _with_segment(codestream: bytes, after: bytes, segment: bytes) -> bytes:
    at = codestream.index(after)
    at += 2 + struct.unpack_from(">H", codestream, at + 2)[0]
    return codestream[:at] + segment + codestream[at:]


def _irreversible_elsewhere(where: str) -> bytes:
    """The -I (9-7) codestream with its main COD saying 5-3, the 9-7 coding moved to a main-header COC for the
    film's one component, or to a COD in the tile-part header (T.800 A.6: both override the main COD)."""
    codestream = (OPJ / "canine-irreversible.j2k").read_bytes()
    if where == "main COD":
        return codestream
    at = codestream.index(b"\xff\x52")
    length = struct.unpack_from(">H", codestream, at + 2)[0]
    cod = codestream[at : at + 2 + length]
    reversible = bytearray(codestream)
    reversible[at + 13] = 1  # SPcod transform: 5-3
    if where == "COC":
        coc_body = bytes([0, cod[4] & 1]) + cod[9:]  # Ccoc, Scoc (precincts defined or not), SPcoc
        return _with_segment(
            bytes(reversible), b"\xff\x52", b"\xff\x53" + struct.pack(">H", 2 + len(coc_body)) + coc_body
        )
    sot = codestream.index(b"\xff\x90")
    psot = struct.unpack_from(">I", reversible, sot + 6)[0]
    reversible[sot + 6 : sot + 10] = struct.pack(">I", psot + len(cod))
    return bytes(reversible[: sot + 12]) + cod + bytes(reversible[sot + 12 :])


@pytest.mark.parametrize("where", ["main COD", "COC", "tile COD"])
def test_the_9_7_wavelet_anywhere_under_lossless_only_is_flagged_lossy(where: str) -> None:
    """OpenJPEG decodes each to the -I codestream's values (so the 9-7 coding rules it), not the film's. Before:
    the main COD's 9-7 was flagged; in a COC or a tile's COD under a main COD saying 5-3, the reader stopped at
    "irreversible wavelet" (None) and .90 was only recorded."""
    codestream = _irreversible_elsewhere(where)
    original = (OPJ / "canine-irreversible.j2k").read_bytes()
    assert np.array_equal(decoded(codestream), decoded(original))
    assert not np.array_equal(decoded(codestream), _stored())
    _assert_flagged_lossy(codestream, LOSSLESS_ONLY, "9-7")
    assert passes_complete(codestream) is False


def test_an_htj2k_codestream_cut_short_under_htj2k_lossless_is_flagged_lossy() -> None:
    """HT code-blocks are not read, but a tile-part running past the codestream's end is seen in the headers: the
    three-layer codestream marked HTJ2K (Rsiz, code-block style) and cut in its second layer, under .201. Whole,
    it stays unread and recorded as not verified. Before: cut, the same (nothing flagged)."""
    whole = bytearray((OPJ / "canine-layers-40-10-1-sop.j2k").read_bytes())
    whole[6] |= 0x40  # Rsiz: HTJ2K
    whole[whole.index(b"\xff\x52") + 12] |= 0x40  # SPcod code-block style: HT
    step = source_step(encapsulated(bytes(whole), HT_LOSSLESS))
    assert step is not None
    assert "lossy" not in step
    assert "lossless_not_verified" in step
    cut = bytes(whole[: len(whole) // 3])
    _assert_flagged_lossy(cut, HT_LOSSLESS, "codestream cut short")
    assert j2k_passes.verdict(cut) == (False, j2k_passes.CUT_SHORT)


@pytest.mark.parametrize("name", ["canine-bypass", "canine-bypass-r10"])
def test_selective_bypass_codestreams_are_read(name: str) -> None:
    """-M 1 (lazy): the first 10 passes in one codeword segment, then two raw and one arithmetic-coded in turn, a
    length each (T.800 D.6, B.10.7.2). Lossless: True, the film exactly; -r 10: False. Before: None for both."""
    codestream = (OPJ / f"{name}.j2k").read_bytes()
    lossless = bool(np.array_equal(decoded(codestream), _stored()))
    assert lossless is (name == "canine-bypass")
    assert passes_complete(codestream) is lossless
    step = source_step(encapsulated(codestream, "1.2.840.10008.1.2.4.91"))
    assert (step is None) is lossless


def _quantised(codestream: bytes) -> bytes:
    """The codestream's QCD (no quantisation) rewritten as scalar expounded: each subband's exponent, mantissa
    1,024 (steps of 1.5 x 2^(R - e)), as a sender's encoder may write for 5-3."""
    at = codestream.index(b"\xff\x5c")
    length = struct.unpack_from(">H", codestream, at + 2)[0]
    qcd = codestream[at + 4 : at + 2 + length]
    steps = [b >> 3 << 11 | 1024 for b in qcd[1:]]
    body = bytes([qcd[0] & 0xE0 | 2]) + b"".join(struct.pack(">H", step) for step in steps)
    return codestream[:at] + b"\xff\x5c" + struct.pack(">H", 2 + len(body)) + body + codestream[at + 2 + length :]


@pytest.mark.parametrize("name", ["canine-sop-eph", "canine-sop-eph-r10"])
def test_a_5_3_codestream_with_a_quantising_qcd_is_read_by_its_exponents(name: str) -> None:
    """OpenJPEG decodes a 5-3 codestream whose QCD names scalar quantisation to the same values as without (a
    reversible step is 1): the passes tell, counted from the exponents. The lossless one: True, nothing said under
    .90; at 10:1, False and flagged lossy under .90. Before: None for both, the lossy one only recorded."""
    original = (OPJ / f"{name}.j2k").read_bytes()
    codestream = _quantised(original)
    assert np.array_equal(decoded(codestream), decoded(original))
    lossless = bool(np.array_equal(decoded(codestream), _stored()))
    assert lossless is (name == "canine-sop-eph")
    if lossless:
        assert source_step(encapsulated(codestream, LOSSLESS_ONLY)) is None
    else:
        _assert_flagged_lossy(codestream, LOSSLESS_ONLY, "coding passes left out")
    assert passes_complete(codestream) is lossless


def _cod_moved_to_the_tile(codestream: bytes) -> bytes:
    """The codestream with its COD taken out of the main header and put in its (one) tile-part header, Psot grown
    to hold it (T.800 A.6.1: a COD may be in either; a main header needs one only where a tile-part lacks it)."""
    at = codestream.index(b"\xff\x52")
    cod = codestream[at : at + 2 + struct.unpack_from(">H", codestream, at + 2)[0]]
    rest = codestream[:at] + codestream[at + len(cod) :]
    sot = rest.index(b"\xff\x90")
    psot = struct.unpack_from(">I", rest, sot + 6)[0]
    return rest[: sot + 6] + struct.pack(">I", psot + len(cod)) + rest[sot + 10 : sot + 12] + cod + rest[sot + 12 :]


@pytest.mark.parametrize("name", ["canine-sop-eph", "canine-sop-eph-r10", "canine-irreversible"])
def test_a_cod_only_in_a_tile_part_header_is_read_under_lossless_only(name: str) -> None:
    """The main header holds no COD, the tile-part header does (T.800 A.5 asks for one in the main header; OpenJPEG
    refuses the codestream, a lenient decoder reads the tile's): the same packets, so the truth is the original's.
    Before: the flagging step looked for the wavelet in the main header's COD alone and, finding none, stopped:
    under .90 nothing was flagged nor recorded, the 10:1 and the 9-7 ones included. Now the tile's COD is read as
    the main header's would be: the lossless one neither flagged nor left unverified, the others flagged lossy."""
    original = (OPJ / f"{name}.j2k").read_bytes()
    codestream = _cod_moved_to_the_tile(original)
    assert b"\xff\x52" not in codestream[: codestream.index(b"\xff\x90")]
    assert np.array_equal(decoded(original), _stored()) is (name == "canine-sop-eph")
    if name == "canine-sop-eph":
        assert j2k_passes.verdict(codestream) == (True, "")
        assert source_step(encapsulated(codestream, LOSSLESS_ONLY)) is None
    else:
        _assert_flagged_lossy(codestream, LOSSLESS_ONLY, "9-7" if name == "canine-irreversible" else "left out")
        assert passes_complete(codestream) is False

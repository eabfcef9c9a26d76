"""Decompression bombs for tests: small instances whose codestream claims a huge image.

Made from a real JPEG 2000 instance of the study factory by rewriting the SIZ marker's image and
tile sizes (ITU-T T.800 A.5.1), as an attacker would: a few KB that a decoder would expand into
gigabytes. Never decode one outside a memory-limited process.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import JPEG2000Lossless

from radtrace.testing.studies import ImageSpec, make_study, write_study

__all__ = ["j2k_bomb"]


def j2k_bomb(directory: Path, *, size: int = 65535, header_matches: bool = True) -> Path:
    """A JPEG 2000 instance whose codestream declares ``size`` x ``size``; its header too when ``header_matches``."""
    [path] = write_study(
        make_study(images=[ImageSpec(transfer_syntax=JPEG2000Lossless, rows=64, columns=64)]), directory
    )
    ds = dcmread(path)
    [fragment] = [bytes(f) for f in generate_fragments(ds.PixelData)][1:] or [b""]
    siz = fragment.index(b"\xff\x51")
    patched = bytearray(fragment)
    struct.pack_into(">LLLLLL", patched, siz + 6, size, size, 0, 0, size, size)  # Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz
    ds.PixelData = encapsulate([bytes(patched)])
    if header_matches:
        ds.Rows = ds.Columns = size
    ds.save_as(path)
    return path

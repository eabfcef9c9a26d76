"""The listener refuses, at receive, a codestream whose component count disagrees with Samples per Pixel.

It compared only a codestream's rows and columns with the header, so it stored the RG1 JPEG 2000 film with its SIZ
rewritten to 3 components under Samples per Pixel 1 (radtrace.testing.decode_abuse); the worker then refused it
(GDCM, given it, aborted the worker). Now :func:`judge` names (0028,0002): the C-STORE fails with 0xC213, audited
(tests/integration/test_listener_component_mismatch.py).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.uid import JPEG2000Lossless

from radtrace.dicom_listener.pixel_budget import PixelMismatchError, check_file, judge
from radtrace.testing.decode_abuse import REAL_FILMS, RG1_J2K, j2k_components_film

pytestmark = pytest.mark.unit

REASON = r"^\(0028,0002\) Samples per Pixel: 1, codestream 3 components$"


def _siz(components: int) -> bytes:
    """An offset table item and a JPEG 2000 SIZ for 96 x 80 with ``components`` components."""
    siz = b"\xff\x4f\xff\x51" + struct.pack(
        ">HHLLLLLLLLH", 38 + 3 * components, 0, 80, 96, 0, 0, 80, 96, 0, 0, components
    )
    siz += b"\x07\x01\x01" * components
    return b"\xfe\xff\x00\xe0" + b"\x00" * 4 + b"\xfe\xff\x00\xe0" + struct.pack("<L", len(siz)) + siz


def test_the_budget_refuses_a_codestream_with_other_components_than_samples_per_pixel() -> None:
    common = {"rows": 96, "columns": 80, "frames": 1, "transfer_syntax": str(JPEG2000Lossless), "max_pixels": 10**6}
    judge(samples=1, pixel_head=_siz(1), **common)  # type: ignore[arg-type]
    judge(samples=3, pixel_head=_siz(3), **common)  # type: ignore[arg-type]
    with pytest.raises(PixelMismatchError, match=REASON):
        judge(samples=1, pixel_head=_siz(3), **common)  # type: ignore[arg-type]
    with pytest.raises(PixelMismatchError, match=r"^\(0028,0002\) Samples per Pixel: 3, codestream 1 components$"):
        judge(samples=3, pixel_head=_siz(1), **common)  # type: ignore[arg-type]


def test_the_rg1_film_with_three_components_is_refused_and_the_real_one_accepted(tmp_path: Path) -> None:
    check_file(REAL_FILMS / RG1_J2K, 50_000_000)
    film = j2k_components_film(tmp_path / "j2k-3-components-1-sample.dcm")
    with pytest.raises(PixelMismatchError, match=REASON) as refused:
        check_file(film, 50_000_000)
    assert len(refused.value.reason) <= 64  # the status comment is one LO

"""Image sizes read from codestreams and the pixel budget, before anything decodes."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from radtrace.dicom_listener.codestream import CodestreamSize, SizeError, codestream_size, first_fragment
from radtrace.dicom_listener.pixel_budget import (
    ImageTooLargeError,
    PixelMismatchError,
    check_dataset,
    check_file,
    judge,
)
from radtrace.testing.bombs import j2k_bomb
from radtrace.testing.studies import ImageSpec, make_study, write_study

pytestmark = pytest.mark.unit


def _instance(tmp_path: Path, syntax: str, rows: int = 96, columns: int = 80) -> Path:
    [path] = write_study(make_study(images=[ImageSpec(transfer_syntax=syntax, rows=rows, columns=columns)]), tmp_path)
    return path


def _head(path: Path) -> bytes:
    return bytes(dcmread(path).PixelData[:4096])


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_real_codestreams_declare_the_size_of_their_header(tmp_path: Path, syntax: str) -> None:
    path = _instance(tmp_path, syntax)
    assert codestream_size(first_fragment(_head(path))) == CodestreamSize(rows=96, columns=80, components=1)
    check_file(path, 96 * 80)  # exactly at the budget: accepted


def test_a_baseline_jpeg_frame_header_is_found_past_other_segments() -> None:
    out = io.BytesIO()
    Image.new("RGB", (120, 70)).save(out, format="JPEG")
    assert codestream_size(out.getvalue()) == CodestreamSize(rows=70, columns=120, components=3)


def test_codestreams_that_declare_no_trustworthy_size_are_refused() -> None:
    sof_dnl = b"\xff\xd8\xff\xc0" + struct.pack(">HBHHB", 11, 8, 0, 100, 1) + b"\x01\x11\x00"
    for data in (
        b"",
        b"garbage that is not a codestream",
        b"\xff\x4f\xff\x51\x00",  # SIZ cut short
        b"\xff\xd8\xff\xda\x00\x08",  # a scan before any frame header
        sof_dnl,  # lines deferred to a DNL marker
        b"\xff\xd8\xff\xe0\x00\x01",  # impossible segment length
    ):
        with pytest.raises(SizeError):
            codestream_size(data)
    with pytest.raises(SizeError):
        first_fragment(b"\x00" * 16)  # not items


def test_the_budget_refuses_large_headers_and_codestreams_that_disagree() -> None:
    small = b"\xfe\xff\x00\xe0" + b"\x00" * 4 + b"\xfe\xff\x00\xe0" + struct.pack("<L", 60) + b"\xff\x4f\xff\x51"
    small += struct.pack(">HHLLLLLLLLH", 41, 0, 80, 96, 0, 0, 80, 96, 0, 0, 1) + b"\x07\x01\x01"
    common = {"samples": 1, "frames": 1, "transfer_syntax": str(JPEG2000Lossless), "max_pixels": 10_000}
    judge(rows=96, columns=80, pixel_head=small, **common)  # type: ignore[arg-type]
    with pytest.raises(PixelMismatchError, match=r"\(7FE0,0010\) Pixel Data: codestream 96x80, header 80x96"):
        judge(rows=80, columns=96, pixel_head=small, **common)  # type: ignore[arg-type]
    with pytest.raises(ImageTooLargeError, match=r"listener\.max_image_pixels \(10000\)"):
        judge(rows=100, columns=101, pixel_head=small, **common)  # type: ignore[arg-type]
    with pytest.raises(ImageTooLargeError):  # many frames of a small image are a large image too
        judge(rows=96, columns=80, samples=1, frames=2, transfer_syntax=RLELossless, pixel_head=None, max_pixels=10_000)
    with pytest.raises(PixelMismatchError, match="compressed pixel data"):
        judge(rows=96, columns=80, pixel_head=b"\xfe\xff\x00\xe0" + b"\x00" * 12, **common)  # type: ignore[arg-type]


def test_a_65535_square_j2k_bomb_is_refused_from_its_first_bytes(tmp_path: Path) -> None:
    bomb = j2k_bomb(tmp_path / "a")
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(ImageTooLargeError, match="65535x65535"):
        check_file(bomb, 50_000_000)
    liar = j2k_bomb(tmp_path / "b", header_matches=False)  # the header says 64 x 64
    with pytest.raises(ImageTooLargeError, match="codestream 65535x65535"):
        check_file(liar, 50_000_000)
    with pytest.raises(ImageTooLargeError):
        check_dataset(dcmread(liar), 50_000_000)  # the worker's check, in memory
    mismatch = j2k_bomb(tmp_path / "c", size=128, header_matches=False)
    with pytest.raises(PixelMismatchError, match="codestream 128x128"):
        check_file(mismatch, 50_000_000)


def test_native_and_rle_pixel_data_are_judged_by_the_header(tmp_path: Path) -> None:
    rle = _instance(tmp_path / "rle", RLELossless)
    check_file(rle, 96 * 80)
    with pytest.raises(ImageTooLargeError):
        check_file(rle, 96 * 80 - 1)
    ds = dcmread(rle)
    ds.PixelData = encapsulate([b"\x00" * 64])  # an RLE stream says nothing about its size: not read
    check_dataset(ds, 96 * 80)


def test_the_worker_refuses_a_bomb_before_decoding_it(tmp_path: Path) -> None:
    from radtrace.model.image import prepare_picture

    bomb = dcmread(j2k_bomb(tmp_path, header_matches=False))
    with pytest.raises(ImageTooLargeError, match="codestream 65535x65535"):
        prepare_picture(bomb, min_pixels=128 * 128, max_pixels=476 * 476)

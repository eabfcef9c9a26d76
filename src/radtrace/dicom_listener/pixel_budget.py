"""The pixel budget: the largest image radtrace will let anything decode, checked before decoding.

Also refused before decoding: a 12-bit JPEG Extended codestream when no decoder here reads one
(:class:`UndecodableError`): accepted, it would only fail the study later, where the sender never hears of it.
radtrace's own GDCM plugin (:mod:`radtrace.decoders`) reads them wherever GDCM is installed, as it is with
radtrace; asking registers it, so the worker decodes them after this check.

An image's size is Rows x Columns x Samples per Pixel x Number of Frames, as the header declares
it and, for JPEG, JPEG-LS and JPEG 2000, as the first fragment's codestream declares it
(:mod:`radtrace.dicom_listener.codestream`). The listener refuses an instance over
``listener.max_image_pixels``, or whose codestream disagrees with its header (rows, columns, components
against Samples per Pixel), at receive
(:func:`check_file`); the worker checks the same before it decodes (:func:`check_dataset`), for
instances that arrived another way or before the limit was lowered.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from radtrace.decoders import decodes_12_bit
from radtrace.dicom_deflated import InflateLimitError, read_bounded, starts_deflated
from radtrace.dicom_listener.codestream import ITEM_TAG, SizeError, codestream_size, first_fragment
from radtrace.errors import DicomInputError

__all__ = [
    "CODESTREAM_SYNTAXES",
    "ImageTooLargeError",
    "PixelMismatchError",
    "UndecodableError",
    "check_dataset",
    "check_file",
    "instance_byte_limit",
    "judge",
]

#: Transfer syntaxes whose codestream declares its own size (JPEG 2000 lossless is JPEG2000 + "0").
CODESTREAM_SYNTAXES: Final = frozenset(
    {
        str(JPEGBaseline8Bit),
        str(JPEGExtended12Bit),
        str(JPEGLossless),
        str(JPEGLosslessSV1),
        str(JPEGLSLossless),
        str(JPEGLSNearLossless),
        "1.2.840.10008.1.2.4.90",
        str(JPEG2000),
    }
)
_HEAD: Final = 64 * 1024
_PIXEL_DATA: Final = 0x7FE00010


class ImageTooLargeError(DicomInputError):
    """The image is larger than ``listener.max_image_pixels``."""


class PixelMismatchError(DicomInputError):
    """The codestream declares another size than the header, or none that can be read."""


class UndecodableError(DicomInputError):
    """No decoder installed here can decode the codestream (a 12-bit JPEG Extended one without GDCM)."""


#: JPEG processes 2 and 4 (PS3.5 A.4.1): 8-bit samples decode with Pillow or GDCM through pydicom's plugins;
#: 12-bit ones with radtrace's GDCM plugin (pydicom's own refuse them, pylibjpeg-libjpeg is GPL and absent).
_DCT_SYNTAXES: Final = frozenset({str(JPEGBaseline8Bit), str(JPEGExtended12Bit)})


def _count(value: Any, default: int | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else default
    except (TypeError, ValueError):
        return None


def judge(
    *,
    rows: int | None,
    columns: int | None,
    samples: int | None,
    frames: int | None,
    transfer_syntax: str,
    pixel_head: bytes | None,
    max_pixels: int,
) -> None:
    """Raise :class:`ImageTooLargeError` or :class:`PixelMismatchError`, or return: the image may be decoded.

    A codestream must declare the header's rows and columns, and as many components as Samples per Pixel.

    ``pixel_head``: the first bytes of the encapsulated Pixel Data value (offset table item first), or
    ``None`` for native pixel data.
    """
    frames = max(frames or 1, 1)
    if rows is not None and columns is not None and samples is not None:
        declared = rows * columns * samples * frames
        if declared > max_pixels:
            raise ImageTooLargeError(
                f"(0028,0010) Rows: {rows}x{columns}x{samples}x{frames} pixels exceeds listener.max_image_pixels "
                f"({max_pixels})"
            )
    if transfer_syntax not in CODESTREAM_SYNTAXES or pixel_head is None:
        return
    try:
        size = codestream_size(first_fragment(pixel_head, limit=_HEAD))
    except SizeError as exc:
        raise PixelMismatchError(f"(7FE0,0010) Pixel Data: compressed pixel data: {exc}") from exc
    if size.samples * frames > max_pixels:
        raise ImageTooLargeError(
            f"(7FE0,0010) Pixel Data: codestream {size.rows}x{size.columns}x{size.components}x{frames} "
            f"exceeds listener.max_image_pixels ({max_pixels})"
        )
    if (rows, columns) != (size.rows, size.columns):
        # the status comment is one LO (64 characters): element and both sizes first
        raise PixelMismatchError(
            f"(7FE0,0010) Pixel Data: codestream {size.rows}x{size.columns}, header {rows}x{columns}"
        )
    if samples is not None and size.components != samples:
        # a decoder told one number of samples meets another in the codestream: GDCM aborts the process
        raise PixelMismatchError(f"(0028,0002) Samples per Pixel: {samples}, codestream {size.components} components")
    if transfer_syntax in _DCT_SYNTAXES and (size.precision or 8) > 8 and not decodes_12_bit():
        raise UndecodableError(
            f"(7FE0,0010) Pixel Data: {size.precision}-bit JPEG Extended, which no decoder installed here reads; "
            "send it uncompressed, JPEG lossless, JPEG-LS or JPEG 2000"
        )


def _judge_dataset(ds: Dataset, pixel_head: bytes | None, max_pixels: int) -> None:
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    judge(
        rows=_count(ds.get("Rows"), None),
        columns=_count(ds.get("Columns"), None),
        samples=_count(ds.get("SamplesPerPixel"), 1),
        frames=_count(ds.get("NumberOfFrames"), 1),
        transfer_syntax=syntax,
        pixel_head=pixel_head,
        max_pixels=max_pixels,
    )


def instance_byte_limit(max_pixels: int) -> int:
    """The most bytes an instance (or a deflated one, inflated) may hold: its largest image at 4 bytes a sample,
    and 64 MiB for everything else. Beyond it, nothing of the image is worth what reading it would cost."""
    return 4 * max_pixels + (64 << 20)


def check_file(path: Path, max_pixels: int) -> None:
    """:func:`judge` a received Part 10 file, reading its header and its first fragment's first bytes only; and
    refuse a file larger than :func:`instance_byte_limit` (pixel data far longer than its image, or any padding),
    which the worker would otherwise read whole."""
    size = path.stat().st_size
    if size > instance_byte_limit(max_pixels):
        raise ImageTooLargeError(
            f"(7FE0,0010) Pixel Data: the instance is {size} bytes, more than an image within "
            f"listener.max_image_pixels ({max_pixels}) needs"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values are the header reader's to report
        try:
            with path.open("rb") as handle:
                deflated = starts_deflated(handle)
                # deflated: parsed as it is inflated (pydicom would hold it all inflated, even to defer); any
                # syntax: sequences item by item, bounded, large values in items dropped (pydicom holds them)
                ds = read_bounded(
                    handle,
                    keep_bulk=False,
                    defer_bytes=4096,
                    max_inflated_bytes=instance_byte_limit(max_pixels),
                    keep_deferred=True,
                )
            raw = ds.get_item(_PIXEL_DATA, keep_deferred=True) if _PIXEL_DATA in ds else None
        except InflateLimitError as exc:
            raise ImageTooLargeError(f"{exc.reason} (listener.max_image_pixels)") from exc
        except Exception:  # unparsable: the header reader refuses it with its own reason
            return
    if raw is None:
        return
    head = None
    tell = getattr(raw, "value_tell", None)
    if tell is not None and getattr(raw, "length", None) == 0xFFFFFFFF and not deflated:
        head = _read_head(path, tell)
    _judge_dataset(ds, head, max_pixels)


def _read_head(path: Path, tell: int) -> bytes:
    """The offset table item (its value dropped) and the first fragment's first bytes, from the file."""
    with open(path, "rb") as handle:
        handle.seek(tell)
        table = handle.read(8)
        if len(table) < 8 or table[:4] != ITEM_TAG:
            return table
        (length,) = struct.unpack_from("<L", table, 4)
        handle.seek(tell + 8 + length)
        return ITEM_TAG + b"\x00\x00\x00\x00" + handle.read(8 + _HEAD)


def check_dataset(ds: Dataset, max_pixels: int) -> None:
    """:func:`judge` a dataset in memory (the worker, before it decodes)."""
    pixel_data = ds.get("PixelData")
    if pixel_data is None:
        return
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    head = bytes(pixel_data[: 16 + _HEAD]) if syntax in CODESTREAM_SYNTAXES else None
    if head is not None and head[:4] == ITEM_TAG and len(head) >= 8:  # skip the offset table in place
        (length,) = struct.unpack_from("<L", head, 4)
        head = ITEM_TAG + b"\x00\x00\x00\x00" + bytes(pixel_data[8 + length : 16 + length + _HEAD])
    _judge_dataset(ds, head, max_pixels)

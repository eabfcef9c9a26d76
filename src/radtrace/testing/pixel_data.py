"""Stored pixel values for a phantom, and their encoding in each transfer syntax the factory offers.

The mapping is chosen so that the standard display pipeline gives the phantom back: stored values
through the Modality LUT (rescale) and then the VOI window (or the explicit VOI LUT) yield the
attenuation map as a MONOCHROME2 picture; MONOCHROME1 images store the inverted values, so a viewer
that honours the photometric interpretation shows the same picture (PS3.3 C.7.6.3.1.2, C.11.2).

Encoders: pydicom's native RLE encoder, pyjpegls (CharLS) for JPEG-LS, pylibjpeg-openjpeg for JPEG
2000, and GDCM for JPEG Lossless SV1, which pydicom cannot encode.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from radtrace.testing.shapes import FloatImage

__all__ = [
    "JPEG2000_PSNR_DB",
    "JPEG_LS_NEAR_LOSSLESS_ERROR",
    "LOSSY_TRANSFER_SYNTAXES",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "StoredScale",
    "encode_pixel_data",
    "stored_pixels",
    "stored_scale",
]

#: Largest absolute difference per pixel allowed to the JPEG-LS near-lossless encoder (its NEAR).
JPEG_LS_NEAR_LOSSLESS_ERROR: Final = 2
#: Peak signal-to-noise ratio asked of the lossy JPEG 2000 encoder (one quality layer), in dB: the
#: RMS error is about 10**(-60/20) = 0.1 % of the stored range whatever the image size; the peak
#: error stays within a few percent. A fixed compression ratio would make the loss depend on size.
JPEG2000_PSNR_DB: Final = 60.0

SUPPORTED_TRANSFER_SYNTAXES: Final[frozenset[UID]] = frozenset(
    {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEG2000Lossless,
        JPEG2000,
        RLELossless,
    }
)
LOSSY_TRANSFER_SYNTAXES: Final[frozenset[UID]] = frozenset({JPEGLSNearLossless, JPEG2000})

# Lossy Image Compression Method (0028,2114) defined terms, PS3.3 C.7.6.1.1.5.1.
_LOSSY_METHOD: Final = {JPEGLSNearLossless: "ISO_14495_1", JPEG2000: "ISO_15444_1"}

# The stored values use this fraction of the available range, as real detectors rarely saturate.
_MARGIN: Final = 0.05


@dataclass(frozen=True)
class StoredScale:
    """Where attenuation 0 and 1 land in stored values, and the VOI window that shows them."""

    #: Stored value of attenuation 0 (air); higher than ``bone`` in MONOCHROME1.
    air: int
    #: Stored value of attenuation 1 (dense bone).
    bone: int
    window_center: float
    window_width: float


def stored_scale(
    bits_stored: int,
    signed: bool,
    monochrome1: bool,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
) -> StoredScale:
    """Return the stored-value mapping and the matching window for an image's pixel description.

    The window is given in Modality LUT output units (after rescale), as PS3.3 C.11.2.1.2 requires.
    """
    low = -(1 << (bits_stored - 1)) if signed else 0
    span = (1 << bits_stored) - 1
    dark = low + round(span * _MARGIN)
    bright = low + round(span * (1.0 - _MARGIN))
    air, bone = (bright, dark) if monochrome1 else (dark, bright)
    centre = rescale_slope * (dark + bright) / 2.0 + rescale_intercept
    width = abs(rescale_slope) * (bright - dark)
    return StoredScale(air=air, bone=bone, window_center=centre, window_width=width)


def stored_pixels(attenuation: FloatImage, scale: StoredScale, signed: bool) -> NDArray[np.int16 | np.uint16]:
    """Quantise an attenuation map in [0, 1] to stored values with ``scale``."""
    values = np.rint(scale.air + attenuation.astype(np.float64) * (scale.bone - scale.air))
    return values.astype(np.int16 if signed else np.uint16)


def encode_pixel_data(ds: Dataset, transfer_syntax: str) -> None:
    """Encode ``ds``'s native Pixel Data in ``transfer_syntax``, in place, keeping its SOP Instance UID.

    Sets the File Meta Transfer Syntax UID and, for lossy syntaxes, the Lossy Image Compression
    attributes (PS3.3 C.7.6.1.1.5). ``ds.file_meta`` must exist and describe native pixel data.
    """
    uid = UID(transfer_syntax)
    if uid not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"transfer syntax {uid} ({uid.name}) is not offered by the study factory")
    if not uid.is_compressed:
        ds.file_meta.TransferSyntaxUID = uid
        return
    native_size = len(ds.PixelData)
    if uid == JPEGLosslessSV1:
        ds.PixelData = _gdcm_jpeg_lossless(ds)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = uid
    else:
        ds.compress(
            uid,
            generate_instance_uid=False,
            jls_error=JPEG_LS_NEAR_LOSSLESS_ERROR if uid == JPEGLSNearLossless else None,
            j2k_psnr=[JPEG2000_PSNR_DB] if uid == JPEG2000 else None,
        )
    if uid in LOSSY_TRANSFER_SYNTAXES:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = f"{native_size / len(ds.PixelData):.2f}"
        ds.LossyImageCompressionMethod = _LOSSY_METHOD[uid]


def _gdcm_jpeg_lossless(ds: Dataset) -> bytes:
    """Encode with GDCM (JPEG Lossless, Non-Hierarchical, First-Order Prediction, process 14 SV1).

    GDCM reads and writes files, so a minimal Image Pixel dataset makes the round trip through a
    temporary directory; only its encapsulated Pixel Data is kept, leaving ``ds``'s other attributes
    untouched by GDCM.
    """
    # Imported here: a heavy C extension that only this one transfer syntax needs.
    import gdcm

    pixel_module = Dataset()
    pixel_module.file_meta = FileMetaDataset()
    pixel_module.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixel_module.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    pixel_module.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    pixel_module.SOPClassUID = ds.SOPClassUID
    pixel_module.SOPInstanceUID = ds.SOPInstanceUID
    for keyword in (
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelData",
    ):
        pixel_module[keyword] = ds[keyword]
    with tempfile.TemporaryDirectory(prefix="radtrace-gdcm-") as directory:
        native, encoded = Path(directory, "native.dcm"), Path(directory, "encoded.dcm")
        pixel_module.save_as(native, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(native))
        if not reader.Read():
            raise RuntimeError("GDCM could not read the native pixel data it was given")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("GDCM failed to encode JPEG Lossless SV1")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(encoded))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("GDCM failed to write the JPEG Lossless SV1 pixel data")
        result = pydicom.dcmread(encoded)
    if result.file_meta.TransferSyntaxUID != JPEGLosslessSV1:
        raise RuntimeError(f"GDCM wrote {result.file_meta.TransferSyntaxUID}, not JPEG Lossless SV1")
    return bytes(result.PixelData)

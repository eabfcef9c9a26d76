"""Film variants that change how the pixels are laid out and encoded: padding, bits above Bits Stored, signed
values, colour, frames, overlays and icons, a cut transfer, header marks, and other codecs (JPEG, RLE, JPEG-LS,
JPEG 2000) (:mod:`film_variants_support` lists every variant with what radtrace must make of it)."""

from __future__ import annotations

import copy
from io import BytesIO

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from film_support import (
    _WINDOW,
    ALIKE,
    BORDER,
    NEGATIVE,
    SAME,
    SAME_INSIDE,
    Variant,
    _lut_item,
    _set_lut_data,
    _set_pixels,
    _set_windows,
    _top,
    _voi_table,
    _windows,
)


def padded_border(ds: Dataset, stored: NDArray[np.int64], *, value: int | None = None, limit: bool = False) -> Variant:
    """A border of :data:`BORDER` pixels holding Pixel Padding Value (one value, or a range with Range Limit)."""
    top = _top(ds)
    padded = stored.copy()
    unused = sorted(set(range(top + 1)) - set(np.unique(stored).tolist()), reverse=True)
    runs = [v for v in unused if all(v - k in unused for k in range(4 if limit else 1))]
    pad = runs[0] if value is None and runs else top if value is None else value
    border = np.ones(stored.shape, dtype=bool)
    border[BORDER:-BORDER, BORDER:-BORDER] = False
    if limit:
        padded[border] = pad - (np.arange(int(border.sum())) % 4)
        ds.PixelPaddingRangeLimit = pad - 3
    else:
        padded[border] = pad
    inside = stored[~border]
    if ((inside >= pad - (3 if limit else 0)) & (inside <= pad)).mean() > 0.001:
        raise ValueError("padding value chosen among the film's own values")
    _set_pixels(ds, padded)
    ds.PixelPaddingValue = pad
    ds["PixelPaddingValue"].VR = "US"
    if limit:
        ds["PixelPaddingRangeLimit"].VR = "US"
    return Variant(ds, SAME_INSIDE)


def padded_range(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    return padded_border(ds, stored, limit=True)


def bits_above_stored(ds: Dataset, stored: NDArray[np.int64], *, bits: int = 12, overlay: bool = False) -> Variant:
    """The values widened to ``bits`` in 16 allocated (the windows widened alike), with random bits set above them
    (an old overlay in bit 15 when ``overlay``)."""
    shift = bits - int(ds.BitsStored)
    widened = stored << shift if shift >= 0 else stored >> -shift
    rng = np.random.default_rng(bits)
    if overlay:
        noise = np.zeros_like(widened)
        noise[stored.shape[0] // 3 : stored.shape[0] // 3 + 20, 10:-10] = 1 << 15
        ds.add_new(0x60000010, "US", stored.shape[0])
        ds.add_new(0x60000011, "US", stored.shape[1])
        ds.add_new(0x60000100, "US", 16)  # Overlay Bits Allocated: in the pixel data
        ds.add_new(0x60000102, "US", 15)  # Overlay Bit Position
        ds.add_new(0x60000040, "CS", "G")
        ds.add_new(0x60000050, "SS", [1, 1])
    else:
        noise = rng.integers(0, 1 << (16 - bits), size=stored.shape, dtype=np.int64) << bits
    _set_pixels(ds, widened | noise, allocated=16)
    ds.BitsStored, ds.HighBit = bits, bits - 1
    factor = 2.0**shift
    _set_windows(ds, [(c * factor, w * factor) for c, w in _windows(ds)])
    return Variant(ds, SAME if shift >= 0 else ALIKE)


def signed(ds: Dataset, stored: NDArray[np.int64], *, rescale: bool = True) -> Variant:
    """Pixel Representation 1, the values less half their range (negative ones among them); a Rescale Intercept
    (``rescale``), or the windows, put back what was taken."""
    half = 2 ** (int(ds.BitsStored) - 1)
    allocated = 16 if int(ds.BitsStored) > 8 else int(ds.BitsAllocated)
    _set_pixels(ds, stored - half, allocated=allocated, signed=True)
    if rescale:
        ds.RescaleSlope = float(ds.get("RescaleSlope", 1) or 1)
        ds.RescaleIntercept = float(ds.get("RescaleIntercept", 0) or 0) + half
    else:
        _set_windows(ds, [(c - half, w) for c, w in _windows(ds)])
    return Variant(ds, SAME)


def signed_windowed(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    return signed(ds, stored, rescale=False)


def signed_voi_lut(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Signed values and a VOI LUT whose first mapped value is negative, written as US (its two's complement), as
    the descriptor's VR is US or SS by the pixel representation and many writers use US."""
    half = 2 ** (int(ds.BitsStored) - 1)
    first, table = _voi_table(ds, stored, 16)
    signed(ds, stored, rescale=False)
    ds.VOILUTSequence = Sequence([_lut_item(first - half, table, 16, signed_first=True)])
    for keyword in _WINDOW:
        ds.pop(keyword, None)
    return Variant(ds, SAME)


def signed_modality_lut(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Signed values and a Modality LUT from the first of them (negative, its descriptor written US) that gives
    back the film's values."""
    half = 2 ** (int(ds.BitsStored) - 1)
    signed(ds, stored, rescale=False)
    _set_windows(ds, [(c + half, w) for c, w in _windows(ds)])  # back in the LUT's output units
    item = Dataset()
    item.LUTDescriptor = [0 if 2 * half == 65536 else 2 * half, (-half) & 0xFFFF, 16]
    item["LUTDescriptor"].VR = "US"
    item.ModalityLUTType = "US"
    _set_lut_data(item, np.arange(2 * half))
    ds.ModalityLUTSequence = Sequence([item])
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        ds.pop(keyword, None)
    return Variant(ds, SAME)


def signed_padding(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Signed values with a border of a negative value no pixel holds (the most negative one, else one bit more
    stored), its Pixel Padding Value written US (two's complement: the VR is US or SS by the Pixel
    Representation)."""
    half = 2 ** (int(ds.BitsStored) - 1)
    windows = _windows(ds)
    signed(ds, stored, rescale=False)
    values = stored - half
    pad = -half
    if (values == pad).mean() > 0.001:  # every value is the film's: one bit more, and the value below them
        ds.BitsStored, ds.HighBit, pad = int(ds.BitsStored) + 1, int(ds.BitsStored), -2 * half
    values[:BORDER], values[-BORDER:], values[:, :BORDER], values[:, -BORDER:] = (pad,) * 4
    _set_pixels(ds, values, allocated=16 if pad < -128 else int(ds.BitsAllocated), signed=True)
    _set_windows(ds, [(c - half, w) for c, w in windows])
    ds.PixelPaddingValue = pad & 0xFFFF
    ds["PixelPaddingValue"].VR = "US"
    return Variant(ds, SAME_INSIDE)


def packed_12_bit(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Bits Allocated 12 (two pixels in three bytes, ACR-NEMA): no DICOM transfer syntax has it."""
    pairs = (stored.reshape(-1)[: stored.size // 2 * 2] & 0xFFF).reshape(-1, 2)
    packed = np.stack([pairs[:, 0] & 0xFF, (pairs[:, 0] >> 8) | ((pairs[:, 1] & 0xF) << 4), pairs[:, 1] >> 4], 1)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 12, min(int(ds.BitsStored), 12), min(int(ds.BitsStored), 12) - 1
    ds.PixelData = packed.astype("u1").tobytes()
    ds["PixelData"].VR = "OB"
    return Variant(ds, "refused: (0028,0100)")


def bits_stored_over_allocated(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    _set_pixels(ds, stored, allocated=16)
    ds.BitsStored, ds.HighBit = 17, 16
    return Variant(ds, "refused: (0028,0101)")


def signed_high_bits(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Signed 12-bit values in 16 allocated, with the bits above Bits Stored set at random (not sign bits)."""
    shift = 12 - int(ds.BitsStored)
    values = (stored << shift if shift >= 0 else stored >> -shift) - 2048
    garbage = np.random.default_rng(5).integers(0, 16, size=stored.shape, dtype=np.int64) << 12
    _set_pixels(ds, (values & 0x0FFF) | garbage, allocated=16)  # two's complement in 12 bits, noise above
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
    ds.RescaleSlope = float(ds.get("RescaleSlope", 1) or 1)
    ds.RescaleIntercept = float(ds.get("RescaleIntercept", 0) or 0) + 2048 * ds.RescaleSlope
    factor = 2.0**shift
    _set_windows(ds, [(c * factor, w * factor) for c, w in _windows(ds)])
    return Variant(ds, SAME if shift >= 0 else ALIKE)


def overlay_in_pixel_data(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    return bits_above_stored(ds, stored, bits=12, overlay=True)


def sixteen_allocated(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    _set_pixels(ds, stored, allocated=16)
    return Variant(ds, SAME)


def _rgb(ds: Dataset, stored: NDArray[np.int64]) -> NDArray[np.int64]:
    """The film's own picture (radtrace's display values) in 8 bits, three samples a pixel."""
    from radtrace.model.image import display_values

    shown, _ = display_values(copy.deepcopy(ds))
    gray = np.rint(shown * 255).astype(np.int64)
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def _as_colour(ds: Dataset, values: NDArray[np.int64], photometric: str, planar: int = 0) -> None:
    for keyword in (*_WINDOW, "RescaleSlope", "RescaleIntercept", "RescaleType", "PresentationLUTShape"):
        ds.pop(keyword, None)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    _set_pixels(ds, values, allocated=8)
    if planar:
        ds.PixelData = np.ascontiguousarray(values.transpose(2, 0, 1)).astype("u1").tobytes()


def rgb(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    _as_colour(ds, _rgb(ds, stored), "RGB")
    return Variant(ds, SAME)


def rgb_negative(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """A colour capture of the film's negative (a secondary capture of an inverted screen)."""
    _as_colour(ds, 255 - _rgb(ds, stored), "RGB")
    return Variant(ds, NEGATIVE)


def rgb_planar(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    _as_colour(ds, _rgb(ds, stored), "RGB", planar=1)
    return Variant(ds, SAME)


def ybr_full(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    from pydicom.pixels.processing import convert_color_space

    values = _rgb(ds, stored)
    ybr = np.rint(convert_color_space(values.astype(np.uint8), "RGB", "YBR_FULL")).astype(np.int64)
    _as_colour(ds, ybr, "YBR_FULL")
    return Variant(ds, SAME)


def frames(ds: Dataset, stored: NDArray[np.int64], *, count: int = 2) -> Variant:
    _set_pixels(ds, np.stack([stored] * count))
    return Variant(ds, SAME)


def three_frames(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    return frames(ds, stored, count=3)


def odd_width(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """One column fewer (an odd width where the film's is even): compared with the film's picture so cut."""
    columns = stored.shape[1] - 1 if stored.shape[1] % 2 == 0 else stored.shape[1] - 2
    _set_pixels(ds, np.ascontiguousarray(stored[:, :columns]))
    return Variant(ds, SAME)


def one_row(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    _set_pixels(ds, np.ascontiguousarray(stored[stored.shape[0] // 2 : stored.shape[0] // 2 + 1]))
    return Variant(ds, "refused: aspect ratio")


def overlay_plane(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """An overlay plane in its own Overlay Data (60xx,3000), a block of text-like marks: a viewer may show it; the
    model is shown the pixel data alone, never the overlay burned in."""
    rows, columns = stored.shape
    marks = np.zeros((rows, columns), dtype=np.uint8)
    marks[rows // 4 : rows // 4 + 20, columns // 4 : columns // 2] = 1
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", np.packbits(marks.reshape(-1), bitorder="little").tobytes())
    return Variant(ds, SAME)


def icon_image(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """An Icon Image Sequence holding a 64 x 64 8-bit thumbnail of its own (inverted): the film is read, not it."""
    icon = Dataset()
    icon.Rows = icon.Columns = 64
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = (255 - np.linspace(0, 255, 64 * 64)).astype("u1").tobytes()
    icon["PixelData"].VR = "OB"
    ds.IconImageSequence = Sequence([icon])
    return Variant(ds, SAME)


def truncated(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Pixel data a tenth shorter than Rows x Columns declare (a transfer cut short)."""
    data = bytes(ds.PixelData)
    ds.PixelData = data[: len(data) * 9 // 10 // 2 * 2]
    return Variant(ds, "refused: (7FE0,0010) Pixel Data")


def rescale_slope_zero(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Rescale Slope 0 (every modality value the intercept): refused naming the element, never read as 1."""
    ds.RescaleSlope, ds.RescaleIntercept = 0, float(ds.get("RescaleIntercept", 0) or 0)
    return Variant(ds, "refused: (0028,1053) Rescale Slope")


def burned_in_annotation(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    ds.BurnedInAnnotation = "YES"
    return Variant(ds, SAME)


def lossy_marked(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = 10
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return Variant(ds, SAME)


def jpeg_baseline(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """The film's own picture in 8 bits, MONOCHROME2, as JPEG Baseline (Pillow, quality 90), with no Lossy Image
    Compression element: the transfer syntax alone says the model reads a lossy image."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    gray = _rgb(ds, stored)[..., 0]
    for keyword in (*_WINDOW, "RescaleSlope", "RescaleIntercept", "RescaleType", "PresentationLUTShape"):
        ds.pop(keyword, None)
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 8, 8, 7
    ds.PixelRepresentation = 0
    buffer = BytesIO()
    Image.fromarray(gray.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return Variant(ds, ALIKE)


def rle_signed(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Signed values, RLE Lossless (pydicom's encoder)."""
    signed(ds, stored)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return Variant(ds, SAME)


def large_matrix(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """The film upsampled to 4,280 x 3,520 at 16 bits (a large detector's full matrix)."""
    rows = np.linspace(0, stored.shape[0] - 1, 4280).round().astype(np.int64)
    columns = np.linspace(0, stored.shape[1] - 1, 3520).round().astype(np.int64)
    _set_pixels(ds, stored[np.ix_(rows, columns)], allocated=16)
    return Variant(ds, ALIKE)


def jpeg_ls_signed(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Signed values, JPEG-LS Lossless (pyjpegls): the codestream holds no sign (PS3.5 A.4.3)."""
    signed(ds, stored)
    ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
    return Variant(ds, SAME)


def jpeg_2000_signed(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Signed values, JPEG 2000 Lossless (pylibjpeg-openjpeg): the codestream says they are signed."""
    signed(ds, stored)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    return Variant(ds, SAME)


def jpeg_2000_high_bits(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """12 bits stored with noise above, JPEG 2000 Lossless of all 16 bits (Bits Stored kept 12)."""
    bits_above_stored(ds, stored, bits=12)
    ds.BitsStored, ds.HighBit = 16, 15
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ds.BitsStored, ds.HighBit = 12, 11
    return Variant(ds, SAME)

"""Variants of the real films in tests/data/real-cxr, each with what radtrace must make of it.

A variant rewrites a film's pixels and header the way real senders encode the same picture differently
(MONOCHROME1 for MONOCHROME2 with the pixels inverted, a VOI LUT for the window, a rescale, signed values, bits
above Bits Stored, colour, frames, padding). Each says what is expected of the model's picture against the
film's own (:data:`SAME`: equal up to rounding; :data:`SAME_INSIDE`: equal outside a padded border, which is
black; :data:`ALIKE`: another contrast of the same film, correlated and the right way round; :data:`NEGATIVE`:
the film's negative, which the header does not say, flagged as a suspected negative), or the named
failure (a :class:`radtrace.errors.DicomInputError` whose reason holds the element's text).

``tests/unit/test_realinput_variants.py`` runs them (a sample in CI, all with ``RADTRACE_FULL_VARIANTS=1``);
``bench/film_variants.py`` times them. The film on disk is never changed.
"""

from __future__ import annotations

import copy
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from radtrace.model.image_marks import BURNED_IN_ANNOTATION, LOSSY_COMPRESSION, WINDOW_NOT_APPLIED
from radtrace.model.stored_pixels import decode_first_frame
from radtrace.model.study import study_image
from radtrace.model.voi import apply_window
from tests_support import as_part10

REAL: Final = Path(__file__).resolve().parent / "data" / "real-cxr"
FILMS: Final = {
    "fuji": "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",  # CR, MONOCHROME1, 10 bit, one window
    "nih": "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",  # MONOCHROME2, 8 bit, no window
    "canine": "canine-dx-thorax-lateral-mono1-small.dcm",  # DX, MONOCHROME1 + INVERSE, 8 bit, rescale 1/0
    "rg1": "nema-rg1-cr-chest-pa-mono1-jpegls-near-lossless.dcm",  # CR, MONOCHROME1, 15 bit, JPEG-LS
}
SAME: Final = "same"
SAME_INSIDE: Final = "same inside the padding"
ALIKE: Final = "alike"
NEGATIVE: Final = "negative"
BORDER: Final = 12  # pixels of padding written round a film

#: The variants whose picture the draft must flag (beside what the film's own header says: the RG1 films are
#: lossy): :func:`radtrace.model.image_marks.image_marks`' flags.
MARKED: Final = {
    "burned_in_annotation": {BURNED_IN_ANNOTATION},
    "lossy_marked": {LOSSY_COMPRESSION},
    "jpeg_baseline": {LOSSY_COMPRESSION},
    "modality_lut_unusable": {WINDOW_NOT_APPLIED},
    "modality_lut_without_data": {WINDOW_NOT_APPLIED},
}

_WINDOW: Final = ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation")


@dataclass(frozen=True)
class Variant:
    """A film rewritten: the data set to read, and what the model's picture must be (or the failure named)."""

    dataset: Dataset
    expect: str  # SAME, SAME_INSIDE, ALIKE, or "refused: <text the reason holds>"


@cache
def _film(name: str) -> tuple[bytes, NDArray[np.int64]]:
    """The film's Part 10 bytes with native pixel data, and its stored values (as radtrace decodes them)."""
    ds = study_image((REAL / FILMS[name]).read_bytes()).dataset
    stored, _ = decode_first_frame(ds)
    native = copy.deepcopy(ds)
    _set_pixels(native, stored.astype(np.int64))
    buffer = BytesIO()
    dcmwrite(buffer, as_part10(native, ExplicitVRLittleEndian), enforce_file_format=True)
    return buffer.getvalue(), stored.astype(np.int64)


def film(name: str) -> tuple[Dataset, NDArray[np.int64]]:
    """A fresh copy of the film (native pixel data) and its stored values."""
    data, stored = _film(name)
    return study_image(data).dataset, stored.copy()


def read_back(ds: Dataset) -> Dataset:
    """``ds`` written as a Part 10 file and read as the worker reads a spooled instance."""
    buffer = BytesIO()
    dcmwrite(buffer, as_part10(ds, None), enforce_file_format=True)
    return study_image(buffer.getvalue()).dataset


def _set_pixels(ds: Dataset, values: NDArray[np.int64], *, allocated: int | None = None, signed: bool = False) -> None:
    """Native pixel data holding ``values`` (rows x columns, frames x rows x columns, or rows x columns x 3)."""
    allocated = allocated or int(ds.BitsAllocated)
    dtype = {(8, False): "<u1", (8, True): "<i1", (16, False): "<u2", (16, True): "<i2"}[(allocated, signed)]
    colour = values.ndim == 3 and values.shape[-1] == 3 and int(ds.get("SamplesPerPixel", 1)) == 3
    frames = values.shape[0] if values.ndim == 3 and not colour else 1
    ds.Rows, ds.Columns = values.shape[1:3] if frames > 1 else values.shape[:2]
    ds.BitsAllocated = allocated
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    elif "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    ds.PixelData = values.astype(dtype).tobytes()
    ds["PixelData"].VR = "OB" if allocated == 8 else "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _top(ds: Dataset) -> int:
    return int(2 ** int(ds.BitsStored) - 1)


def _windows(ds: Dataset) -> list[tuple[float, float]]:
    centers, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centers is None or widths is None:
        return []
    listed = [
        list(v) if not isinstance(v, str | int | float) and hasattr(v, "__iter__") else [v] for v in (centers, widths)
    ]
    return [(float(c), float(w)) for c, w in zip(*listed, strict=False)]


def _set_windows(ds: Dataset, windows: list[tuple[float, float]]) -> None:
    for keyword in _WINDOW[:2]:
        ds.pop(keyword, None)
    if windows:
        ds.WindowCenter = [round(c, 3) for c, _ in windows] if len(windows) > 1 else round(windows[0][0], 3)
        ds.WindowWidth = [round(w, 3) for _, w in windows] if len(windows) > 1 else round(windows[0][1], 3)


def _voi_table(ds: Dataset, stored: NDArray[np.int64], bits: int) -> tuple[int, NDArray[np.int64]]:
    """The film's own VOI (its first window, else the range of its values) as a LUT over its modality values:
    (first value mapped, entries in ``bits`` bits)."""
    low, high = int(stored.min()), int(stored.max())
    inputs = np.arange(low, high + 1, dtype=np.float64)
    windows = _windows(ds)
    if windows:
        center, width = windows[0]
        out = apply_window(inputs, center, width, str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"))
    else:
        out = (inputs - low) / max(high - low, 1)
    return low, np.rint(out * (2**bits - 1)).astype(np.int64)


def _lut_item(first: int, table: NDArray[np.int64], bits: int, *, signed_first: bool = False) -> Dataset:
    item = Dataset()
    entries = 0 if table.size == 65536 else int(table.size)
    item.LUTDescriptor = [entries, first & 0xFFFF if signed_first else first, bits]
    item.LUTExplanation = "derived"
    _set_lut_data(item, table)
    item["LUTDescriptor"].VR = "US"  # "US or SS": kept US, as many writers send it
    return item


def _set_lut_data(item: Dataset, table: NDArray[np.int64]) -> None:
    """LUT Data as US, or as OW where it is too long for an explicit US value (over 32,767 entries)."""
    if table.size > 32767:
        item.LUTData = table.astype("<u2").tobytes()
        item["LUTData"].VR = "OW"
    else:
        item.LUTData = [int(v) for v in table]
        item["LUTData"].VR = "US"


# -- the variants ---------------------------------------------------------------------------------------------


def monochrome_flipped(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """MONOCHROME1 <-> MONOCHROME2 with the stored values inverted, the windows and the shape mirrored."""
    top = _top(ds)
    _set_pixels(ds, top - stored)
    mono1 = str(ds.PhotometricInterpretation).strip() == "MONOCHROME1"
    ds.PhotometricInterpretation = "MONOCHROME2" if mono1 else "MONOCHROME1"
    if "PresentationLUTShape" in ds:
        ds.PresentationLUTShape = "IDENTITY" if mono1 else "INVERSE"
    _set_windows(ds, [(top + 1 - c, w) for c, w in _windows(ds)])
    return Variant(ds, SAME)


def monochrome_mislabelled(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """The stored values inverted and the header left as it was (a wrong Photometric Interpretation)."""
    _set_pixels(ds, _top(ds) - stored)
    _set_windows(ds, [(_top(ds) + 1 - c, w) for c, w in _windows(ds)])
    return Variant(ds, NEGATIVE)


def voi_lut_instead_of_window(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    first, table = _voi_table(ds, stored, 16)
    ds.VOILUTSequence = Sequence([_lut_item(first, table, 16)])
    for keyword in _WINDOW:
        ds.pop(keyword, None)
    return Variant(ds, SAME)


def voi_lut_beside_window(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    first, table = _voi_table(ds, stored, 12)
    ds.VOILUTSequence = Sequence([_lut_item(first, table, 12)])
    return Variant(ds, SAME)


def voi_lut_8_bit(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    first, table = _voi_table(ds, stored, 8)
    ds.VOILUTSequence = Sequence([_lut_item(first, table, 8)])
    return Variant(ds, SAME)


def big_endian_voi_lut(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """A VOI LUT with LUT Data OW, the file in Explicit VR Big Endian (see :func:`_big_endian`)."""
    voi_lut_instead_of_window(ds, stored)
    return Variant(_big_endian(ds, ds.VOILUTSequence[0]), SAME)


def big_endian_modality_lut(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """A Modality LUT with LUT Data OW, the file in Explicit VR Big Endian (see :func:`_big_endian`)."""
    modality_lut_sequence(ds, stored)
    return Variant(_big_endian(ds, ds.ModalityLUTSequence[0]), SAME)


def _big_endian(ds: Dataset, item: Dataset) -> Dataset:
    """``ds`` with ``item``'s LUT Data made OW, converted to Explicit VR Big Endian by dcmtk (dcmconv +tb), as an
    old archive sends it: OW words are in the file's byte order."""
    data = item.LUTData  # as this module wrote it: US, or OW little endian
    table = np.frombuffer(data, "<u2") if isinstance(data, bytes) else np.asarray(data, dtype=np.int64)
    del item[0x00283006]
    item.add_new(0x00283006, "OW", table.astype("<u2").tobytes())
    with tempfile.TemporaryDirectory() as folder:
        source, converted = Path(folder) / "le.dcm", Path(folder) / "be.dcm"
        dcmwrite(source, as_part10(ds, None), enforce_file_format=True)
        subprocess.run(["dcmconv", "+tb", str(source), str(converted)], check=True, capture_output=True)
        return study_image(converted.read_bytes()).dataset


def voi_lut_8_bit_packed(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """An 8-bit VOI LUT whose entries are packed one a byte in OW LUT Data (as 8-bit palettes are, PS3.3
    C.7.6.3.1.6; some writers do so for VOI LUTs too, where each entry should take 16 bits)."""
    first, table = _voi_table(ds, stored, 8)
    item = _lut_item(first, table, 8)
    del item[0x00283006]
    packed = table.astype("u1").tobytes()
    item.add_new(0x00283006, "OW", packed + b"\0" * (len(packed) % 2))
    ds.VOILUTSequence = Sequence([item])
    for keyword in _WINDOW:
        ds.pop(keyword, None)
    return Variant(ds, SAME)


def voi_lut_depth_overstated(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """A VOI LUT of 12-bit entries whose descriptor says 16 bits (as some CR writers send it)."""
    first, table = _voi_table(ds, stored, 12)
    ds.VOILUTSequence = Sequence([_lut_item(first, table, 16)])
    for keyword in _WINDOW:
        ds.pop(keyword, None)
    return Variant(ds, SAME)


def two_windows(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    windows = _windows(ds) or [((int(stored.min()) + int(stored.max())) / 2 + 0.5, float(np.ptp(stored)) + 1)]
    center, width = windows[0]
    own = bool(_windows(ds))
    _set_windows(ds, [(center, width), (center / 2, width * 3)])
    ds.WindowCenterWidthExplanation = ["FILM", "WIDE"]
    return Variant(ds, SAME if own else ALIKE)


def sigmoid(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    if not _windows(ds):
        _set_windows(ds, [((int(stored.min()) + int(stored.max())) / 2, float(np.ptp(stored)))])
    ds.VOILUTFunction = "SIGMOID"
    return Variant(ds, ALIKE)


def linear_exact(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    ds.VOILUTFunction = "LINEAR_EXACT"
    return Variant(ds, SAME)


def rescaled(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Rescale Slope 2, Intercept -1000: the windows in the rescaled units."""
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    ds.RescaleSlope, ds.RescaleIntercept = slope * 2, intercept * 2 - 1000
    ds.RescaleType = "US"
    _set_windows(ds, [(2 * c - 1000 - 0.5, 2 * w) for c, w in _windows(ds)])
    return Variant(ds, SAME)


def inverted_by_negative_slope(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """Stored values inverted and a Rescale Slope of -1 that inverts them back: the modality values are the film's."""
    top = _top(ds)
    _set_pixels(ds, top - stored)
    ds.RescaleSlope, ds.RescaleIntercept = -1, top
    return Variant(ds, SAME)


def modality_lut_sequence(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """A Modality LUT of 2v + 10 over the stored range (v + 10 for 15 bits and more), the windows in its units."""
    top = _top(ds)
    slope = 2 if 2 * top + 10 <= 65535 else 1
    item = Dataset()
    item.LUTDescriptor = [0 if top + 1 == 65536 else top + 1, 0, 16]
    item.ModalityLUTType = "US"
    _set_lut_data(item, slope * np.arange(top + 1) + 10)
    ds.ModalityLUTSequence = Sequence([item])
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        ds.pop(keyword, None)
    _set_windows(ds, [(slope * c + 10 - (slope - 1) / 2, slope * w) for c, w in _windows(ds)])
    return Variant(ds, SAME)


def modality_lut_as_un(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    """A Modality LUT over every 16-bit input (65,536 entries, 2v + 10 over the film's values) given as US: too
    long for an explicit US value, pydicom writes it UN (with a warning), as other writers do."""
    modality_lut_sequence(ds, stored)
    item = ds.ModalityLUTSequence[0]
    table = np.full(65536, 65535, dtype=np.int64)
    slope = 2 if 2 * _top(ds) + 10 <= 65535 else 1
    table[: _top(ds) + 1] = slope * np.arange(_top(ds) + 1) + 10
    item.LUTDescriptor = [0, 0, 16]
    del item[0x00283006]
    item.LUTData = [int(v) for v in table]
    item["LUTData"].VR = "US"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "... written as UN": the point
        buffer = BytesIO()
        dcmwrite(buffer, as_part10(ds, None), enforce_file_format=True)
    return Variant(study_image(buffer.getvalue()).dataset, SAME)


def modality_lut_unusable(ds: Dataset, stored: NDArray[np.int64], *, data: bool = True) -> Variant:
    """A Modality LUT Sequence (stored x 4 + 100) with the windows written for its output, that cannot be applied:
    its descriptor says 16 entries (it maps under half the values), or (``data`` False) it has no LUT Data. The
    rescale is used instead, and the windows, in the LUT's units, are not applied to it: the range is."""
    item = Dataset()
    item.LUTDescriptor = [16, 0, 16]
    item["LUTDescriptor"].VR = "US"
    if data:
        _set_lut_data(item, 4 * np.arange(16) + 100)
    ds.ModalityLUTSequence = Sequence([item])
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        ds.pop(keyword, None)
    windows = _windows(ds) or [((int(stored.min()) + int(stored.max())) / 2, int(stored.max()) - int(stored.min()) + 1)]
    _set_windows(ds, [(4 * c + 100, 4 * w) for c, w in windows])
    return Variant(ds, ALIKE)


def modality_lut_without_data(ds: Dataset, stored: NDArray[np.int64]) -> Variant:
    return modality_lut_unusable(ds, stored, data=False)


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


VARIANTS: Final[dict[str, Callable[[Dataset, NDArray[np.int64]], Variant]]] = {
    fn.__name__: fn
    for fn in (
        monochrome_flipped,
        monochrome_mislabelled,
        voi_lut_instead_of_window,
        voi_lut_beside_window,
        voi_lut_8_bit,
        voi_lut_8_bit_packed,
        voi_lut_depth_overstated,
        big_endian_voi_lut,
        big_endian_modality_lut,
        two_windows,
        sigmoid,
        linear_exact,
        rescaled,
        inverted_by_negative_slope,
        modality_lut_sequence,
        modality_lut_as_un,
        modality_lut_unusable,
        modality_lut_without_data,
        padded_border,
        padded_range,
        bits_above_stored,
        overlay_in_pixel_data,
        signed,
        signed_windowed,
        signed_voi_lut,
        signed_modality_lut,
        signed_padding,
        packed_12_bit,
        bits_stored_over_allocated,
        signed_high_bits,
        sixteen_allocated,
        rgb,
        rgb_planar,
        rgb_negative,
        ybr_full,
        frames,
        three_frames,
        odd_width,
        one_row,
        overlay_plane,
        icon_image,
        truncated,
        rescale_slope_zero,
        burned_in_annotation,
        lossy_marked,
        jpeg_baseline,
        rle_signed,
        jpeg_ls_signed,
        jpeg_2000_signed,
        jpeg_2000_high_bits,
        large_matrix,
    )
}

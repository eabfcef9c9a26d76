"""The real films in tests/data/real-cxr as the variants rewrite them: each film's data set and stored values, a
data set read back as the worker reads a spooled one, and the helpers the variants share (pixels written native,
windows, LUT items). The variants are in :mod:`film_variants_values` (how the values map to the display) and
:mod:`film_variants_layout` (how the pixels are laid out and encoded); :mod:`film_variants_support` lists them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

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

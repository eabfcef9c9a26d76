"""Film variants that change how stored values map to the display: MONOCHROME1/2, VOI LUTs and windows,
rescales, Modality LUTs (:mod:`film_variants_support` lists every variant with what radtrace must make of it)."""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from film_support import (
    _WINDOW,
    ALIKE,
    NEGATIVE,
    SAME,
    Variant,
    _lut_item,
    _set_lut_data,
    _set_pixels,
    _set_windows,
    _top,
    _voi_table,
    _windows,
)
from radtrace.model.study import study_image
from tests_support import as_part10


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

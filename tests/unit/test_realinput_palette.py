"""PALETTE COLOR films: the palette is the display mapping, applied then shown as its luminance, as dcmtk shows it;
a palette that cannot be applied is refused at receive naming (0028,0004).

Before (found by the real-input exploration, notes/report-realinput.md): the palette was ignored and the stored
indices read as gray, so a film whose gray palette runs white to black reached the model as a negative, and an
instance without its palette data was accepted and read the same way.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian

from radtrace.dicom_listener.headers import read_header
from radtrace.errors import DicomInputError
from radtrace.model.image import display_values
from radtrace.model.study import study_image
from tests_support import as_part10

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FILMS = {
    "nih-8bit": REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",
    "fuji-10bit": REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",
}
COLOURS = ("Red", "Green", "Blue")


def _film(name: str) -> Dataset:
    ds = study_image(FILMS[name].read_bytes()).dataset
    ds.PixelData = ds.pixel_array.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    as_part10(ds)
    return ds


def _with_palette(ds: Dataset, *, bits: int = 16, tint: bool = False) -> Dataset:
    """A palette over the whole stored range running white to black (gamma 0.7); ``tint``: blue-ish, not gray."""
    entries = 2 ** int(ds.BitsStored)
    ramp = (1.0 - np.arange(entries) / (entries - 1)) ** 0.7
    top = 2**bits - 1
    for colour, gain in zip(COLOURS, (0.8, 0.9, 1.0) if tint else (1.0, 1.0, 1.0), strict=True):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [entries, 0, bits])
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.rint(ramp * gain * top).astype("<u2").tobytes())
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for keyword in ("WindowCenter", "WindowWidth", "PresentationLUTShape"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def _dcmtk_luminance(path: Path, tmp_path: Path) -> np.ndarray:
    dcm2pnm = shutil.which("dcm2pnm")
    assert dcm2pnm is not None, "dcm2pnm (dcmtk) not found on PATH"
    target = tmp_path / "reference.ppm"
    subprocess.run([dcm2pnm, "--write-8-bit-pnm", str(path), str(target)], check=True, capture_output=True)
    rgb = np.asarray(Image.open(target), dtype=np.float64)
    assert rgb.ndim == 3, "dcmtk did not read the film as colour"
    return np.asarray(rgb @ np.array([0.299, 0.587, 0.114]))


@pytest.mark.parametrize(
    ("film", "bits", "tint", "big_endian"),
    [
        ("nih-8bit", 16, False, False),
        ("fuji-10bit", 16, True, False),
        ("nih-8bit", 8, False, False),
        ("fuji-10bit", 16, False, True),  # the LUT data's words in big-endian order (dcmconv +tb)
    ],
)
def test_a_palette_film_is_shown_through_its_palette_as_dcmtk_shows_it(
    tmp_path: Path, film: str, bits: int, tint: bool, big_endian: bool
) -> None:
    path = tmp_path / "palette.dcm"
    _with_palette(_film(film), bits=bits, tint=tint).save_as(path, enforce_file_format=True)
    if big_endian:
        subprocess.run(["dcmconv", "+tb", str(path), str(path)], check=True, capture_output=True)
        assert dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    read_header(path)  # accepted at receive
    shown, steps = display_values(dcmread(path))
    reference = _dcmtk_luminance(path, tmp_path)
    assert np.abs(shown * 255.0 - reference).max() <= 1.5
    assert [s for s in steps if s["step"] == "palette"], steps


def test_a_palette_running_white_to_black_shows_the_negative_of_the_stored_values(tmp_path: Path) -> None:
    ds = _film("nih-8bit")
    stored = ds.pixel_array.astype(np.float64) / 255.0
    shown, _ = display_values(_with_palette(ds))
    assert np.corrcoef(shown.ravel(), stored.ravel())[0, 1] < -0.95  # before: +1, the stored indices as gray


def _drop(*keywords: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        for keyword in keywords:
            delattr(ds, keyword)

    return change


def _descriptor(colour: str, value: list[int]) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", value)

    return change


def _short(ds: Dataset) -> None:
    ds.BluePaletteColorLookupTableData = bytes(ds.BluePaletteColorLookupTableData)[:64]


BROKEN = {
    "no-lut-data": (_drop("RedPaletteColorLookupTableData"), "no Red palette data"),
    "no-descriptor": (_drop("GreenPaletteColorLookupTableDescriptor"), "no Green LUT descriptor"),
    "no-palette-at-all": (
        _drop(*(f"{c}PaletteColorLookupTable{p}" for c in COLOURS for p in ("Descriptor", "Data"))),
        "no Red LUT descriptor",
    ),
    "descriptors-disagree": (_descriptor("Blue", [128, 0, 16]), "palette LUTs disagree"),
    "descriptor-of-one-value": (_descriptor("Red", [256]), "palette LUTs disagree"),
    "12-bit-entries": (
        lambda ds: [_descriptor(c, [256, 0, 12])(ds) for c in COLOURS],
        "palette LUT of 12 bits",
    ),
    "data-too-short": (_short, "short Blue palette data"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_palette_that_cannot_be_applied_is_refused_at_receive_and_by_the_worker(tmp_path: Path, case: str) -> None:
    change, problem = BROKEN[case]
    ds = _with_palette(_film("nih-8bit"))
    change(ds)
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    expected = f"(0028,0004) Photometric Interpretation: {problem}"
    assert len(expected) <= 64  # the whole reason fits the status comment (LO)
    with pytest.raises(DicomInputError) as refused:
        read_header(path)
    assert refused.value.reason == expected
    # an instance spooled before this check (or arriving another way) fails with the same reason, not read as gray
    with pytest.raises(DicomInputError) as failed:
        display_values(dcmread(path))
    assert failed.value.reason == expected


def test_8_bit_entries_packed_one_per_byte_index_the_whole_stored_range() -> None:
    """1024 entries of one byte each for a 10-bit film: pydicom's apply_color_lut indexes such a table with 8-bit
    indices (1000 reads entry 232), so radtrace indexes it itself."""
    ds = _film("fuji-10bit")
    table = (np.arange(1024) // 4).astype(np.uint8)  # a plain ramp, one byte per entry
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for colour in COLOURS:
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [1024, 0, 8])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.tobytes())
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    shown, _ = display_values(ds)
    expected = table[np.clip(ds.pixel_array.astype(np.int64), 0, 1023)] / 255.0
    assert np.abs(shown - expected).max() < 1e-9

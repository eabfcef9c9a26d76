"""A film's polarity (which end is white) when its Presentation LUT Shape contradicts its Photometric Interpretation.

An image's own Presentation LUT Shape restates the Photometric Interpretation (PS3.3 C.7.6.1, C.8.11.7: INVERSE
with MONOCHROME1, IDENTITY with MONOCHROME2). Where they disagree, radtrace follows the Photometric Interpretation
(model/image.py ``_polarity``): the shape is the element found stale or wrong in the field. dcmtk's dcm2pnm follows
the shape, so the reference for a contradicted film is dcm2pnm's picture of the same film with the shape agreeing
(what a viewer shows once the header is made consistent), and dcm2pnm's picture of the contradicted file is its
negative. Before, radtrace inverted a MONOCHROME2 film marked INVERSE (a MONOCHROME1 film converted to MONOCHROME2
by a transcoder that left the shape): the model was shown a negative chest film.

The same function makes the model's picture and the console's (console/images.py calls ``display_values``).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from radtrace.model.image import display_values
from radtrace.testing.ablation import load_film
from tests_support import as_part10

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FUJI = REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"  # CR, MONOCHROME1, no shape, window 550 / 1024
NIH = REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"  # MONOCHROME2, 8 bit, no shape, no window
CANINE = REAL / "canine-dx-thorax-lateral-mono1-small.dcm"  # DX For Presentation, MONOCHROME1 with INVERSE


def _native(path: Path) -> Dataset:
    """The film uncompressed, the 1024 px NIH film at every second pixel (512 px: the test stays fast)."""
    with warnings.catch_warnings():  # the Fuji film's legacy header (a one-valued Pixel Aspect Ratio)
        warnings.simplefilter("ignore", UserWarning)
        [ds] = load_film(path)
        pixels = ds.pixel_array
    if ds.Rows > 512:
        pixels = np.ascontiguousarray(pixels[::2, ::2])
        ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    return as_part10(ds)


def _shown(ds: Dataset, tmp_path: Path, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """radtrace's picture (0-255) of ``ds`` read back from disk, dcm2pnm's picture of the same file, and
    radtrace's inversion step."""
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        values, steps = display_values(dcmread(path))
    dcm2pnm = shutil.which("dcm2pnm")
    assert dcm2pnm is not None, "dcm2pnm (dcmtk) not found on PATH"
    window = ["--use-window", "1"] if "WindowCenter" in ds else []
    subprocess.run(
        [dcm2pnm, *window, "--write-8-bit-pnm", str(path), str(tmp_path / f"{name}.pgm")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    reference = np.asarray(Image.open(tmp_path / f"{name}.pgm"), dtype=np.float64)
    [inversion] = [s for s in steps if s["step"] == "inversion"]
    return values * 255.0, reference, inversion


def _lungs_darker_than_mediastinum(picture: np.ndarray) -> bool:
    columns = picture.shape[1]
    centre = picture[:, int(0.45 * columns) : int(0.55 * columns)].mean()
    lungs = picture[:, int(0.2 * columns) : int(0.35 * columns)].mean()
    return bool(centre > lungs + 20)


@pytest.mark.parametrize(
    ("film", "contradicting", "agreeing"),
    [(FUJI, "IDENTITY", "INVERSE"), (NIH, "INVERSE", "IDENTITY")],
    ids=["monochrome1-identity", "monochrome2-inverse"],
)
def test_a_shape_contradicting_the_photometric_interpretation_is_not_followed(
    film: Path, contradicting: str, agreeing: str, tmp_path: Path
) -> None:
    consistent = _native(film)
    consistent.PresentationLUTShape = agreeing
    expected, viewer, _ = _shown(consistent, tmp_path, "consistent")
    assert np.abs(expected - viewer).max() <= 1.5  # radtrace shows the consistent film as dcm2pnm does
    assert _lungs_darker_than_mediastinum(viewer)

    contradicted = copy.deepcopy(consistent)
    contradicted.PresentationLUTShape = contradicting
    shown, dcmtk, inversion = _shown(contradicted, tmp_path, "contradicted")
    # before: the MONOCHROME2 film marked INVERSE was shown inverted, lungs white (max difference 255)
    assert np.abs(shown - viewer).max() <= 1.5
    assert _lungs_darker_than_mediastinum(shown)
    assert np.abs(dcmtk - (255.0 - viewer)).max() <= 1.5  # dcm2pnm follows the shape: a negative
    assert inversion["applied"] is (consistent.PhotometricInterpretation == "MONOCHROME1")
    assert str(inversion["contradiction"]).startswith(f"Presentation LUT Shape {contradicting} with MONOCHROME")


@pytest.mark.parametrize("film", [FUJI, NIH], ids=["monochrome1", "monochrome2"])
def test_without_a_shape_the_photometric_interpretation_decides_as_in_dcm2pnm(film: Path, tmp_path: Path) -> None:
    shown, viewer, inversion = _shown(_native(film), tmp_path, "plain")
    assert np.abs(shown - viewer).max() <= 1.5
    assert _lungs_darker_than_mediastinum(shown)
    assert "contradiction" not in inversion


def test_a_real_dx_with_monochrome1_and_inverse_is_inverted_once_as_in_dcm2pnm(tmp_path: Path) -> None:
    ds = dcmread(CANINE)
    assert (ds.PhotometricInterpretation, ds.PresentationLUTShape) == ("MONOCHROME1", "INVERSE")
    shown, viewer, inversion = _shown(ds, tmp_path, "canine")
    assert np.abs(shown - viewer).max() <= 1.5
    assert inversion["applied"] is True
    assert "contradiction" not in inversion


def test_a_presentation_lut_sequence_in_an_image_is_not_applied_as_in_dcm2pnm(tmp_path: Path) -> None:
    ds = _native(NIH)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 12]
    item.add_new(0x00283006, "US", [4095 - 16 * i for i in range(256)])  # descending: would invert
    ds.PresentationLUTSequence = [item]
    shown, viewer, inversion = _shown(ds, tmp_path, "sequence")
    assert np.abs(shown - viewer).max() <= 1.5
    assert _lungs_darker_than_mediastinum(shown)
    assert inversion["presentation_lut_sequence"] == "not applied (no image IOD defines it)"

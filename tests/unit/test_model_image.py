"""Image preparation: DICOM pixels to the model's picture, checked with numbers."""

from __future__ import annotations

from dataclasses import replace
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radtrace.errors import DicomInputError
from radtrace.model.image import apply_window, budget_size, display_values, prepare_picture, to_source_pixels
from radtrace.testing.phantom import render_chest
from radtrace.testing.studies import VALID_VARIANTS, ImageSpec, StudySpec, make_image

pytestmark = pytest.mark.unit

BUDGET = {"min_pixels": 128 * 128, "max_pixels": 476 * 476}
REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"


def read_back(ds: Dataset) -> Dataset:
    """The dataset as a PACS would send it: written as Part 10 and read again."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def eight_bit_full_size(ds: Dataset) -> np.ndarray:
    """The 8-bit picture before resizing (the budget is set so that nothing is resized)."""
    big = ds.Rows * ds.Columns * 4
    return prepare_picture(ds, min_pixels=1, max_pixels=big, factor=1).pixels[:, :, 0]


@pytest.mark.parametrize(
    ("mono2", "mono1"),
    [
        ("dx-pa", "dx-pa-monochrome1"),
        ("dx-pa-voi-lut", "dx-pa-monochrome1-voi-lut"),
        ("dx-processing-pa", "dx-processing-pa-monochrome1"),
    ],
)
def test_monochrome1_gives_the_same_picture_as_its_monochrome2_twin(mono2: str, mono1: str) -> None:
    spec2, spec1 = VALID_VARIANTS[mono2], VALID_VARIANTS[mono1]
    spec1 = replace(spec1, bits_stored=spec2.bits_stored)  # a true twin: only the photometric interpretation differs
    a = eight_bit_full_size(read_back(make_image(StudySpec(seed=5), spec2)))
    b = eight_bit_full_size(read_back(make_image(StudySpec(seed=5), spec1)))
    difference = np.abs(a.astype(int) - b.astype(int))
    assert difference.max() <= 1  # rounding of the window's half-pixel offset, nothing more
    assert difference.mean() < 0.1  # fewer than one pixel in ten differs by that one level


@pytest.mark.parametrize("variant", sorted(VALID_VARIANTS))
def test_every_factory_variant_is_a_chest_the_right_way_round_within_budget(variant: str) -> None:
    spec = VALID_VARIANTS[variant]
    ds = read_back(make_image(StudySpec(seed=2), spec))
    picture = prepare_picture(ds, **BUDGET)
    assert picture.pixels.dtype == np.uint8
    assert picture.pixels.shape[2] == 3
    assert (picture.pixels[:, :, 0] == picture.pixels[:, :, 2]).all()
    assert picture.rows * picture.columns <= BUDGET["max_pixels"]
    assert picture.rows % 28 == 0
    assert picture.columns % 28 == 0
    gray = eight_bit_full_size(ds).astype(float)
    masks = render_chest(spec.rows, spec.columns, spec.view, seed=2)
    assert gray[masks.lungs].mean() + 25 < gray[masks.mediastinum].mean()
    names = [step["step"] for step in picture.steps]
    lossy = ["source"] if variant.endswith(("-lossy", "-near")) else []  # the draft says the model read a lossy image
    assert names == ["decode", *lossy, "modality_lut", "voi", "inversion", "to_8bit", "resize", "rgb"]
    assert picture.steps[names.index("inversion")]["applied"] == (spec.photometric == "MONOCHROME1")


def test_rescale_is_applied_before_the_window_and_recorded() -> None:
    ds = read_back(make_image(StudySpec(), VALID_VARIANTS["cr-pa-signed"]))
    _, steps = display_values(ds)
    assert steps[1] == {"step": "modality_lut", "kind": "rescale", "slope": 1.0, "intercept": 2048.0}
    # the window is in rescaled units: stored values alone would put the whole image below it
    assert steps[2]["kind"] == "window"
    stored = ds.pixel_array.astype(float)
    assert (stored + 2048).max() > steps[2]["center"] > stored.min()


def test_linear_window_follows_ps3_3_c_11_2_1_2() -> None:
    center, width = 2048.0, 4096.0
    x = np.array([0.0, 1.0, 2047.5, 2048.0, 4095.0, 4096.0, 5000.0])
    y = apply_window(x, center, width, "LINEAR")
    # x <= c - 0.5 - (w-1)/2 = 0 -> ymin; x > c - 0.5 + (w-1)/2 = 4095 -> ymax;
    # else ((x - (c - 0.5)) / (w - 1) + 0.5) scaled to [0, 1]
    expected_inside = [(1.0 - 2047.5) / 4095 + 0.5, 0.5, (2048.0 - 2047.5) / 4095 + 0.5, 1.0]
    assert y[0] == 0.0
    assert y[1:5] == pytest.approx(expected_inside)
    assert y[5] == 1.0
    assert y[6] == 1.0
    # width 1 is a threshold at the centre
    assert list(apply_window(np.array([99.0, 99.5, 100.0]), 100.0, 1.0)) == [0.0, 0.0, 1.0]


def test_linear_exact_and_sigmoid_windows() -> None:
    x = np.array([40.0, 50.0, 60.0, 100.0])
    assert list(apply_window(x, 50.0, 20.0, "LINEAR_EXACT")) == pytest.approx([0.0, 0.5, 1.0, 1.0])
    sig = apply_window(x, 50.0, 20.0, "SIGMOID")
    assert sig == pytest.approx(1 / (1 + np.exp(-4 * (x - 50) / 20)))
    assert sig[1] == 0.5
    with pytest.raises(DicomInputError):
        apply_window(x, 50.0, 0.5, "LINEAR")
    with pytest.raises(DicomInputError):
        apply_window(x, 50.0, 10.0, "GAMMA")


def test_explicit_voi_lut_is_indexed_by_rounded_modality_values_and_clamped() -> None:
    ds = read_back(make_image(StudySpec(), ImageSpec(bits_stored=12, voi="lut")))
    item = ds.VOILUTSequence[0]
    item.LUTDescriptor = [4, 100, 8]
    item.LUTData = [0, 85, 170, 255]
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "0"  # modality output 100.5 must round to an index
    ds.PixelData = np.array([[0, 200, 201, 202], [203, 205, 206, 4095]], dtype=np.uint16).tobytes()
    ds.Rows, ds.Columns = 2, 4
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    values, steps = display_values(ds)
    # stored * 0.5, rounded half to even, minus first mapped (100), clamped to 0..3:
    # 0 -> 0 -> entry 0; 200 -> 100 -> 0; 201 -> 100.5 -> 100 -> 0; 202 -> 101 -> 85;
    # 203 -> 101.5 -> 102 -> 170; 205 -> 102.5 -> 102 -> 170; 206 -> 103 -> 255; 4095 -> beyond the last -> 255
    assert np.round(values * 255).astype(int).tolist() == [[0, 0, 0, 85], [170, 170, 255, 255]]
    assert steps[2]["kind"] == "lut"
    assert steps[2]["first_mapped"] == 100


@pytest.mark.parametrize(("rows", "columns"), [(3000, 2500), (2048, 2048), (512, 416), (1800, 3000), (100, 90)])
def test_resize_keeps_aspect_and_respects_the_budget(rows: int, columns: int) -> None:
    height, width = budget_size(rows, columns, **BUDGET)
    assert BUDGET["min_pixels"] <= height * width <= BUDGET["max_pixels"]
    assert height % 28 == 0
    assert width % 28 == 0
    # aspect kept to within one patch on the shorter side
    assert abs(height / width - rows / columns) <= 28 / min(height, width) * (rows / columns) + 1e-9


def test_resized_picture_has_the_planned_size_and_lungs_stay_dark() -> None:
    spec = ImageSpec(rows=1500, columns=1200)
    ds = make_image(StudySpec(), spec)
    picture = prepare_picture(ds, **BUDGET)
    assert (picture.rows, picture.columns) == budget_size(1500, 1200, **BUDGET)
    masks = render_chest(1500, 1200, "PA", seed=0)
    small = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).fromarray(masks.lungs).resize((picture.columns, picture.rows))
    )
    assert picture.pixels[:, :, 0][small].mean() < picture.pixels[:, :, 0].mean()
    assert picture.steps[5]["from"] == [1500, 1200]


def test_box_on_the_model_picture_maps_back_to_source_pixels() -> None:
    assert to_source_pixels((10, 20, 110, 220), model_size=(476, 392), source_size=(2380, 1960)) == (
        50.0,
        100.0,
        550.0,
        1100.0,
    )
    # reversed corners are ordered, and out-of-picture coordinates are clipped to the image
    assert to_source_pixels((500, 30, -5, 10), model_size=(476, 392), source_size=(2380, 1960)) == (
        0.0,
        50.0,
        1960.0,
        150.0,
    )


def test_missing_or_undecodable_pixels_are_a_dicom_input_error() -> None:
    ds = read_back(make_image(StudySpec(), ImageSpec()))
    del ds.PixelData
    with pytest.raises(DicomInputError, match="no pixel data"):
        prepare_picture(ds, **BUDGET)
    broken = read_back(make_image(StudySpec(), ImageSpec(transfer_syntax=pydicom.uid.JPEG2000Lossless)))
    broken.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    with pytest.raises(DicomInputError, match="cannot decode"):
        prepare_picture(broken, **BUDGET)


def test_real_films_prepare_within_budget() -> None:
    nih = pydicom.dcmread(REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm")
    fuji = pydicom.dcmread(REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm", force=True)
    fuji.file_meta = pydicom.dataset.FileMetaDataset()
    fuji.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    for ds, expected in ((nih, (476, 476)), (fuji, (448, 448))):
        picture = prepare_picture(ds, **BUDGET)
        assert (picture.rows, picture.columns) == expected
        gray = picture.pixels[:, :, 0].astype(float)
        # a chest film: the centre column band (mediastinum, spine) is brighter than the lung bands beside it
        centre = gray[:, int(0.45 * picture.columns) : int(0.55 * picture.columns)].mean()
        lungs = gray[:, int(0.2 * picture.columns) : int(0.35 * picture.columns)].mean()
        assert centre > lungs + 10
    assert prepare_picture(fuji, **BUDGET).steps[3]["applied"] is True


def test_colour_secondary_capture_is_shown_as_luminance() -> None:
    ds = read_back(make_image(StudySpec(), ImageSpec()))
    rgb = np.zeros((64, 48, 3), dtype=np.uint8)
    rgb[:, 24:, :] = 200
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.Rows, ds.Columns = 64, 48
    ds.PixelData = rgb.tobytes()
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "PresentationLUTShape"):
        ds.pop(keyword, None)
    ds.ViewCodeSequence = Sequence(ds.ViewCodeSequence)
    gray, steps = display_values(ds)
    assert [step["step"] for step in steps][-2:] == ["luminance", "inversion"]
    assert steps[-1]["applied"] is False
    assert gray[:, :24].max() == 0.0
    assert gray[:, 24:] == pytest.approx(200 / 255)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(min_value=16, max_value=6000),
    columns=st.integers(min_value=16, max_value=6000),
    max_side=st.integers(min_value=8, max_value=40),
)
def test_budget_size_property(rows: int, columns: int, max_side: int) -> None:
    if max(rows, columns) / min(rows, columns) > 200:
        return
    max_pixels = (max_side * 28) ** 2
    min_pixels = min(128 * 128, max_pixels)
    height, width = budget_size(rows, columns, min_pixels=min_pixels, max_pixels=max_pixels)
    assert height % 28 == 0
    assert width % 28 == 0
    assert height * width <= max_pixels or min(height, width) == 28
    # one scale for both axes, each side then rounded to a whole patch (never more than one patch off)
    low = max((height - 28) / rows, (width - 28) / columns)
    high = min((height + 28) / rows, (width + 28) / columns)
    assert low <= high + 1e-12


def test_presentation_lut_shape_restates_the_photometric_interpretation() -> None:
    mono2 = read_back(make_image(StudySpec(seed=5), VALID_VARIANTS["dx-pa"]))
    plain = eight_bit_full_size(mono2)
    mono2.PresentationLUTShape = "INVERSE"  # contradicts MONOCHROME2 (PS3.3 C.8.11.7): recorded, not followed
    assert np.array_equal(eight_bit_full_size(mono2), plain)
    mono1 = read_back(make_image(StudySpec(seed=5), VALID_VARIANTS["dx-pa-monochrome1"]))
    assert mono1.PresentationLUTShape == "INVERSE"  # restates MONOCHROME1: still only one inversion
    assert np.abs(eight_bit_full_size(mono1).astype(int) - plain.astype(int)).max() <= 1

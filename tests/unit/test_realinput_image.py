"""Variants of the real films in tests/data/real-cxr through the model's image path (model/image.py, model/views.py).

Each case derives a variant from a real film in memory (the file on disk is never changed) and compares the picture
the model is shown with the picture of the film as it is: what a radiologist's viewer would show must be what the
model sees, or the study must end with a reason that names the problem. Found by the real-input exploration
(notes/report-realinput.md): before the fixes, an unusable window width failed the study and an absurd window
gave the model a blank picture.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radtrace.errors import DicomInputError
from radtrace.model.image import prepare_picture
from radtrace.model.study import Skipped, StudyImage, prepare_study, study_image

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FUJI = "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"  # CR, MONOCHROME1, 10 bit, WC 550 / WW 1024
NIH = "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"  # SC with Modality DX, MONOCHROME2, 8 bit, no window
BUDGET = {"min_pixels": 128 * 128, "max_pixels": 476 * 476}


def film(name: str) -> Dataset:
    return study_image((REAL / name).read_bytes()).dataset


def gray(ds: Dataset) -> np.ndarray:
    return prepare_picture(ds, **BUDGET).pixels[:, :, 0].astype(float)


def without_window(ds: Dataset) -> Dataset:
    plain = copy.deepcopy(ds)
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation"):
        plain.pop(keyword, None)
    return plain


@pytest.mark.parametrize("width", [0, -5, 0.5])
def test_a_window_width_linear_cannot_use_falls_back_to_the_full_range_instead_of_failing(width: float) -> None:
    ds = film(FUJI)
    ds.WindowCenter, ds.WindowWidth = 100, width
    picture = prepare_picture(ds, **BUDGET)
    expected = gray(without_window(ds))
    assert np.abs(picture.pixels[:, :, 0].astype(float) - expected).max() <= 1
    voi = next(step for step in picture.steps if step["step"] == "voi")
    assert voi["kind"] == "full_range"
    assert voi["rejected"][0]["width"] == width
    assert "below 1" in voi["rejected"][0]["why"]


def test_an_unusable_first_window_gives_way_to_the_next_one() -> None:
    ds = film(FUJI)
    ds.WindowCenter, ds.WindowWidth = [100, 550], [0, 1024]
    expected = gray(film(FUJI))  # the film's own window, 550 / 1024
    picture = prepare_picture(ds, **BUDGET)
    assert np.abs(picture.pixels[:, :, 0].astype(float) - expected).max() <= 1
    voi = next(step for step in picture.steps if step["step"] == "voi")
    assert (voi["kind"], voi["center"], voi["width"], voi["window_index"]) == ("window", 550.0, 1024.0, 1)


@pytest.mark.parametrize(
    ("center", "width"),
    [(1e7, 100), (-50000, 2), (0, 1e9), (2000, 10)],
    ids=["far-above", "far-below-narrow", "absurdly-wide", "beyond-the-data"],
)
def test_a_window_that_leaves_the_film_blank_is_not_what_the_model_is_shown(center: float, width: float) -> None:
    for name in (FUJI, NIH):
        ds = film(name)
        ds.WindowCenter, ds.WindowWidth = center, width
        picture = gray(ds)
        reference = gray(without_window(ds))
        assert picture.std() > 20, name  # a picture, not a flat field
        assert np.corrcoef(picture.ravel(), reference.ravel())[0, 1] > 0.99, name


def test_a_voi_lut_that_covers_none_of_the_film_falls_back_to_its_window() -> None:
    ds = film(FUJI)  # stored values 0..979
    item = Dataset()
    item.LUTDescriptor = [256, 4000, 16]  # maps 4000..4255 only: every pixel clamps to the first entry
    item.add_new(0x00283006, "US", [int(v) for v in np.linspace(0, 65535, 256)])
    ds.VOILUTSequence = Sequence([item])
    picture = prepare_picture(ds, **BUDGET)
    assert np.abs(picture.pixels[:, :, 0].astype(float) - gray(film(FUJI))).max() <= 1
    voi = next(step for step in picture.steps if step["step"] == "voi")
    assert voi["kind"] == "window"
    assert voi["rejected"][0]["kind"] == "lut"


def test_a_film_whose_pixels_all_hold_one_value_is_refused_with_a_reason() -> None:
    ds = film(FUJI)
    ds.PixelData = np.full((ds.Rows, ds.Columns), 300, dtype=np.uint16).tobytes()
    with pytest.raises(DicomInputError, match="same value"):
        prepare_picture(without_window(ds), **BUDGET)


def cropped(ds: Dataset, rows: int, columns: int) -> Dataset:
    small = copy.deepcopy(ds)
    small.PixelData = np.ascontiguousarray(ds.pixel_array[:rows, :columns]).tobytes()
    small.Rows, small.Columns = rows, columns
    return small


@pytest.mark.parametrize(("rows", "columns"), [(1, 1), (8, 8), (4, 400), (20, 440)])
def test_a_film_too_small_to_read_is_skipped_with_a_reason_not_upscaled_into_a_draft(rows: int, columns: int) -> None:
    small = cropped(film(FUJI), rows, columns)
    outcome = prepare_study([StudyImage(small, "0" * 64)], **BUDGET, accept_unknown_view=True)
    assert isinstance(outcome, Skipped)
    assert outcome.reason == "no frontal chest image large enough to read"


def test_a_thumbnail_beside_the_film_is_never_chosen() -> None:
    ds = film(FUJI)
    thumbnail = cropped(ds, 8, 8)
    thumbnail.SOPInstanceUID = ds.SOPInstanceUID + ".1"
    outcome = prepare_study([StudyImage(thumbnail, "1" * 64), StudyImage(ds, "0" * 64)], **BUDGET)
    assert not isinstance(outcome, Skipped)
    assert outcome.sources[0].rows == ds.Rows


@pytest.mark.parametrize("body_part", ["TORAX", "PECHO", "RIBS", "CHEST PA", "CHEST_PA", "PA CHEST"])
def test_chest_body_parts_real_archives_send_are_read(body_part: str) -> None:
    ds = film(FUJI)
    ds.BodyPartExamined = body_part
    outcome = prepare_study([StudyImage(ds, "0" * 64)], **BUDGET)
    assert not isinstance(outcome, Skipped), body_part


@pytest.mark.parametrize("body_part", ["ABDOMEN", "KNEE", "SKULL"])
def test_another_body_part_is_still_not_read_as_a_chest(body_part: str) -> None:
    ds = film(FUJI)
    ds.BodyPartExamined = body_part
    assert prepare_study([StudyImage(ds, "0" * 64)], **BUDGET) == Skipped("no frontal chest image")


def test_pixel_data_longer_than_its_header_declares_is_read_as_the_declared_frame() -> None:
    ds = film(FUJI)
    expected = gray(ds)
    ds.PixelData = bytes(ds.PixelData) + b"\x00" * (3 * ds.Rows * ds.Columns * 2 + 10)  # trailing data, no frame count
    assert np.abs(gray(ds) - expected).max() == 0


def test_a_burned_in_marker_at_full_scale_does_not_flatten_a_film_without_a_window() -> None:
    ds = without_window(film(FUJI))  # stored 0..979
    reference = gray(ds)
    stored = ds.pixel_array.astype(np.uint16)
    stored[10:30, 10:50] = 65535  # an "R" marker (0.4 % of the film) burned in at the top of a 16-bit range
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PixelData = stored.tobytes()
    picture = gray(ds)
    outside = np.ones_like(picture, dtype=bool)
    outside[:50, :80] = False
    assert picture.std() > 20
    assert np.corrcoef(picture[outside], reference[outside])[0, 1] > 0.99


def test_with_the_views_stripped_the_image_whose_orientation_is_frontal_is_read_before_a_lateral_one() -> None:
    lateral, frontal = film(FUJI), film(FUJI)  # a two-view study whose archive stripped View Position
    for ds, orientation, suffix in ((lateral, ["A", "F"], ".1"), (frontal, ["L", "F"], ".2")):
        del ds.ViewPosition
        ds.PatientOrientation = orientation
        ds.SOPInstanceUID = str(ds.SOPInstanceUID) + suffix
    outcome = prepare_study(
        [StudyImage(lateral, "1" * 64), StudyImage(frontal, "2" * 64)], **BUDGET, accept_unknown_view=True
    )
    assert not isinstance(outcome, Skipped)
    assert outcome.sources[0].sop_instance_uid == frontal.SOPInstanceUID
    assert "view-unknown" in outcome.sources[0].view_flags


def test_a_bare_explicit_vr_data_set_without_file_meta_is_recorded_as_explicit_vr() -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = film(FUJI)  # the film is a bare Implicit VR data set; written again Explicit VR, still without File Meta
    bare = DicomBytesIO()
    bare.is_little_endian, bare.is_implicit_VR = True, False
    write_dataset(bare, ds)
    image = study_image(bare.getvalue())
    assert image.dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert study_image((REAL / FUJI).read_bytes()).dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert np.abs(gray(image.dataset) - gray(ds)).max() == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(center=0.0, width=2.2e-311, function="LINEAR_EXACT", slope=1.0, intercept=0.0, monochrome1=False)
@example(center=0.0, width=2.2e-311, function="SIGMOID", slope=1.0, intercept=0.0, monochrome1=True)
@given(
    center=st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, 550.0, 1e12, -1e12])),
    width=st.one_of(st.floats(-10, 1e6), st.sampled_from([0.0, 0.5, 1.0, 1e12])),
    function=st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID"]),
    slope=st.sampled_from([1.0, 2.0, 0.5, -1.0, 1e-3]),
    intercept=st.sampled_from([0.0, -1024.0, 32768.0]),
    monochrome1=st.booleans(),
)
def test_any_window_and_rescale_on_a_real_film_gives_a_picture_of_the_film_never_a_crash(
    center: float, width: float, function: str, slope: float, intercept: float, monochrome1: bool
) -> None:
    ds = without_window(_FUJI_FILM)
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    reference = gray(ds)  # the full range of the same modality output
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    picture = gray(ds)
    assert picture.shape == reference.shape
    levels = len(np.unique(picture))
    assert levels >= 16, levels  # never a blank or binary picture of a film
    # every VOI is monotonic: the picture may clip, never turn the film into its negative
    assert np.corrcoef(picture.ravel(), reference.ravel())[0, 1] > 0.3


_FUJI_FILM = film(FUJI)  # read once: hypothesis runs the test many times

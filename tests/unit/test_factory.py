"""The synthetic chest X-ray study factory: valid variants, their pixels, the phantom, broken instances."""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEG2000, UID, CTImageStorage, ExplicitVRLittleEndian, JPEGLSNearLossless

from radtrace.testing.broken import DATASET_KINDS, BrokenKind, broken_dataset, broken_instance
from radtrace.testing.non_chest import extremity_phantom
from radtrace.testing.phantom import View, chest_phantom, render_chest
from radtrace.testing.pixel_data import JPEG_LS_NEAR_LOSSLESS_ERROR, SUPPORTED_TRANSFER_SYNTAXES
from radtrace.testing.radiograph import VIEW_CODES
from radtrace.testing.studies import VALID_VARIANTS, ImageSpec, StudySpec, make_image, make_study, write_study

pytestmark = pytest.mark.unit

# Modest sizes keep the ~50 variants quick; non-square catches rows/columns mix-ups.
ROWS, COLUMNS = 192, 160
STUDY = StudySpec(seed=3)
COMPRESSED = [name for name, spec in VALID_VARIANTS.items() if UID(spec.transfer_syntax).is_compressed]
# Lossy JPEG 2000 at the factory's 60 dB PSNR: RMS error at most 0.15 % of the stored range (60 dB
# is 0.1 %) and per-pixel error at most 3 % of it (measured 0.7-2.1 % from 192 to 2048 pixels).
J2K_MAX_ERROR_FRACTION = 0.03
J2K_RMS_ERROR_FRACTION = 0.0015


def _small(spec: ImageSpec) -> ImageSpec:
    return replace(spec, rows=ROWS, columns=COLUMNS)


@functools.cache
def _variant_file(name: str) -> bytes:
    buffer = io.BytesIO()
    make_image(STUDY, _small(VALID_VARIANTS[name])).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@functools.cache
def _native_pixels(name: str) -> NDArray[np.integer]:
    spec = replace(_small(VALID_VARIANTS[name]), transfer_syntax=ExplicitVRLittleEndian)
    pixels: NDArray[np.integer] = make_image(STUDY, spec).pixel_array
    return pixels


def _read(data: bytes) -> Dataset:
    with config.strict_reading():
        return pydicom.dcmread(io.BytesIO(data))


def _display(ds: Dataset) -> NDArray[np.float64]:
    """Stored values through Modality LUT, VOI and photometric interpretation, as MONOCHROME2 in [0, 1]."""
    values = apply_modality_lut(ds.pixel_array, ds)
    if "VOILUTSequence" in ds:
        values = apply_voi_lut(np.rint(values).astype(np.int64), ds)
    elif "WindowCenter" in ds:
        values = apply_voi_lut(values, ds)
    values = values.astype(np.float64)
    shown = (values - values.min()) / (values.max() - values.min())
    return 1.0 - shown if ds.PhotometricInterpretation == "MONOCHROME1" else shown


# Valid variants ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALID_VARIANTS))
def test_variant_reads_back_strictly_with_its_declared_encoding(name: str) -> None:
    spec = VALID_VARIANTS[name]
    ds = _read(_variant_file(name))
    assert ds.file_meta.TransferSyntaxUID == spec.transfer_syntax
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == spec.sop_class_uid
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert (ds.Modality, ds.PhotometricInterpretation) == (spec.modality, spec.photometric)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, spec.bits_stored, spec.bits_stored - 1)
    assert ds.PixelRepresentation == int(spec.signed)
    pixels = ds.pixel_array
    assert pixels.shape == (ROWS, COLUMNS)
    assert pixels.dtype == (np.int16 if spec.signed else np.uint16)
    low = -(1 << (spec.bits_stored - 1)) if spec.signed else 0
    assert low <= int(pixels.min())
    assert int(pixels.max()) < low + (1 << spec.bits_stored)
    # The picture uses most of the stored range, so bit-depth handling errors show up.
    assert int(pixels.max()) - int(pixels.min()) > 0.5 * (1 << spec.bits_stored)


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_variant_decodes_to_the_native_pixels(name: str) -> None:
    spec = VALID_VARIANTS[name]
    ds = _read(_variant_file(name))
    decoded = ds.pixel_array.astype(np.int64)
    native = _native_pixels(name).astype(np.int64)
    error = np.abs(decoded - native)
    span = 1 << spec.bits_stored
    if spec.transfer_syntax == JPEGLSNearLossless:
        assert int(error.max()) <= JPEG_LS_NEAR_LOSSLESS_ERROR
    elif spec.transfer_syntax == JPEG2000:
        assert error.max() <= J2K_MAX_ERROR_FRACTION * span
        assert np.sqrt(np.mean(error.astype(np.float64) ** 2)) <= J2K_RMS_ERROR_FRACTION * span
    else:
        assert np.array_equal(decoded, native)
    if spec.is_lossy:
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod in ("ISO_14495_1", "ISO_15444_1")
        assert float(ds.LossyImageCompressionRatio) > 1.0
    else:
        assert ds.LossyImageCompression == "00"


@pytest.mark.parametrize("name", sorted(VALID_VARIANTS))
def test_display_pipeline_gives_back_the_phantom(name: str) -> None:
    spec = VALID_VARIANTS[name]
    ds = _read(_variant_file(name))
    shown = _display(ds)
    phantom = render_chest(ROWS, COLUMNS, spec.view, STUDY.seed)
    correlation = np.corrcoef(shown.ravel(), phantom.attenuation.ravel())[0, 1]
    # Linear windows, explicit linear LUTs and no VOI reproduce the phantom up to quantisation;
    # the sigmoid VOI function is monotonic but not linear.
    assert correlation > (0.99 if spec.voi_transform == "sigmoid" else 0.999)
    assert shown[phantom.lungs].mean() + 0.2 < shown[phantom.mediastinum].mean()


@pytest.mark.parametrize("name", sorted(VALID_VARIANTS))
def test_variant_attributes_follow_its_iod(name: str) -> None:
    spec = VALID_VARIANTS[name]
    ds = _read(_variant_file(name))
    monochrome1 = spec.photometric == "MONOCHROME1"
    if spec.modality == "DX":
        assert ds.PresentationIntentType == f"FOR {spec.dx_intent.upper()}"
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (1.0, 0.0, "US")
        assert ds.PresentationLUTShape == ("INVERSE" if monochrome1 else "IDENTITY")
        assert ds.PixelIntensityRelationshipSign == (1 if monochrome1 else -1)
        assert ds.AnatomicRegionSequence[0].CodeValue == "816094009"
        assert ds.ImageLaterality == "U"
        assert float(ds.PixelSpacing[0]) < float(ds.ImagerPixelSpacing[0])  # magnification corrected
    else:
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (spec.rescale_slope, spec.rescale_intercept)
        assert "PresentationIntentType" not in ds
        assert "ViewCodeSequence" not in ds
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    assert has_voi == (spec.voi_transform != "none")
    if spec.voi_transform in ("window", "sigmoid"):
        assert ds.VOILUTFunction == ("SIGMOID" if spec.voi_transform == "sigmoid" else "LINEAR")
    assert ds.BodyPartExamined == "CHEST"
    assert ds.PatientOrientation == {"PA": ["L", "F"], "AP": ["L", "F"], "LL": ["P", "F"], "RL": ["A", "F"]}[spec.view]


@pytest.mark.parametrize("name", sorted(VALID_VARIANTS))
def test_view_is_recorded_where_the_variant_says(name: str) -> None:
    spec = VALID_VARIANTS[name]
    ds = _read(_variant_file(name))
    position = ds.get("ViewPosition") or None
    codes = [(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) for item in ds.get("ViewCodeSequence", [])]
    coded = [VIEW_CODES[spec.view]] if spec.modality == "DX" else []  # the CR IOD has no View Code Sequence
    expected = {
        "both": (spec.view, coded),
        "view_position": (spec.view, []),
        "view_code": (None, coded),
        "none": (None, []),
    }[spec.view_source]
    assert (position, codes) == expected
    assert ("ViewPosition" in ds) == (spec.modality == "CR" or spec.view_source in ("both", "view_position"))


def test_view_codes_are_the_cid_4010_concepts() -> None:
    from pydicom.sr.codedict import codes

    for view, keyword in {"PA": "PosteroAnterior", "AP": "AnteroPosterior", "LL": "LeftLateral"}.items():
        concept = getattr(codes.SCT, keyword)
        assert VIEW_CODES[view] == (concept.value, "SCT", concept.meaning)
    assert VIEW_CODES["RL"] == (codes.SCT.RightLateral.value, "SCT", codes.SCT.RightLateral.meaning)
    assert codes.SCT.Chest.value == "816094009"


def test_variants_cover_every_kind_of_image_the_service_meets() -> None:
    specs = list(VALID_VARIANTS.values())
    assert {s.transfer_syntax for s in specs} == set(SUPPORTED_TRANSFER_SYNTAXES)
    assert {s.sop_class_uid for s in specs} == {
        "1.2.840.10008.5.1.4.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1.1",
    }
    for modality in ("CR", "DX"):
        assert {s.view for s in specs if s.modality == modality} == {"PA", "AP", "LL", "RL"}
    assert {s.view_source for s in specs} == {"both", "view_position", "view_code", "none"}
    assert {s.photometric for s in specs} == {"MONOCHROME1", "MONOCHROME2"}
    assert {10, 12, 14, 16} <= {s.bits_stored for s in specs}
    assert {s.voi_transform for s in specs} == {"window", "sigmoid", "lut", "none"}
    assert any(s.signed for s in specs)
    assert any(s.modality == "CR" and (s.rescale_slope, s.rescale_intercept) != (1.0, 0.0) for s in specs)


# Studies ----------------------------------------------------------------------------------------


def test_study_shares_patient_and_study_and_separates_series(tmp_path: Path) -> None:
    study = StudySpec(patient_name="TEST^PATIENT^BRAVO", patient_id="RT0000002", seed=7)
    datasets = make_study(study, [_small(ImageSpec(view="PA")), _small(ImageSpec(view="LL"))])
    paths = write_study(datasets, tmp_path / "study")
    assert [p.name for p in paths] == [f"{ds.SOPInstanceUID}.dcm" for ds in datasets]
    read = [_read(p.read_bytes()) for p in paths]
    assert {ds.StudyInstanceUID for ds in read} == {study.study_instance_uid}
    assert {str(ds.PatientName) for ds in read} == {"TEST^PATIENT^BRAVO"}
    assert {ds.AccessionNumber for ds in read} == {study.accession}
    assert [ds.SeriesNumber for ds in read] == [1, 2]
    assert len({ds.SeriesInstanceUID for ds in read}) == 2
    assert [ds.ViewPosition for ds in read] == ["PA", "LL"]
    assert read[0].StudyDescription == "XR CHEST PA AND LATERAL"
    assert read[0].PatientAge == study.patient_age == "057Y"


def test_same_specification_gives_identical_files_and_seed_changes_them(tmp_path: Path) -> None:
    images = [_small(ImageSpec(transfer_syntax=VALID_VARIANTS["dx-pa-jpeg-lossless"].transfer_syntax))]
    first = write_study(make_study(StudySpec(seed=1), images), tmp_path / "a")
    again = write_study(make_study(StudySpec(seed=1), images), tmp_path / "b")
    other = write_study(make_study(StudySpec(seed=2), images), tmp_path / "c")
    assert first[0].read_bytes() == again[0].read_bytes()
    assert first[0].name != other[0].name
    assert StudySpec(seed=1).study_instance_uid != StudySpec(seed=2).study_instance_uid
    assert StudySpec(study_uid="1.2.3.4").study_instance_uid == "1.2.3.4"


@pytest.mark.parametrize(
    "arguments",
    [
        {"modality": "DX", "rescale_slope": 2.0},
        {"modality": "DX", "signed": True},
        {"modality": "DX", "voi": "none"},
        {"modality": "DX", "dx_intent": "processing", "voi": "window"},
        {"modality": "CR", "dx_intent": "processing"},
        {"modality": "CR", "view_source": "view_code"},
        {"view": "LATERAL"},
        {"bits_stored": 9},
        {"transfer_syntax": "1.2.840.10008.1.2.4.50"},
        {"modality": "CR", "voi": "lut", "rescale_intercept": -100.0},
    ],
)
def test_image_spec_rejects_what_the_iod_forbids(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  (each case has its own message)
        ImageSpec(**arguments)


@pytest.mark.parametrize("arguments", [{"study_date": "20250231"}, {"birth_date": "1967-04-12"}, {"study_time": "9"}])
def test_study_spec_rejects_malformed_dates(arguments: dict[str, str]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        StudySpec(**arguments)


# The phantom ------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["PA", "AP", "LL", "RL"])
def test_phantom_is_a_smooth_deterministic_picture_not_noise(view: View) -> None:
    image = chest_phantom(256, 224, view, seed=5)
    assert image.dtype == np.float32
    assert image.shape == (256, 224)
    assert image.min() >= 0.0
    assert image.max() <= 1.0
    assert np.array_equal(image, chest_phantom(256, 224, view, seed=5))
    assert not np.array_equal(image, chest_phantom(256, 224, view, seed=6))
    # Neighbouring pixels differ ten times less than after shuffling the same values: a picture with
    # extended structures, not noise.
    shuffled = np.random.default_rng(0).permutation(image.ravel()).reshape(image.shape)
    assert image.std() > 0.15
    assert np.abs(np.diff(image, axis=1)).mean() < 0.1 * np.abs(np.diff(shuffled, axis=1)).mean()


@pytest.mark.parametrize("view", ["PA", "AP", "LL", "RL"])
def test_phantom_lungs_are_dark_and_mediastinum_bright(view: View) -> None:
    phantom = render_chest(256, 224, view, seed=2)
    att = phantom.attenuation
    assert att[phantom.lungs].mean() + 0.25 < att[phantom.mediastinum].mean()
    assert att[~phantom.body].mean() < att[phantom.lungs].mean()  # air outside is darkest
    for lung in (phantom.right_lung, phantom.left_lung):
        assert 0.04 < lung.mean() < 0.3


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_frontal_phantom_has_the_patients_left_and_right(view: View) -> None:
    phantom = render_chest(256, 256, view, seed=0)
    columns = np.arange(256)
    # Patient's right lung on the image's left, the heart leaning to the patient's left (image right).
    assert columns[phantom.right_lung.any(axis=0)].mean() < 128 < columns[phantom.left_lung.any(axis=0)].mean()
    heart_columns = np.nonzero(phantom.mediastinum)[1]
    assert heart_columns.mean() > 128 + 5
    # The right hemidiaphragm sits higher: the right lung ends on a higher row.
    rows = np.arange(256)
    assert rows[phantom.right_lung.any(axis=1)].max() < rows[phantom.left_lung.any(axis=1)].max()
    assert np.abs(phantom.attenuation - phantom.attenuation[:, ::-1]).mean() > 0.01


def test_lateral_views_mirror_each_other_and_differ_from_frontal() -> None:
    left, right = chest_phantom(256, 256, "LL"), chest_phantom(256, 256, "RL")
    assert np.corrcoef(left.ravel(), right[:, ::-1].ravel())[0, 1] > 0.98
    assert np.corrcoef(left.ravel(), chest_phantom(256, 256, "PA").ravel())[0, 1] < 0.9


def test_a_2048_phantom_renders_in_well_under_a_second() -> None:
    fastest = min(_timed(lambda: chest_phantom(2048, 2048, "PA")) for _ in range(2))
    assert fastest < 1.0


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# Broken instances -------------------------------------------------------------------------------


def test_missing_study_uid_is_absent_and_nothing_else_is_broken() -> None:
    ds = _read(broken_instance(BrokenKind.MISSING_STUDY_UID, image=_small(ImageSpec())))
    assert "StudyInstanceUID" not in ds
    assert ds.SeriesInstanceUID
    assert ds.pixel_array.shape == (ROWS, COLUMNS)


def test_truncated_pixel_data_reads_but_its_pixels_do_not() -> None:
    valid = _variant_file("dx-pa")
    data = broken_instance(BrokenKind.TRUNCATED_PIXEL_DATA, STUDY, _small(ImageSpec()))
    assert len(data) < len(valid)
    ds = _read(data)
    assert ds.Rows == ROWS
    assert len(ds.PixelData) < ROWS * COLUMNS * 2
    with pytest.raises(ValueError, match="less than expected"):
        _ = ds.pixel_array


def test_wrong_vr_is_seen_by_a_strict_reader() -> None:
    ds = _read(broken_instance(BrokenKind.WRONG_VR, image=_small(ImageSpec())))
    raw = ds.get_item(0x00280010)
    assert raw is not None
    assert raw.VR == "UL" != dictionary_VR("Rows")
    with config.strict_reading(), pytest.raises(BytesLengthException):
        _ = ds.Rows


def test_non_chest_body_part_is_a_coded_right_knee() -> None:
    ds = broken_dataset(BrokenKind.NON_CHEST_BODY_PART, image=_small(ImageSpec()))
    assert ds.BodyPartExamined == "KNEE"
    assert ds.ImageLaterality == "R"
    region = ds.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning) == ("72696002", "SCT", "Knee")
    knee = extremity_phantom(ROWS, COLUMNS, "KNEE", StudySpec().seed)
    assert np.corrcoef(_display(ds).ravel(), knee.ravel())[0, 1] > 0.999


def test_ct_image_is_an_axial_slice_in_hounsfield_units() -> None:
    ds = _read(broken_instance(BrokenKind.CT_IMAGE, image=_small(ImageSpec())))
    assert (ds.SOPClassUID, ds.Modality) == (CTImageStorage, "CT")
    assert ds.ImageType[2] == "AXIAL"
    assert ds.ImageOrientationPatient == [1, 0, 0, 0, 1, 0]
    hounsfield = apply_modality_lut(ds.pixel_array, ds)
    assert hounsfield[0, 0] == -1000  # air around the patient
    assert hounsfield[ROWS // 2, ROWS // 2] > -200  # mediastinum at the centre


def test_not_dicom_is_refused_by_pydicom() -> None:
    data = broken_instance(BrokenKind.NOT_DICOM)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("kind", sorted(set(BrokenKind) - DATASET_KINDS))
def test_byte_level_kinds_have_no_dataset(kind: BrokenKind) -> None:
    with pytest.raises(ValueError, match="byte level"):
        broken_dataset(kind)

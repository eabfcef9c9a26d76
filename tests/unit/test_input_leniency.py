"""Leniency with a record at the door, one patient per study, and Secondary Capture chest films.

The listener refuses an instance only when a key attribute is unusable, naming the element; everything else is
accepted with its deviations recorded (tag and problem, never the value). The worker never reads a study whose
images name two patients, and reads a CR/DX Secondary Capture flagged ``secondary-capture``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage

from radtrace.dicom_listener.attributes import by_keyword
from radtrace.dicom_listener.filtering import InstanceFacts, decide
from radtrace.dicom_listener.headers import read_header
from radtrace.errors import DicomInputError
from radtrace.model.study import (
    PATIENT_IDENTITY_CONFLICT,
    SECONDARY_CAPTURE,
    IdentityConflict,
    StudyImage,
    StudyInput,
    identity_conflict,
    prepare_study,
)
from radtrace.testing.ablation import FACTORY_SOURCES, apply_change, load_film
from radtrace.testing.studies import ImageSpec, StudySpec, make_image

pytestmark = pytest.mark.unit

FILMS = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
NIH = FILMS / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"


def _written(ds: Dataset, tmp_path: Path) -> Path:
    path = tmp_path / "instance.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the values are invalid on purpose
        ds.save_as(path, enforce_file_format=True)
    return path


def _variant(keyword: str, kind: str) -> Dataset:
    changed = apply_change(FACTORY_SOURCES["factory-dx"]()[:1], by_keyword(keyword), kind, f"unit/{keyword}/{kind}")
    assert changed is not None
    return changed[0]


@pytest.mark.parametrize(
    ("keyword", "kind", "problem"),
    [
        ("InstitutionName", "over-long", "(0008,0080) InstitutionName: longer than 64 characters (VR LO)"),
        ("AccessionNumber", "over-long", "(0008,0050) AccessionNumber: longer than 16 characters (VR SH)"),
        ("PatientName", "over-long", "(0010,0010) PatientName: longer than 64 characters (VR PN)"),
        ("FrameOfReferenceUID", "malformed", "(0020,0052) FrameOfReferenceUID: not a valid UID"),
        ("StudyDate", "malformed", "(0008,0020) StudyDate: not a valid DA value"),
        ("BodyPartExamined", "malformed", "(0018,0015) BodyPartExamined: not a valid CS value"),
        ("WindowCenter", "malformed", "(0028,1050) WindowCenter: not a valid DS value"),
        ("PatientID", "multi-valued", "(0010,0020) PatientID: 2 values where 1 allowed"),
        ("HighBit", "malformed", "(0028,0102) HighBit: cannot be parsed"),
    ],
)
def test_a_deviation_outside_the_key_attributes_is_accepted_and_recorded_without_its_value(
    tmp_path: Path, keyword: str, kind: str, problem: str
) -> None:
    header = read_header(_written(_variant(keyword, kind), tmp_path))
    recorded = [f"{d.tag} {d.keyword}: {d.problem}" for d in header.deviations]
    assert any(line.startswith(problem) for line in recorded), recorded
    assert not any("XXXX" in line or "2025-03-14" in line or "1.2.03" in line for line in recorded)
    assert header.deviations_json() == [d.as_json() for d in header.deviations]


def test_a_valid_instance_has_no_deviations(tmp_path: Path) -> None:
    header = read_header(_written(make_image(StudySpec(), ImageSpec()), tmp_path))
    assert header.deviations == ()
    assert header.deviations_json() is None


@pytest.mark.parametrize(
    ("keyword", "kind", "comment"),
    [
        ("StudyInstanceUID", "malformed", "(0020,000D) Study Instance UID: not a valid UID"),
        ("StudyInstanceUID", "removed", "(0020,000D) Study Instance UID: missing"),
        ("SOPInstanceUID", "over-long", "(0008,0018) SOP Instance UID: longer than 64 characters (VR UI)"),
        ("SeriesInstanceUID", "empty", "(0020,000E) Series Instance UID: empty"),
        ("Rows", "malformed", "(0028,0010) Rows: cannot be parsed"),
        ("Columns", "multi-valued", "(0028,0011) Columns: 2 values where 1 allowed"),
        ("PhotometricInterpretation", "malformed", "(0028,0004) Photometric Interpretation: not a valid CS value"),
        ("BitsAllocated", "removed", "(0028,0100) Bits Allocated: missing"),
        ("PixelData", "malformed", "(7FE0,0010) Pixel Data: too short for Rows x Columns x Bits"),
    ],
)
def test_an_unusable_key_attribute_refuses_the_instance_naming_the_element(
    tmp_path: Path, keyword: str, kind: str, comment: str
) -> None:
    with pytest.raises(DicomInputError) as caught:
        read_header(_written(_variant(keyword, kind), tmp_path))
    assert caught.value.reason.startswith(comment)
    assert len(comment) <= 64  # it fits the status comment (LO) whole


def test_an_instance_without_pixel_data_of_a_non_image_class_is_accepted(tmp_path: Path) -> None:
    ds = make_image(StudySpec(), ImageSpec())
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert read_header(_written(ds, tmp_path)).sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.33"


def _image(ds: Dataset) -> StudyImage:
    return StudyImage(dataset=ds, sha256="0" * 64)


def test_two_patient_ids_in_one_study_are_a_conflict_and_an_issuer_alone_is_not() -> None:
    first = make_image(StudySpec(), ImageSpec(view="PA"))
    other = make_image(StudySpec(patient_id="RT0000002"), ImageSpec(view="LL"))
    other.StudyInstanceUID = first.StudyInstanceUID
    conflict = identity_conflict([_image(first), _image(other)])
    assert isinstance(conflict, IdentityConflict)
    assert (conflict.reason, conflict.identities) == (PATIENT_IDENTITY_CONFLICT, 2)
    same = make_image(StudySpec(), ImageSpec(view="LL"))
    del first.IssuerOfPatientID
    same.IssuerOfPatientID = "HOSPITAL A"
    assert identity_conflict([_image(first), _image(same)]) is None  # one issuer given, one not: same patient
    other_issuer = make_image(StudySpec(), ImageSpec(view="AP"))
    other_issuer.IssuerOfPatientID = "HOSPITAL B"
    assert identity_conflict([_image(same), _image(other_issuer)]) is not None
    assert identity_conflict([_image(first)]) is None


def test_a_study_of_two_patients_is_never_prepared_for_the_model() -> None:
    first = make_image(StudySpec(), ImageSpec(view="PA"))
    other = make_image(StudySpec(patient_id="RT0000002"), ImageSpec(view="AP"))
    outcome = prepare_study([_image(first), _image(other)], min_pixels=128 * 128, max_pixels=256 * 256)
    assert isinstance(outcome, IdentityConflict)


def test_a_secondary_capture_chest_film_is_routed_to_the_model() -> None:
    sc = str(SecondaryCaptureImageStorage)
    assert decide([InstanceFacts(sc, "DX", "CHEST")], None).queue
    assert decide([InstanceFacts(sc, "CR", None)], "CHEST PA").queue
    other = decide([InstanceFacts(sc, "OT", None)], "CHEST PA")
    assert (other.queue, other.reason) == (False, "secondary capture, not a radiograph (modality OT)")
    beside = decide(
        [InstanceFacts(str(DigitalXRayImageStorageForPresentation), "DX", "KNEE"), InstanceFacts(sc, "OT", None)], None
    )
    assert beside.reason == "not a chest radiograph (body part KNEE)"


def test_the_nih_secondary_capture_film_is_read_flagged_secondary_capture() -> None:
    outcome = prepare_study(
        [_image(load_film(NIH)[0])], min_pixels=128 * 128, max_pixels=256 * 256, accept_unknown_view=True
    )
    assert isinstance(outcome, StudyInput)
    assert SECONDARY_CAPTURE in outcome.sources[0].view_flags
    assert "view-unknown" in outcome.sources[0].view_flags


def test_the_model_reads_a_copy_whose_unusable_window_is_dropped_and_the_file_is_untouched() -> None:
    ds = _variant("WindowWidth", "malformed")
    outcome = prepare_study([_image(ds)], min_pixels=128 * 128, max_pixels=256 * 256)
    assert isinstance(outcome, StudyInput)
    steps = outcome.sources[0].preparation
    assert steps[0]["step"] == "header"
    assert any(line.startswith("WindowWidth: not a valid DS value") for line in steps[0]["normalised"])
    assert next(s for s in steps if s["step"] == "voi")["kind"] == "full_range"
    assert "WindowWidth" in ds  # the received header itself is not changed


def test_encapsulated_pixel_data_without_a_frame_is_refused_and_a_real_j2k_film_is_not(tmp_path: Path) -> None:
    film = FILMS / "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm"
    assert read_header(film).deviations is not None  # the real film is accepted as it is
    [ds] = load_film(film)
    changed = apply_change([ds], by_keyword("PixelData"), "empty", "unit/j2k/empty")
    assert changed is not None
    with pytest.raises(DicomInputError) as caught:
        read_header(_written(changed[0], tmp_path))
    assert caught.value.reason == "(7FE0,0010) Pixel Data: encapsulated without any frame"

"""Spool naming and header checks: hostile UIDs never become paths; broken files never pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from radtrace.dicom_listener.headers import read_header
from radtrace.dicom_listener.spool import Spool
from radtrace.errors import DicomInputError
from radtrace.testing.broken import BrokenKind, broken_instance

pytestmark = pytest.mark.unit


def test_versions_are_named_beside_the_first_and_hostile_uids_are_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "quarantine")
    assert spool.final_path("1.2.3", "1.2.3.4", 1) == Path("1.2.3/1.2.3.4.dcm")
    assert spool.final_path("1.2.3", "1.2.3.4", 3) == Path("1.2.3/1.2.3.4.v3.dcm")
    for study in ("../etc", "1.2/3", "", "1." * 40):
        with pytest.raises(DicomInputError):
            spool.final_path(study, "1.2.3.4", 1)


def test_staging_hashes_fsyncs_and_prepare_clears_leftovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "quarantine")
    spool.prepare()
    staged = spool.stage_bytes(b"abc")
    assert staged.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert staged.size == 3
    assert spool.prepare() == 1
    assert not staged.path.exists()


@pytest.mark.parametrize(
    "kind", [BrokenKind.MISSING_STUDY_UID, BrokenKind.TRUNCATED_PIXEL_DATA, BrokenKind.WRONG_VR, BrokenKind.NOT_DICOM]
)
def test_broken_files_are_refused_with_a_reason_free_of_patient_data(tmp_path: Path, kind: BrokenKind) -> None:
    path = tmp_path / "in.dcm"
    path.write_bytes(broken_instance(kind))
    with pytest.raises(DicomInputError) as caught:
        read_header(path)
    assert "TEST" not in caught.value.reason
    assert "RT0000001" not in caught.value.reason


def test_a_valid_misrouted_ct_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(broken_instance(BrokenKind.CT_IMAGE))
    header = read_header(path)
    assert (header.modality, header.study_description) == ("CT", "CT CHEST WITHOUT CONTRAST")


def test_a_deflated_dataset_is_read_from_its_inflated_bytes(tmp_path: Path) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from radtrace.testing.studies import ImageSpec, StudySpec, make_image

    ds = make_image(StudySpec(), ImageSpec())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 200_000  # really deflated: positions in the file are not dataset offsets
    assert read_header(path).transfer_syntax_uid == DeflatedExplicitVRLittleEndian


@pytest.mark.parametrize(
    ("top_level", "in_request", "expected"),
    [(None, None, None), ("STAT", None, "STAT"), (None, ["", "HIGH"], "HIGH"), ("ROUTINE", ["STAT"], "ROUTINE")],
)
def test_the_requested_procedure_priority_is_read_from_the_top_level_or_the_request_attributes(
    tmp_path: Path, top_level: str | None, in_request: list[str] | None, expected: str | None
) -> None:
    from pydicom.dataset import Dataset

    from radtrace.testing.studies import ImageSpec, StudySpec, make_image

    ds = make_image(StudySpec(), ImageSpec())
    if top_level is not None:
        ds.RequestedProcedurePriority = top_level
    if in_request is not None:
        items = []
        for value in in_request:
            item = Dataset()
            if value:
                item.RequestedProcedurePriority = value
            items.append(item)
        ds.RequestAttributesSequence = items
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert read_header(path).requested_priority == expected

"""The pure pieces of leaving withdrawn drafts out (the integration tests: test_withdrawn_predecessors.py,
test_reassigned_filed_back.py): kept SRs of withdrawn revisions are not predecessors; a re-sent copy is a duplicate
only of a version in the study where the PACS filed the image last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radtrace.dicom_listener.reassigned import duplicate_candidates
from radtrace.reporting.draft_store import kept_srs

STUDY = "1.2.826.0.1.3680043.8.498.1"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _keep(root: Path, revision: int, name: str) -> str:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = COMPREHENSIVE_3D_SR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.InstanceNumber, ds.Modality = STUDY, revision, "SR"
    folder = root / STUDY / str(revision)
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def test_the_kept_srs_of_withdrawn_revisions_are_not_predecessors(tmp_path: Path) -> None:
    kept = {n: [_keep(tmp_path, n, "sr.dcm"), _keep(tmp_path, n, "companion.dcm")] for n in (1, 2, 3)}
    every = [str(ds.SOPInstanceUID) for ds in kept_srs(tmp_path, STUDY, 4)]
    assert every == kept[1] + kept[2] + kept[3]
    standing = [str(ds.SOPInstanceUID) for ds in kept_srs(tmp_path, STUDY, 4, withdrawn={2})]
    assert standing == kept[1] + kept[3]  # revision 2's SR and companion left out; their files stay
    assert (tmp_path / STUDY / "2" / "sr.dcm").is_file()
    assert kept_srs(tmp_path, STUDY, 2, withdrawn=frozenset({1})) == []


@dataclass(frozen=True)
class _Version:
    version: int
    study_id: int
    sha256: str


def test_a_copy_is_a_duplicate_only_of_a_version_where_the_image_is_filed_now() -> None:
    # version 1 in study A (id 1); the PACS moved it to B (id 2): versions 2 and 3 there, newest first
    held = [_Version(3, 2, "c"), _Version(2, 2, "b"), _Version(1, 1, "a")]
    assert [v.version for v in duplicate_candidates(held)] == [3, 2]  # not A's: a copy of it is the image filed back
    assert duplicate_candidates(held[2:]) == held[2:]
    assert duplicate_candidates([]) == []

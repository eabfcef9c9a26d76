"""A re-sent copy is a duplicate only of a version held under the study and Patient ID where the PACS filed the image
last (duplicate_candidates with the held Patient IDs; the integration test: test_reassigned_patient_filed_back.py)."""

from __future__ import annotations

from dataclasses import dataclass

from radtrace.dicom_listener.reassigned import duplicate_candidates


@dataclass(frozen=True)
class _Version:
    version: int
    study_id: int
    sha256: str


def test_a_copy_of_a_version_held_under_another_patient_is_no_duplicate_candidate() -> None:
    # A/P1 (v1) -> A/P9 (v2) -> A/P9 corrected name (v3), newest first
    held = [_Version(3, 1, "c"), _Version(2, 1, "b"), _Version(1, 1, "a")]
    assert duplicate_candidates(held) == held  # without the Patient IDs: the study alone
    assert [v.version for v in duplicate_candidates(held, {1: "P1", 2: "P9", 3: "P9"})] == [3, 2]
    assert duplicate_candidates(held, {1: "P1", 2: "P1", 3: "P1"}) == held  # the same patient: all of them
    assert duplicate_candidates(held, {1: None, 2: "", 3: None}) == held  # no Patient ID, empty or absent, alike
    assert [v.version for v in duplicate_candidates(held, {2: "P1", 3: "P9"})] == [3, 1]  # v1 not known: kept
    assert duplicate_candidates(held, {1: "P1", 2: "P9"}) == held  # the newest not known: the study alone
    # in another study (A -> B): only B's versions, whatever the patients
    moved = [_Version(2, 2, "b"), _Version(1, 1, "a")]
    assert duplicate_candidates(moved, {1: "P2", 2: "P2"}) == moved[:1]

"""An instance re-sent under its SOP Instance UID, compared with the copy held by what it holds (resend.compare_files).

The two real films held as a PACS first sends them, then re-sent transcoded by dcmtk and pydicom (tests/resend_support):
every lossless form is the same content; a lossy copy under the same UID is a lossy copy (the held one is kept); a
corrected patient name, another picture or another pixel description is a change, named by tag and never by value.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydicom.uid import UID

from radtrace.dicom_listener.resend import LOSSY_COPY_MIN_PSNR_DB, Likeness, compare_files
from resend_support import held_film, lossless_forms, resent, transfer_syntax

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("held")
    return {name: held_film(name, folder) for name in ("nih", "nema")}


#: Lossy compression's own attributes (PS3.3 C.7.6.1.1.5, C.12.1.1.3), which a lossy copy may add or change.
LOSSY_MARKS = {"(0008,0008)", "(0008,2112)", "(0008,9215)", "(0028,2110)", "(0028,2112)", "(0028,2114)"}


@pytest.mark.parametrize(("film", "form"), [(film, form) for film in ("nih", "nema") for form in lossless_forms(film)])
def test_a_lossless_re_encoding_is_the_same_content(
    films: dict[str, Path], film: str, form: str, tmp_path: Path
) -> None:
    again = resent(films[film], form, tmp_path)
    assert again.read_bytes() != films[film].read_bytes()
    comparison = compare_files(films[film], again)
    assert comparison.likeness is Likeness.SAME, comparison.reason()
    assert comparison.duplicate
    assert comparison.pixels_equal is True
    syntax = transfer_syntax(again)
    assert comparison.reason() == f"same content, re-sent as {UID(syntax).name}"
    assert comparison.payload()["held_transfer_syntax_uid"] == transfer_syntax(films[film])


@pytest.mark.parametrize(
    ("film", "form"),
    [
        ("nih", "jpeg-baseline-same-uid"),
        ("nih", "jpeg-ls-near-lossless-same-uid"),
        ("nema", "jpeg-ls-near-lossless-same-uid"),
    ],
)
def test_a_lossy_copy_under_the_same_uid_keeps_the_held_copy(
    films: dict[str, Path], film: str, form: str, tmp_path: Path
) -> None:
    comparison = compare_files(films[film], resent(films[film], form, tmp_path))
    assert comparison.likeness is Likeness.LOSSY_COPY, comparison.reason()
    assert comparison.duplicate
    assert comparison.pixels_equal is False
    assert comparison.psnr_db is not None
    assert LOSSY_COPY_MIN_PSNR_DB <= comparison.psnr_db < math.inf
    assert "the held copy is kept" in comparison.reason()
    assert comparison.changed_attributes
    assert set(comparison.changed_attributes) <= LOSSY_MARKS


@pytest.mark.parametrize("film", ["nih", "nema"])
def test_a_corrected_patient_name_is_a_change_named_by_tag_only(
    films: dict[str, Path], film: str, tmp_path: Path
) -> None:
    comparison = compare_files(films[film], resent(films[film], "patient-name-corrected", tmp_path))
    assert comparison.likeness is Likeness.CHANGED
    assert not comparison.duplicate
    assert comparison.changed_attributes == ("(0010,0010)",)
    assert comparison.pixels_equal is True
    assert comparison.reason() == "changed: (0010,0010)"
    assert "Corrected" not in str(comparison.payload())


@pytest.mark.parametrize("film", ["nih", "nema"])
def test_another_picture_sent_lossily_under_the_same_uid_is_a_change(
    films: dict[str, Path], film: str, tmp_path: Path
) -> None:
    comparison = compare_files(films[film], resent(films[film], "other-image-lossy-same-uid", tmp_path))
    assert comparison.likeness is Likeness.CHANGED
    assert comparison.psnr_db is not None
    assert comparison.psnr_db < LOSSY_COPY_MIN_PSNR_DB
    assert comparison.reason().endswith("pixel values")


def test_a_lossy_re_encoding_that_rescales_the_pixels_is_a_change(films: dict[str, Path], tmp_path: Path) -> None:
    # dcmcjpeg's baseline JPEG of the 15-bit film is an 8-bit image: another pixel description, read as new.
    comparison = compare_files(films["nema"], resent(films["nema"], "jpeg-baseline-same-uid", tmp_path))
    assert comparison.likeness is Likeness.CHANGED
    assert {"(0028,0100)", "(0028,0101)", "(0028,0102)"} <= set(comparison.changed_attributes)


def test_a_held_copy_that_cannot_be_decoded_is_not_compared(films: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "held-truncated.dcm"
    broken.write_bytes(films["nih"].read_bytes()[:-100_000])
    comparison = compare_files(broken, resent(films["nih"], "explicit", tmp_path))
    assert comparison.likeness is Likeness.NOT_COMPARED
    assert not comparison.duplicate
    assert comparison.problem is not None
    assert comparison.problem.startswith("held copy: ")
    assert comparison.reason().endswith("taken as a new version")
